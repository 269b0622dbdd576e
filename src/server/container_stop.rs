//! StopContainer and RemoveContainer (which stops first), and the removal of a pod's
//! containers.
//!
//! Stop and remove are idempotent (api.proto): an unknown or already stopped container is
//! not an error. Remove keeps the log file, as the kubelet expects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::CriService;
use crate::error::{Error, Result};
use crate::monitor::ExitRecord;
use crate::oci::runtime::OciError;
use crate::oci::runtime::OciRuntime;
use crate::proto::Signal as CriSignal;
use crate::store::{ContainerRecord, ContainerState};

/// How long a SIGKILLed container may take to be reported gone.
const KILL_GRACE: Duration = Duration::from_secs(10);

impl CriService {
    /// Signals the container (its stop signal, then SIGKILL after `timeout` seconds) and
    /// waits for it to exit.
    pub async fn stop_container(self: &Arc<Self>, id: &str, timeout: i64) -> Result<()> {
        match self.lock_existing(id).await? {
            Some((id, _held)) => self.stop_locked(&id, timeout).await,
            None => Ok(()),
        }
    }

    /// The container `id` names, under its lock; `None` when there is none: stop and
    /// remove are idempotent (api.proto), an unknown container is no error.
    async fn lock_existing(
        &self,
        id: &str,
    ) -> Result<Option<(String, tokio::sync::OwnedMutexGuard<()>)>> {
        if id.is_empty() {
            return Err(Error::invalid("container_id", "must not be empty"));
        }
        let Some(record) = self.containers.find(id)? else {
            return Ok(None);
        };
        let held = self.containers.lock(&record.id).lock_owned().await;
        Ok(Some((record.id, held)))
    }

    pub(crate) async fn stop_locked(&self, id: &str, timeout: i64) -> Result<()> {
        let Some(record) = self.containers.find(id)? else {
            return Ok(());
        };
        let paths = self.containers.monitor_paths(&record.id);
        let signal = match stopping(&record, paths.monitor_pid().is_some(), timeout) {
            Stopping::Nothing => return Ok(()),
            Stopping::EndCutShortStart => {
                self.end_container(&record.id).await;
                return Ok(());
            }
            Stopping::Signal { signal, grace } => Some((signal, grace)),
            Stopping::Kill => None,
        };
        let runtime = self.runtime_of(&record)?;
        if let Some((signal, grace)) = signal {
            ignore_gone(runtime.kill(&record.id, &signal).await)?;
            if wait_exit(&paths, grace).await {
                self.containers.refresh(record)?;
                return Ok(());
            }
        }
        ignore_gone(runtime.kill(&record.id, "KILL").await)?;
        if !wait_exit(&paths, KILL_GRACE).await && monitor_gone(&paths) {
            // No monitor to record the exit (it died, or the node rebooted).
            let mut record = record;
            killed_unmonitored(&mut record, crate::clock::now_ns());
            self.containers.save(&record)?;
            return Ok(());
        }
        self.containers.refresh(record)?;
        Ok(())
    }

    /// Removes the container and its rootfs, bundle and monitor files; keeps its log.
    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<()> {
        match self.lock_existing(id).await? {
            Some((id, _held)) => self.remove_locked(&id).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn remove_locked(&self, id: &str) -> Result<()> {
        let Some(record) = self.containers.find(id)? else {
            return Ok(());
        };
        self.stop_locked(&record.id, 0).await?;
        // A container that never started is unknown to the runtime.
        if record.state != ContainerState::Created {
            let runtime = self.runtime_of(&record)?;
            crate::oci::teardown::delete_gone(&runtime, &record.id).await?;
        }
        let layer_dir = self.containers.layer_dir(&record.id);
        let rootfs = layer_dir.join("rootfs");
        crate::mounts::unmount(&rootfs).map_err(Error::io("unmounting", &rootfs))?;
        crate::sandbox::userns::unmount_volumes(&layer_dir).map_err(Error::io(
            "unmounting the id-mapped volumes under",
            &layer_dir,
        ))?;
        // A monitor that was killed leaves its socket.
        let socket = self.containers.monitor_paths(&record.id).control_socket();
        crate::mounts::remove_file(&socket)
            .map_err(Error::io("removing the monitor's socket", &socket))?;
        for dir in [layer_dir, self.containers.state_dir(&record.id)] {
            crate::mounts::remove_tree(&dir).map_err(Error::io("removing", &dir))?;
        }
        self.containers.forget(&record)?;
        if !record.image_volumes.is_empty()
            && let Err(err) = self.release_image_volumes(&record.sandbox_id)
        {
            // The pod's removal tries again.
            tracing::warn!(container = %record.id, %err, "its image volume stays mounted");
        }
        tracing::info!(container = %record.id, "container removed");
        if self
            .images
            .lookup(&record.image_ref)
            .ok()
            .flatten()
            .is_none()
        {
            // Its image was removed while it ran: reclaim the layers it kept.
            self.images.collect_garbage_soon();
        }
        Ok(())
    }

    /// Stops (SIGKILL) and removes every container of a sandbox.
    pub(crate) async fn remove_sandbox_containers(
        &self,
        sandbox_id: &str,
        remove: bool,
    ) -> Result<()> {
        let ids: Vec<String> = self
            .containers
            .list()?
            .into_iter()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id)
            .collect();
        for id in ids {
            let lock = self.containers.lock(&id);
            let _held = lock.lock().await;
            if remove {
                self.remove_locked(&id).await?;
            } else {
                self.stop_locked(&id, 0).await?;
            }
        }
        Ok(())
    }
}

/// What stopping a container takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stopping {
    /// Nothing runs: a created container has no process yet (the runtime runs it at
    /// start), so as in containerd stopping it is a no-op; an exited one is stopped.
    Nothing,
    /// A start was cut short (a daemon crash): its monitor's pid file says the runtime
    /// may have run it; whatever it made is ended.
    EndCutShortStart,
    /// The stop signal, then SIGKILL if it has not exited within `grace`.
    Signal { signal: String, grace: Duration },
    /// SIGKILL at once: a timeout of 0 (or less), as the kubelet sends at pod removal.
    Kill,
}

/// How to stop container `record` within `timeout` seconds; `monitor_started` says its
/// monitor's pid file is there.
fn stopping(record: &ContainerRecord, monitor_started: bool, timeout: i64) -> Stopping {
    match record.state {
        ContainerState::Created if monitor_started => Stopping::EndCutShortStart,
        _ if !record.state.is_live() => Stopping::Nothing,
        ContainerState::Running if timeout > 0 => Stopping::Signal {
            signal: stop_signal(record),
            grace: Duration::from_secs(timeout.unsigned_abs()),
        },
        _ => Stopping::Kill,
    }
}

/// Records the end of a container killed with no monitor left to record it (it died,
/// or the node rebooted): exited as a SIGKILL leaves it, 128 + 9.
fn killed_unmonitored(record: &mut ContainerRecord, now_ns: i64) {
    record.state = ContainerState::Exited;
    record.exit_code = 137;
    record.reason = "Error".to_string();
    record.finished_at_ns = now_ns;
}

/// The signal to stop with: the config's, else the image's STOPSIGNAL, else SIGTERM.
fn stop_signal(record: &ContainerRecord) -> String {
    // A corrupt config must not keep the container from stopping.
    let asked = record
        .container_config()
        .map_err(|err| tracing::warn!(%err, "stopping with the image's signal"))
        .map_or(0, |config| config.stop_signal);
    match CriSignal::try_from(asked) {
        Ok(signal) if signal != CriSignal::RuntimeDefault => {
            signal.as_str_name().trim_start_matches("SIG").to_string()
        }
        _ if !record.stop_signal.is_empty() => {
            record.stop_signal.trim_start_matches("SIG").to_string()
        }
        _ => "TERM".to_string(),
    }
}

/// Waits until the monitor has recorded the exit.
async fn wait_exit(paths: &crate::monitor::MonitorPaths, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if ExitRecord::read(paths).is_some() {
            return true;
        }
        if start.elapsed() >= limit
            || monitor_gone(paths)
                && ExitRecord::read(paths).is_none()
                && start.elapsed() > Duration::from_millis(500)
        {
            return ExitRecord::read(paths).is_some();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether the container's monitor process no longer runs.
fn monitor_gone(paths: &crate::monitor::MonitorPaths) -> bool {
    !paths.monitor_pid().is_some_and(crate::oci::process_running)
}

/// A kill of a container that is already gone is no error.
fn ignore_gone(result: std::result::Result<(), OciError>) -> Result<()> {
    match result {
        Err(OciError::NotRunning { .. } | OciError::NotFound { .. }) => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ContainerConfig;

    fn record(state: ContainerState, stop_signal: i32, image_signal: &str) -> ContainerRecord {
        let config = ContainerConfig {
            stop_signal,
            ..Default::default()
        };
        ContainerRecord {
            id: "c1".into(),
            state,
            config: crate::store::cri::encode_config(&config),
            stop_signal: image_signal.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_running_container_with_time_left_gets_its_stop_signal() {
        let running = record(ContainerState::Running, 0, "");
        assert_eq!(
            stopping(&running, true, 30),
            Stopping::Signal {
                signal: "TERM".into(),
                grace: Duration::from_secs(30)
            }
        );
        assert_eq!(stopping(&running, true, 0), Stopping::Kill);
        assert_eq!(stopping(&running, true, -5), Stopping::Kill);
    }

    #[test]
    fn stopping_what_does_not_run_is_a_no_op_but_a_start_cut_short_is_ended() {
        let created = record(ContainerState::Created, 0, "");
        assert_eq!(stopping(&created, false, 30), Stopping::Nothing);
        assert_eq!(stopping(&created, true, 30), Stopping::EndCutShortStart);
        let exited = record(ContainerState::Exited, 0, "");
        assert_eq!(stopping(&exited, true, 30), Stopping::Nothing);
        assert_eq!(stopping(&exited, false, 0), Stopping::Nothing);
    }

    #[test]
    fn the_stop_signal_is_the_configs_then_the_images_then_term() {
        let asked = record(
            ContainerState::Running,
            CriSignal::Sigquit as i32,
            "SIGUSR1",
        );
        assert_eq!(stop_signal(&asked), "QUIT");
        let image = record(ContainerState::Running, 0, "SIGUSR1");
        assert_eq!(stop_signal(&image), "USR1");
        let neither = record(ContainerState::Running, 0, "");
        assert_eq!(stop_signal(&neither), "TERM");
        // A config that no longer decodes must not keep the container from stopping.
        let mut corrupt = record(ContainerState::Running, 0, "SIGINT");
        corrupt.config = "%%%".into();
        assert_eq!(stop_signal(&corrupt), "INT");
    }

    #[test]
    fn a_kill_nobody_saw_ends_as_sigkill_does() {
        let mut running = record(ContainerState::Running, 0, "");
        killed_unmonitored(&mut running, 42);
        assert_eq!(running.state, ContainerState::Exited);
        assert_eq!(running.exit_code, 137);
        assert_eq!(running.reason, "Error");
        assert_eq!(running.finished_at_ns, 42);
    }

    #[test]
    fn a_kill_of_what_is_gone_is_no_error_and_a_failed_one_is() {
        let gone = |e| ignore_gone(Err(e)).is_ok();
        assert!(gone(OciError::NotRunning {
            binary: "runc".into(),
            command: "kill",
            id: "c1".into(),
        }));
        assert!(gone(OciError::NotFound {
            binary: "runc".into(),
            command: "kill",
            id: "c1".into(),
        }));
        assert!(ignore_gone(Ok(())).is_ok());
        let failed = OciError::Failed {
            binary: "runc".into(),
            command: "kill",
            id: "c1".into(),
            message: "permission denied".into(),
        };
        assert!(matches!(ignore_gone(Err(failed)), Err(Error::Runtime(_))));
    }
}
