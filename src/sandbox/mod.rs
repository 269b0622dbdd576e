//! Pod sandboxes: what berth keeps for them and where their files live.
//!
//! ```text
//! <state>/sandboxes/<id>/   config.json (the pause bundle), pause.pid, hostname, hosts,
//!                           resolv.conf, shm/ (the pod's /dev/shm tmpfs)
//! <state>/netns/<id>        the pinned network namespace
//! <state>/userns/<id>       the pinned user namespace of a pod that has its own
//! <state>/pause/rootfs/     /pause and nothing else, shared read-only by every pod
//! <state>/runtime/<handler> the OCI runtime's own state (`--root`)
//! <state>/cni/              cached CNI results, host-local leases of the default network
//! ```
//!
//! Sandbox records are kept in the metadata store and cached by a [`RecordCache`]
//! (rebuilt at start-up), which also reserves pod names (a name, namespace, uid and
//! attempt identify one sandbox) and serializes operations on one sandbox. The RPCs themselves are in
//! `server/sandbox_*.rs`.

pub mod files;
pub mod netns;
pub mod userns;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::network::cni::Cni;
use crate::oci::runc::Runtime;
use crate::store::{
    Named, RecordCache, SandboxRecord, SandboxState, Store, StoreError, WatchMark, Watched,
};

/// The pause program, built statically by build.rs.
pub static PAUSE_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The pod sandboxes of this daemon.
pub struct Sandboxes {
    state: PathBuf,
    records: RecordCache<SandboxRecord>,
    /// Ready sandboxes whose pause's end is heard of as it happens.
    watched: Watched,
    runtimes: BTreeMap<String, Runtime>,
    default_handler: String,
    pub cni: Cni,
    /// What the daemon's helpers carry ([`crate::helpers`]).
    helper_tag: std::ffi::OsString,
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

/// Why the sandboxes' state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("preparing sandbox state in {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The state directories every daemon keeps under `<state>`.
const STATE_DIRS: &[&str] = &[
    "sandboxes",
    "netns",
    "userns",
    "pause/rootfs",
    "cni/results",
    "cni/networks",
];

impl Sandboxes {
    /// Prepares the state directories and the pause rootfs, and loads the records.
    pub fn open(config: &Config, store: Arc<Store>) -> Result<Sandboxes, OpenError> {
        let state = config.state.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        for dir in STATE_DIRS {
            std::fs::create_dir_all(state.join(dir)).map_err(io(&state))?;
        }
        install_pause(&state.join("pause/rootfs")).map_err(io(&state))?;
        let tag = crate::helpers::tag(&state).map_err(io(&state))?;
        // Pods get user namespaces only where berth can id-map their image layers.
        let idmapped_layers = userns::probe(&config.root)
            .map_err(|reason| {
                tracing::info!(%reason, "no user namespaces for pods");
            })
            .is_ok();
        let mut runtimes = BTreeMap::new();
        for (name, path) in config.handlers() {
            let root = state.join("runtime").join(name);
            std::fs::create_dir_all(&root).map_err(io(&root))?;
            let runtime = open_runtime(name, path, root, &state, idmapped_layers)
                .with_helper_tag(&tag)
                .with_timeout(std::time::Duration::from_secs(
                    config.runtime.start_timeout_seconds,
                ));
            runtimes.insert(name.to_string(), runtime);
        }
        let cni = Cni::new(
            config.network.conf_dir.clone(),
            config.network.bin_dirs.clone(),
            state.join("cni/results"),
        )
        .with_helper_tag(&tag)
        .with_timeout(std::time::Duration::from_secs(
            config.network.plugin_timeout_seconds,
        ));
        let sandboxes = Sandboxes {
            state,
            records: RecordCache::load(store)?,
            watched: Watched::default(),
            runtimes,
            default_handler: config.runtime.default_handler.clone(),
            cni,
            helper_tag: tag,
        };
        Ok(sandboxes)
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.state.join("sandboxes").join(id)
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.state.join("netns").join(id)
    }

    /// Where the user namespace of a pod that has one of its own is pinned.
    pub fn userns_path(&self, id: &str) -> PathBuf {
        self.state.join("userns").join(id)
    }

    pub fn pause_rootfs(&self) -> PathBuf {
        self.state.join("pause/rootfs")
    }

    /// Where host-local keeps the default network's leases.
    pub fn lease_dir(&self) -> PathBuf {
        self.state.join("cni/networks")
    }

    /// The handlers by name, with their runtimes (the default one under its own name).
    pub fn handlers(&self) -> impl Iterator<Item = (&str, &Runtime)> {
        self.runtimes.iter().map(|(name, r)| (name.as_str(), r))
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

    /// Tells `observer` of every change of a record from now on (see
    /// [`crate::store::RecordCache`]).
    pub fn observe(&self, observer: crate::store::Observer<SandboxRecord>) {
        if self.records.observe(observer).is_err() {
            tracing::warn!("the sandbox records have an observer already");
        }
    }

    /// The sandbox with this id, or with this unique id prefix.
    pub fn find(&self, id: &str) -> Option<SandboxRecord> {
        self.records.get(id)
    }

    pub fn list(&self) -> Vec<SandboxRecord> {
        self.records.all()
    }

    /// `f` of every record, in id order, once the Ready ones are brought up to date (see
    /// [`Sandboxes::refresh`]); one whose pause is watched ([`Sandboxes::watch`]) is up to
    /// date already. Only the records looked at are cloned on the way.
    pub fn list_map<T>(
        &self,
        f: impl FnMut(&SandboxRecord) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        let unwatched = self.watched.with(|watched| {
            self.records.filter_map(|r| {
                (r.state == SandboxState::Ready && !watched(&r.id)).then(|| r.clone())
            })
        });
        for record in unwatched {
            self.refresh(record)?;
        }
        Ok(self.records.filter_map(f))
    }

    /// The record brought up to date, unless it is a ready sandbox whose pause is
    /// watched: its end is recorded as it happens. (Its netns pin is not looked at
    /// then: only a stop, which makes the sandbox NotReady first, removes it.)
    pub fn current(&self, record: SandboxRecord) -> Result<SandboxRecord, StoreError> {
        if record.state == SandboxState::Ready && self.watched.contains(&record.id) {
            Ok(record)
        } else {
            self.refresh(record)
        }
    }

    /// Marks sandbox `id`'s pause as watched while the mark lives: its end is heard of as
    /// it happens, and listings leave its record as it is.
    pub fn watch(&self, id: &str) -> WatchMark {
        self.watched.mark(id)
    }

    /// The record, corrected if its pause process has died since (OOM kill, a kill from
    /// outside, a reboot): a Ready sandbox without its pause is NotReady, and the kubelet
    /// then replaces it. As for containers, the correction is stored only if nobody
    /// changed or removed the record meanwhile; otherwise their newer record is returned.
    pub fn refresh(&self, mut record: SandboxRecord) -> Result<SandboxRecord, StoreError> {
        if record.state == SandboxState::Ready && !pause_alive(&record) {
            tracing::warn!(sandbox = %record.id, pid = record.pid, "the pause process is gone; sandbox not ready");
            let before = record.clone();
            record.state = SandboxState::NotReady;
            return self.records.correct(&before, record);
        }
        Ok(record)
    }

    /// Sandbox ids that have files, a netns pin or a CNI cache but no record: what a
    /// daemon that died in the middle of a RunPodSandbox left behind.
    pub fn orphans(&self) -> Vec<String> {
        let mut ids = std::collections::BTreeSet::new();
        for dir in ["sandboxes", "netns", "userns", "cni/results"] {
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
                if is_id && !self.records.contains(&name) {
                    ids.insert(name);
                }
            }
        }
        ids.into_iter().collect()
    }

    /// What the daemon's helpers carry ([`crate::helpers`]).
    pub fn helper_tag(&self) -> &std::ffi::OsStr {
        &self.helper_tag
    }

    /// Every configured runtime, for clean-ups that do not know the handler.
    pub fn runtimes(&self) -> impl Iterator<Item = &Runtime> {
        self.runtimes.values()
    }

    /// Stores a new or changed record.
    pub fn save(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.records.save(record)
    }

    /// Forgets a sandbox and frees its name.
    pub fn forget(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.records.forget(record)
    }

    /// Reserves a pod name for `id`; an error naming the pod that holds it already.
    pub fn reserve_name(&self, key: &str, id: &str) -> Result<(), crate::store::NameTaken> {
        self.records.reserve_name(key, id)
    }

    pub fn release_name(&self, key: &str) {
        self.records.release_name(key)
    }

    /// The lock that serializes operations on one sandbox.
    pub fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.records.lock(id)
    }
}

impl Named for SandboxRecord {
    fn name_key(&self) -> String {
        name_key(&self.name, &self.namespace, &self.uid, self.attempt)
    }
}

/// Whether the sandbox's pause process still runs: its pid is alive (not a zombie) and,
/// for a pod with its own network, still in the pod's pinned namespace (so a reused pid
/// is not mistaken for it).
pub fn pause_alive(record: &SandboxRecord) -> bool {
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

/// Handler `name`'s runtime at `path`, with state under `root` and what it supports: its
/// features document, then a test mount where the document says nothing of recursive
/// read-only mounts. User namespaces need `idmapped_layers` too.
fn open_runtime(
    name: &str,
    path: &Path,
    root: PathBuf,
    state: &Path,
    idmapped_layers: bool,
) -> Runtime {
    let binary = crate::oci::resolve_binary(path).unwrap_or_else(|| path.to_path_buf());
    let mut features = crate::oci::features::probe(&binary).unwrap_or_else(|reason| {
        tracing::warn!(handler = name, %reason, "cannot tell what the runtime supports");
        crate::oci::runtime::Features::default()
    });
    let kind = crate::oci::features::kind(&binary);
    features.user_namespaces &= idmapped_layers && kind.joins_user_namespaces();
    if !features.recursive_read_only && crate::oci::features::kernel_has_rro() {
        // Its document does not say: a test mount does.
        let dir = state.join("probe").join(name);
        features.recursive_read_only = crate::oci::features::probe_recursive_read_only(
            &binary,
            &root,
            &dir,
            &state.join("pause/rootfs/pause"),
        )
        .unwrap_or_else(|reason| {
            tracing::warn!(handler = name, %reason, "the recursive read-only probe failed");
            false
        });
    }
    tracing::info!(
        handler = name,
        binary = %binary.display(),
        ?kind,
        recursive_read_only_mounts = features.recursive_read_only,
        user_namespaces = features.user_namespaces,
        runtime_idmap_mounts = features.idmap_mounts,
        "runtime handler"
    );
    Runtime::new(binary, root)
        .with_kind(kind)
        .with_features(features)
}
