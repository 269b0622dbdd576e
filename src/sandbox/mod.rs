//! Pod sandboxes: what berth keeps for them and where their files live.
//!
//! ```text
//! <state>/sandboxes/<id>/   config.json (the pause bundle), pause.pid, hostname, hosts,
//!                           resolv.conf, shm/ (the pod's /dev/shm tmpfs)
//! <state>/netns/<id>        the pinned network namespace
//! <state>/pause/rootfs/     /pause and nothing else, shared read-only by every pod
//! <state>/runtime/<handler> the OCI runtime's own state (`--root`)
//! <state>/cni/              cached CNI results, host-local leases of the default network
//! ```
//!
//! Sandbox records are kept in the metadata store; [`Sandboxes`] caches them in memory
//! (rebuilt at start-up), reserves pod names (a name, namespace, uid and attempt identify
//! one sandbox) and serializes operations on one sandbox. The RPCs themselves are in
//! `server/sandbox_*.rs`.

pub mod files;
pub mod netns;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::Config;
use crate::network::cni::Cni;
use crate::oci::runc::Runtime;
use crate::store::{SandboxRecord, SandboxState, Store, StoreError};

/// The pause program, built statically by build.rs.
pub static PAUSE_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The pod sandboxes of this daemon.
pub struct Sandboxes {
    state: PathBuf,
    store: Arc<Store>,
    records: RwLock<BTreeMap<String, SandboxRecord>>,
    /// `name_namespace_uid_attempt` → sandbox id.
    names: Mutex<HashMap<String, String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    runtimes: BTreeMap<String, Runtime>,
    default_handler: String,
    pub cni: Cni,
}

impl std::fmt::Debug for Sandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandboxes")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The key that makes a sandbox's name unique: name, namespace, uid and attempt, joined
/// by a character none of them can hold, so two different pods never share a key.
pub fn name_key(name: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    format!("{name}/{namespace}/{uid}/{attempt}")
}

impl Sandboxes {
    /// Prepares the state directories and the pause rootfs, and loads the records.
    pub fn open(config: &Config, store: Arc<Store>) -> Result<Sandboxes, std::io::Error> {
        let state = config.state.clone();
        for dir in [
            "sandboxes",
            "netns",
            "pause/rootfs",
            "cni/results",
            "cni/networks",
        ] {
            std::fs::create_dir_all(state.join(dir))?;
        }
        install_pause(&state.join("pause/rootfs"))?;
        let mut runtimes = BTreeMap::new();
        for (name, path) in config.handlers() {
            let binary = crate::oci::resolve_binary(path).unwrap_or_else(|| path.to_path_buf());
            let root = state.join("runtime").join(name);
            std::fs::create_dir_all(&root)?;
            runtimes.insert(name.to_string(), Runtime::new(binary, root));
        }
        let cni = Cni::new(
            config.network.conf_dir.clone(),
            config.network.bin_dirs.clone(),
            state.join("cni/results"),
        );
        let sandboxes = Sandboxes {
            state,
            store,
            records: RwLock::new(BTreeMap::new()),
            names: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            runtimes,
            default_handler: config.runtime.default_handler.clone(),
            cni,
        };
        Ok(sandboxes)
    }

    /// Loads the records from the store (at start-up).
    pub fn load(&self) -> Result<(), StoreError> {
        let records: Vec<SandboxRecord> = self.store.list()?;
        let mut names = self.lock_names();
        for record in &records {
            names.insert(
                name_key(&record.name, &record.namespace, &record.uid, record.attempt),
                record.id.clone(),
            );
        }
        *self.write_records() = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        Ok(())
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.state.join("sandboxes").join(id)
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.state.join("netns").join(id)
    }

    pub fn pause_rootfs(&self) -> PathBuf {
        self.state.join("pause/rootfs")
    }

    /// Where host-local keeps the default network's leases.
    pub fn lease_dir(&self) -> PathBuf {
        self.state.join("cni/networks")
    }

    /// The OCI runtime of a handler ("" is the default handler).
    pub fn runtime(&self, handler: &str) -> Option<&Runtime> {
        let name = if handler.is_empty() {
            self.default_handler.as_str()
        } else {
            handler
        };
        self.runtimes.get(name)
    }

    fn read_records(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, SandboxRecord>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_records(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, SandboxRecord>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sandbox with this id, or with this unique id prefix.
    pub fn find(&self, id: &str) -> Option<SandboxRecord> {
        let records = self.read_records();
        if let Some(record) = records.get(id) {
            return Some(record.clone());
        }
        if id.is_empty() {
            return None;
        }
        let mut matches = records
            .range(id.to_string()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some((_, record)), None) => Some(record.clone()),
            _ => None,
        }
    }

    pub fn list(&self) -> Vec<SandboxRecord> {
        self.read_records().values().cloned().collect()
    }

    /// The record, corrected if its pause process has died since (OOM kill, a kill from
    /// outside, a reboot): a Ready sandbox without its pause is NotReady, and the kubelet
    /// then replaces it.
    pub fn refresh(&self, mut record: SandboxRecord) -> Result<SandboxRecord, StoreError> {
        if record.state == SandboxState::Ready && !pause_alive(&record) {
            tracing::warn!(sandbox = %record.id, pid = record.pid, "the pause process is gone; sandbox not ready");
            record.state = SandboxState::NotReady;
            self.save(&record)?;
        }
        Ok(record)
    }

    /// Sandbox ids that have files, a netns pin or a CNI cache but no record: what a
    /// daemon that died in the middle of a RunPodSandbox left behind.
    pub fn orphans(&self) -> Vec<String> {
        let records = self.read_records();
        let mut ids = std::collections::BTreeSet::new();
        for dir in ["sandboxes", "netns", "cni/results"] {
            for entry in std::fs::read_dir(self.state.join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".json")
                    .to_string();
                let is_id = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
                if is_id && !records.contains_key(&name) {
                    ids.insert(name);
                }
            }
        }
        ids.into_iter().collect()
    }

    /// Every configured runtime, for clean-ups that do not know the handler.
    pub fn runtimes(&self) -> impl Iterator<Item = &Runtime> {
        self.runtimes.values()
    }

    /// Stores a new or changed record.
    pub fn save(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.store.put(record)?;
        self.write_records()
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    /// Forgets a sandbox and frees its name.
    pub fn forget(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.store.delete::<SandboxRecord>(&record.id)?;
        self.write_records().remove(&record.id);
        self.release_name(&name_key(
            &record.name,
            &record.namespace,
            &record.uid,
            record.attempt,
        ));
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.id);
        Ok(())
    }

    /// Reserves a pod name for `id`; returns the id that holds it already, if any.
    pub fn reserve_name(&self, key: &str, id: &str) -> Result<(), String> {
        let mut names = self.lock_names();
        if let Some(holder) = names.get(key) {
            return Err(holder.clone());
        }
        names.insert(key.to_string(), id.to_string());
        Ok(())
    }

    pub fn release_name(&self, key: &str) {
        self.lock_names().remove(key);
    }

    /// The lock that serializes operations on one sandbox.
    pub fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

/// Whether the sandbox's pause process still runs: its pid is alive (not a zombie) and,
/// for a pod with its own network, still in the pod's pinned namespace (so a reused pid
/// is not mistaken for it).
fn pause_alive(record: &SandboxRecord) -> bool {
    use std::os::unix::fs::MetadataExt;
    if record.pid <= 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", record.pid)).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    if !matches!(state, Some(s) if s != "Z" && s != "X") {
        return false;
    }
    match &record.netns {
        Some(pin) => {
            let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
            let ours = ino(Path::new(&format!("/proc/{}/ns/net", record.pid)));
            ours.is_some() && ours == ino(Path::new(pin))
        }
        None => true,
    }
}

/// Writes the pause program into the shared pause rootfs (atomically, and only when it
/// differs, so running pods are never touched).
fn install_pause(rootfs: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let target = rootfs.join("pause");
    if std::fs::read(&target).is_ok_and(|current| current == PAUSE_PROGRAM) {
        return Ok(());
    }
    let tmp = rootfs.join(".pause.tmp");
    std::fs::write(&tmp, PAUSE_PROGRAM)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &target)
}
