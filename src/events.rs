//! Container events: what GetContainerEvents streams (the kubelet's evented PLEG).
//!
//! The record caches tell every durable change of a sandbox or container record
//! ([`crate::store::RecordCache::observe`]); [`container_events`] and [`sandbox_events`]
//! turn a change into the events it is (CREATED, STARTED, STOPPED, DELETED; a sandbox's
//! with its own id as the container id, as containerd 2 sends them). The server makes the
//! full event from it (the pod's status and its containers' after the change) and
//! publishes it on the [`Bus`]:
//!
//! - every subscriber has a buffer of its own; publishing never waits for one. A
//!   subscriber whose buffer is full is dropped: its stream gives what it had, then ends
//!   with ResourceExhausted, and the kubelet relists.
//! - while nobody listens, the changes are kept (as many as a buffer holds, for five
//!   minutes; made into events only then) for the next subscriber, which gets them first:
//!   those a restart found (exits while the daemon was down, starts it finished) reach the
//!   kubelet once it subscribes again, and none twice. A node whose kubelet never
//!   subscribes builds no event.
//!
//! Exits are noticed as they happen: a [`ProcessExit`] waits on a pidfd of the monitor (or
//! the pause), so no listing is needed for a STOPPED event, and listings need not look
//! for those ends themselves ([`crate::store::Watched`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::proto::{ContainerEventResponse, ContainerEventType};
use crate::store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};

/// A change worth events, as a record cache told it.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ContainerEventType,
    /// The container's id, or the sandbox's for a sandbox's event.
    pub id: String,
    pub sandbox_id: String,
    /// When the change was made (ns since the epoch).
    pub at_ns: i64,
    /// A process to watch from now on, whose end is the next change: a started
    /// container's monitor, a started sandbox's pause.
    pub watch: Option<i32>,
    /// The pod's record when the change was made (for a sandbox's DELETED, its last): the
    /// status the event carries when the pod is gone by the time it is sent.
    pub sandbox: Option<Box<SandboxRecord>>,
}

/// The events a container record's change is.
pub fn container_events(
    before: Option<&ContainerRecord>,
    after: Option<&ContainerRecord>,
) -> Vec<ContainerEventType> {
    use ContainerEventType::{
        ContainerCreatedEvent as Created, ContainerDeletedEvent as Deleted,
        ContainerStartedEvent as Started, ContainerStoppedEvent as Stopped,
    };
    let state = |r: Option<&ContainerRecord>| r.map(|r| r.state);
    match (state(before), state(after)) {
        (None, Some(ContainerState::Created)) => vec![Created],
        (None, Some(ContainerState::Running)) => vec![Created, Started],
        (None, Some(ContainerState::Exited)) => vec![Created, Stopped],
        (Some(ContainerState::Created), Some(ContainerState::Running)) => vec![Started],
        (Some(ContainerState::Created | ContainerState::Running), Some(ContainerState::Exited)) => {
            vec![Stopped]
        }
        (Some(_), None) => vec![Deleted],
        _ => Vec::new(),
    }
}

/// The events a sandbox record's change is.
pub fn sandbox_events(
    before: Option<&SandboxRecord>,
    after: Option<&SandboxRecord>,
) -> Vec<ContainerEventType> {
    use ContainerEventType::{
        ContainerCreatedEvent as Created, ContainerDeletedEvent as Deleted,
        ContainerStartedEvent as Started, ContainerStoppedEvent as Stopped,
    };
    let state = |r: Option<&SandboxRecord>| r.map(|r| r.state);
    match (state(before), state(after)) {
        (None, Some(SandboxState::Ready)) => vec![Created, Started],
        (None, Some(SandboxState::NotReady)) => vec![Created, Stopped],
        (Some(SandboxState::Ready), Some(SandboxState::NotReady)) => vec![Stopped],
        (Some(_), None) => vec![Deleted],
        _ => Vec::new(),
    }
}

/// The changes of a container record, for [`container_events`]; `pod` finds its pod's
/// record now (asked only when the change is an event: most saves are not).
pub fn container_changes(
    before: Option<&ContainerRecord>,
    after: Option<&ContainerRecord>,
    pod: impl FnOnce(&str) -> Option<SandboxRecord>,
) -> Vec<Change> {
    let Some(record) = after.or(before) else {
        return Vec::new();
    };
    let kinds = container_events(before, after);
    if kinds.is_empty() {
        return Vec::new();
    }
    let at_ns = crate::clock::now_ns();
    let sandbox = pod(&record.sandbox_id).map(Box::new);
    kinds
        .into_iter()
        .map(|kind| Change {
            kind,
            id: record.id.clone(),
            sandbox_id: record.sandbox_id.clone(),
            at_ns,
            watch: (kind == ContainerEventType::ContainerStartedEvent
                && record.state == ContainerState::Running)
                .then_some(record.monitor_pid),
            sandbox: sandbox.clone(),
        })
        .collect()
}

/// The changes of a sandbox record, for [`sandbox_events`].
pub fn sandbox_changes(
    before: Option<&SandboxRecord>,
    after: Option<&SandboxRecord>,
) -> Vec<Change> {
    let Some(record) = after.or(before) else {
        return Vec::new();
    };
    let at_ns = crate::clock::now_ns();
    sandbox_events(before, after)
        .into_iter()
        .map(|kind| Change {
            kind,
            id: record.id.clone(),
            sandbox_id: record.id.clone(),
            at_ns,
            watch: (kind == ContainerEventType::ContainerStartedEvent
                && record.state == SandboxState::Ready)
                .then_some(record.pid),
            sandbox: Some(Box::new(record.clone())),
        })
        .collect()
}

/// How long events nobody heard are kept for the next subscriber (containerd: the same).
const KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// One subscriber: its buffer, and whether it overflowed.
struct Subscriber {
    events: tokio::sync::mpsc::Sender<ContainerEventResponse>,
    overflowed: Arc<AtomicBool>,
}

/// The subscribers, and the changes published while there were none (with their stamps),
/// made into events only once a subscriber comes: a node whose kubelet does not subscribe
/// (the evented PLEG is off by default) pays for no statuses and keeps no events.
struct Listeners {
    subscribers: Vec<Subscriber>,
    kept: VecDeque<(std::time::Instant, Change, i64)>,
    /// Events dropped from `kept` because it was full, since the last subscriber came.
    dropped: u64,
}

/// See the module docs.
pub struct Bus {
    buffer: usize,
    listeners: Mutex<Listeners>,
}

/// Makes the event a change is, stamped: the pod's and containers' statuses after it.
pub type Build<'a> = &'a dyn Fn(&Change, i64) -> ContainerEventResponse;

/// What a subscriber reads: events, then the end (ResourceExhausted if it fell behind).
pub type Subscription = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<ContainerEventResponse, tonic::Status>> + Send>,
>;

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("buffer", &self.buffer)
            .field("subscribers", &self.subscribers())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A bus whose subscribers each buffer `buffer` events (at least 1).
    pub fn new(buffer: usize) -> Bus {
        Bus {
            buffer: buffer.max(1),
            listeners: Mutex::new(Listeners {
                subscribers: Vec::new(),
                kept: VecDeque::new(),
                dropped: 0,
            }),
        }
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many subscribers listen.
    pub fn subscribers(&self) -> usize {
        self.listeners().subscribers.len()
    }

    /// Hands the event `change` is (stamped `stamp`, made by `build`) to every subscriber
    /// without waiting; keeps the change when there are none.
    pub fn publish(&self, change: Change, stamp: i64, build: Build<'_>) {
        let mut listeners = self.listeners();
        let event = (!listeners.subscribers.is_empty()).then(|| build(&change, stamp));
        listeners.subscribers.retain(|s| {
            let Some(event) = &event else {
                return false;
            };
            use tokio::sync::mpsc::error::TrySendError;
            match s.events.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.overflowed.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        buffer = self.buffer,
                        "an event subscriber fell behind; its stream ends"
                    );
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        if listeners.subscribers.is_empty() {
            if listeners.kept.len() == self.buffer {
                listeners.kept.pop_front();
                listeners.dropped += 1;
            }
            listeners
                .kept
                .push_back((std::time::Instant::now(), change, stamp));
        }
    }

    /// A new subscriber's stream: first the events of what was kept while nobody
    /// listened (made now by `build`), then every event published from now on.
    pub fn subscribe(&self, build: Build<'_>) -> Subscription {
        let (sender, receiver) = tokio::sync::mpsc::channel(self.buffer);
        let overflowed = Arc::new(AtomicBool::new(false));
        {
            let mut listeners = self.listeners();
            if listeners.dropped > 0 {
                tracing::warn!(
                    dropped = listeners.dropped,
                    "events published while nobody listened were more than a buffer holds; the oldest are lost"
                );
                listeners.dropped = 0;
            }
            for (at, change, stamp) in listeners.kept.drain(..) {
                // Older news could undo newer: a pod's old sandbox DELETED would make the
                // kubelet forget the pod's new one. Past this, the kubelet has relisted.
                if at.elapsed() > KEPT_FOR {
                    continue;
                }
                // `kept` holds at most a buffer's worth: this cannot fail.
                let _ = sender.try_send(build(&change, stamp));
            }
            listeners.subscribers.push(Subscriber {
                events: sender,
                overflowed: overflowed.clone(),
            });
        }
        let buffer = self.buffer;
        let state = (receiver, overflowed, false);
        Box::pin(futures_util::stream::unfold(
            state,
            move |(mut receiver, overflowed, ended)| async move {
                if ended {
                    return None;
                }
                match receiver.recv().await {
                    Some(event) => Some((Ok(event), (receiver, overflowed, false))),
                    None if overflowed.load(Ordering::SeqCst) => {
                        let status = tonic::Status::resource_exhausted(format!(
                            "this subscriber left more than {buffer} events unread (events.subscriber_buffer); subscribe again and relist"
                        ));
                        Some((Err(status), (receiver, overflowed, true)))
                    }
                    None => None,
                }
            },
        ))
    }
}

/// The end of a process, to be awaited: through a pidfd, or, where one cannot be polled,
/// by looking at `/proc` now and then.
pub struct ProcessExit(Exit);

enum Exit {
    Pidfd(tokio::io::unix::AsyncFd<rustix::fd::OwnedFd>),
    Polled(i32),
}

impl ProcessExit {
    /// Watches process `pid`, if it still runs and `still_it` says that it is the one
    /// meant (asked once the pidfd holds it, so a pid reused since is not watched);
    /// `None` if it has ended already. Needs the tokio runtime.
    pub fn watch(pid: i32, still_it: impl FnOnce() -> bool) -> Option<ProcessExit> {
        use rustix::process::{Pid, PidfdFlags, pidfd_open};
        let fd = match pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()) {
            Ok(fd) => fd,
            // No such process: it has ended.
            Err(rustix::io::Errno::SRCH) => return None,
            // No pidfd to be had (out of descriptors, an old kernel): look now and then.
            Err(err) => {
                let err = err.to_string();
                tracing::debug!(pid, %err, "no pidfd; watching /proc");
                return still_it().then_some(ProcessExit(Exit::Polled(pid)));
            }
        };
        if !still_it() {
            return None;
        }
        // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`: it stays open, and is the
        // same descriptor, until the `AsyncFd` drops it.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        Some(ProcessExit(match registered {
            Ok(fd) => Exit::Pidfd(fd),
            Err(err) => {
                let err = err.to_string();
                tracing::debug!(pid, %err, "cannot poll a pidfd; watching /proc");
                Exit::Polled(pid)
            }
        }))
    }

    /// Whether the end is heard of as it happens (a pidfd), not found on a later look.
    pub fn at_once(&self) -> bool {
        matches!(self.0, Exit::Pidfd(_))
    }

    /// Returns once the process has ended.
    pub async fn ended(self) {
        match self.0 {
            // A pidfd reads readable once its process has ended.
            Exit::Pidfd(fd) => {
                let _ = fd.readable().await;
            }
            Exit::Polled(pid) => {
                while crate::oci::process_running(pid) {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerEventType::{
        ContainerCreatedEvent as Created, ContainerDeletedEvent as Deleted,
        ContainerStartedEvent as Started, ContainerStoppedEvent as Stopped,
    };
    use futures_util::StreamExt;

    fn container(state: ContainerState) -> ContainerRecord {
        ContainerRecord {
            id: "c".into(),
            sandbox_id: "s".into(),
            state,
            monitor_pid: 7,
            ..Default::default()
        }
    }

    fn change(id: &str) -> Change {
        Change {
            kind: Created,
            id: id.into(),
            sandbox_id: "s".into(),
            at_ns: 1,
            watch: None,
            sandbox: None,
        }
    }

    fn build(change: &Change, stamp: i64) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: change.id.clone(),
            created_at: stamp,
            ..Default::default()
        }
    }

    fn publish(bus: &Bus, id: &str) {
        bus.publish(change(id), 7, &build);
    }

    #[test]
    fn a_containers_changes_are_its_events() {
        let created = container(ContainerState::Created);
        let running = container(ContainerState::Running);
        let exited = container(ContainerState::Exited);
        assert_eq!(container_events(None, Some(&created)), [Created]);
        assert_eq!(container_events(Some(&created), Some(&running)), [Started]);
        assert_eq!(container_events(Some(&running), Some(&exited)), [Stopped]);
        assert_eq!(
            container_events(Some(&created), Some(&exited)),
            [Stopped],
            "a start that failed"
        );
        assert_eq!(container_events(Some(&exited), None), [Deleted]);
        assert!(
            container_events(Some(&running), Some(&running)).is_empty(),
            "no state change"
        );
        assert!(container_events(Some(&exited), Some(&exited)).is_empty());
        let started = container_changes(Some(&created), Some(&running), |_| None);
        assert_eq!(started[0].watch, Some(7), "its monitor is watched");
        assert_eq!(
            (started[0].id.as_str(), started[0].sandbox_id.as_str()),
            ("c", "s")
        );
    }

    #[test]
    fn a_sandboxs_changes_are_its_events() {
        let ready = SandboxRecord {
            id: "s".into(),
            pid: 9,
            ..Default::default()
        };
        let stopped = SandboxRecord {
            state: SandboxState::NotReady,
            ..ready.clone()
        };
        assert_eq!(sandbox_events(None, Some(&ready)), [Created, Started]);
        assert_eq!(sandbox_events(Some(&ready), Some(&stopped)), [Stopped]);
        assert!(
            sandbox_events(Some(&stopped), Some(&stopped)).is_empty(),
            "a repeated stop"
        );
        assert_eq!(sandbox_events(Some(&stopped), None), [Deleted]);
        let changes = sandbox_changes(None, Some(&ready));
        assert_eq!(
            changes[1].watch,
            Some(9),
            "its pause is watched once started"
        );
        let deleted = sandbox_changes(Some(&stopped), None);
        assert_eq!(
            deleted[0].sandbox.as_ref().map(|r| r.state),
            Some(SandboxState::NotReady),
            "its last record goes with it"
        );
    }

    #[tokio::test]
    async fn events_nobody_heard_go_to_the_next_subscriber_once() {
        let bus = Bus::new(4);
        publish(&bus, "a");
        publish(&bus, "b");
        let mut first = bus.subscribe(&build);
        publish(&bus, "c");
        let mut second = bus.subscribe(&build);
        publish(&bus, "d");
        let ids = |events: Vec<Result<ContainerEventResponse, tonic::Status>>| -> Vec<String> {
            events
                .into_iter()
                .map(|e| e.unwrap().container_id)
                .collect()
        };
        let got = ids(first.by_ref().take(4).collect().await);
        assert_eq!(got, ["a", "b", "c", "d"]);
        let got = ids(second.by_ref().take(1).collect().await);
        assert_eq!(got, ["d"], "what the first heard is not repeated");
    }

    #[tokio::test]
    async fn while_nobody_listens_a_buffer_is_kept_the_newest() {
        let bus = Bus::new(2);
        for id in ["a", "b", "c"] {
            publish(&bus, id);
        }
        let mut stream = bus.subscribe(&build);
        let got: Vec<String> = stream
            .by_ref()
            .take(2)
            .map(|e| e.unwrap().container_id)
            .collect()
            .await;
        assert_eq!(got, ["b", "c"]);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_gets_what_it_had_then_resource_exhausted() {
        let bus = Bus::new(2);
        let mut slow = bus.subscribe(&build);
        let mut reader = bus.subscribe(&build);
        for id in ["a", "b", "c"] {
            publish(&bus, id);
            // The reader keeps up.
            assert_eq!(reader.next().await.unwrap().unwrap().container_id, id);
        }
        assert_eq!(
            bus.subscribers(),
            1,
            "the slow one is dropped, the reader stays"
        );
        let mut got = Vec::new();
        while let Some(item) = slow.next().await {
            got.push(item);
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().container_id, "a");
        assert_eq!(got[1].as_ref().unwrap().container_id, "b");
        let err = got[2].as_ref().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("events.subscriber_buffer"), "{err}");
    }

    #[tokio::test]
    async fn a_processes_end_is_heard() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap() as i32;
        let exit = ProcessExit::watch(pid, || true).expect("it runs");
        assert!(exit.at_once(), "a pidfd is polled");
        let watch = tokio::spawn(exit.ended());
        let status = child.wait().await.unwrap();
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(5), watch)
            .await
            .expect("the end is heard")
            .unwrap();
        // A process that has ended, and a pid that is not the one meant any more: not
        // watched.
        assert!(ProcessExit::watch(pid, || true).is_none());
        let me = std::process::id() as i32;
        assert!(ProcessExit::watch(me, || false).is_none());
        assert!(ProcessExit::watch(0, || true).is_none());
    }
}
