//! GetContainerEvents: the records' changes made into events and published
//! ([`crate::events`]), and the watchers of the processes whose end is a change.

use std::sync::{Arc, Weak};

use super::CriService;
use crate::events::{Change, ProcessExit, Subscription};
use crate::proto::{ContainerEventResponse, ContainerEventType};
use crate::store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};

/// How often a watcher asks for a process's end to be recorded (50 ms apart).
const EXIT_TRIES: usize = 100;

impl CriService {
    /// Starts making the records' changes into events, in the order they were made.
    /// Before the recovery, so that what it finishes or corrects is told too.
    pub fn start_events(self: &Arc<Self>) {
        let taken = self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut changes) = taken else {
            return;
        };
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            // Each event is stamped later than the one before: the kubelet keeps a pod's
            // status only if it is newer than the one it has.
            let mut stamp = 0;
            while let Some(change) = changes.recv().await {
                let Some(service) = service.upgrade() else {
                    return;
                };
                stamp = change.at_ns.max(stamp + 1);
                if let Some(pid) = change.watch {
                    service.watch(&change, pid);
                }
                let build = |change: &Change, stamp| service.event_of(change, stamp);
                service.events.publish(change, stamp, &build);
            }
        });
    }

    /// After the recovery: brings every record up to date (what exited while the daemon
    /// was down is a STOPPED event), then watches what still runs.
    pub fn watch_live(self: &Arc<Self>) {
        for record in self.sandboxes.list() {
            let record = match self.sandboxes.refresh(record) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(%err, "cannot bring a sandbox's record up to date");
                    continue;
                }
            };
            if record.state == SandboxState::Ready {
                self.watch_sandbox(record.id, record.pid);
            }
        }
        match self.containers.list() {
            Ok(records) => {
                for record in records {
                    if record.state == ContainerState::Running {
                        self.watch_container(record.id, record.monitor_pid);
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "cannot list the containers to watch them"),
        }
    }

    /// A new GetContainerEvents stream.
    pub fn subscribe_events(&self) -> Subscription {
        self.events
            .subscribe(&|change, stamp| self.event_of(change, stamp))
    }

    /// The event `change` is, stamped `at_ns`: the pod's status and its containers' as
    /// they are now, after the change (the pod's as it was then, if it is gone since).
    fn event_of(&self, change: &Change, at_ns: i64) -> ContainerEventResponse {
        let sandbox_deleted = change.kind == ContainerEventType::ContainerDeletedEvent
            && change.id == change.sandbox_id;
        let now = (!sandbox_deleted)
            .then(|| self.sandboxes.find(&change.sandbox_id))
            .flatten();
        let sandbox = now
            .as_ref()
            .or(change.sandbox.as_deref())
            .map(SandboxRecord::cri_status_as_known);
        let containers = if sandbox_deleted {
            Vec::new()
        } else {
            self.containers
                .of_sandbox(&change.sandbox_id)
                .iter()
                .map(ContainerRecord::cri_status_as_known)
                .collect()
        };
        ContainerEventResponse {
            container_id: change.id.clone(),
            container_event_type: change.kind as i32,
            created_at: at_ns,
            pod_sandbox_status: sandbox,
            containers_statuses: containers,
        }
    }

    /// Watches the process of a STARTED change.
    fn watch(self: &Arc<Self>, change: &Change, pid: i32) {
        if change.kind != ContainerEventType::ContainerStartedEvent {
            return;
        }
        if change.id == change.sandbox_id {
            self.watch_sandbox(change.id.clone(), pid);
        } else {
            self.watch_container(change.id.clone(), pid);
        }
    }

    /// Once monitor `pid` of container `id` has ended, its record is brought up to date:
    /// the exit it recorded is a STOPPED event.
    fn watch_container(self: &Arc<Self>, id: String, pid: i32) {
        let watched = id.clone();
        // None: it has ended already.
        let exit = ProcessExit::watch(pid, move || crate::oci::is_monitor_of(pid, &watched));
        let mark = exit
            .as_ref()
            .is_some_and(ProcessExit::at_once)
            .then(|| self.containers.watch(&id));
        let service: Weak<CriService> = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(exit) = exit {
                exit.ended().await;
            }
            // From now on, listings look for the exit themselves.
            drop(mark);
            until_recorded(service, |service| match service.containers.find(&id) {
                Ok(Some(record)) => record.state != ContainerState::Running,
                Ok(None) => true,
                Err(err) => {
                    tracing::warn!(container = %id, %err, "cannot record its exit");
                    false
                }
            })
            .await;
        });
    }

    /// Once pause `pid` of sandbox `id` has ended, its record is brought up to date: a
    /// pause that died on its own makes the pod NotReady, a STOPPED event.
    fn watch_sandbox(self: &Arc<Self>, id: String, pid: i32) {
        if pid <= 0 {
            return;
        }
        let Some(record) = self.sandboxes.find(&id) else {
            return;
        };
        let exit = ProcessExit::watch(pid, || crate::sandbox::pause_alive(&record));
        let mark = exit
            .as_ref()
            .is_some_and(ProcessExit::at_once)
            .then(|| self.sandboxes.watch(&id));
        let service: Weak<CriService> = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(exit) = exit {
                exit.ended().await;
            }
            drop(mark);
            until_recorded(service, |service| {
                let Some(record) = service.sandboxes.find(&id) else {
                    return true;
                };
                match service.sandboxes.refresh(record) {
                    Ok(record) => record.state != SandboxState::Ready,
                    Err(err) => {
                        tracing::warn!(sandbox = %id, %err, "cannot record its pause's end");
                        false
                    }
                }
            })
            .await;
        });
    }
}

/// Brings a record up to date after its process ended, until `recorded` says it is: a
/// change made meanwhile under the record's lock wins over the correction (see
/// `Containers::refresh`), so it is asked again, [`EXIT_TRIES`] times 50 ms apart, while
/// the service lives.
async fn until_recorded(service: Weak<CriService>, mut recorded: impl FnMut(&CriService) -> bool) {
    for _ in 0..EXIT_TRIES {
        let Some(service) = service.upgrade() else {
            return;
        };
        if recorded(&service) {
            return;
        }
        drop(service);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
