//! What this host's cgroup tree looks like, and so which limits it can take.
//!
//! Read once at start-up from `/proc/self/mountinfo` (and the files of the hierarchies it
//! names), a [`Layout`] says:
//! - the mode, as the OCI runtime sees it: **v2** when `/sys/fs/cgroup` is itself the
//!   unified hierarchy; **hybrid** when the controllers are on v1 hierarchies and a
//!   cgroup2 hierarchy is mounted beside them (`/sys/fs/cgroup/unified`); **v1** otherwise;
//! - where each controller lives: a v1 hierarchy's mount point, or (v2) the unified root
//!   and its `cgroup.controllers`;
//! - what those controllers can do: swap accounting (`memory.memsw.*` on v1,
//!   `memory.swap.max` on v2), real-time CPU group scheduling (`cpu.rt_runtime_us`), the
//!   huge page sizes of the kernel.
//!
//! Everything that reads or writes cgroups asks it: the OCI spec's resources are fitted
//! to it ([`Layout::fit`]) at CreateContainer and UpdateContainerResources, so the runtime
//! is never asked for a limit it cannot apply (runc fails the whole start on one: "cannot
//! set hugetlb limit: container could not join or create cgroup" on a hybrid host, where
//! hugetlb is only on the unified hierarchy, which runc's v1 manager does not use for
//! limits); a pod's resize is written through it ([`limits`]); the stats read their files
//! where it says; the monitor learns from it which file counts OOM kills
//! ([`Layout::oom_events`]). What it leaves out is said once at start-up and in `Status`'s
//! verbose info ([`Layout::summary`]). One rule per kind of limit ([`Layout::refuses`])
//! makes both that list and the fitting.
//!
//! The detection reads only the mount table it is given and the files under the mount
//! points that table names ([`Layout::probe`]), so the unit tests run it over fake trees.

pub mod limits;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use serde::Serialize;

/// The cgroup controllers a v1 hierarchy can carry (others in a mount's options, such as
/// `name=systemd` or `xattr`, are not controllers).
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// Where the OCI runtimes look for the cgroup hierarchies.
pub const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    V1,
    Hybrid,
    V2,
}

/// The host's cgroup layout. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    mode: Mode,
    /// v1: each controller's hierarchy (its mount point).
    v1: BTreeMap<String, PathBuf>,
    /// v1 hierarchies with no controller (`name=systemd`): runc makes its cgroups in
    /// them too.
    named: Vec<PathBuf>,
    /// The cgroup2 hierarchy: the root on v2, `…/unified` on a hybrid host.
    unified: Option<PathBuf>,
    /// The controllers the unified hierarchy offers (its root's `cgroup.controllers`).
    unified_controllers: BTreeSet<String>,
    /// The memory controller accounts swap.
    swap: bool,
    /// The cpu controller has real-time group scheduling.
    cpu_realtime: bool,
    /// The kernel's huge page sizes, as the CRI names them ("2MB", "1GB").
    hugepage_sizes: BTreeSet<String>,
}

/// What [`Layout::probe`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// `/proc/self/mountinfo`.
    pub mountinfo: &'a str,
    /// `/proc/self/cgroup`: the daemon's own cgroup, where v2 swap accounting shows.
    pub self_cgroup: &'a str,
    /// Where the runtimes look for cgroups: [`ROOT`].
    pub root: &'a Path,
    /// `/sys/kernel/mm/hugepages`.
    pub hugepages: &'a Path,
}

/// A limit this host cannot take, and why: left out of every spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Omission {
    /// The CRI field (of `LinuxContainerResources`) or OCI resource left out.
    pub field: &'static str,
    pub reason: String,
}

/// The kinds of limit a container's spec can carry, each needing a controller (and
/// some a feature of it) that a host may lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Cpu,
    CpuRealtime,
    Cpuset,
    Memory,
    Swap,
    Hugepages,
    Pids,
    BlockIo,
    Network,
    Rdma,
    Unified,
}

impl Limit {
    const ALL: [Limit; 11] = [
        Limit::Cpu,
        Limit::CpuRealtime,
        Limit::Cpuset,
        Limit::Memory,
        Limit::Swap,
        Limit::Hugepages,
        Limit::Pids,
        Limit::BlockIo,
        Limit::Network,
        Limit::Rdma,
        Limit::Unified,
    ];

    /// The fields it is in: the CRI's names where the CRI has the limit, else the OCI
    /// spec's.
    pub fn field(self) -> &'static str {
        match self {
            Limit::Cpu => "cpu_shares, cpu_quota, cpu_period",
            Limit::CpuRealtime => "cpu realtime_runtime, realtime_period",
            Limit::Cpuset => "cpuset_cpus, cpuset_mems",
            Limit::Memory => "memory_limit_in_bytes",
            Limit::Swap => "memory_swap_limit_in_bytes",
            Limit::Hugepages => "hugepage_limits",
            Limit::Pids => "pids",
            Limit::BlockIo => "block_io",
            Limit::Network => "network",
            Limit::Rdma => "rdma",
            Limit::Unified => "unified",
        }
    }
}

/// A huge page limit of a size this kernel does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kernel has no {asked} huge pages (it has {})", known.join(", "))]
pub struct NoSuchPageSize {
    pub asked: String,
    pub known: Vec<String>,
}

impl Layout {
    /// This host's layout. No mount table, or not one cgroup hierarchy in it, is an
    /// error: the runtime could start no container.
    pub fn detect() -> std::io::Result<Layout> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let layout = Layout::probe(&Host {
            mountinfo: &mountinfo,
            self_cgroup: &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
            root: Path::new(ROOT),
            hugepages: Path::new("/sys/kernel/mm/hugepages"),
        });
        if layout.v1.is_empty() && layout.unified.is_none() {
            return Err(std::io::Error::other(
                "no cgroup hierarchy is mounted (none in /proc/self/mountinfo)",
            ));
        }
        Ok(layout)
    }

    /// Reads the layout off `host`'s mount table and the files of the hierarchies it
    /// names, as the OCI runtimes would find it: the cgroup2 hierarchy at the root (v2) or
    /// at `<root>/unified` (hybrid) over any other, and v1 hierarchies under the root
    /// over any other mount of the same controller.
    pub fn probe(host: &Host<'_>) -> Layout {
        let (mut v1, mut named, unified) = hierarchies(host);
        let mode = match &unified {
            Some(point) if point == host.root => Mode::V2,
            Some(_) if !v1.is_empty() => Mode::Hybrid,
            // A cgroup2 mount somewhere else with no v1 controller: the runtimes use
            // neither.
            _ => Mode::V1,
        };
        if mode == Mode::V2 {
            // Controllers of v1 hierarchies mounted on a v2 host are not used.
            v1.clear();
            named.clear();
        }
        let unified_controllers: BTreeSet<String> = unified
            .as_ref()
            .and_then(|u| std::fs::read_to_string(u.join("cgroup.controllers")).ok())
            .map(|text| text.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let swap = match (mode, &unified) {
            (Mode::V2, Some(root)) => {
                unified_controllers.contains("memory") && v2_swap(root, host.self_cgroup)
            }
            _ => v1
                .get("memory")
                .is_some_and(|m| m.join("memory.memsw.limit_in_bytes").exists()),
        };
        let cpu_realtime = mode != Mode::V2
            && v1
                .get("cpu")
                .is_some_and(|c| c.join("cpu.rt_runtime_us").exists());
        Layout {
            mode,
            v1,
            named,
            unified,
            unified_controllers,
            swap,
            cpu_realtime,
            hugepage_sizes: hugepage_sizes(host.hugepages),
        }
    }

    /// v1, hybrid or v2: which files a cgroup's figures and limits are in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the runtime can set limits of `controller` (a v1 name; v2's `io` is
    /// `blkio` here): its v1 hierarchy is mounted, or on v2 the unified root offers it.
    /// A hybrid host's unified hierarchy does not count: runc's v1 manager sets no limit
    /// there.
    pub fn has(&self, controller: &str) -> bool {
        match self.mode {
            Mode::V2 => {
                let name = if controller == "blkio" {
                    "io"
                } else {
                    controller
                };
                self.unified_controllers.contains(name)
            }
            Mode::V1 | Mode::Hybrid => self.v1.contains_key(controller),
        }
    }

    /// The directory of cgroup `path` (an OCI `cgroupsPath`) for `controller`: in its v1
    /// hierarchy, or in the unified one on v2. `None` when the host has no such
    /// controller.
    pub fn dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        let relative = path.trim_start_matches('/');
        match self.mode {
            Mode::V2 => self.unified.as_ref().map(|u| u.join(relative)),
            Mode::V1 | Mode::Hybrid => self.v1.get(controller).map(|h| h.join(relative)),
        }
    }

    /// Every directory of cgroup `path`: one per v1 hierarchy (each controller's, the
    /// named ones' and a hybrid host's unified one, which runc joins too), or the one on
    /// v2.
    fn all_dirs(&self, path: &str) -> Vec<PathBuf> {
        let relative = path.trim_start_matches('/');
        let mut dirs: Vec<PathBuf> = self
            .v1
            .values()
            .chain(&self.named)
            .map(|h| h.join(relative))
            .collect();
        dirs.extend(self.unified.iter().map(|u| u.join(relative)));
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Ends what is left in cgroup `path` (a container's or pause's own, which a runtime
    /// killed in the middle of a create may leave with its init in it) and removes it;
    /// what a crash or a cut-short start leaves, when the runtime no longer knows the
    /// container. Only that cgroup is touched, never its parent. Returns the processes
    /// it ended.
    pub async fn remove(&self, path: &str) -> usize {
        let relative = path.trim_start_matches('/');
        if relative.is_empty() || relative.split('/').any(|c| c == ".." || c.is_empty()) {
            return 0;
        }
        let mut ended = std::collections::BTreeSet::new();
        for _ in 0..250 {
            let mut left = false;
            for dir in self.all_dirs(path) {
                // A cgroup2 directory ends all it holds at once (kernel 5.14 and later).
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // In the container's own cgroup: its processes, ours to end.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    ended.insert(pid);
                    left = true;
                }
                if !left && dir.exists() {
                    left = std::fs::remove_dir(&dir).is_err() && dir.exists();
                }
            }
            if !left {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        ended.len()
    }

    /// The file that counts OOM kills in cgroup `path`, as an `oom_kill N` line:
    /// `memory.oom_control` on v1, `memory.events` on v2.
    pub fn oom_events(&self, path: &str) -> Option<PathBuf> {
        let file = match self.mode {
            Mode::V2 => "memory.events",
            Mode::V1 | Mode::Hybrid => "memory.oom_control",
        };
        self.has("memory")
            .then(|| self.dir("memory", path))
            .flatten()
            .map(|dir| dir.join(file))
    }

    /// Why this host cannot take `limit`, or `None` when it can: the one rule both
    /// [`Layout::omissions`] and [`Layout::fit`] follow.
    pub fn refuses(&self, limit: Limit) -> Option<String> {
        let need = |controller: &str| {
            (!self.has(controller)).then(|| match self.mode {
                Mode::V2 => {
                    format!("the cgroup v2 root does not offer the {controller} controller")
                }
                _ => format!("no cgroup v1 hierarchy has the {controller} controller"),
            })
        };
        let unless = |ok: bool, reason: &str| (!ok).then(|| reason.to_string());
        match limit {
            Limit::Cpu => need("cpu"),
            Limit::CpuRealtime => need("cpu").or_else(|| match self.mode {
                Mode::V2 => unless(false, "cgroup v2 has no real-time group scheduling"),
                _ => unless(
                    self.cpu_realtime,
                    "the cpu controller has no real-time group scheduling (no cpu.rt_runtime_us)",
                ),
            }),
            Limit::Cpuset => need("cpuset"),
            Limit::Memory => need("memory"),
            Limit::Swap => need("memory").or_else(|| match self.mode {
                Mode::V2 => unless(
                    self.swap,
                    "the memory controller accounts no swap (no memory.swap.max)",
                ),
                _ => unless(
                    self.swap,
                    "the memory controller accounts no swap (no memory.memsw.* files)",
                ),
            }),
            Limit::Hugepages
                if self.mode == Mode::Hybrid && self.unified_controllers.contains("hugetlb") =>
            {
                unless(
                    self.has("hugetlb"),
                    "hugetlb is only on the cgroup v2 hierarchy of this hybrid host, where the OCI \
                     runtime sets no limits",
                )
            }
            Limit::Hugepages => need("hugetlb"),
            Limit::Pids => need("pids"),
            Limit::BlockIo => need("blkio"),
            Limit::Network => need("net_cls"),
            Limit::Rdma => need("rdma"),
            Limit::Unified => unless(
                self.mode == Mode::V2,
                "cgroup v2 keys apply only on a cgroup v2 host",
            ),
        }
    }

    /// What this host cannot take, whatever the request: what every spec is fitted by.
    pub fn omissions(&self) -> Vec<Omission> {
        Limit::ALL
            .iter()
            .filter_map(|&limit| {
                self.refuses(limit).map(|reason| Omission {
                    field: limit.field(),
                    reason,
                })
            })
            .collect()
    }

    /// Whether a container in cgroup `path` can take `limit`. Swap accounting on v2 is
    /// asked again of the nearest existing cgroup on `path` when the start-up probe found
    /// none: its files show only in cgroups whose parent delegates the memory
    /// controller, which the daemon's own cgroup may not be, and the kubelet's pod
    /// cgroups are.
    fn takes(&self, limit: Limit, path: &str) -> bool {
        match limit {
            Limit::Swap if self.mode == Mode::V2 && !self.swap => {
                self.has("memory") && self.swap_shows_on(path)
            }
            _ => self.refuses(limit).is_none(),
        }
    }

    fn swap_shows_on(&self, path: &str) -> bool {
        let Some(root) = &self.unified else {
            return false;
        };
        let mut dir = root.join(path.trim_start_matches('/'));
        while dir.starts_with(root) && dir != *root {
            if dir.is_dir() {
                return dir.join("memory.swap.max").exists();
            }
            if !dir.pop() {
                break;
            }
        }
        false
    }

    /// Takes out of `resources`, for a container in cgroup `path`, what this host
    /// cannot apply (the rules of [`Layout::refuses`]); returns what it took out. Device
    /// rules always stay. A huge page size the kernel does not have is an error: the
    /// request names something that cannot exist.
    pub fn fit(
        &self,
        resources: &mut LinuxResources,
        path: &str,
    ) -> Result<Vec<Limit>, NoSuchPageSize> {
        let mut dropped = Vec::new();
        let mut drop = |limit: Limit, asked: bool| {
            let drop = asked && !self.takes(limit, path);
            if drop {
                dropped.push(limit);
            }
            drop
        };
        if let Some(cpu) = resources.cpu_mut() {
            let bandwidth = cpu.shares().is_some()
                || cpu.quota().is_some()
                || cpu.period().is_some()
                || cpu.burst().is_some()
                || cpu.idle().is_some();
            if drop(Limit::Cpu, bandwidth) {
                cpu.set_shares(None).set_quota(None).set_period(None);
                cpu.set_burst(None).set_idle(None);
            }
            let realtime = cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some();
            if drop(Limit::CpuRealtime, realtime) {
                cpu.set_realtime_runtime(None).set_realtime_period(None);
            }
            if drop(Limit::Cpuset, cpu.cpus().is_some() || cpu.mems().is_some()) {
                cpu.set_cpus(None).set_mems(None);
            }
        }
        if drop(Limit::Memory, resources.memory().is_some()) {
            resources.set_memory(None);
        }
        if let Some(memory) = resources.memory_mut()
            && drop(Limit::Swap, memory.swap().is_some())
        {
            memory.set_swap(None);
        }
        let hugepages = resources
            .hugepage_limits()
            .as_ref()
            .is_some_and(|h| !h.is_empty());
        if drop(Limit::Hugepages, hugepages) {
            resources.set_hugepage_limits(None);
        }
        if drop(Limit::Pids, resources.pids().is_some()) {
            resources.set_pids(None);
        }
        if drop(Limit::BlockIo, resources.block_io().is_some()) {
            resources.set_block_io(None);
        }
        if drop(Limit::Network, resources.network().is_some()) {
            resources.set_network(None);
        }
        if drop(Limit::Rdma, resources.rdma().is_some()) {
            resources.set_rdma(None);
        }
        if let Some(unified) = resources.unified_mut().take() {
            let asked = unified.len();
            let kept: std::collections::HashMap<String, String> = unified
                .into_iter()
                .filter(|(key, _)| self.takes_unified_key(key, path))
                .collect();
            // Kept or dropped key by key (`takes_unified_key`), not as a whole.
            if kept.len() < asked {
                dropped.push(Limit::Unified);
            }
            resources.set_unified((!kept.is_empty()).then_some(kept));
        }
        for limit in resources.hugepage_limits().iter().flatten() {
            if !self.hugepage_sizes.contains(limit.page_size()) {
                return Err(NoSuchPageSize {
                    asked: limit.page_size().to_string(),
                    known: self.hugepage_sizes.iter().cloned().collect(),
                });
            }
        }
        Ok(dropped)
    }

    /// A v2 key the root's controllers can take, on a v2 host: `cgroup.*` files are
    /// always there; `memory.high` needs the memory controller, `memory.swap.max` (which
    /// the kubelet sends on v2) swap accounting too, and so on.
    fn takes_unified_key(&self, key: &str, path: &str) -> bool {
        if self.mode != Mode::V2 {
            return false;
        }
        match key.split_once('.') {
            Some(("cgroup", _)) => true,
            Some(("memory", file)) if file.starts_with("swap.") => self.takes(Limit::Swap, path),
            Some((controller, _)) => self.unified_controllers.contains(controller),
            None => false,
        }
    }

    /// What was found and what will be left out, for the start-up log and `Status`.
    pub fn summary(&self) -> Summary<'_> {
        Summary {
            mode: self.mode,
            hierarchies: &self.v1,
            unified: self.unified.as_deref(),
            unified_controllers: &self.unified_controllers,
            swap: self.swap,
            cpu_realtime: self.cpu_realtime,
            hugepage_sizes: &self.hugepage_sizes,
            omitted: self.omissions(),
        }
    }
}

/// [`Layout::summary`], as `Status` shows it (JSON).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary<'a> {
    pub mode: Mode,
    /// v1 controller → hierarchy.
    pub hierarchies: &'a BTreeMap<String, PathBuf>,
    pub unified: Option<&'a Path>,
    pub unified_controllers: &'a BTreeSet<String>,
    pub swap: bool,
    pub cpu_realtime: bool,
    pub hugepage_sizes: &'a BTreeSet<String>,
    pub omitted: Vec<Omission>,
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::V1 => "v1",
            Mode::Hybrid => "hybrid",
            Mode::V2 => "v2",
        };
        write!(f, "cgroup {mode}")?;
        if !self.hierarchies.is_empty() {
            let names: Vec<&str> = self.hierarchies.keys().map(String::as_str).collect();
            write!(f, "; v1 controllers: {}", names.join(" "))?;
        }
        if let Some(unified) = self.unified {
            let names: Vec<&str> = self
                .unified_controllers
                .iter()
                .map(String::as_str)
                .collect();
            write!(
                f,
                "; unified at {} with: {}",
                unified.display(),
                names.join(" ")
            )?;
        }
        write!(
            f,
            "; swap accounting: {}",
            if self.swap { "yes" } else { "no" }
        )?;
        for omission in &self.omitted {
            write!(f, "; omitted {}: {}", omission.field, omission.reason)?;
        }
        Ok(())
    }
}

struct Mount<'a> {
    point: PathBuf,
    fstype: &'a str,
    /// The super block options: a v1 hierarchy's controllers are among them.
    options: &'a str,
}

/// The v1 hierarchies by controller, the named v1 hierarchies and the cgroup2 one of
/// `host`'s mount table, preferring the mounts the runtimes use (see [`Layout::probe`]).
fn hierarchies(host: &Host<'_>) -> (BTreeMap<String, PathBuf>, Vec<PathBuf>, Option<PathBuf>) {
    let mut v1: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut named = Vec::new();
    let mut unified: Option<PathBuf> = None;
    let hybrid_point = host.root.join("unified");
    let rank = |point: &Path| {
        if point == host.root {
            2
        } else if point == hybrid_point {
            1
        } else {
            0
        }
    };
    for mount in host.mountinfo.lines().filter_map(parse_mount) {
        match mount.fstype {
            "cgroup" => {
                let under_root = mount.point.starts_with(host.root);
                if mount.options.split(',').any(|o| o.starts_with("name=")) {
                    named.push(mount.point.clone());
                }
                for option in mount.options.split(',') {
                    // The first mount of a controller, unless a later one is under the
                    // root and the first is not.
                    let better = match v1.get(option) {
                        None => true,
                        Some(known) => under_root && !known.starts_with(host.root),
                    };
                    if V1_CONTROLLERS.contains(&option) && better {
                        v1.insert(option.to_string(), mount.point.clone());
                    }
                }
            }
            "cgroup2"
                if unified
                    .as_deref()
                    .is_none_or(|u| rank(&mount.point) > rank(u)) =>
            {
                unified = Some(mount.point);
            }
            _ => {}
        }
    }
    (v1, named, unified)
}

/// One `/proc/self/mountinfo` line: `id parent dev root point options [optional…] -
/// fstype source super-options`.
fn parse_mount(line: &str) -> Option<Mount<'_>> {
    let (before, after) = line.split_once(" - ")?;
    let point = before.split(' ').nth(4)?;
    let mut tail = after.split(' ');
    let fstype = tail.next()?;
    let _source = tail.next()?;
    Some(Mount {
        point: PathBuf::from(unescape(point)),
        fstype,
        options: tail.next().unwrap_or(""),
    })
}

/// Mount points escape space, tab, newline and backslash as `\ooo`.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a v2 memory controller accounts swap: `memory.swap.max` exists in the
/// daemon's own cgroup, or in any child of the root (the root has no such file).
fn v2_swap(root: &Path, self_cgroup: &str) -> bool {
    let own = self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/'))
        .filter(|p| !p.is_empty());
    if let Some(own) = own
        && root.join(own).join("memory.swap.max").exists()
    {
        return true;
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("memory.swap.max").exists())
}

/// The units of huge page sizes as the CRI and runc name them.
pub const PAGE_SIZE_UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];

/// `hugepages-2048kB` … as "2MB" …, the names the kubelet and runc use.
fn hugepage_sizes(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(page_size_name(kb))
        })
        .collect()
}

/// A page size in kB as the CRI names it: the largest unit that divides it.
fn page_size_name(kb: u64) -> String {
    let mut value = kb;
    let mut unit = 0;
    while unit + 1 < PAGE_SIZE_UNITS.len() && value >= 1024 && value.is_multiple_of(1024) {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", PAGE_SIZE_UNITS[unit])
}

#[cfg(test)]
pub(crate) mod tests;
