//! The records kept in the metadata store, one table per kind.
//!
//! Fields are added by the issues that need them; `serde(default)` lets a newer berth read
//! what an older one wrote.

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::Record;

/// The state of a pod sandbox (api.proto PodSandboxState).
///
/// ```text
///   RunPodSandbox ──► Ready ──StopPodSandbox──► NotReady ──RemovePodSandbox──► (gone)
///                       └──────────── RemovePodSandbox (stops first) ───────────┘
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    #[default]
    Ready,
    NotReady,
}

impl SandboxState {
    /// Whether stopping has work to do.
    pub fn can_stop(self) -> bool {
        self == SandboxState::Ready
    }

    /// Whether new containers may be created in the sandbox.
    pub fn can_create_containers(self) -> bool {
        self == SandboxState::Ready
    }
}

/// A pod sandbox: what is needed to rebuild the daemon's view of it after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    /// Creation time, nanoseconds since the Unix epoch (the CRI's unit).
    pub created_at_ns: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: SandboxState,
    /// The CRI runtime handler as requested ("" for the default).
    pub runtime_handler: String,
    /// The `PodSandboxConfig` as received, protobuf-encoded then base64.
    pub config: String,
    /// The pinned network namespace; none for a host-network pod or once stopped.
    pub netns: Option<String>,
    /// The pod's addresses, primary first.
    pub ips: Vec<String>,
    /// The pause process, as seen from the host.
    pub pid: i32,
    pub cgroups_path: String,
    /// With a `sandbox_image`: the image layers under the pause rootfs, kept on disk
    /// while the sandbox exists.
    pub rootfs_layers: Vec<String>,
}

impl SandboxRecord {
    /// The cgroup path of the pod's container `id`, as CreateContainer chooses it: beside
    /// the pause's, under the pod's parent.
    pub fn container_cgroup(&self, id: &str) -> String {
        let parent = std::path::Path::new(&self.cgroups_path)
            .parent()
            .unwrap_or(std::path::Path::new("/berth"));
        parent.join(id).display().to_string()
    }
}

impl Record for SandboxRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("sandboxes");
    const KIND: &'static str = "sandbox";
    fn id(&self) -> &str {
        &self.id
    }
}

/// The state of a container (api.proto ContainerState).
///
/// ```text
///   CreateContainer ──► Created ──StartContainer──► Running ──(exit, StopContainer)──► Exited
///                               └─StartContainer fails──► Exited (StartError)
///   RemoveContainer from any state (a running container is killed first); stopping a
///   created container does nothing (it has no process until it starts)
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    #[default]
    Created,
    Running,
    Exited,
}

impl ContainerState {
    pub fn can_start(self) -> bool {
        self == ContainerState::Created
    }

    /// Whether the container has a process that may still be alive: a created container
    /// has none yet (the runtime runs it at StartContainer).
    pub fn is_live(self) -> bool {
        self == ContainerState::Running
    }
}

/// A container of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the request named it.
    pub image: String,
    /// The image id (config digest).
    pub image_ref: String,
    /// The diff IDs of the image layers under the container's rootfs: they stay on disk
    /// while the container exists, even if its image is removed.
    pub layers: Vec<String>,
    /// Its image volumes: the index of each in the config's mounts, and the id of the
    /// image mounted there.
    pub image_volumes: Vec<(usize, String)>,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: ContainerState,
    pub exit_code: i32,
    /// Completed, Error, OOMKilled or StartError once exited.
    pub reason: String,
    /// What else ContainerStatus says of the exit (why its code is not known, why the
    /// start failed).
    pub message: String,
    /// The `ContainerConfig` as received, protobuf-encoded then base64.
    pub config: String,
    /// The log file: the sandbox's log directory joined with the config's log path.
    pub log_path: String,
    pub runtime_handler: String,
    /// The container's init process, as seen from the host.
    pub pid: i32,
    /// Its monitor, whose end without an exit file means the exit is not known.
    pub monitor_pid: i32,
    /// The image's STOPSIGNAL, if any.
    pub stop_signal: String,
    /// The user the process runs as, resolved at creation.
    pub uid: u32,
    pub gid: u32,
    /// The process's group list (the primary group first).
    pub supplemental_groups: Vec<u32>,
}

impl Record for ContainerRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("containers");
    const KIND: &'static str = "container";
    fn id(&self) -> &str {
        &self.id
    }
}

/// An image in the content store, keyed by its id: the digest of its config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// `registry/repository:tag`, each naming no other image.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:<manifest or index digest>`.
    pub repo_digests: Vec<String>,
    /// Config plus compressed layers, in bytes, as the registry serves them.
    pub size: u64,
    /// The platform manifest, and the index it was chosen from if any.
    pub manifest: String,
    pub index: Option<String>,
    /// Diff IDs, bottom layer first.
    pub layers: Vec<String>,
    /// The config's `User`, for ImageStatus uid/username.
    pub user: String,
    /// Never removed by RemoveImage's garbage collection of unused images (pause image).
    pub pinned: bool,
    pub created_at_ns: i64,
}

impl Record for ImageRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("images");
    const KIND: &'static str = "image";
    fn id(&self) -> &str {
        &self.id
    }
}

/// An unpacked layer, keyed by its diff ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayerRecord {
    pub diff_id: String,
    /// Bytes of file content and number of inodes, for ImageFsInfo.
    pub bytes: u64,
    pub inodes: u64,
    pub created_at_ns: i64,
}

impl Record for LayerRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("layers");
    const KIND: &'static str = "layer";
    fn id(&self) -> &str {
        &self.diff_id
    }
}
