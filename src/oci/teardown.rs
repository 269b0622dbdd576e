//! Taking a container down through any [`OciRuntime`]: kill, wait for the stop, delete,
//! where each step takes a container that is already gone as done. The pod's pause and a
//! container's init go this way at StopPodSandbox, RemoveContainer and recovery.

use super::runtime::OciError;
use super::runtime::{OciRuntime, Status};

/// Kills a container whose init has pid `pid`, waits for that process to end (watching
/// `/proc`, which is much cheaper than asking the runtime) and deletes it. Without a
/// live pid, it is [`stop_and_delete`].
pub async fn kill_and_delete<R: OciRuntime>(
    runtime: &R,
    id: &str,
    pid: i32,
) -> Result<(), OciError> {
    if !super::process_running(pid) {
        return stop_and_delete(runtime, id).await;
    }
    if let Err(err) = runtime.kill(id, "KILL").await {
        // Gone already, or `pid` is no longer the pause (a reboot, a reused pid): the
        // runtime decides, rather than a wait on a pid that may not be ours.
        tracing::debug!(container = %id, %err, "kill failed; asking the runtime");
        return stop_and_delete(runtime, id).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while super::process_running(pid) {
        if std::time::Instant::now() > deadline {
            // Not gone (or the pid was reused): let the runtime decide.
            return stop_and_delete(runtime, id).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    delete_gone(runtime, id).await
}

/// `runtime delete`, where a container the runtime no longer knows is not an error.
pub async fn delete_gone<R: OciRuntime>(runtime: &R, id: &str) -> Result<(), OciError> {
    match runtime.delete(id).await {
        Err(OciError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// How long [`stop_and_delete`] waits for a killed container to stop.
const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Kills a container, waits for it to stop, and deletes it from the runtime. Each step
/// tolerates a container that is already gone.
pub async fn stop_and_delete<R: OciRuntime>(runtime: &R, id: &str) -> Result<(), OciError> {
    let Some(state) = runtime.state(id).await? else {
        // Unknown, or a create cut short (the runtime killed before it saved the
        // container's state) left its directory: the delete removes that.
        return delete_gone(runtime, id).await;
    };
    if state.status.has_process() {
        // "not running" races are fine: the state check below decides.
        let _ = runtime.kill(id, "KILL").await;
        let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
        loop {
            match runtime.state(id).await? {
                None => return Ok(()),
                Some(s) if s.status == Status::Stopped => break,
                Some(_) if tokio::time::Instant::now() > deadline => break,
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    }
    delete_gone(runtime, id).await
}

/// The teardown against a runtime that keeps its containers in memory: what
/// they do with each answer a runtime may give, without root.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::{delete_gone, kill_and_delete, stop_and_delete};
    use crate::oci::runtime::OciError;
    use crate::oci::runtime::{OciRuntime, State, Status};

    /// What the fake answers to a kill of a container that has a process.
    #[derive(Clone, Copy)]
    enum OnKill {
        Stops,
        SaysNotRunning,
        Ignores,
    }

    struct Fake {
        containers: Mutex<HashMap<String, Status>>,
        on_kill: OnKill,
        calls: Mutex<Vec<String>>,
        state_fails: bool,
    }

    impl Fake {
        fn with(id: &str, status: Status, on_kill: OnKill) -> Fake {
            Fake {
                containers: Mutex::new(HashMap::from([(id.to_string(), status)])),
                on_kill,
                calls: Mutex::new(Vec::new()),
                state_fails: false,
            }
        }

        fn called(&self, what: &str) {
            self.calls.lock().unwrap().push(what.to_string());
        }

        fn calls(&self) -> Vec<String> {
            let mut calls = self.calls.lock().unwrap().clone();
            calls.dedup();
            calls
        }

        fn error(command: &'static str, id: &str) -> OciError {
            OciError::NotFound {
                binary: PathBuf::from("fake"),
                command,
                id: id.to_string(),
            }
        }
    }

    impl OciRuntime for Fake {
        async fn run(&self, _: &str, _: &Path, _: &Path) -> Result<(), OciError> {
            unreachable!("not used by the helpers")
        }
        async fn kill(&self, id: &str, signal: &str) -> Result<(), OciError> {
            self.called(&format!("kill {signal}"));
            let mut containers = self.containers.lock().unwrap();
            let Some(status) = containers.get_mut(id) else {
                return Err(Fake::error("kill", id));
            };
            match self.on_kill {
                OnKill::Stops => {
                    *status = Status::Stopped;
                    Ok(())
                }
                OnKill::SaysNotRunning => {
                    *status = Status::Stopped;
                    Err(OciError::NotRunning {
                        binary: PathBuf::from("fake"),
                        command: "kill",
                        id: id.to_string(),
                    })
                }
                OnKill::Ignores => Ok(()),
            }
        }
        async fn delete(&self, id: &str) -> Result<(), OciError> {
            self.called("delete");
            match self.containers.lock().unwrap().remove(id) {
                Some(_) => Ok(()),
                None => Err(Fake::error("delete", id)),
            }
        }
        async fn state(&self, id: &str) -> Result<Option<State>, OciError> {
            self.called("state");
            if self.state_fails {
                return Err(OciError::Failed {
                    binary: PathBuf::from("fake"),
                    command: "state",
                    id: id.to_string(),
                    message: "unreadable state".to_string(),
                });
            }
            Ok(self
                .containers
                .lock()
                .unwrap()
                .get(id)
                .map(|&status| State { status, pid: 0 }))
        }
        async fn update(&self, _: &str, _: &[u8]) -> Result<(), OciError> {
            unreachable!("not used by the helpers")
        }
        fn features(&self) -> crate::oci::runtime::Features {
            Default::default()
        }
    }

    #[tokio::test]
    async fn a_running_container_is_killed_then_deleted() {
        let fake = Fake::with("a", Status::Running, OnKill::Stops);
        stop_and_delete(&fake, "a").await.unwrap();
        assert_eq!(fake.calls(), ["state", "kill KILL", "state", "delete"]);
        assert!(fake.containers.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_container_that_stopped_meanwhile_is_deleted_all_the_same() {
        // The kill lost a race with the container's own exit.
        let fake = Fake::with("a", Status::Created, OnKill::SaysNotRunning);
        stop_and_delete(&fake, "a").await.unwrap();
        assert!(fake.containers.lock().unwrap().is_empty());
        let stopped = Fake::with("b", Status::Stopped, OnKill::Stops);
        stop_and_delete(&stopped, "b").await.unwrap();
        assert_eq!(stopped.calls(), ["state", "delete"], "nothing to kill");
    }

    #[tokio::test]
    async fn an_unknown_container_is_no_error_and_a_broken_runtime_is() {
        let fake = Fake::with("a", Status::Running, OnKill::Stops);
        stop_and_delete(&fake, "elsewhere").await.unwrap();
        assert_eq!(
            fake.calls(),
            ["state", "delete"],
            "the delete removes what a create cut short left"
        );
        delete_gone(&fake, "elsewhere").await.unwrap();
        let mut broken = Fake::with("a", Status::Running, OnKill::Stops);
        broken.state_fails = true;
        let err = stop_and_delete(&broken, "a").await.unwrap_err();
        assert!(matches!(err, OciError::Failed { .. }), "{err}");
        assert!(broken.containers.lock().unwrap().contains_key("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_that_will_not_stop_is_deleted_past_the_deadline() {
        let fake = Fake::with("a", Status::Running, OnKill::Ignores);
        stop_and_delete(&fake, "a").await.unwrap();
        let calls = fake.calls.lock().unwrap().clone();
        assert!(
            calls.iter().filter(|c| *c == "state").count() > 2,
            "asked again until the deadline: {calls:?}"
        );
        assert_eq!(calls.last().map(String::as_str), Some("delete"));
    }

    #[tokio::test]
    async fn without_a_live_pid_the_runtime_decides() {
        // No process has this pid: the helper asks the runtime instead of waiting on it.
        let fake = Fake::with("a", Status::Running, OnKill::Stops);
        kill_and_delete(&fake, "a", i32::MAX).await.unwrap();
        assert_eq!(fake.calls(), ["state", "kill KILL", "state", "delete"]);
    }
}
