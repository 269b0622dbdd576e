//! The CRI service: berth's domain logic, one file per RPC family, each an
//! `impl CriService` block. The gRPC layer (`grpc/`) converts and delegates to it.
//!
//! | file | RPCs |
//! | --- | --- |
//! | `runtime_status.rs` | Version, Status |
//! | `runtime_config.rs` | RuntimeConfig, UpdateRuntimeConfig |
//! | `sandbox_run.rs` | RunPodSandbox |
//! | `sandbox_stop.rs` | StopPodSandbox, RemovePodSandbox |
//! | `sandbox_status.rs` | PodSandboxStatus, ListPodSandbox, StreamPodSandboxes |
//! | `sandbox_port_forward.rs` | PortForward |
//! | `container_create.rs` | CreateContainer |
//! | `container_start.rs` | StartContainer |
//! | `container_stop.rs` | StopContainer, RemoveContainer |
//! | `container_status.rs` | ContainerStatus, ListContainers, StreamContainers |
//! | `container_update.rs` | UpdateContainerResources, UpdatePodSandboxResources |
//! | `container_log.rs` | ReopenContainerLog |
//! | `container_exec.rs` | ExecSync, Exec |
//! | `container_attach.rs` | Attach |
//! | `container_events.rs` | GetContainerEvents (and the exit watchers behind it) |
//! | `stats.rs` | ContainerStats, PodSandboxStats and their lists, ListMetricDescriptors, ListPodSandboxMetrics |
//! | `image_pull.rs`, `image_status.rs`, `image_remove.rs` | PullImage; ImageStatus, ListImages; RemoveImage, ImageFsInfo |
//! | `image_volumes.rs` | the image volumes of CreateContainer and RemovePodSandbox |
//! | `recovery.rs` | the start-up sweep after a crash, before serving |
//!
//! This file holds the service's state and what the families share: the lookups of the
//! objects a request names, the stream URL of Exec, Attach and PortForward and the
//! dispatch of their clients' connections, the naming of a resource field, the wiring
//! of record changes to events (`observe_changes`) and what the daemon's metrics
//! endpoint reads ([`CriService::metrics_snapshot`]).
//!
//! The rules the RPCs follow (how a container is stopped, what a failed or cut-short
//! start leaves) are named functions beside them, unit-tested without root; the RPCs
//! themselves are tested against the real runtimes in `tests/`.

mod container_attach;
mod container_create;
mod container_events;
mod container_exec;
mod container_log;
mod container_start;
mod container_status;
mod container_stop;
mod container_update;
mod image_pull;
mod image_remove;
mod image_status;
mod image_volumes;
mod recovery;
mod runtime_config;
mod runtime_status;
mod sandbox_port_forward;
mod sandbox_run;
mod sandbox_status;
mod sandbox_stop;
mod stats;

pub use image_status::to_cri as image_to_cri;
pub use runtime_status::{NETWORK_READY, RUNTIME_API_VERSION, RUNTIME_NAME, RUNTIME_READY};

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::container::Containers;
use crate::error::{Error, Result};
use crate::image::ImageManager;
use crate::oci::runc::Runtime;
use crate::sandbox::Sandboxes;
use crate::spec::container::{ResourceError, ResourceField};
use crate::store::{ContainerRecord, ContainerState, SandboxRecord, Store};
use crate::streaming::StreamRequest;
use crate::streaming::connection::Connection;

/// The store's `meta` key for the pod CIDR given by `UpdateRuntimeConfig`.
const META_POD_CIDR: &str = "pod_cidr";

/// The state shared by every CRI method.
#[derive(Debug)]
pub struct CriService {
    config: Arc<Config>,
    store: Arc<Store>,
    images: Arc<ImageManager>,
    sandboxes: Arc<Sandboxes>,
    containers: Arc<Containers>,
    /// The node's pod CIDR(s) as the kubelet last gave them, comma separated; cached
    /// from the store.
    pod_cidr: RwLock<Option<String>>,
    /// The host's cgroup layout, read once at start-up.
    cgroups: crate::cgroups::Layout,
    /// Exec, Attach and PortForward requests waiting for their clients.
    stream_tokens: Arc<crate::streaming::tokens::Tokens<crate::streaming::StreamRequest>>,
    /// `http://host:port` of the streaming server, once it listens.
    streaming_base: std::sync::OnceLock<String>,
    /// The previous CPU sample of each pod and container, for `usage_nano_cores`.
    cpu_rates: crate::stats::CpuRates,
    /// The GetContainerEvents subscribers.
    events: crate::events::Bus,
    /// The image volumes mounted for containers being created (container id → mounts),
    /// which no record names yet; held while a pod's image volume is mounted or released
    /// ([`image_volumes`]).
    image_volumes: std::sync::Mutex<std::collections::HashMap<String, Vec<std::path::PathBuf>>>,
    /// The records' changes, until [`CriService::start_events`] takes them.
    changes: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::events::Change>>>,
}

impl CriService {
    /// Builds the service over an opened store, rebuilding its caches from it.
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> Result<Self> {
        let pod_cidr = store.get_meta(META_POD_CIDR)?;
        let images = Arc::new(ImageManager::open(
            &config.root,
            config.registries.clone(),
            store.clone(),
        )?);
        let sandboxes = Arc::new(Sandboxes::open(&config, store.clone())?);
        let network = &config.network;
        let subnet = pod_cidr
            .as_deref()
            .and_then(|c| c.split(',').next())
            .unwrap_or(&network.default_subnet);
        if let Some(file) = crate::network::cni::ensure_default_config(
            &network.conf_dir,
            &network.default_bridge,
            subnet,
            &sandboxes.lease_dir(),
        )
        .map_err(Error::io(
            "writing the default CNI config in",
            &network.conf_dir,
        ))? {
            tracing::info!(file = %file.display(), subnet, "wrote the default CNI network config");
        }
        let monitor = crate::monitor::install::install(&config.state).map_err(Error::io(
            "installing the monitor program",
            &crate::monitor::install::program_path(&config.state),
        ))?;
        let containers = Arc::new(Containers::open(
            &config.root,
            &config.state,
            monitor,
            store.clone(),
        )?);
        let cgroups = crate::cgroups::Layout::detect().map_err(Error::io(
            "reading the cgroup hierarchies from",
            std::path::Path::new("/proc/self/mountinfo"),
        ))?;
        tracing::info!("{}", cgroups.summary());
        let stream_tokens = Arc::new(crate::streaming::tokens::Tokens::new(
            std::time::Duration::from_secs(config.streaming.token_ttl_seconds),
            crate::streaming::tokens::MAX_TOKENS,
        ));
        let (changes, changes_out) = tokio::sync::mpsc::unbounded_channel();
        observe_changes(&sandboxes, &containers, changes);
        let events = crate::events::Bus::new(config.events.subscriber_buffer);
        Ok(CriService {
            config,
            store,
            images,
            sandboxes,
            containers,
            pod_cidr: RwLock::new(pod_cidr),
            cgroups,
            stream_tokens,
            streaming_base: std::sync::OnceLock::new(),
            cpu_rates: crate::stats::CpuRates::default(),
            events,
            image_volumes: std::sync::Mutex::new(std::collections::HashMap::new()),
            changes: std::sync::Mutex::new(Some(changes_out)),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The tokens of the streaming server.
    pub fn stream_tokens(
        &self,
    ) -> Arc<crate::streaming::tokens::Tokens<crate::streaming::StreamRequest>> {
        self.stream_tokens.clone()
    }

    /// The image side, for the admin service (image import).
    pub fn images(&self) -> &Arc<ImageManager> {
        &self.images
    }
}

/// The lookups every RPC shares: the object a request names (an id or a unique
/// prefix), with the error the request gets when it is missing or in the wrong state.
impl CriService {
    /// The sandbox a request's `pod_sandbox_id` names (an id or unique prefix), its state
    /// brought up to date.
    pub(crate) fn sandbox(&self, id: &str) -> Result<SandboxRecord> {
        Ok(self.sandboxes.refresh(self.sandbox_as_stored(id)?)?)
    }

    /// The sandbox `pod_sandbox_id` names, its record as it is.
    pub(crate) fn sandbox_as_stored(&self, id: &str) -> Result<SandboxRecord> {
        if id.is_empty() {
            return Err(Error::invalid("pod_sandbox_id", "must not be empty"));
        }
        self.sandboxes.find(id).ok_or_else(|| Error::NotFound {
            kind: "pod sandbox",
            id: id.to_string(),
        })
    }

    /// The same, and an error unless it is ready.
    pub(crate) fn ready_sandbox(&self, id: &str) -> Result<SandboxRecord> {
        let sandbox = self.sandbox(id)?;
        if !sandbox.state.can_create_containers() {
            return Err(Error::WrongState {
                kind: "pod sandbox",
                id: sandbox.id,
                reason: "it is not ready".to_string(),
            });
        }
        Ok(sandbox)
    }

    /// The container, and an error unless it runs.
    pub(crate) fn running_container(&self, id: &str) -> Result<ContainerRecord> {
        let record = self.container(id)?;
        if record.state != ContainerState::Running {
            return Err(Error::WrongState {
                kind: "container",
                id: record.id,
                reason: "it is not running".to_string(),
            });
        }
        Ok(record)
    }

    pub(crate) fn container(&self, id: &str) -> Result<ContainerRecord> {
        Ok(self.containers.refresh(self.container_as_stored(id)?)?)
    }

    /// The container a request's `container_id` names (an id or unique prefix), its
    /// record as it is.
    pub(crate) fn container_as_stored(&self, id: &str) -> Result<ContainerRecord> {
        if id.is_empty() {
            return Err(Error::invalid("container_id", "must not be empty"));
        }
        self.containers.get(id).ok_or_else(|| Error::NotFound {
            kind: "container",
            id: id.to_string(),
        })
    }

    pub(crate) fn runtime_of(&self, record: &ContainerRecord) -> Result<Runtime> {
        self.sandboxes
            .runtime(&record.runtime_handler)
            .cloned()
            .ok_or_else(|| Error::WrongState {
                kind: "container",
                id: record.id.clone(),
                reason: format!(
                    "its runtime handler {:?} is not configured",
                    record.runtime_handler
                ),
            })
    }
}

/// The streaming RPCs' shared part: the URL under which a request waits for its client,
/// and the dispatch of the client's upgraded connection to the RPC family that serves it.
impl CriService {
    /// The streaming server's base URL, once it listens.
    pub fn set_streaming_base(&self, base: String) {
        let _ = self.streaming_base.set(base);
    }

    fn stream_url(&self, request: StreamRequest) -> Result<String> {
        let kind = request.kind();
        let target = request.target();
        let base = self.streaming_base.get().ok_or_else(|| {
            Error::Unavailable(format!(
                "{} of {target}: the streaming server is not running",
                kind.path()
            ))
        })?;
        let token = self
            .stream_tokens
            .insert(request)
            .map_err(|e| Error::Unavailable(format!("{} of {target}: {e}", kind.path())))?;
        Ok(format!("{base}/{}/{token}", kind.path()))
    }

    /// Serves one upgraded streaming connection.
    pub async fn serve_stream(self: Arc<Self>, request: StreamRequest, connection: Connection) {
        let options = request.options().unwrap_or_default();
        match request {
            StreamRequest::Attach(request) => self.serve_attach(request, options, connection).await,
            StreamRequest::Exec(request) => self.serve_exec(request, options, connection).await,
            StreamRequest::PortForward(request) => {
                self.serve_port_forward(request, connection).await
            }
        }
    }
}

/// At least one stream, and no stderr with a terminal (it is merged into stdout).
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<()> {
    if !(stdin || stdout || stderr) {
        return Err(Error::invalid(
            "stdin, stdout, stderr",
            "one of them must be set",
        ));
    }
    if tty && stderr {
        return Err(Error::invalid(
            "tty, stderr",
            "tty and stderr cannot both be true",
        ));
    }
    Ok(())
}

/// The daemon's own metrics endpoint reads the service here.
impl CriService {
    /// What a metrics scrape reads: pods and containers by state, the monitors running,
    /// the event subscribers.
    pub fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let pods = self.sandboxes.list();
        let ready = pods
            .iter()
            .filter(|p| p.state == crate::store::SandboxState::Ready)
            .count() as i64;
        let states = self
            .containers
            .list_map(|r| Some((r.state, r.monitor_pid)))
            .unwrap_or_default();
        let count =
            |state: ContainerState| states.iter().filter(|(s, _)| *s == state).count() as i64;
        let monitors = states
            .iter()
            .filter(|(s, pid)| *s == ContainerState::Running && crate::oci::process_running(*pid))
            .count() as i64;
        crate::metrics::Snapshot {
            pods: vec![("ready", ready), ("notready", pods.len() as i64 - ready)],
            containers: vec![
                ("created", count(ContainerState::Created)),
                ("running", count(ContainerState::Running)),
                ("exited", count(ContainerState::Exited)),
            ],
            monitors,
            subscribers: self.events.subscribers() as i64,
        }
    }
}

/// Sends every change of a sandbox or container record to `changes`, as the events it is.
fn observe_changes(
    sandboxes: &Arc<Sandboxes>,
    containers: &Containers,
    changes: tokio::sync::mpsc::UnboundedSender<crate::events::Change>,
) {
    let to_sandboxes = changes.clone();
    // A container's change carries its pod as it is then: when the event is sent, the
    // pod may be gone. (The sandbox cache is only read here, under the container cache's
    // locks; nothing under the sandbox cache's locks reads the containers.)
    let sandboxes_now = sandboxes.clone();
    sandboxes.observe(Box::new(move |before, after| {
        for change in crate::events::sandbox_changes(before, after) {
            // Gone: the daemon is shutting down.
            let _ = to_sandboxes.send(change);
        }
    }));
    containers.observe(Box::new(move |before, after| {
        let pod = |id: &str| sandboxes_now.find(id);
        for change in crate::events::container_changes(before, after, pod) {
            let _ = changes.send(change);
        }
    }));
}

/// Which request a resources message came in, for the field an error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    /// CreateContainer's `config.linux.resources`.
    Create,
    /// UpdateContainerResources' `linux`.
    Update,
    /// UpdatePodSandboxResources' `overhead` and `resources`.
    PodOverhead,
    PodResources,
}

/// InvalidArgument for `error`, naming its field where request `within` has it.
fn refused(error: ResourceError, within: In) -> Error {
    use ResourceField::*;
    let field = match (within, error.field) {
        (In::Create, Unified) => "config.linux.resources.unified",
        (In::Create, HugepageLimits) => "config.linux.resources.hugepage_limits",
        (In::Create, MemorySwapLimit) => "config.linux.resources.memory_swap_limit_in_bytes",
        (In::Update, Unified) => "linux.unified",
        (In::Update, HugepageLimits) => "linux.hugepage_limits",
        (In::Update, MemorySwapLimit) => "linux.memory_swap_limit_in_bytes",
        (In::PodOverhead, Unified) => "overhead.unified",
        (In::PodOverhead, HugepageLimits) => "overhead.hugepage_limits",
        (In::PodOverhead, MemorySwapLimit) => "overhead.memory_swap_limit_in_bytes",
        (In::PodResources, Unified) => "resources.unified",
        (In::PodResources, HugepageLimits) => "resources.hugepage_limits",
        (In::PodResources, MemorySwapLimit) => "resources.memory_swap_limit_in_bytes",
    };
    Error::invalid(field, error.reason)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The field an InvalidArgument error names.
    pub(crate) fn field_of(err: Error) -> &'static str {
        match err {
            Error::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn a_stream_request_needs_a_stream_and_no_stderr_beside_a_terminal() {
        assert!(check_streams(false, true, false, false).is_ok());
        assert!(check_streams(true, true, false, true).is_ok());
        let none = check_streams(false, false, false, true).unwrap_err();
        assert!(
            none.to_string().contains("one of them must be set"),
            "{none}"
        );
        let both = check_streams(false, true, true, true).unwrap_err();
        assert!(
            matches!(
                both,
                Error::InvalidField {
                    field: "tty, stderr",
                    ..
                }
            ),
            "{both}"
        );
    }

    #[test]
    fn a_resource_error_names_the_field_of_the_request_it_came_in() {
        let error = |field| ResourceError {
            field,
            reason: "too big".into(),
        };
        let named = |within, field| field_of(refused(error(field), within));
        assert_eq!(
            named(In::Create, ResourceField::Unified),
            "config.linux.resources.unified"
        );
        assert_eq!(
            named(In::Update, ResourceField::HugepageLimits),
            "linux.hugepage_limits"
        );
        assert_eq!(
            named(In::PodOverhead, ResourceField::MemorySwapLimit),
            "overhead.memory_swap_limit_in_bytes"
        );
        assert_eq!(
            named(In::PodResources, ResourceField::Unified),
            "resources.unified"
        );
    }
}
