//! RunPodSandbox: the pod's directory and files, its network namespace, then CNI and the
//! pause container side by side (both need only the namespace), then the record.
//!
//! Every step records its undo in a [`Rollback`]; a failure anywhere undoes what was done,
//! so a failed RunPodSandbox leaves no netns, veth, IP lease, pause process, mount or
//! record. The work runs as its own task: a client that goes away mid-call cannot leave
//! a half-made pod either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::CriService;
use crate::container::security::clamp_oom_score_adj;
use crate::error::{Error, Result};
use crate::network::cni::{PodNetwork, PortMapping, protocol_name};
use crate::oci::runc::Runtime;
use crate::oci::runtime::OciRuntime;
use crate::oci::teardown::stop_and_delete;
use crate::proto::{NamespaceMode as CriNamespaceMode, PodSandboxConfig, RunPodSandboxRequest};
use crate::rollback::Rollback;
use crate::sandbox::{files, name_key, netns, userns};
use crate::spec::{NamespaceMode, PauseProcess, SandboxSpec, sandbox_spec};
use crate::store::{SandboxRecord, SandboxState};

/// The OOM score the kubelet and containerd give a pause process; clamped to what this
/// process may set.
const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// A sandbox image's rootfs, mounted for one pod, and how to run it.
struct ImageRoot {
    rootfs: std::path::PathBuf,
    process: PauseProcess,
    layers: Vec<String>,
}

/// A validated RunPodSandbox request.
struct PodRequest {
    id: String,
    name_key: String,
    config: PodSandboxConfig,
    handler: String,
    runtime: Runtime,
    host_network: bool,
    host_pid: bool,
    host_ipc: bool,
    cgroups_path: String,
    sysctls: BTreeMap<String, String>,
    port_mappings: Vec<PortMapping>,
    /// The pod's own user namespace (mode POD), if it asks for one.
    userns: Option<userns::Mappings>,
}

impl CriService {
    /// Runs a pod sandbox and returns its id.
    pub async fn run_pod_sandbox(
        self: &Arc<Self>,
        request: RunPodSandboxRequest,
    ) -> Result<String> {
        let pod = self.validate_pod(request)?;
        if let Err(taken) = self.sandboxes.reserve_name(&pod.name_key, &pod.id) {
            return Err(Error::AlreadyExists {
                kind: "pod sandbox",
                name: pod.name_key.clone(),
                id: taken.holder,
            });
        }
        let service = self.clone();
        // The name is released by the task itself: a client that gives up mid-call drops
        // this future, not the task.
        tokio::spawn(async move {
            let name_key = pod.name_key.clone();
            let result = service.clone().create_sandbox(pod).await;
            if result.is_err() {
                service.sandboxes.release_name(&name_key);
            }
            result
        })
        .await?
    }

    fn validate_pod(&self, request: RunPodSandboxRequest) -> Result<PodRequest> {
        let config = request
            .config
            .ok_or_else(|| Error::invalid("config", "missing"))?;
        let metadata = config
            .metadata
            .as_ref()
            .ok_or_else(|| Error::invalid("config.metadata", "missing"))?;
        check_metadata(metadata)?;
        let handler = request.runtime_handler;
        let runtime = self.sandboxes.runtime(&handler).cloned().ok_or_else(|| {
            Error::invalid(
                "runtime_handler",
                format!("no runtime handler {handler:?} is configured"),
            )
        })?;
        if config.hostname.len() > 64
            || config
                .hostname
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid("config.hostname", "not a host name"));
        }
        if let Some(dns) = &config.dns_config {
            files::validate_dns(dns).map_err(|r| Error::invalid("config.dns_config", r))?;
        }
        let linux = config.linux.clone().unwrap_or_default();
        let options = linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let node = CriNamespaceMode::Node as i32;
        let id = crate::ids::random_id();
        let cgroups_path = cgroups_path(&linux.cgroup_parent, &id)
            .map_err(|r| Error::invalid("config.linux.cgroup_parent", r))?;
        let host_network = options.network == node;
        let host_ipc = options.ipc == node;
        let mut sysctls = BTreeMap::new();
        for (key, value) in &linux.sysctls {
            check_sysctl(key, value, host_network, host_ipc)
                .map_err(|reason| Error::invalid("config.linux.sysctls", reason))?;
            sysctls.insert(key.clone(), value.clone());
        }
        if !config.log_directory.is_empty() && !Path::new(&config.log_directory).is_absolute() {
            // A relative one would put the logs wherever the daemon happens to run.
            return Err(Error::invalid(
                "config.log_directory",
                format!("{:?} is not an absolute path", config.log_directory),
            ));
        }
        let port_mappings = port_mappings(&config)?;
        let userns = pod_user_namespace(&options, &runtime, &handler)?;
        Ok(PodRequest {
            name_key: name_key(
                &metadata.name,
                &metadata.namespace,
                &metadata.uid,
                metadata.attempt,
            ),
            id,
            host_network,
            host_pid: options.pid == node,
            host_ipc,
            config,
            handler,
            runtime,
            cgroups_path,
            sysctls,
            port_mappings,
            userns,
        })
    }

    async fn create_sandbox(self: Arc<Self>, pod: PodRequest) -> Result<String> {
        let mut undo = Rollback::default();
        match self.create_sandbox_steps(&pod, &mut undo).await {
            Ok(record) => {
                undo.commit();
                tracing::info!(sandbox = %record.id, pod = %pod.name_key, ips = ?record.ips, "pod sandbox ready");
                Ok(record.id)
            }
            Err(err) => {
                undo.run().await;
                Err(err)
            }
        }
    }

    async fn create_sandbox_steps(
        &self,
        pod: &PodRequest,
        undo: &mut Rollback,
    ) -> Result<SandboxRecord> {
        let id = pod.id.as_str();
        let dir = self.make_pod_files(pod, undo)?;
        let netns_path = self.make_namespaces(pod, undo)?;
        // CNI and the pause container need only the namespace: run them side by side.
        let metadata = pod.config.metadata.clone().unwrap_or_default();
        let network = netns_path.as_ref().map(|pin| PodNetwork {
            id,
            netns: pin,
            name: &metadata.name,
            namespace: &metadata.namespace,
            uid: &metadata.uid,
            port_mappings: &pod.port_mappings,
        });
        let attach = async {
            match &network {
                Some(network) => self.sandboxes.cni.attach(network).await.map(Some),
                None => Ok(None),
            }
        };
        let image_root = self.prepare_sandbox_image(&dir, undo).await?;
        let (attached, pause) = tokio::join!(
            attach,
            self.start_pause(pod, &dir, netns_path.as_deref(), image_root.as_ref())
        );
        if let (Ok(Some(_)), Some(pin)) = (&attached, &netns_path) {
            self.undo_attachment(pod, &metadata, pin, undo);
        }
        if pause.is_ok() {
            let runtime = pod.runtime.clone();
            let pod_id = id.to_string();
            undo.push("pause container", move || async move {
                stop_and_delete(&runtime, &pod_id)
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        let ips: Vec<String> = attached?
            .map(|a| a.ips.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let pid = pause?;
        files::write_hosts(&dir.join("hosts"), &pod.config.hostname, &ips)
            .map_err(Error::io("hosts file", &dir))?;
        let record = SandboxRecord {
            id: id.to_string(),
            name: metadata.name.clone(),
            namespace: metadata.namespace.clone(),
            uid: metadata.uid.clone(),
            attempt: metadata.attempt,
            created_at_ns: crate::clock::now_ns(),
            labels: pod.config.labels.clone().into_iter().collect(),
            annotations: pod.config.annotations.clone().into_iter().collect(),
            state: SandboxState::Ready,
            runtime_handler: pod.handler.clone(),
            config: crate::store::cri::encode_config(&pod.config),
            netns: netns_path.map(|p| p.display().to_string()),
            ips,
            pid,
            cgroups_path: pod.cgroups_path.clone(),
            rootfs_layers: image_root.map(|r| r.layers).unwrap_or_default(),
        };
        self.sandboxes.save(&record)?;
        Ok(record)
    }

    /// The pod's directory and the files its containers share (hostname, resolv.conf,
    /// the /dev/shm tmpfs unless it shares the host's IPC); returns the directory.
    fn make_pod_files(&self, pod: &PodRequest, undo: &mut Rollback) -> Result<PathBuf> {
        let dir = self.sandboxes.dir(&pod.id);
        std::fs::create_dir(&dir).map_err(Error::io("sandbox directory", &dir))?;
        let removed = dir.clone();
        undo.push("sandbox directory", move || async move {
            std::fs::remove_dir_all(&removed).map_err(|e| e.to_string())
        });
        files::write_hostname(&dir.join("hostname"), &pod.config.hostname)
            .map_err(Error::io("hostname file", &dir))?;
        files::write_resolv_conf(&dir.join("resolv.conf"), pod.config.dns_config.as_ref())
            .map_err(Error::io("resolv.conf", &dir))?;
        if !pod.host_ipc {
            let shm = dir.join("shm");
            std::fs::create_dir(&shm).map_err(Error::io("shm directory", &shm))?;
            files::mount_shm(&shm).map_err(Error::io("mounting /dev/shm on", &shm))?;
            undo.push("shm mount", move || async move {
                crate::mounts::unmount(&shm).map_err(|e| e.to_string())
            });
        }
        Ok(dir)
    }

    /// The pod's pinned namespaces: its user namespace when it has its own (the network
    /// namespace is made inside it, so that it belongs to the pod), and its network
    /// namespace unless it shares the host's; returns the network namespace's pin.
    fn make_namespaces(&self, pod: &PodRequest, undo: &mut Rollback) -> Result<Option<PathBuf>> {
        let id = pod.id.as_str();
        let netns_path = (!pod.host_network).then(|| self.sandboxes.netns_path(id));
        let userns_path = pod.userns.map(|_| self.sandboxes.userns_path(id));
        if let (Some(mappings), Some(user_pin)) = (&pod.userns, &userns_path) {
            userns::create(user_pin, netns_path.as_deref(), mappings)
                .map_err(Error::io("creating user namespace", user_pin))?;
            let pin = user_pin.clone();
            undo.push("user namespace", move || async move {
                netns::remove(&pin).map_err(|e| e.to_string())
            });
        } else if let Some(pin) = &netns_path {
            netns::create(pin).map_err(Error::io("creating network namespace", pin))?;
        }
        if let Some(pin) = &netns_path {
            let pin = pin.clone();
            undo.push("network namespace", move || async move {
                netns::remove(&pin).map_err(|e| e.to_string())
            });
        }
        Ok(netns_path)
    }

    /// Records the CNI DEL that undoes the pod's attachment in namespace `pin`.
    fn undo_attachment(
        &self,
        pod: &PodRequest,
        metadata: &crate::proto::PodSandboxMetadata,
        pin: &Path,
        undo: &mut Rollback,
    ) {
        let cni = self.sandboxes.cni.clone();
        let (pod_id, pin, ports) = (pod.id.clone(), pin.to_path_buf(), pod.port_mappings.clone());
        let (name, namespace, uid) = (
            metadata.name.clone(),
            metadata.namespace.clone(),
            metadata.uid.clone(),
        );
        undo.push("CNI attachment", move || async move {
            let network = PodNetwork {
                id: &pod_id,
                netns: &pin,
                name: &name,
                namespace: &namespace,
                uid: &uid,
                port_mappings: &ports,
            };
            cni.detach(&network).await.map_err(|e| e.to_string())
        });
    }

    /// With `sandbox_image` configured: the image (pulled on first use, and pinned)
    /// mounted as this pod's pause rootfs (read-only for the pause process).
    async fn prepare_sandbox_image(
        &self,
        dir: &Path,
        undo: &mut Rollback,
    ) -> Result<Option<ImageRoot>> {
        let Some(name) = self.config().sandbox_image.clone() else {
            return Ok(None);
        };
        let image = match self.images.lookup(&name)? {
            Some(image) => image,
            None => {
                self.images
                    .pull(&name, crate::image::Auth::Anonymous)
                    .await?;
                self.images.lookup(&name)?.ok_or_else(|| Error::NotFound {
                    kind: "sandbox image",
                    id: name.clone(),
                })?
            }
        };
        let image = if image.pinned {
            image
        } else {
            self.images.pin(&image)?
        };
        let run = self.images.run_config(&image)?;
        let rootfs = dir.join("rootfs");
        std::fs::create_dir(&rootfs).map_err(Error::io("pause rootfs", &rootfs))?;
        let layers = self.images.layer_paths(&image)?;
        crate::mounts::mount_overlay(&layers, &dir.join("rootfs-scratch"), &rootfs)
            .map_err(Error::io("mounting the sandbox image on", &rootfs))?;
        let mounted = rootfs.clone();
        undo.push("sandbox image rootfs", move || async move {
            crate::mounts::unmount(&mounted).map_err(|e| e.to_string())
        });
        let args: Vec<String> = run
            .entrypoint
            .unwrap_or_default()
            .into_iter()
            .chain(run.cmd.unwrap_or_default())
            .collect();
        if args.is_empty() {
            return Err(Error::WrongState {
                kind: "sandbox image",
                id: name,
                reason: "it names no entrypoint or command".to_string(),
            });
        }
        // Numeric users only: a pause image has no /etc/passwd to resolve names with.
        let mut ids = run.user.split(':').map(|part| part.parse::<u32>().ok());
        let default = PauseProcess::default();
        let (uid, gid) = match (ids.next().flatten(), ids.next().flatten()) {
            (Some(uid), Some(gid)) => (uid, gid),
            (Some(uid), None) => (uid, uid),
            _ => (default.uid, default.gid),
        };
        let cwd = if run.working_dir.is_empty() {
            "/".to_string()
        } else {
            run.working_dir
        };
        Ok(Some(ImageRoot {
            rootfs,
            process: PauseProcess {
                args,
                env: run.env.unwrap_or_default(),
                cwd,
                uid,
                gid,
            },
            layers: image.layers.clone(),
        }))
    }

    /// Writes the pause bundle and runs the pause container (`run --detach`: created and
    /// started by one runtime command); returns its pid.
    async fn start_pause(
        &self,
        pod: &PodRequest,
        dir: &Path,
        netns_path: Option<&Path>,
        image_root: Option<&ImageRoot>,
    ) -> Result<i32> {
        let own_rootfs = self.sandboxes.pause_rootfs();
        let mut own_process = PauseProcess::default();
        if let Some(mappings) = &pod.userns
            && (mappings.uids.to_host(own_process.uid).is_none()
                || mappings.gids.to_host(own_process.gid).is_none())
        {
            // A range too short for the pause user: the pod's root, unprivileged anyway.
            own_process.uid = 0;
            own_process.gid = 0;
        }
        let (rootfs, process) = match image_root {
            Some(root) => (root.rootfs.as_path(), &root.process),
            None => (own_rootfs.as_path(), &own_process),
        };
        let mode = |host: bool, own: NamespaceMode| if host { NamespaceMode::Host } else { own };
        let spec = sandbox_spec(&SandboxSpec {
            rootfs,
            process,
            hostname: &pod.config.hostname,
            network: match netns_path {
                Some(pin) => NamespaceMode::Join(pin.to_path_buf()),
                None => NamespaceMode::Host,
            },
            pid: mode(pod.host_pid, NamespaceMode::New),
            ipc: mode(pod.host_ipc, NamespaceMode::New),
            cgroups_path: &pod.cgroups_path,
            sysctls: &pod.sysctls,
            oom_score_adj: clamp_oom_score_adj(SANDBOX_OOM_SCORE_ADJ),
            user: pod
                .userns
                .map(|mappings| (self.sandboxes.userns_path(&pod.id), mappings)),
        })?;
        let config_path = dir.join("config.json");
        let json = serde_json::to_vec(&spec).map_err(|source| Error::Json {
            what: format!("encoding the pause spec of pod {}", pod.id),
            source,
        })?;
        std::fs::write(&config_path, json).map_err(Error::io("pause bundle", &config_path))?;
        let pid_file = dir.join("pause.pid");
        if let Err(err) = pod.runtime.run(&pod.id, dir, &pid_file).await {
            // A run that failed or was killed half-way may have left the container in
            // the runtime, or only its init in its cgroup.
            let _ = stop_and_delete(&pod.runtime, &pod.id).await;
            self.cgroups.remove(&pod.cgroups_path).await;
            return Err(err.into());
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(pid)
    }
}

/// The pod's own user namespace, when it asks for one (mode POD) and its handler can give
/// it; host namespaces do not go with it (the kubelet never asks for both).
fn pod_user_namespace(
    options: &crate::proto::NamespaceOption,
    runtime: &Runtime,
    handler: &str,
) -> Result<Option<userns::Mappings>> {
    let mappings = userns::requested(options.userns_options.as_ref())
        .map_err(|(field, reason)| Error::invalid(field, reason))?;
    let Some(mappings) = mappings else {
        return Ok(None);
    };
    let field = "config.linux.security_context.namespace_options.userns_options";
    if !runtime.features().user_namespaces {
        return Err(Error::invalid(
            field,
            format!("the runtime handler {handler:?} cannot give a pod its own user namespace"),
        ));
    }
    let node = CriNamespaceMode::Node as i32;
    if options.network == node || options.pid == node || options.ipc == node {
        return Err(Error::invalid(
            field,
            "a pod with its own user namespace cannot share the host's network, PID or IPC namespace",
        ));
    }
    Ok(Some(mappings))
}

/// The pod's name, namespace and uid: Kubernetes names, which travel in CNI_ARGS
/// (`;`-separated `key=value` pairs).
fn check_metadata(metadata: &crate::proto::PodSandboxMetadata) -> Result<()> {
    for (field, value) in [
        ("config.metadata.name", &metadata.name),
        ("config.metadata.namespace", &metadata.namespace),
        ("config.metadata.uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if value.len() > 253
            || value
                .chars()
                .any(|c| c == ';' || c == '=' || c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid(
                field,
                format!("{value:?} is not a Kubernetes name"),
            ));
        }
    }
    Ok(())
}

/// The pod's hostPort mappings, checked (a zero host port maps nothing).
fn port_mappings(config: &PodSandboxConfig) -> Result<Vec<PortMapping>> {
    let mut mappings = Vec::new();
    for mapping in &config.port_mappings {
        let valid = |p: i32| (1..=65535).contains(&p);
        if mapping.host_port == 0 {
            continue;
        }
        if !valid(mapping.host_port) || !valid(mapping.container_port) {
            return Err(Error::invalid(
                "config.port_mappings",
                format!(
                    "ports must be 1 to 65535: {}:{}",
                    mapping.host_port, mapping.container_port
                ),
            ));
        }
        if !mapping.host_ip.is_empty() && mapping.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::invalid(
                "config.port_mappings.host_ip",
                format!("{:?} is not an IP", mapping.host_ip),
            ));
        }
        mappings.push(PortMapping {
            host_port: mapping.host_port,
            container_port: mapping.container_port,
            protocol: protocol_name(mapping.protocol).to_string(),
            host_ip: mapping.host_ip.clone(),
        });
    }
    Ok(mappings)
}

/// The IPC namespace's sysctls (as runc knows them), besides `fs.mqueue.*`.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// A pod sysctl the pod's own namespaces hold: a name of words (`.` between them; in
/// the kubelet's form a `/` inside a word stands for a dot in an interface name,
/// `net.ipv4.conf.eno2/100.rp_filter`, and a name written with `/` between its words
/// is the same), in the network namespace (`net.*`, unless the pod shares the node's),
/// the IPC one (unless shared) or the UTS one (`kernel.domainname`). Any other would be
/// the node's own, which the runtime refuses (and a pod must not change). The key
/// goes to the runtime as it came.
pub(crate) fn check_sysctl(
    key: &str,
    value: &str,
    host_network: bool,
    host_ipc: bool,
) -> std::result::Result<(), String> {
    // The first separator tells the form, as in the kubelet.
    let separator = match (key.find('/'), key.find('.')) {
        (Some(slash), Some(dot)) if slash < dot => '/',
        (Some(_), None) => '/',
        _ => '.',
    };
    let words: Vec<&str> = key.split(separator).collect();
    let words_ok = words.len() > 1
        && words.iter().all(|w| {
            !w.is_empty()
                && *w != ".."
                && w.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b"_-@:".contains(&b) || b == b'/' || b == b'.'
                })
        });
    if !words_ok || key.starts_with(['.', '/']) {
        return Err(format!("{key:?} is not a sysctl name"));
    }
    if value.contains(['\n', '\0']) {
        return Err(format!("the value of {key:?} holds a newline"));
    }
    let dotted = words.join(".");
    let ipc = IPC_SYSCTLS.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.");
    // Host-network pods keep the node's UTS namespace too.
    let (holder, shared) = if words[0] == "net" {
        ("network", host_network)
    } else if ipc {
        ("IPC", host_ipc)
    } else if dotted == "kernel.domainname" {
        ("UTS", host_network)
    } else {
        return Err(format!(
            "{key:?} is not namespaced: a pod cannot set the node's own"
        ));
    };
    if shared {
        return Err(format!(
            "{key:?} is in the {holder} namespace, which this pod shares with the node"
        ));
    }
    Ok(())
}

/// The cgroup of a sandbox: `<cgroup_parent>/<id>`, or `/berth/<id>` without a parent.
fn cgroups_path(parent: &str, id: &str) -> std::result::Result<String, String> {
    if parent.is_empty() {
        return Ok(format!("/berth/{id}"));
    }
    if !parent.starts_with('/') {
        return Err(format!("{parent:?} must be an absolute cgroup path"));
    }
    for component in parent.split('/').filter(|c| !c.is_empty()) {
        let ok = component != "."
            && component != ".."
            && component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b));
        if !ok {
            return Err(format!(
                "{parent:?}: component {component:?} is not allowed"
            ));
        }
    }
    Ok(format!("{}/{id}", parent.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::PodSandboxMetadata;
    use crate::server::tests::field_of;

    #[test]
    fn a_pods_names_must_travel_in_cni_args() {
        let metadata = |name: &str, namespace: &str, uid: &str| PodSandboxMetadata {
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.into(),
            attempt: 0,
        };
        assert!(check_metadata(&metadata("web-0", "default", "4f1c-11")).is_ok());
        let cases = [
            (metadata("", "default", "u"), "config.metadata.name"),
            (metadata("web", "", "u"), "config.metadata.namespace"),
            (metadata("web", "default", ""), "config.metadata.uid"),
            (metadata("a;b", "default", "u"), "config.metadata.name"),
            (metadata("web", "k=v", "u"), "config.metadata.namespace"),
            (metadata("web", "default", "a b"), "config.metadata.uid"),
        ];
        for (bad, field) in cases {
            assert_eq!(
                field_of(check_metadata(&bad).unwrap_err()),
                field,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn host_ports_are_checked_and_a_zero_host_port_maps_nothing() {
        let mapping = |host_port, container_port, host_ip: &str| crate::proto::PortMapping {
            protocol: crate::proto::Protocol::Tcp as i32,
            container_port,
            host_port,
            host_ip: host_ip.into(),
        };
        let config = |mappings| PodSandboxConfig {
            port_mappings: mappings,
            ..Default::default()
        };
        let kept = port_mappings(&config(vec![
            mapping(8080, 80, ""),
            mapping(0, 9090, ""),
            mapping(8443, 443, "127.0.0.1"),
        ]))
        .unwrap();
        let ports: Vec<(i32, i32)> = kept
            .iter()
            .map(|m| (m.host_port, m.container_port))
            .collect();
        assert_eq!(ports, [(8080, 80), (8443, 443)]);
        assert_eq!(kept[0].protocol, "tcp");
        for (bad, field) in [
            (mapping(70000, 80, ""), "config.port_mappings"),
            (mapping(8080, 0, ""), "config.port_mappings"),
            (
                mapping(8080, 80, "localhost"),
                "config.port_mappings.host_ip",
            ),
        ] {
            let err = port_mappings(&config(vec![bad])).unwrap_err();
            assert_eq!(field_of(err), field);
        }
    }

    #[test]
    fn sysctls_must_be_the_pods_own() {
        use super::check_sysctl;
        let ok = |key: &str| check_sysctl(key, "0", false, false);
        for accepted in [
            "net.ipv4.ip_unprivileged_port_start",
            "net/ipv4/ip_forward",
            "net.ipv4.conf.eno2/100.rp_filter",
            "net/ipv4/conf/eno2.100/rp_filter",
            "net.ipv4.ping_group_range",
            "kernel.shm_rmid_forced",
            "fs.mqueue.msg_max",
            "kernel.domainname",
        ] {
            assert_eq!(ok(accepted), Ok(()), "{accepted}");
        }
        for refused in [
            "kernel.panic",
            "vm.swappiness",
            "kernel.hostname",
            "fs.file-max",
        ] {
            let err = ok(refused).unwrap_err();
            assert!(err.contains("not namespaced"), "{refused}: {err}");
        }
        for bad in [
            "",
            "net",
            "net..ipv4",
            "net.ipv4.x y",
            "../../etc",
            "/net/x",
            "net/../x",
        ] {
            let err = ok(bad).unwrap_err();
            assert!(err.contains("not a sysctl name"), "{bad:?}: {err}");
        }
        assert!(
            check_sysctl("net.ipv4.ip_forward", "1", true, false).is_err(),
            "host network"
        );
        assert!(
            check_sysctl("kernel.sem", "1", false, true).is_err(),
            "host IPC"
        );
        assert!(check_sysctl("net.ipv4.ip_forward", "1\n", false, false).is_err());
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(cgroups_path("", "abc").unwrap(), "/berth/abc");
        assert_eq!(
            cgroups_path("/kubepods/besteffort/pod1234", "abc").unwrap(),
            "/kubepods/besteffort/pod1234/abc"
        );
        assert!(cgroups_path("kubepods", "abc").is_err());
        assert!(cgroups_path("/kubepods/../../etc", "abc").is_err());
        assert!(cgroups_path("/a b", "abc").is_err());
    }
}
