//! What a daemon does at start-up about what a dead one left: it finishes or undoes every
//! RunPodSandbox, CreateContainer and StartContainer that was under way when it died,
//! before it serves.
//!
//! 1. The dead daemon's helpers still running (a CNI plugin allocating an address, a
//!    `runc create`) are ended first ([`crate::helpers`]), so nothing they would finish
//!    can come after the undoing.
//! 2. A pod sandbox with no record (RunPodSandbox saves the record last) is undone: its
//!    pause container, its cgroup, its network (CNI DEL with the cache written before
//!    the first ADD, so also when ADD did not finish), its netns pin, mounts and files.
//! 3. A container with no record (CreateContainer saves it last) is undone: its
//!    monitor, runtime container and cgroup if a start began, its rootfs mount and
//!    files; then the pods' image volumes that no container record names are unmounted.
//! 4. A container whose StartContainer was cut short (its record still says created,
//!    but a monitor was started) is finished when its monitor got it running (it runs,
//!    or has exited, monitored), and undone otherwise, so that a new StartContainer can
//!    run it.
//!
//! Stops and removals need nothing here: they are idempotent, and the kubelet repeats
//! them.

use std::path::Path;

use super::CriService;
use crate::monitor::{ExitRecord, MonitorPaths};
use crate::network::cni::PodNetwork;
use crate::oci::teardown::stop_and_delete;
use crate::sandbox::netns;
use crate::store::ContainerState;

impl CriService {
    /// Everything above, in that order. Runs before the daemon serves.
    pub async fn recover(&self) {
        match crate::helpers::end_leftovers(self.sandboxes.helper_tag()).await {
            Ok(0) => {}
            Ok(ended) => tracing::warn!(count = ended, "ended helpers a dead daemon left running"),
            Err(left) => {
                // An undoing now could come before what they finish: the next start
                // tries again.
                tracing::error!(
                    count = left,
                    "helpers of a dead daemon would not end: nothing is swept"
                );
                return;
            }
        }
        self.sweep_orphan_sandboxes().await;
        self.sweep_orphan_containers().await;
        self.release_unused_image_volumes();
        self.settle_cut_short_starts().await;
    }

    /// Undoes the pod sandboxes that have no record (step 2).
    async fn sweep_orphan_sandboxes(&self) {
        for id in self.sandboxes.orphans() {
            tracing::warn!(sandbox = %id, "cleaning up a sandbox left half made");
            let dir = self.sandboxes.dir(&id);
            for runtime in self.sandboxes.runtimes() {
                if let Err(err) = stop_and_delete(runtime, &id).await {
                    tracing::warn!(sandbox = %id, %err, "removing its container failed");
                }
            }
            if let Some(cgroup) = bundle_cgroup(&dir) {
                self.cgroups.remove(&cgroup).await;
            }
            let pin = self.sandboxes.netns_path(&id);
            let network = PodNetwork {
                id: &id,
                netns: &pin,
                name: "",
                namespace: "",
                uid: "",
                port_mappings: &[],
            };
            // The pin goes only once DEL is done: the bridge plugin finds the addresses
            // whose masquerading it removes in the namespace.
            if let Err(err) = self.sandboxes.cni.detach(&network).await {
                tracing::warn!(sandbox = %id, %err, "CNI DEL failed; its pin stays for a retry");
                continue;
            }
            if let Err(err) = crate::mounts::unmount_all(&dir.join("images")) {
                // Its directory stays: removing it would reach into an image's layers.
                tracing::warn!(sandbox = %id, %err, "an image volume stays mounted; its files are kept");
                continue;
            }
            let results = [
                netns::remove(&pin),
                netns::remove(&self.sandboxes.userns_path(&id)),
                crate::mounts::unmount(&dir.join("shm")),
                crate::mounts::unmount(&dir.join("rootfs")),
                crate::mounts::remove_tree(&dir),
            ];
            for err in results.into_iter().filter_map(|r| r.err()) {
                tracing::warn!(sandbox = %id, %err, "clean-up step failed");
            }
        }
        self.sandboxes.cni.remove_stray_temporaries();
    }

    /// Undoes the containers that have no record (step 3).
    async fn sweep_orphan_containers(&self) {
        for id in self.containers.orphans() {
            tracing::warn!(container = %id, "cleaning up a container left half made");
            self.end_container(&id).await;
            let layer_dir = self.containers.layer_dir(&id);
            let mapped = crate::sandbox::userns::unmount_lowers(&layer_dir)
                .and_then(|()| crate::sandbox::userns::unmount_volumes(&layer_dir));
            if let Err(err) = mapped {
                // Its directory stays: removing it would reach into what is still mounted.
                tracing::warn!(container = %id, %err, "an id-mapped mount stays; the container's files are kept");
                continue;
            }
            let results = [
                crate::mounts::unmount(&layer_dir.join("rootfs")),
                crate::mounts::remove_tree(&layer_dir),
                crate::mounts::remove_tree(&self.containers.state_dir(&id)),
            ];
            for err in results.into_iter().filter_map(|r| r.err()) {
                tracing::warn!(container = %id, %err, "clean-up step failed");
            }
        }
    }

    /// Finishes or undoes the starts a dead daemon left (step 4).
    async fn settle_cut_short_starts(&self) {
        let created = match self.containers.list() {
            Ok(records) => records
                .into_iter()
                .filter(|r| r.state == ContainerState::Created),
            Err(err) => {
                tracing::warn!(%err, "cannot list the containers to settle their starts");
                return;
            }
        };
        for mut record in created {
            let paths = self.containers.monitor_paths(&record.id);
            let Some(monitor) = paths.monitor_pid() else {
                continue;
            };
            let monitored = crate::oci::is_monitor_of(monitor, &record.id)
                || ExitRecord::read(&paths).is_some();
            if let Some(pid) = started_before_the_crash(paths.container_pid(), monitored) {
                record.state = ContainerState::Running;
                record.pid = pid;
                record.monitor_pid = monitor;
                record.started_at_ns = started_at(&paths).unwrap_or_else(crate::clock::now_ns);
                let finished = self
                    .containers
                    .save(&record)
                    .and_then(|()| self.containers.refresh(record.clone()));
                match finished {
                    Ok(_) => {
                        tracing::info!(container = %record.id, "a start cut short had run it: running")
                    }
                    Err(err) => {
                        tracing::warn!(container = %record.id, %err, "cannot record its start")
                    }
                }
                continue;
            }
            tracing::info!(container = %record.id, "undoing a start cut short");
            self.end_container(&record.id).await;
            let files = [
                paths.monitor_pid_file(),
                paths.container_pid_file(),
                paths.exit_file(),
            ];
            for file in files {
                if let Err(err) = crate::mounts::remove_file(&file) {
                    tracing::warn!(container = %record.id, %err, "clean-up step failed");
                }
            }
        }
    }

    /// Ends whatever runs of container `id` (its monitor's process group, the
    /// runtime's container, what is left in its cgroup), and removes its monitor's
    /// socket; for containers no record vouches for, or whose start is being undone.
    pub(crate) async fn end_container(&self, id: &str) {
        let paths = self.containers.monitor_paths(id);
        if let Some(monitor) = paths.monitor_pid() {
            end_monitor(monitor, id);
        }
        for runtime in self.sandboxes.runtimes() {
            if let Err(err) = stop_and_delete(runtime, id).await {
                tracing::warn!(container = %id, %err, "removing its runtime container failed");
            }
        }
        if let Some(cgroup) = bundle_cgroup(&paths.dir) {
            self.cgroups.remove(&cgroup).await;
        }
        if let Err(err) = crate::mounts::remove_file(&paths.control_socket()) {
            tracing::warn!(container = %id, %err, "removing its monitor's socket failed");
        }
    }
}

/// Kills monitor `pid` of container `id` and its process group (the runtime it runs
/// and, before the container has a session of its own, its init), after checking that
/// the process is that container's monitor: a pid file outlives its process, and the
/// pid may be another's by now.
pub(crate) fn end_monitor(pid: i32, id: &str) {
    if !crate::oci::is_monitor_of(pid, id) {
        return;
    }
    // The monitor leads its own session and process group.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The cgroup a bundle's `config.json` put its container in.
fn bundle_cgroup(bundle: &Path) -> Option<String> {
    crate::oci::bundle_spec(bundle)["linux"]["cgroupsPath"]
        .as_str()
        .map(String::from)
}

/// When the runtime wrote the container's pid: as close to its start as is known.
fn started_at(paths: &MonitorPaths) -> Option<i64> {
    let written = std::fs::metadata(paths.container_pid_file())
        .ok()?
        .modified()
        .ok()?;
    let since = written.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_nanos()).ok()
}

/// The pid of a container whose start was cut short, if that start got it running: the
/// runtime wrote its pid (`container`) and a monitor of this container runs or wrote its
/// exit (`monitored`). Anything less is undone, so that a new StartContainer can run it.
fn started_before_the_crash(container: Option<i32>, monitored: bool) -> Option<i32> {
    container.filter(|_| monitored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_cut_short_is_finished_only_when_a_monitor_had_it_running() {
        assert_eq!(started_before_the_crash(Some(77), true), Some(77));
        // The runtime wrote no pid: it never ran the container.
        assert_eq!(started_before_the_crash(None, true), None);
        // A pid, but no monitor of this container runs or wrote its exit: nobody
        // watches it, so it cannot be taken for running.
        assert_eq!(started_before_the_crash(Some(77), false), None);
        assert_eq!(started_before_the_crash(None, false), None);
    }

    #[test]
    fn an_orphan_bundle_names_its_cgroup_and_a_broken_one_names_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(bundle_cgroup(dir.path()), None, "no config.json");
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        assert_eq!(bundle_cgroup(dir.path()), None);
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": { "cgroupsPath": "/kubepods/pod1/abc" }
        });
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        assert_eq!(
            bundle_cgroup(dir.path()).as_deref(),
            Some("/kubepods/pod1/abc")
        );
    }
}
