//! StartContainer: the container's monitor runs it through the OCI runtime
//! (`run --detach`) and says `started <pid>`; a start that fails leaves the container
//! exited with reason StartError, as in containerd.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::CriService;
use crate::error::{Error, Result};
use crate::monitor::argv::Args;
use crate::monitor::launch::{Answer, launch};
use crate::oci::runc::Runtime;
use crate::oci::runtime::OciError;
use crate::proto::ContainerConfig;
use crate::store::{ContainerRecord, ContainerState};

impl CriService {
    /// Runs the container: its monitor runs it through the OCI runtime. As a task, so a
    /// client that gives up cannot leave a container running that its record says is not.
    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let record = self.container(id)?;
        let service = self.clone();
        tokio::spawn(async move { service.start_locked(&record.id).await }).await?
    }

    async fn start_locked(&self, id: &str) -> Result<()> {
        let lock = self.containers.lock(id);
        let _held = lock.lock().await;
        let mut record = self.container(id)?;
        if !record.state.can_start() {
            return Err(Error::WrongState {
                kind: "container",
                id: record.id,
                reason: format!("it is {:?}, not created", record.state),
            });
        }
        // The spec joins the pause's (and a TARGET's) namespaces by pid: both must still
        // run now, not only when the container was created.
        let sandbox = self.ready_sandbox(&record.sandbox_id)?;
        let config = record.container_config()?;
        let target = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .filter(|o| o.pid == crate::proto::NamespaceMode::Target as i32);
        if let Some(target) = target {
            self.running_container(&target.target_id)?;
        }
        let runtime = self.runtime_of(&record)?;
        // Stamped before the start: a short command may exit, and its monitor record the
        // finish, before runc even returns.
        let started_at_ns = crate::clock::now_ns();
        let clock = Instant::now();
        let started = self
            .start_monitor(
                &record,
                &runtime,
                &sandbox.container_cgroup(&record.id),
                &config,
            )
            .await;
        crate::metrics::runtime_command("monitor_start", started.is_ok(), clock.elapsed());
        record.started_at_ns = started_at_ns;
        let saved = started.and_then(|(pid, monitor_pid)| {
            record.state = ContainerState::Running;
            record.pid = pid;
            record.monitor_pid = monitor_pid;
            self.containers.save(&record).map_err(Error::from)
        });
        if let Err(err) = saved {
            // The monitor may still be at it (it answered late, or the record could not
            // be saved): end it and whatever the runtime made, then say how it ended, as
            // containerd does: exited, code 128, reason StartError.
            self.end_container(&record.id).await;
            start_failed(&mut record, err.to_string(), crate::clock::now_ns());
            self.containers.save(&record)?;
            return Err(err);
        }
        // It may have exited already (a short command): the exit file says so.
        self.containers.refresh(record)?;
        Ok(())
    }

    /// Starts the container's monitor and waits for it to report the container started;
    /// returns the container's pid and the monitor's.
    async fn start_monitor(
        &self,
        record: &ContainerRecord,
        runtime: &Runtime,
        cgroups_path: &str,
        config: &ContainerConfig,
    ) -> Result<(i32, i32)> {
        let id = record.id.as_str();
        let state_dir = self.containers.state_dir(id);
        let path = |p: &Path| p.display().to_string();
        let args = Args {
            id: id.to_string(),
            bundle: path(&state_dir),
            runtime: path(runtime.binary()),
            runtime_root: path(runtime.root()),
            log_path: record.log_path.clone(),
            dir: path(&state_dir),
            socket: path(&self.containers.monitor_paths(id).socket),
            oom_events: self.cgroups.oom_events(cgroups_path).as_deref().map(path),
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin && config.stdin_once,
            exec_process: None,
        };
        let timeout = Duration::from_secs(self.config.runtime.start_timeout_seconds);
        let program = self.containers.monitor_program();
        let failed = |message: String| {
            Error::Runtime(OciError::Failed {
                binary: runtime.binary().to_path_buf(),
                command: "run",
                id: id.to_string(),
                message,
            })
        };
        // Anything but `started` is the runtime's failure, in the monitor's words (none
        // when it crashed before it answered).
        match launch(program, &args, timeout, "monitor").await? {
            (Answer::Started(pid), monitor_pid) => Ok((pid, monitor_pid)),
            (Answer::Error(message) | Answer::Other(message), _) => Err(failed(message)),
            (Answer::Ready, _) => Err(failed("ready".to_string())),
        }
    }
}

/// Records a start that failed as containerd does: exited, code 128, reason StartError,
/// the error as the message, no process. The kubelet then restarts it by its policy.
fn start_failed(record: &mut ContainerRecord, message: String, now_ns: i64) {
    record.state = ContainerState::Exited;
    record.exit_code = 128;
    record.reason = "StartError".to_string();
    record.message = message;
    record.pid = 0;
    record.finished_at_ns = now_ns;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_leaves_the_container_exited_with_start_error() {
        let mut record = ContainerRecord {
            id: "c1".into(),
            state: ContainerState::Created,
            pid: 4242,
            started_at_ns: 10,
            ..Default::default()
        };
        start_failed(&mut record, "exec: no such file".into(), 20);
        assert_eq!(record.state, ContainerState::Exited);
        assert!(!record.state.can_start(), "a new StartContainer is refused");
        assert_eq!(record.exit_code, 128);
        assert_eq!(record.reason, "StartError");
        assert_eq!(record.message, "exec: no such file");
        assert_eq!(record.pid, 0, "no process to signal at stop");
        assert_eq!((record.started_at_ns, record.finished_at_ns), (10, 20));
    }
}
