//! Containers: what berth keeps for them and where their files live.
//!
//! ```text
//! <root>/containers/<id>/   upper/ and work/ (the writable layer), rootfs/ (the overlay)
//! <state>/containers/<id>/  config.json (the bundle), runc.log, and the monitor's files:
//!                           monitor.pid, container.pid, exit.json
//! <state>/m/<id[..24]>.sock  the monitor's control socket (short: a socket path is limited)
//! <state>/bin/berth-monitor  the monitor program, installed at start-up
//! ```
//!
//! Records are kept in the metadata store and cached by a [`RecordCache`] (rebuilt at
//! start-up); a
//! running container's record is corrected from its monitor's exit file when it ends, so
//! an exit that happened while the daemon was down is reported with its code and time.
//! The RPCs are in `server/container_*.rs`.

pub mod devices;
pub mod security;
pub mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::monitor::{ExitRecord, MonitorPaths};
use crate::store::{
    ContainerRecord, ContainerState, Named, RecordCache, Store, StoreError, WatchMark, Watched,
};

/// The containers of this daemon.
pub struct Containers {
    root: PathBuf,
    state: PathBuf,
    /// The monitor program, installed under the state directory.
    monitor: PathBuf,
    records: RecordCache<ContainerRecord>,
    /// Running containers whose monitor's end is heard of as it happens.
    watched: Watched,
}

impl std::fmt::Debug for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containers")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A container name is unique within its sandbox and attempt.
pub fn name_key(sandbox: &str, name: &str, attempt: u32) -> String {
    format!("{sandbox}/{name}/{attempt}")
}

/// Whether monitor `pid` has ended: a signal-0 probe, cheap enough for every listing
/// (a reused pid reads as alive, which only delays the news). 0 is a record from before
/// monitors were recorded: not known, so not dead.
fn monitor_died(pid: i32) -> bool {
    pid > 0
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

/// Kills the init of container `id` whose monitor died (it would run with no one to read
/// its output or record its end), if it still runs: the process with that pid, if it is
/// in the container's cgroup (after a reboot, the pid is anybody's).
fn end_unmonitored(pid: i32, id: &str) {
    if crate::oci::process_running(pid) && crate::oci::in_cgroup_of(pid, id) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Containers {
    /// Loads the records; `monitor` is the installed monitor program.
    pub fn open(
        root: &Path,
        state: &Path,
        monitor: PathBuf,
        store: Arc<Store>,
    ) -> Result<Containers, StoreError> {
        Ok(Containers {
            root: root.join("containers"),
            state: state.join("containers"),
            monitor,
            records: RecordCache::load(store)?,
            watched: Watched::default(),
        })
    }

    /// Tells `observer` of every change of a record from now on (see [`RecordCache`]).
    pub fn observe(&self, observer: crate::store::Observer<ContainerRecord>) {
        if self.records.observe(observer).is_err() {
            tracing::warn!("the container records have an observer already");
        }
    }

    /// The ids of the containers `f` chooses, their records as they are.
    pub fn ids_where(&self, mut f: impl FnMut(&ContainerRecord) -> bool) -> Vec<String> {
        self.records.filter_map(|r| f(r).then(|| r.id.clone()))
    }

    /// The records of sandbox `id`'s containers, up to date as a listing has them (see
    /// [`Containers::current`]).
    pub fn of_sandbox_current(&self, id: &str) -> Result<Vec<ContainerRecord>, StoreError> {
        self.of_sandbox(id)
            .into_iter()
            .map(|r| self.current(r))
            .collect()
    }

    /// The records of sandbox `id`'s containers as they are, none brought up to date.
    pub fn of_sandbox(&self, id: &str) -> Vec<ContainerRecord> {
        self.records
            .filter_map(|r| (r.sandbox_id == id).then(|| r.clone()))
    }

    /// The monitor program to run for containers and execs.
    pub fn monitor_program(&self) -> &Path {
        &self.monitor
    }

    /// `<root>/containers/<id>`: the writable layer and the rootfs mount point.
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// `<root>/containers`: every container's writable layer is under it.
    pub fn layers_root(&self) -> &Path {
        &self.root
    }

    /// `<state>/containers/<id>`: the bundle and the monitor's files.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    pub fn monitor_paths(&self, id: &str) -> MonitorPaths {
        MonitorPaths::of(self.state.parent().unwrap_or(&self.state), id)
    }

    /// The files of one streaming exec (`token`) in container `id`: its own directory
    /// in the container's, and a short socket path next to the monitors'.
    pub fn exec_paths(&self, id: &str, token: &str) -> MonitorPaths {
        let root = self.state.parent().unwrap_or(&self.state);
        MonitorPaths {
            dir: self.state_dir(id).join(format!("exec-{token}")),
            socket: root.join("m").join(format!("x{token}.sock")),
        }
    }

    /// Containers with files and no record: what a CreateContainer cut short by a crash
    /// left (the record is saved last), or a removal after its record went.
    pub fn orphans(&self) -> Vec<String> {
        let mut ids = std::collections::BTreeSet::new();
        for dir in [&self.root, &self.state] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_id = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
                if is_id && !self.records.contains(&name) {
                    ids.insert(name);
                }
            }
        }
        ids.into_iter().collect()
    }

    /// The container with this id or unique id prefix, its state brought up to date.
    pub fn find(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        self.records.get(id).map(|r| self.refresh(r)).transpose()
    }

    /// The container with this id or unique id prefix, its record as it is.
    pub fn get(&self, id: &str) -> Option<ContainerRecord> {
        self.records.get(id)
    }

    /// The record brought up to date; for a running container whose monitor is watched,
    /// only its exit file is looked for (a monitor records the exit, then may give an
    /// attached client a moment before it ends), not the monitor itself. The lifecycle
    /// RPCs use [`Containers::refresh`].
    pub fn current(&self, record: ContainerRecord) -> Result<ContainerRecord, StoreError> {
        let watched = record.state == ContainerState::Running && self.watched.contains(&record.id);
        if watched && ExitRecord::read(&self.monitor_paths(&record.id)).is_none() {
            Ok(record)
        } else {
            self.refresh(record)
        }
    }

    /// Every container, states brought up to date.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        self.list_map(|r| Some(r.clone()))
    }

    /// `f` of every record, in id order, once the live ones are brought up to date (see
    /// [`Containers::refresh`]); a running one whose monitor is watched
    /// ([`Containers::watch`]) is taken as it is: its exit is recorded once its monitor
    /// ends (at most a second after the exit, when an attached client is given its
    /// farewell), and the kubelet lists again every second. Only the records looked at are
    /// cloned on the way: listing many watched or exited containers costs no copies.
    pub fn list_map<T>(
        &self,
        f: impl FnMut(&ContainerRecord) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        // A watched container's end is recorded as it happens; the others are looked at.
        let unwatched = self.watched.with(|watched| {
            self.records.filter_map(|r| {
                let look = r.state == ContainerState::Created
                    || (r.state == ContainerState::Running && !watched(&r.id));
                look.then(|| r.clone())
            })
        });
        for record in unwatched {
            self.refresh(record)?;
        }
        Ok(self.records.filter_map(f))
    }

    /// Marks container `id`'s monitor as watched while the mark lives: its end is heard
    /// of as it happens, and listings leave its record as it is.
    pub fn watch(&self, id: &str) -> WatchMark {
        self.watched.mark(id)
    }

    /// A live container whose monitor recorded an exit is Exited, with the code, time and
    /// reason the monitor saw; a running one whose monitor died without recording one is
    /// Exited with an unknown code (255, as containerd reports a container whose shim
    /// died), and says so. Callers need not hold the container's lock: the correction is
    /// stored only if nobody changed or removed the record meanwhile, and otherwise their
    /// newer record is returned.
    pub fn refresh(&self, mut record: ContainerRecord) -> Result<ContainerRecord, StoreError> {
        if record.state == ContainerState::Exited {
            return Ok(record);
        }
        let paths = self.monitor_paths(&record.id);
        let Some(exit) = ExitRecord::read(&paths) else {
            if record.state == ContainerState::Running
                && monitor_died(record.monitor_pid)
                // It may have written the exit file just before it ended.
                && ExitRecord::read(&paths).is_none()
            {
                let before = record.clone();
                record.state = ContainerState::Exited;
                record.exit_code = 255;
                record.reason = "Error".to_string();
                record.message =
                    "its monitor ended without recording the exit: the exit code is not known"
                        .to_string();
                record.finished_at_ns = crate::clock::now_ns();
                end_unmonitored(record.pid, &record.id);
                return self.records.correct(&before, record);
            }
            return Ok(record);
        };
        let before = record.clone();
        record.state = ContainerState::Exited;
        record.exit_code = exit.exit_code;
        record.finished_at_ns = exit.finished_at_ns;
        record.reason = if exit.oom_killed {
            "OOMKilled"
        } else if exit.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string();
        self.records.correct(&before, record)
    }

    pub fn save(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.records.save(record)
    }

    pub fn forget(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.records.forget(record)
    }

    pub fn reserve_name(&self, key: &str, id: &str) -> Result<(), crate::store::NameTaken> {
        self.records.reserve_name(key, id)
    }

    pub fn release_name(&self, key: &str) {
        self.records.release_name(key)
    }

    pub fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.records.lock(id)
    }
}

impl Named for ContainerRecord {
    fn name_key(&self) -> String {
        name_key(&self.sandbox_id, &self.name, self.attempt)
    }
}
