//! The OCI spec of a pod's pause container.
//!
//! The pause process runs `/pause` from a read-only rootfs that holds nothing else, as
//! an unprivileged user with no capabilities and no new privileges, in its own mount
//! namespace. It creates (or joins, for the network) the pod's namespaces; a host
//! namespace is simply not listed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Linux, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, Process,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_maskedpaths,
    get_default_readonly_paths,
};

use super::SpecError;

/// The user the pause process runs as (as the upstream pause image does).
const PAUSE_USER: u32 = 65535;

/// Whether a namespace is the pod's own, joined by path, or the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceMode {
    /// A new namespace made by the runtime.
    New,
    /// An existing namespace, joined by its path (the pinned network namespace).
    Join(PathBuf),
    /// The host's namespace.
    Host,
}

/// The pause process: berth's own `/pause`, or what a sandbox image says to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseProcess {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
}

impl Default for PauseProcess {
    /// berth's own pause program.
    fn default() -> Self {
        PauseProcess {
            args: vec!["/pause".to_string()],
            env: vec!["PATH=/".to_string()],
            cwd: "/".to_string(),
            uid: PAUSE_USER,
            gid: PAUSE_USER,
        }
    }
}

/// What the pause spec is made from.
#[derive(Debug, Clone)]
pub struct SandboxSpec<'a> {
    pub rootfs: &'a Path,
    pub process: &'a PauseProcess,
    pub hostname: &'a str,
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    /// `/sys/fs/cgroup/<controller>` relative path: `<cgroup_parent>/<id>`.
    pub cgroups_path: &'a str,
    pub sysctls: &'a BTreeMap<String, String>,
    pub oom_score_adj: i32,
    /// The pod's own user namespace: its pin and its ranges (joined by path, the ranges
    /// given again as the runtime-spec wants them with a user namespace).
    pub user: Option<(PathBuf, crate::sandbox::userns::Mappings)>,
}

/// Builds the pause container's spec.
pub fn sandbox_spec(input: &SandboxSpec<'_>) -> Result<Spec, SpecError> {
    let process = pause_process(input)?;
    let mounts = pause_mounts()?;
    let linux = pause_linux(input)?;
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(true)
                .build()?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?;
    // oci-spec's default spec carries a hostname of its own; runc refuses any hostname
    // without a private UTS namespace, and an empty one means "keep the inherited name".
    let uts_host = input.network == NamespaceMode::Host;
    let hostname = (!uts_host && !input.hostname.is_empty()).then(|| input.hostname.to_string());
    spec.set_hostname(hostname);
    Ok(spec)
}

/// The pause process: no capabilities, no new privileges.
fn pause_process(input: &SandboxSpec<'_>) -> Result<Process, SpecError> {
    let no_caps = LinuxCapabilitiesBuilder::default()
        .bounding(HashSet::new())
        .effective(HashSet::new())
        .inheritable(HashSet::new())
        .permitted(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    Ok(ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(input.process.uid)
                .gid(input.process.gid)
                .build()?,
        )
        .args(input.process.args.clone())
        .env(input.process.env.clone())
        .cwd(input.process.cwd.as_str())
        .capabilities(no_caps)
        .no_new_privileges(true)
        .oom_score_adj(input.oom_score_adj)
        .build()?)
}

/// /proc and /dev, nothing else: the pause process needs no more.
fn pause_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .options(strings(&["nosuid", "noexec", "nodev"]))
            .build()?,
        MountBuilder::default()
            .destination("/dev")
            .typ("tmpfs")
            .source("tmpfs")
            .options(strings(&[
                "nosuid",
                "strictatime",
                "mode=755",
                "size=65536k",
            ]))
            .build()?,
    ])
}

/// The pod's namespaces: its own mount namespace, its user namespace when it has one,
/// network, PID and IPC as their modes say, and UTS unless the network is the host's.
fn pause_namespaces(input: &SandboxSpec<'_>) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut namespaces: Vec<LinuxNamespace> = vec![namespace(LinuxNamespaceType::Mount, None)?];
    if let Some((pin, _)) = &input.user {
        namespaces.push(namespace(LinuxNamespaceType::User, Some(pin))?);
    }
    for (kind, mode) in [
        (LinuxNamespaceType::Network, &input.network),
        (LinuxNamespaceType::Pid, &input.pid),
        (LinuxNamespaceType::Ipc, &input.ipc),
    ] {
        match mode {
            NamespaceMode::New => namespaces.push(namespace(kind, None)?),
            NamespaceMode::Join(path) => namespaces.push(namespace(kind, Some(path))?),
            NamespaceMode::Host => {}
        }
    }
    // A host-network pod keeps the node's hostname, as kubelet expects.
    if input.network != NamespaceMode::Host {
        namespaces.push(namespace(LinuxNamespaceType::Uts, None)?);
    }
    Ok(namespaces)
}

/// The spec's `linux` section: id mappings, namespaces, cgroup, sysctls and the
/// default masked and read-only paths.
fn pause_linux(input: &SandboxSpec<'_>) -> Result<Linux, SpecError> {
    let namespaces = pause_namespaces(input)?;
    let mut linux = LinuxBuilder::default();
    if let Some((_, mappings)) = &input.user {
        let (uids, gids) = id_mappings(mappings)?;
        linux = linux.uid_mappings(uids).gid_mappings(gids);
    }
    Ok(linux
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(input.cgroups_path))
        .sysctl(
            input
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()?)
}

/// The runtime-spec form of a pod's user namespace ranges: (uid mappings, gid mappings).
pub fn id_mappings(
    mappings: &crate::sandbox::userns::Mappings,
) -> Result<(Vec<LinuxIdMapping>, Vec<LinuxIdMapping>), SpecError> {
    let one = |range: &crate::sandbox::userns::IdRange| {
        LinuxIdMappingBuilder::default()
            .container_id(range.container)
            .host_id(range.host)
            .size(range.length)
            .build()
    };
    Ok((vec![one(&mappings.uids)?], vec![one(&mappings.gids)?]))
}

fn namespace(kind: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let mut builder = LinuxNamespaceBuilder::default().typ(kind);
    if let Some(path) = path {
        builder = builder.path(path);
    }
    Ok(builder.build()?)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        sysctls: &'a BTreeMap<String, String>,
        process: &'a PauseProcess,
    ) -> SandboxSpec<'a> {
        SandboxSpec {
            rootfs: Path::new("/run/berth/pause/rootfs"),
            process,
            hostname: "web-0",
            network: NamespaceMode::Join(PathBuf::from("/run/berth/netns/abc")),
            pid: NamespaceMode::New,
            ipc: NamespaceMode::New,
            cgroups_path: "/kubepods/besteffort/podu1/abc",
            sysctls,
            oom_score_adj: -998,
            user: None,
        }
    }

    #[test]
    fn golden_pod_sandbox() {
        let sysctls = BTreeMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        )]);
        let process = PauseProcess::default();
        let spec = sandbox_spec(&input(&sysctls, &process)).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        // oci-spec's own defaults (annotations, the device list, the NOFILE limit) are part
        // of what runc receives, so they are pinned here too.
        let expected = serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": {},
            "root": {"path": "/run/berth/pause/rootfs", "readonly": true},
            "hostname": "web-0",
            "process": {
                "terminal": false,
                "user": {"uid": 65535, "gid": 65535},
                "args": ["/pause"],
                "env": ["PATH=/"],
                "cwd": "/",
                "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
                "noNewPrivileges": true,
                "oomScoreAdj": -998,
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
            ],
            "linux": {
                "namespaces": [
                    {"type": "mount"},
                    {"type": "network", "path": "/run/berth/netns/abc"},
                    {"type": "pid"},
                    {"type": "ipc"},
                    {"type": "uts"}
                ],
                "cgroupsPath": "/kubepods/besteffort/podu1/abc",
                "resources": {"devices": []},
                "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0"},
                "maskedPaths": get_default_maskedpaths(),
                "readonlyPaths": get_default_readonly_paths()
            }
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn host_namespaces_are_left_out() {
        let sysctls = BTreeMap::new();
        let process = PauseProcess::default();
        let mut host = input(&sysctls, &process);
        host.network = NamespaceMode::Host;
        host.pid = NamespaceMode::Host;
        host.ipc = NamespaceMode::Host;
        let spec = sandbox_spec(&host).unwrap();
        let kinds: Vec<LinuxNamespaceType> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(kinds, [LinuxNamespaceType::Mount]);
        assert_eq!(
            spec.hostname(),
            &None,
            "host network keeps the node's hostname"
        );
    }
}
