//! The OCI spec of an application container, from the CRI `ContainerConfig`, the image
//! config and the pod it joins. Pure: everything that needs the host (the user resolved
//! against the image's /etc/passwd, berth's own capability bounding set, the OOM score it
//! may give) is resolved by the caller and passed in.
//!
//! The rules are the kubelet's (as containerd and CRI-O apply them):
//! - `command` replaces the image Entrypoint, `args` replaces its Cmd; with a command
//!   but no args the image Cmd is dropped;
//! - the environment is the image's, then the config's (a later key wins);
//! - the container joins the pod's network, IPC and UTS namespaces, and its PID
//!   namespace when the pod shares one (`POD`), the target's (`TARGET`) or the host's
//!   (`NODE`); `CONTAINER` gives it its own;
//! - the pod's hostname, hosts and resolv.conf files and its /dev/shm are mounted in,
//!   unless the kubelet mounts its own at those paths;
//! - capabilities are containerd's default set minus `drop`, plus `add` (`ALL` allowed in
//!   both), all of them when privileged, never more than berth itself holds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
    get_default_maskedpaths, get_default_readonly_paths,
};

use super::SpecError;
use crate::image::manifest::RunConfig;
use crate::proto::{ContainerConfig, MountPropagation, NamespaceMode as CriNamespaceMode};

/// containerd's default capability set for containers.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux defines, in the order of their bit numbers, for `ALL` and
/// privileged containers.
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The user a container runs as, resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A device node's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

/// A host device given to the container, resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    /// Where it appears in the container.
    pub path: PathBuf,
    pub kind: DeviceKind,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Its device cgroup access: some of `rwm`.
    pub permissions: String,
}

/// The seccomp profile, as the caller found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompSource {
    Unconfined,
    RuntimeDefault,
    /// A `Localhost` profile file's text.
    Profile(String),
}

/// What the container needs from its pod.
#[derive(Debug, Clone)]
pub struct PodContext {
    /// The pause process, whose namespaces the container joins.
    pub pause_pid: i32,
    /// The pinned network namespace; `None` for a host-network pod.
    pub netns: Option<PathBuf>,
    pub host_ipc: bool,
    /// The pod's sandbox directory, holding hostname, hosts, resolv.conf and shm/.
    pub dir: PathBuf,
    /// The pod's own user namespace: its pin and its ranges.
    pub userns: Option<(PathBuf, crate::sandbox::userns::Mappings)>,
}

/// Everything a container spec is made from.
#[derive(Debug, Clone)]
pub struct ContainerSpecInput<'a> {
    pub config: &'a ContainerConfig,
    pub image: &'a RunConfig,
    pub rootfs: &'a Path,
    pub user: &'a ResolvedUser,
    pub pod: &'a PodContext,
    /// `TARGET` PID namespace: the target container's pid.
    pub target_pid: Option<i32>,
    pub cgroups_path: &'a str,
    /// The capabilities berth holds: no container gets more.
    pub host_capabilities: &'a HashSet<Capability>,
    /// Already clamped to what berth may set.
    pub oom_score_adj: i32,
    /// The requested devices, or every host device when privileged.
    pub devices: &'a [ResolvedDevice],
    /// Ignored when privileged.
    pub seccomp: &'a SeccompSource,
    /// The AppArmor profile to run under, when the host has AppArmor.
    pub apparmor_profile: Option<String>,
    /// The SELinux process label, when the host has SELinux.
    pub selinux_label: Option<String>,
}

/// The process arguments by the kubelet's rules.
pub fn process_args(config: &ContainerConfig, image: &RunConfig) -> Result<Vec<String>, SpecError> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    let args: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else if !config.args.is_empty() {
        entrypoint
            .into_iter()
            .chain(config.args.iter().cloned())
            .collect()
    } else {
        entrypoint.into_iter().chain(cmd).collect()
    };
    if args.is_empty() {
        return Err(SpecError::invalid(
            "config.command",
            "no command: neither the config nor the image gives one",
        ));
    }
    Ok(args)
}

/// The image environment, then the config's; a later value of a key replaces it in place.
pub fn merge_env(image: &[String], config: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or("").to_string();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    };
    for entry in image {
        set(entry.clone());
    }
    for (key, value) in config {
        set(format!("{key}={value}"));
    }
    env
}

/// The capability set: the default, minus `drop`, plus `add` (`ALL` in either), or every
/// capability when privileged; never beyond `host`.
pub fn capabilities(
    add: &[String],
    drop: &[String],
    privileged: bool,
    host: &HashSet<Capability>,
) -> Result<HashSet<Capability>, SpecError> {
    let parse = |name: &str| -> Result<Vec<Capability>, SpecError> {
        let bare = name.trim().to_ascii_uppercase();
        let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
        if bare == "ALL" {
            return Ok(ALL_CAPABILITIES
                .iter()
                .filter_map(|c| Capability::from_str(c).ok())
                .collect());
        }
        Capability::from_str(bare).map(|c| vec![c]).map_err(|_| {
            SpecError::invalid(
                "config.linux.security_context.capabilities",
                format!("unknown capability {name:?}"),
            )
        })
    };
    let mut caps: HashSet<Capability> = if privileged {
        ALL_CAPABILITIES
            .iter()
            .filter_map(|c| Capability::from_str(c).ok())
            .collect()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .filter_map(|c| Capability::from_str(c).ok())
            .collect()
    };
    if !privileged {
        // Drops first, then adds, as containerd and CRI-O apply them: `drop: [ALL]` with
        // `add: [NET_ADMIN]` leaves exactly NET_ADMIN.
        for name in drop {
            for cap in parse(name)? {
                caps.remove(&cap);
            }
        }
        for name in add {
            caps.extend(parse(name)?);
        }
    }
    Ok(caps.intersection(host).copied().collect())
}

/// Builds the container's spec.
pub fn container_spec(input: &ContainerSpecInput<'_>) -> Result<Spec, SpecError> {
    let config = input.config;
    let linux_config = config.linux.clone().unwrap_or_default();
    let security = linux_config.security_context.clone().unwrap_or_default();
    let privileged = security.privileged;
    let caps = match &security.capabilities {
        Some(c) => capabilities(
            &c.add_capabilities,
            &c.drop_capabilities,
            privileged,
            input.host_capabilities,
        )?,
        None => capabilities(&[], &[], privileged, input.host_capabilities)?,
    };
    let process = process(input, &security, &caps)?;
    let linux = linux(input, &linux_config, &security, &caps)?;
    let annotations: std::collections::HashMap<String, String> = config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(security.readonly_rootfs)
                .build()?,
        )
        .process(process)
        .mounts(mounts(input, privileged)?)
        .linux(linux.build()?)
        .annotations(annotations)
        .build()?;
    // The hostname comes with the pod's UTS namespace.
    spec.set_hostname(None);
    Ok(spec)
}

/// The container's process: its arguments, environment, working directory, user and
/// capabilities, and the labels the host's security modules give it.
fn process(
    input: &ContainerSpecInput<'_>,
    security: &crate::proto::LinuxContainerSecurityContext,
    caps: &HashSet<Capability>,
) -> Result<oci_spec::runtime::Process, SpecError> {
    let config = input.config;
    let env: Vec<(String, String)> = config
        .envs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(
            UserBuilder::default()
                .uid(input.user.uid)
                .gid(input.user.gid)
                .additional_gids(input.user.additional_gids.clone())
                .build()?,
        )
        .args(process_args(config, input.image)?)
        .env(merge_env(
            &input.image.env.clone().unwrap_or_default(),
            &env,
        ))
        .cwd(working_dir(config, input.image))
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps.clone())
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()?,
        )
        .no_new_privileges(security.no_new_privs)
        .oom_score_adj(input.oom_score_adj)
        .build()?;
    process.set_apparmor_profile(input.apparmor_profile.clone());
    process.set_selinux_label(input.selinux_label.clone());
    Ok(process)
}

/// The config's working directory, else the image's, else `/`.
fn working_dir(config: &ContainerConfig, image: &RunConfig) -> String {
    if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else if !image.working_dir.is_empty() {
        image.working_dir.clone()
    } else {
        "/".to_string()
    }
}

/// The spec's `linux` section: namespaces, cgroup and resources, devices, id mappings,
/// root propagation, seccomp and the masked and read-only paths.
fn linux(
    input: &ContainerSpecInput<'_>,
    linux_config: &crate::proto::LinuxContainerConfig,
    security: &crate::proto::LinuxContainerSecurityContext,
    caps: &HashSet<Capability>,
) -> Result<LinuxBuilder, SpecError> {
    let privileged = security.privileged;
    let mut resources = resources(linux_config)?;
    resources.set_devices(Some(device_rules(input.devices, privileged)?));
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input, security)?)
        .cgroups_path(PathBuf::from(input.cgroups_path))
        .resources(resources)
        .devices(
            input
                .devices
                .iter()
                .map(linux_device)
                .collect::<Result<Vec<_>, _>>()?,
        );
    if let Some((_, mappings)) = &input.pod.userns {
        let (uids, gids) = super::sandbox::id_mappings(mappings)?;
        linux = linux.uid_mappings(uids).gid_mappings(gids);
    }
    if let Some(propagation) = rootfs_propagation(&input.config.mounts) {
        linux = linux.rootfs_propagation(propagation);
    }
    if !privileged && let Some(seccomp) = seccomp(input.seccomp, caps)? {
        linux = linux.seccomp(seccomp);
    }
    let (masked, readonly) = hidden_paths(security);
    Ok(linux.masked_paths(masked).readonly_paths(readonly))
}

/// The seccomp filter of an unprivileged container; `None` when unconfined.
fn seccomp(
    source: &SeccompSource,
    caps: &HashSet<Capability>,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, SpecError> {
    match source {
        SeccompSource::Unconfined => Ok(None),
        SeccompSource::RuntimeDefault => super::seccomp::runtime_default(caps)
            .map(Some)
            .map_err(|reason| SpecError::invalid(SECCOMP_FIELD, reason)),
        SeccompSource::Profile(text) => super::seccomp::parse_profile(text, caps)
            .map(Some)
            .map_err(|reason| SpecError::invalid(SECCOMP_FIELD, reason)),
    }
}

/// The field a seccomp profile comes from.
const SECCOMP_FIELD: &str = "config.linux.security_context.seccomp";

/// The masked and the read-only paths: the config's, or the defaults when it gives
/// none; nothing at all for a privileged container (oci-spec's defaults would mask
/// some).
fn hidden_paths(
    security: &crate::proto::LinuxContainerSecurityContext,
) -> (Vec<String>, Vec<String>) {
    if security.privileged {
        return (Vec::new(), Vec::new());
    }
    let masked = if security.masked_paths.is_empty() {
        get_default_maskedpaths()
    } else {
        security.masked_paths.clone()
    };
    let readonly = if security.readonly_paths.is_empty() {
        get_default_readonly_paths()
    } else {
        security.readonly_paths.clone()
    };
    (masked, readonly)
}

fn namespaces(
    input: &ContainerSpecInput<'_>,
    security: &crate::proto::LinuxContainerSecurityContext,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let options = security.namespace_options.clone().unwrap_or_default();
    let pause = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", input.pod.pause_pid));
    let mut list = vec![ns(LinuxNamespaceType::Mount, None)?];
    if let Some((pin, _)) = &input.pod.userns {
        list.push(ns(LinuxNamespaceType::User, Some(pin))?);
    }
    if let Some(netns) = &input.pod.netns {
        list.push(ns(LinuxNamespaceType::Network, Some(netns))?);
    }
    if !input.pod.host_ipc {
        list.push(ns(LinuxNamespaceType::Ipc, Some(&pause("ipc")))?);
    }
    if input.pod.netns.is_some() {
        list.push(ns(LinuxNamespaceType::Uts, Some(&pause("uts")))?);
    }
    let node = CriNamespaceMode::Node as i32;
    let pod = CriNamespaceMode::Pod as i32;
    let target = CriNamespaceMode::Target as i32;
    match options.pid {
        p if p == node => {}
        p if p == pod => list.push(ns(LinuxNamespaceType::Pid, Some(&pause("pid")))?),
        p if p == target => {
            let pid = input.target_pid.ok_or_else(|| {
                SpecError::invalid(
                    "config.linux.security_context.namespace_options.target_id",
                    "a TARGET PID namespace without a target container",
                )
            })?;
            list.push(ns(
                LinuxNamespaceType::Pid,
                Some(Path::new(&format!("/proc/{pid}/ns/pid"))),
            )?);
        }
        _ => list.push(ns(LinuxNamespaceType::Pid, None)?),
    }
    Ok(list)
}

fn ns(kind: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let mut builder = LinuxNamespaceBuilder::default().typ(kind);
    if let Some(path) = path {
        builder = builder.path(path);
    }
    Ok(builder.build()?)
}

/// The runtime's standard mounts, the pod's files, then the CRI mounts.
fn mounts(input: &ContainerSpecInput<'_>, privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let mut list = standard_mounts(privileged)?;
    list.extend(pod_mounts(input)?);
    for m in &input.config.mounts {
        list.push(cri_mount(m)?);
    }
    Ok(list)
}

/// /proc, /dev and its pts and mqueue, /sys (read-only unless privileged) and the
/// cgroup tree.
fn standard_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_options = if privileged {
        vec!["nosuid", "noexec", "nodev"]
    } else {
        vec!["nosuid", "noexec", "nodev", "ro"]
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount("/sys", "sysfs", "sysfs", &sys_options)?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ])
}

/// The pod's hostname, hosts and resolv.conf files and its /dev/shm (the host's for a
/// host-IPC pod), each unless the config mounts something of its own there.
fn pod_mounts(input: &ContainerSpecInput<'_>) -> Result<Vec<Mount>, SpecError> {
    let claimed: HashSet<&str> = input
        .config
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    let pod_files = [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ];
    let mut list = Vec::new();
    for (target, file) in pod_files {
        if !claimed.contains(target) {
            list.push(bind(
                target,
                &input.pod.dir.join(file),
                &["rbind", "rprivate", "rw"],
            )?);
        }
    }
    if !claimed.contains("/dev/shm") {
        let shm = if input.pod.host_ipc {
            PathBuf::from("/dev/shm")
        } else {
            input.pod.dir.join("shm")
        };
        list.push(bind("/dev/shm", &shm, &["rbind", "rprivate", "rw"])?);
    }
    Ok(list)
}

/// One CRI mount as a bind with its propagation and read-only options.
fn cri_mount(m: &crate::proto::Mount) -> Result<Mount, SpecError> {
    if !m.container_path.starts_with('/') {
        return Err(SpecError::invalid(
            "config.mounts.container_path",
            format!("mount target {:?} is not absolute", m.container_path),
        ));
    }
    let propagation = match MountPropagation::try_from(m.propagation) {
        Ok(MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(MountPropagation::PropagationBidirectional) => "rshared",
        _ => "rprivate",
    };
    let mut options = vec!["rbind", propagation, if m.readonly { "ro" } else { "rw" }];
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        // An image volume: read-only and nothing run from it (as CRI-O mounts it).
        options.extend(["nosuid", "nodev", "noexec"]);
    }
    if m.recursive_read_only {
        if !m.readonly || propagation != "rprivate" {
            return Err(SpecError::invalid(
                "config.mounts.recursive_read_only",
                format!(
                    "recursive read-only mount {} must be read-only and private",
                    m.container_path
                ),
            ));
        }
        options.push("rro");
    }
    bind(&m.container_path, Path::new(&m.host_path), &options)
}

/// The propagation of the container's root mount, when a mount needs another than the
/// runtime's default (rslave, or rprivate): a Bidirectional mount only reaches the host's
/// peers if the root it is mounted under is shared too (a slave root turns the bind of a
/// shared host path into a slave, and what the container mounts there stays inside it);
/// a HostToContainer one needs at least a slave root.
fn rootfs_propagation(mounts: &[crate::proto::Mount]) -> Option<&'static str> {
    let has = |wanted: MountPropagation| mounts.iter().any(|m| m.propagation == wanted as i32);
    // Recursive, as containerd and CRI-O give it (the driver words it for youki).
    if has(MountPropagation::PropagationBidirectional) {
        Some("rshared")
    } else if has(MountPropagation::PropagationHostToContainer) {
        Some("rslave")
    } else {
        None
    }
}

fn mount(target: &str, kind: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(target)
        .typ(kind)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn bind(target: &str, source: &Path, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(target)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// The device cgroup: everything for a privileged container; otherwise nothing but the
/// devices given (runc adds the standard /dev/null, /dev/zero, … after these rules).
fn device_rules(
    devices: &[ResolvedDevice],
    privileged: bool,
) -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, SpecError> {
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(privileged)
            .access("rwm")
            .build()?,
    ];
    if privileged {
        return Ok(rules);
    }
    for device in devices {
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(device_type(device.kind))
                .major(device.major)
                .minor(device.minor)
                .access(device.permissions.clone())
                .build()?,
        );
    }
    Ok(rules)
}

fn device_type(kind: DeviceKind) -> LinuxDeviceType {
    match kind {
        DeviceKind::Char => LinuxDeviceType::C,
        DeviceKind::Block => LinuxDeviceType::B,
    }
}

fn linux_device(device: &ResolvedDevice) -> Result<oci_spec::runtime::LinuxDevice, SpecError> {
    Ok(LinuxDeviceBuilder::default()
        .path(device.path.clone())
        .typ(device_type(device.kind))
        .major(device.major)
        .minor(device.minor)
        .file_mode(device.mode)
        .uid(device.uid)
        .gid(device.gid)
        .build()?)
}

fn resources(
    linux: &crate::proto::LinuxContainerConfig,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    match &linux.resources {
        Some(r) => resources_of(r),
        None => Ok(LinuxResourcesBuilder::default().build()?),
    }
}

/// CPU, memory, cpuset and hugepage limits; zero means "not set" in the CRI, and a
/// limit not set is left out of the spec. Callers check the request's shape first
/// ([`check_resources`], whose errors name the field); what the host can take is
/// [`crate::cgroups::Layout::fit`]'s to say.
pub fn resources_of(
    r: &crate::proto::LinuxContainerResources,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    check_resources(r)?;
    let mut builder = LinuxResourcesBuilder::default();
    let cpu_set = r.cpu_shares > 0
        || r.cpu_quota > 0
        || r.cpu_period > 0
        || !r.cpuset_cpus.is_empty()
        || !r.cpuset_mems.is_empty();
    if cpu_set {
        let mut cpu = LinuxCpuBuilder::default();
        if r.cpu_shares > 0 {
            cpu = cpu.shares(r.cpu_shares as u64);
        }
        if r.cpu_quota > 0 {
            cpu = cpu.quota(r.cpu_quota);
        }
        if r.cpu_period > 0 {
            cpu = cpu.period(r.cpu_period as u64);
        }
        if !r.cpuset_cpus.is_empty() {
            cpu = cpu.cpus(r.cpuset_cpus.clone());
        }
        if !r.cpuset_mems.is_empty() {
            cpu = cpu.mems(r.cpuset_mems.clone());
        }
        builder = builder.cpu(cpu.build()?);
    }
    if r.memory_limit_in_bytes > 0 {
        let mut memory = LinuxMemoryBuilder::default().limit(r.memory_limit_in_bytes);
        if r.memory_swap_limit_in_bytes > 0 {
            memory = memory.swap(r.memory_swap_limit_in_bytes);
        }
        builder = builder.memory(memory.build()?);
    }
    if !r.hugepage_limits.is_empty() {
        let hugepages = r
            .hugepage_limits
            .iter()
            .map(|h| {
                LinuxHugepageLimitBuilder::default()
                    .page_size(h.page_size.clone())
                    .limit(h.limit as i64)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.hugepage_limits(hugepages);
    }
    if !r.unified.is_empty() {
        builder = builder.unified(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    Ok(builder.build()?)
}

/// A field of the CRI's `LinuxContainerResources` that [`check_resources`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceField {
    Unified,
    HugepageLimits,
    MemorySwapLimit,
}

/// A request's resources no host would take, and which field says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ResourceError {
    pub field: ResourceField,
    pub reason: String,
}

/// Refuses what no host would take: `unified` keys that are not a cgroup file's name
/// (runc would write them as paths), page sizes that are not sizes, and swap below the
/// memory limit or without one (the CRI's swap limit counts memory and swap together,
/// as cgroup v1's memsw does).
pub fn check_resources(r: &crate::proto::LinuxContainerResources) -> Result<(), ResourceError> {
    let refuse = |field, reason| Err(ResourceError { field, reason });
    for key in r.unified.keys() {
        let file_name = !key.is_empty()
            && key != "."
            && key != ".."
            && key.contains('.')
            && !key.contains(['/', '\0']);
        if !file_name {
            return refuse(
                ResourceField::Unified,
                format!("{key:?} is not a cgroup v2 file name such as memory.high"),
            );
        }
    }
    for (i, limit) in r.hugepage_limits.iter().enumerate() {
        let size = &limit.page_size;
        let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &size[digits.len()..];
        let valid = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && crate::cgroups::PAGE_SIZE_UNITS.contains(&unit);
        if !valid {
            return refuse(
                ResourceField::HugepageLimits,
                format!("[{i}].page_size {size:?} is not a page size such as 2MB or 1GB"),
            );
        }
    }
    let (limit, swap) = (r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes);
    if swap > 0 && (limit <= 0 || swap < limit) {
        return refuse(
            ResourceField::MemorySwapLimit,
            format!(
                "{swap} needs a memory_limit_in_bytes no larger (it counts memory and swap \
                 together), not {limit}"
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        Capability as CriCapability, KeyValue, LinuxContainerConfig, LinuxContainerResources,
        LinuxContainerSecurityContext, Mount as CriMount, NamespaceOption,
    };

    fn image(entrypoint: &[&str], cmd: &[&str]) -> RunConfig {
        let list = |items: &[&str]| {
            (!items.is_empty()).then(|| items.iter().map(|s| s.to_string()).collect())
        };
        RunConfig {
            entrypoint: list(entrypoint),
            cmd: list(cmd),
            env: Some(vec!["PATH=/usr/bin:/bin".into(), "LANG=C".into()]),
            working_dir: "/srv".into(),
            user: String::new(),
            stop_signal: String::new(),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_follow_the_kubelet_rules() {
        let img = image(&["/entry"], &["--default"]);
        let cfg = |command: &[&str], args: &[&str]| ContainerConfig {
            command: strings(command),
            args: strings(args),
            ..Default::default()
        };
        assert_eq!(
            process_args(&cfg(&[], &[]), &img).unwrap(),
            ["/entry", "--default"]
        );
        assert_eq!(
            process_args(&cfg(&[], &["-x"]), &img).unwrap(),
            ["/entry", "-x"]
        );
        assert_eq!(process_args(&cfg(&["sh"], &[]), &img).unwrap(), ["sh"]);
        assert_eq!(
            process_args(&cfg(&["sh"], &["-c", "true"]), &img).unwrap(),
            ["sh", "-c", "true"]
        );
        assert!(process_args(&cfg(&[], &[]), &image(&[], &[])).is_err());
        assert_eq!(
            process_args(&cfg(&[], &[]), &image(&[], &["top"])).unwrap(),
            ["top"]
        );
    }

    #[test]
    fn env_config_overrides_image_in_place() {
        let env = merge_env(
            &strings(&["PATH=/bin", "A=1"]),
            &[("A".into(), "2".into()), ("B".into(), "x=y".into())],
        );
        assert_eq!(env, ["PATH=/bin", "A=2", "B=x=y"]);
    }

    #[test]
    fn capability_sets() {
        let host: HashSet<Capability> = ALL_CAPABILITIES
            .iter()
            .filter(|c| **c != "SYS_RESOURCE")
            .filter_map(|c| Capability::from_str(c).ok())
            .collect();
        let default = capabilities(&[], &[], false, &host).unwrap();
        assert_eq!(default.len(), DEFAULT_CAPABILITIES.len());
        let added = capabilities(
            &strings(&["NET_ADMIN", "CAP_SYS_TIME"]),
            &strings(&["KILL"]),
            false,
            &host,
        )
        .unwrap();
        assert!(added.contains(&Capability::NetAdmin) && added.contains(&Capability::SysTime));
        assert!(!added.contains(&Capability::Kill));
        assert!(
            capabilities(&[], &strings(&["ALL"]), false, &host)
                .unwrap()
                .is_empty()
        );
        let all = capabilities(&strings(&["ALL"]), &[], false, &host).unwrap();
        assert!(all.contains(&Capability::SysAdmin));
        assert!(
            !all.contains(&Capability::SysResource),
            "never more than berth holds"
        );
        assert_eq!(capabilities(&[], &[], true, &host).unwrap(), all);
        assert!(capabilities(&strings(&["FLY"]), &[], false, &host).is_err());
    }

    fn input_parts() -> (
        ContainerConfig,
        RunConfig,
        ResolvedUser,
        PodContext,
        HashSet<Capability>,
    ) {
        let config = ContainerConfig {
            command: strings(&["/bin/sh", "-c"]),
            args: strings(&["echo hi"]),
            envs: vec![KeyValue {
                key: "MODE".into(),
                value: "test".into(),
            }],
            mounts: vec![
                CriMount {
                    container_path: "/data".into(),
                    host_path: "/var/lib/kubelet/pods/u/volumes/data".into(),
                    readonly: false,
                    propagation: MountPropagation::PropagationHostToContainer as i32,
                    ..Default::default()
                },
                CriMount {
                    container_path: "/etc/hosts".into(),
                    host_path: "/var/lib/kubelet/pods/u/etc-hosts".into(),
                    readonly: true,
                    ..Default::default()
                },
            ],
            annotations: [(
                "io.kubernetes.container.name".to_string(),
                "app".to_string(),
            )]
            .into(),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_shares: 512,
                    cpu_quota: 50_000,
                    cpu_period: 100_000,
                    memory_limit_in_bytes: 64 << 20,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(CriCapability {
                        add_capabilities: strings(&["NET_ADMIN"]),
                        drop_capabilities: strings(&["ALL"]),
                        ..Default::default()
                    }),
                    readonly_rootfs: true,
                    no_new_privs: true,
                    namespace_options: Some(NamespaceOption {
                        pid: CriNamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let user = ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
        };
        let pod = PodContext {
            pause_pid: 4242,
            netns: Some(PathBuf::from("/run/berth/netns/pod")),
            host_ipc: false,
            dir: PathBuf::from("/run/berth/sandboxes/pod"),
            userns: None,
        };
        let host = ALL_CAPABILITIES
            .iter()
            .filter_map(|c| Capability::from_str(c).ok())
            .collect();
        (config, image(&["/entry"], &["x"]), user, pod, host)
    }

    #[test]
    fn golden_container_spec() {
        let (config, img, user, pod, host) = input_parts();
        let devices = [ResolvedDevice {
            path: PathBuf::from("/dev/fuse"),
            kind: DeviceKind::Char,
            major: 10,
            minor: 229,
            mode: 0o666,
            uid: 0,
            gid: 0,
            permissions: "rw".into(),
        }];
        let spec = container_spec(&ContainerSpecInput {
            config: &config,
            image: &img,
            rootfs: Path::new("/var/lib/berth/containers/c/rootfs"),
            user: &user,
            pod: &pod,
            target_pid: None,
            cgroups_path: "/kubepods/podu/c",
            host_capabilities: &host,
            oom_score_adj: 100,
            devices: &devices,
            seccomp: &SeccompSource::RuntimeDefault,
            apparmor_profile: Some("berth-default".into()),
            selinux_label: None,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/bin/sh", "-c", "echo hi"])
        );
        assert_eq!(
            json["process"]["env"],
            serde_json::json!(["PATH=/usr/bin:/bin", "LANG=C", "MODE=test"])
        );
        assert_eq!(json["process"]["cwd"], "/srv");
        assert_eq!(
            json["process"]["user"],
            serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [10]})
        );
        assert_eq!(
            json["process"]["capabilities"]["effective"],
            serde_json::json!(["CAP_NET_ADMIN"])
        );
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["process"]["oomScoreAdj"], 100);
        assert_eq!(
            json["root"],
            serde_json::json!({"path": "/var/lib/berth/containers/c/rootfs", "readonly": true})
        );
        assert!(json.get("hostname").is_none());
        assert_eq!(
            json["linux"]["namespaces"],
            serde_json::json!([
                {"type": "mount"},
                {"type": "network", "path": "/run/berth/netns/pod"},
                {"type": "ipc", "path": "/proc/4242/ns/ipc"},
                {"type": "uts", "path": "/proc/4242/ns/uts"},
                {"type": "pid", "path": "/proc/4242/ns/pid"}
            ])
        );
        assert_eq!(json["linux"]["cgroupsPath"], "/kubepods/podu/c");
        assert_eq!(
            json["linux"]["rootfsPropagation"], "rslave",
            "a HostToContainer mount needs a slave root"
        );
        assert_eq!(
            json["linux"]["resources"]["cpu"],
            serde_json::json!({"shares": 512, "quota": 50000, "period": 100000})
        );
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["annotations"]["io.kubernetes.container.name"], "app");
        let mounts: Vec<(String, String, Vec<String>)> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["destination"].as_str().unwrap().to_string(),
                    m["source"].as_str().unwrap().to_string(),
                    m["options"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|o| o.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect();
        let find = |dest: &str| {
            mounts
                .iter()
                .filter(|m| m.0 == dest)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            find("/etc/hosts"),
            [(
                "/etc/hosts".into(),
                "/var/lib/kubelet/pods/u/etc-hosts".into(),
                strings(&["rbind", "rprivate", "ro"])
            )],
            "the kubelet's hosts file wins"
        );
        assert_eq!(
            find("/etc/resolv.conf")[0].1,
            "/run/berth/sandboxes/pod/resolv.conf"
        );
        assert_eq!(find("/dev/shm")[0].1, "/run/berth/sandboxes/pod/shm");
        assert_eq!(find("/data")[0].2, strings(&["rbind", "rslave", "rw"]));
        assert!(
            json["linux"]["maskedPaths"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(
            json["linux"]["devices"],
            serde_json::json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                "fileMode": 0o666, "uid": 0, "gid": 0}])
        );
        assert_eq!(
            json["linux"]["resources"]["devices"],
            serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}
            ]),
            "everything denied but the devices given"
        );
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["process"]["apparmorProfile"], "berth-default");
        assert!(json["process"].get("selinuxLabel").is_none());
    }

    #[test]
    fn the_root_is_shared_under_a_bidirectional_mount() {
        let mount = |propagation: MountPropagation| crate::proto::Mount {
            container_path: "/m".into(),
            host_path: "/srv/m".into(),
            propagation: propagation as i32,
            ..Default::default()
        };
        assert_eq!(rootfs_propagation(&[]), None);
        assert_eq!(
            rootfs_propagation(&[mount(MountPropagation::PropagationPrivate)]),
            None
        );
        assert_eq!(
            rootfs_propagation(&[mount(MountPropagation::PropagationHostToContainer)]),
            Some("rslave")
        );
        assert_eq!(
            rootfs_propagation(&[
                mount(MountPropagation::PropagationHostToContainer),
                mount(MountPropagation::PropagationBidirectional),
            ]),
            Some("rshared")
        );
    }

    #[test]
    fn privileged_and_pid_modes() {
        let (mut config, img, user, pod, host) = input_parts();
        let security = config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        security.privileged = true;
        security.namespace_options = Some(NamespaceOption {
            pid: CriNamespaceMode::Container as i32,
            ..Default::default()
        });
        let make = |config: &ContainerConfig, target_pid| {
            container_spec(&ContainerSpecInput {
                config,
                image: &img,
                rootfs: Path::new("/r"),
                user: &user,
                pod: &pod,
                target_pid,
                cgroups_path: "/c",
                host_capabilities: &host,
                oom_score_adj: 0,
                devices: &[],
                seccomp: &SeccompSource::RuntimeDefault,
                apparmor_profile: None,
                selinux_label: None,
            })
        };
        let json = serde_json::to_value(make(&config, None).unwrap()).unwrap();
        assert_eq!(
            json["linux"]["maskedPaths"],
            serde_json::json!([]),
            "privileged: nothing masked"
        );
        assert_eq!(json["linux"]["readonlyPaths"], serde_json::json!([]));
        assert!(
            json["linux"].get("seccomp").is_none(),
            "privileged: no seccomp filter"
        );
        assert_eq!(
            json["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": true, "access": "rwm"}])
        );
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            ALL_CAPABILITIES.len()
        );
        assert!(
            json["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({"type": "pid"})),
            "its own PID namespace"
        );
        let security = config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        security.namespace_options = Some(NamespaceOption {
            pid: CriNamespaceMode::Target as i32,
            ..Default::default()
        });
        assert!(make(&config, None).is_err());
        let json = serde_json::to_value(make(&config, Some(77)).unwrap()).unwrap();
        assert!(
            json["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({"type": "pid", "path": "/proc/77/ns/pid"}))
        );
        config.mounts[0].recursive_read_only = true;
        assert!(
            make(&config, Some(77)).is_err(),
            "rro needs a read-only, private mount"
        );
    }

    #[test]
    fn resources_no_host_would_take_are_refused_by_field() {
        use crate::proto::HugepageLimit;
        // What a kubelet sends for a burstable container: swap equal to the limit.
        let kubelet = LinuxContainerResources {
            cpu_shares: 102,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 64 << 20,
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            ..Default::default()
        };
        let oci = resources_of(&kubelet).unwrap();
        assert_eq!(oci.memory().unwrap().swap(), Some(64 << 20));
        assert_eq!(oci.hugepage_limits().as_ref().map(Vec::len), Some(1));
        let unset = resources_of(&LinuxContainerResources::default()).unwrap();
        assert_eq!(
            (unset.cpu(), unset.memory(), unset.hugepage_limits()),
            (&None, &None, &None),
            "limits not set are left out"
        );

        let refused = |r: LinuxContainerResources| check_resources(&r).unwrap_err().field;
        for key in ["../../etc/passwd", "memory/high", "", "nodot"] {
            let mut r = kubelet.clone();
            r.unified.insert(key.into(), "1".into());
            assert_eq!(refused(r), ResourceField::Unified, "{key:?}");
        }
        for size in ["2XB", "MB", "-2MB", "2 MB"] {
            let mut r = kubelet.clone();
            r.hugepage_limits[0].page_size = size.into();
            assert_eq!(refused(r), ResourceField::HugepageLimits, "{size:?}");
        }
        let below = LinuxContainerResources {
            memory_swap_limit_in_bytes: 32 << 20,
            ..kubelet.clone()
        };
        assert_eq!(refused(below), ResourceField::MemorySwapLimit);
        let alone = LinuxContainerResources {
            memory_limit_in_bytes: 0,
            ..kubelet
        };
        assert_eq!(refused(alone.clone()), ResourceField::MemorySwapLimit);
        assert!(resources_of(&alone).is_err(), "resources_of checks too");
    }
}
