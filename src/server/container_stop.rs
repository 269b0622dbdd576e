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
        if id.is_empty() {
            return Err(Error::invalid("container_id", "must not be empty"));
        }
        let Some(record) = self.containers.find(id)? else {
            return Ok(());
        };
        let lock = self.containers.lock(&record.id);
        let _held = lock.lock().await;
        self.stop_locked(&record.id, timeout).await
    }

    pub(crate) async fn stop_locked(&self, id: &str, timeout: i64) -> Result<()> {
        let Some(record) = self.containers.find(id)? else {
            return Ok(());
        };
        // A created container has no process yet (the runtime runs it at start), so as in
        // containerd stopping it is a no-op; unless a start was cut short (a daemon
        // crash): its monitor's pid file says the runtime may have run it.
        let paths = self.containers.monitor_paths(&record.id);
        if record.state == ContainerState::Created && paths.monitor_pid().is_some() {
            self.end_container(&record.id).await;
            return Ok(());
        }
        if !record.state.is_live() {
            return Ok(());
        }
        let runtime = self.runtime_of(&record)?;
        if timeout > 0 && record.state == ContainerState::Running {
            let signal = stop_signal(&record);
            ignore_gone(runtime.kill(&record.id, &signal).await)?;
            if wait_exit(&paths, Duration::from_secs(timeout as u64)).await {
                self.containers.refresh(record)?;
                return Ok(());
            }
        }
        ignore_gone(runtime.kill(&record.id, "KILL").await)?;
        if !wait_exit(&paths, KILL_GRACE).await && monitor_gone(&paths) {
            // No monitor to record the exit (it died, or the node rebooted).
            let mut record = record;
            record.state = ContainerState::Exited;
            record.exit_code = 137;
            record.reason = "Error".to_string();
            record.finished_at_ns = crate::clock::now_ns();
            self.containers.save(&record)?;
            return Ok(());
        }
        self.containers.refresh(record)?;
        Ok(())
    }

    /// Removes the container and its rootfs, bundle and monitor files; keeps its log.
    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<()> {
        if id.is_empty() {
            return Err(Error::invalid("container_id", "must not be empty"));
        }
        let Some(record) = self.containers.find(id)? else {
            return Ok(());
        };
        let lock = self.containers.lock(&record.id);
        let _held = lock.lock().await;
        self.remove_locked(&record.id).await
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
