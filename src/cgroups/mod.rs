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
//! verbose info ([`Layout::summary`]).
//!
//! The detection is a pure function of the mount table and the files under the mount
//! points it names ([`Layout::probe`]), so the unit tests run it over fake trees.

pub mod limits;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxCpu, LinuxResources};
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

impl Layout {
    /// This host's layout.
    pub fn detect() -> Layout {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Layout::probe(&Host {
            mountinfo: &read("/proc/self/mountinfo"),
            self_cgroup: &read("/proc/self/cgroup"),
            root: Path::new(ROOT),
            hugepages: Path::new("/sys/kernel/mm/hugepages"),
        })
    }

    /// The layout `host` describes.
    pub fn probe(host: &Host<'_>) -> Layout {
        let mut v1: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut unified = None;
        for mount in host.mountinfo.lines().filter_map(parse_mount) {
            match mount.fstype {
                // The first mount of a controller is the one the runtimes use.
                "cgroup" => {
                    for option in mount.options.split(',') {
                        if V1_CONTROLLERS.contains(&option) && !v1.contains_key(option) {
                            v1.insert(option.to_string(), mount.point.clone());
                        }
                    }
                }
                "cgroup2" if unified.is_none() => unified = Some(mount.point),
                _ => {}
            }
        }
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
            unified,
            unified_controllers,
            swap,
            cpu_realtime,
            hugepage_sizes: hugepage_sizes(host.hugepages),
        }
    }

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

    /// What this host cannot take, whatever the request: the same list every spec is
    /// fitted by.
    pub fn omissions(&self) -> Vec<Omission> {
        let mut out = Vec::new();
        let mut omit = |field: &'static str, reason: String| out.push(Omission { field, reason });
        let missing = |controller: &str| match self.mode {
            Mode::V2 => format!("the cgroup v2 root does not offer the {controller} controller"),
            _ => format!("no cgroup v1 hierarchy has the {controller} controller"),
        };
        for (field, controller) in [
            ("cpu_shares, cpu_quota, cpu_period", "cpu"),
            ("cpuset_cpus, cpuset_mems", "cpuset"),
            ("memory_limit_in_bytes", "memory"),
            ("pids", "pids"),
            ("block_io", "blkio"),
        ] {
            if !self.has(controller) {
                omit(field, missing(controller));
            }
        }
        if !self.has("hugetlb") {
            let reason =
                if self.mode == Mode::Hybrid && self.unified_controllers.contains("hugetlb") {
                    "hugetlb is only on the cgroup v2 hierarchy of this hybrid host, where the OCI \
                 runtime sets no limits"
                        .to_string()
                } else {
                    missing("hugetlb")
                };
            omit("hugepage_limits", reason);
        }
        if self.has("memory") && !self.swap {
            let reason = match self.mode {
                Mode::V2 => "the memory controller accounts no swap (no memory.swap.max)",
                _ => "the memory controller accounts no swap (no memory.memsw.* files)",
            };
            omit("memory_swap_limit_in_bytes", reason.to_string());
        }
        if self.has("cpu") && !self.cpu_realtime {
            omit(
                "cpu realtime_runtime, realtime_period",
                "the cpu controller has no real-time group scheduling (no cpu.rt_runtime_us)"
                    .to_string(),
            );
        }
        if self.mode != Mode::V2 {
            omit(
                "unified",
                "cgroup v2 keys apply only on a cgroup v2 host".to_string(),
            );
        }
        for (field, controller) in [("network", "net_cls"), ("rdma", "rdma")] {
            if !self.has(controller) {
                omit(field, missing(controller));
            }
        }
        out
    }

    /// Takes out of `resources` what this host cannot apply (see [`Layout::omissions`]);
    /// returns the fields it took out. Device rules always stay. A huge page size the
    /// kernel does not have is an error: the request names something that cannot exist.
    pub fn fit(&self, resources: &mut LinuxResources) -> Result<Vec<&'static str>, String> {
        let mut dropped = Vec::new();
        if let Some(cpu) = resources.cpu_mut() {
            self.fit_cpu(cpu, &mut dropped);
        }
        let mut clear = |slot_is_set: bool, absent: bool, name: &'static str| {
            let clear = slot_is_set && absent;
            if clear {
                dropped.push(name);
            }
            clear
        };
        if clear(resources.memory().is_some(), !self.has("memory"), "memory") {
            resources.set_memory(None);
        }
        if let Some(memory) = resources.memory_mut()
            && clear(memory.swap().is_some(), !self.swap, "memory swap")
        {
            memory.set_swap(None);
        }
        let hugepages = resources.hugepage_limits().as_ref();
        if clear(
            hugepages.is_some_and(|h| !h.is_empty()),
            !self.has("hugetlb"),
            "hugepage_limits",
        ) {
            resources.set_hugepage_limits(None);
        }
        if clear(resources.pids().is_some(), !self.has("pids"), "pids") {
            resources.set_pids(None);
        }
        if clear(
            resources.block_io().is_some(),
            !self.has("blkio"),
            "block_io",
        ) {
            resources.set_block_io(None);
        }
        if clear(
            resources.network().is_some(),
            !self.has("net_cls"),
            "network",
        ) {
            resources.set_network(None);
        }
        if clear(resources.rdma().is_some(), !self.has("rdma"), "rdma") {
            resources.set_rdma(None);
        }
        if let Some(unified) = resources.unified_mut().take() {
            let before = unified.len();
            let kept: std::collections::HashMap<String, String> = unified
                .into_iter()
                .filter(|(key, _)| self.mode == Mode::V2 && self.has_unified_key(key))
                .collect();
            if kept.len() < before {
                dropped.push("unified");
            }
            resources.set_unified((!kept.is_empty()).then_some(kept));
        }
        for limit in resources.hugepage_limits().iter().flatten() {
            if !self.hugepage_sizes.contains(limit.page_size()) {
                let sizes: Vec<&str> = self.hugepage_sizes.iter().map(String::as_str).collect();
                return Err(format!(
                    "the kernel has no {} huge pages (it has {})",
                    limit.page_size(),
                    sizes.join(", ")
                ));
            }
        }
        Ok(dropped)
    }

    /// [`Layout::fit`] for the cpu and cpuset limits.
    fn fit_cpu(&self, cpu: &mut LinuxCpu, dropped: &mut Vec<&'static str>) {
        let bandwidth = cpu.shares().is_some()
            || cpu.quota().is_some()
            || cpu.period().is_some()
            || cpu.burst().is_some()
            || cpu.idle().is_some();
        if bandwidth && !self.has("cpu") {
            dropped.push("cpu");
            cpu.set_shares(None).set_quota(None).set_period(None);
            cpu.set_burst(None).set_idle(None);
        }
        let realtime = cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some();
        if realtime && !(self.has("cpu") && self.cpu_realtime) {
            dropped.push("cpu realtime");
            cpu.set_realtime_runtime(None).set_realtime_period(None);
        }
        if (cpu.cpus().is_some() || cpu.mems().is_some()) && !self.has("cpuset") {
            dropped.push("cpuset");
            cpu.set_cpus(None).set_mems(None);
        }
    }

    /// A v2 key the root's controllers can take: `cgroup.*` files are always there;
    /// `memory.high` needs the memory controller, `memory.swap.max` (which the kubelet
    /// sends on v2) swap accounting too, and so on.
    fn has_unified_key(&self, key: &str) -> bool {
        match key.split_once('.') {
            Some(("cgroup", _)) => true,
            Some(("memory", file)) if file.starts_with("swap.") => self.has("memory") && self.swap,
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
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    let mut value = kb;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && value >= 1024 && value.is_multiple_of(1024) {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

#[cfg(test)]
pub(crate) mod tests;
