//! The layout's detection and rules over fake cgroup trees: a temporary directory with the
//! files each hierarchy shows, and a mount table naming them.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder,
};

use super::limits::{Limits, shares_to_weight};
use super::*;

/// A fake host: `sys/fs/cgroup` and `sys/kernel/mm/hugepages` under a temporary
/// directory, and the mount table lines of its hierarchies.
pub(crate) struct FakeHost {
    dir: tempfile::TempDir,
    mounts: String,
    self_cgroup: String,
}

impl FakeHost {
    pub(crate) fn new(page_sizes_kb: &[u64]) -> FakeHost {
        let dir = tempfile::tempdir().unwrap();
        for kb in page_sizes_kb {
            let path = dir
                .path()
                .join(format!("sys/kernel/mm/hugepages/hugepages-{kb}kB"));
            std::fs::create_dir_all(path).unwrap();
        }
        FakeHost {
            dir,
            // Mounts that are not cgroups are skipped.
            mounts: "22 1 0:21 / /proc rw,nosuid - proc proc rw\n".to_string(),
            self_cgroup: "0::/\n".to_string(),
        }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("sys/fs/cgroup")
    }

    /// Where `at` is: under the cgroup root, the root itself (`""`), or (`/x`) outside
    /// it, in the fake host's own directory.
    fn point(&self, at: &str) -> PathBuf {
        match at.strip_prefix('/') {
            Some(outside) => self.dir.path().join(outside),
            None if at.is_empty() => self.root(),
            None => self.root().join(at),
        }
    }

    /// Mounts a v1 hierarchy at [`FakeHost::point`] `at` with `options` (its
    /// controllers) and `files` at its top.
    pub(crate) fn v1(mut self, at: &str, options: &str, files: &[&str]) -> FakeHost {
        let point = self.point(at);
        self.mount(&point, "cgroup", &format!("rw,{options}"), files);
        self
    }

    /// Mounts a cgroup2 hierarchy at [`FakeHost::point`] `at` offering `controllers`,
    /// with `files` (relative paths) in it.
    pub(crate) fn v2(mut self, at: &str, controllers: &str, files: &[&str]) -> FakeHost {
        let point = self.point(at);
        self.mount(&point, "cgroup2", "rw,nsdelegate", files);
        std::fs::write(point.join("cgroup.controllers"), format!("{controllers}\n")).unwrap();
        self
    }

    fn mount(&mut self, point: &Path, fstype: &str, options: &str, files: &[&str]) {
        for file in files {
            let path = point.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        std::fs::create_dir_all(point).unwrap();
        let escaped = point.display().to_string().replace(' ', "\\040");
        self.mounts.push_str(&format!(
            "30 25 0:26 / {escaped} rw,nosuid,nodev,noexec,relatime shared:9 - {fstype} cgroup {options}\n"
        ));
    }

    /// Writes `text` at `relative` under the cgroup root.
    pub(crate) fn write(&self, relative: &str, text: &str) {
        let path = self.root().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub(crate) fn layout(&self) -> Layout {
        Layout::probe(&Host {
            mountinfo: &self.mounts,
            self_cgroup: &self.self_cgroup,
            root: &self.root(),
            hugepages: &self.dir.path().join("sys/kernel/mm/hugepages"),
        })
    }
}

/// This CI machine's shape: v1 controllers on separate hierarchies, memsw, RT group
/// scheduling, and a cgroup2 hierarchy at `unified` that offers only hugetlb.
fn hybrid() -> FakeHost {
    FakeHost::new(&[2048, 1_048_576])
        .v1("cpu", "cpu", &["cpu.shares", "cpu.rt_runtime_us"])
        .v1("cpuacct", "cpuacct", &["cpuacct.usage"])
        .v1("cpuset", "cpuset", &[])
        .v1(
            "memory",
            "memory",
            &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
        )
        .v1("devices", "devices", &[])
        .v1("blkio", "blkio", &[])
        .v1("pids", "pids", &[])
        .v1("systemd", "xattr,name=systemd", &[])
        .v2("unified", "hugetlb", &[])
}

/// The resources a kubelet 1.35 sends for a burstable container (CreateContainer and
/// the in-place resize alike), as the OCI spec carries them.
fn kubelet_resources() -> LinuxResources {
    let hugepage = |size: &str| {
        LinuxHugepageLimitBuilder::default()
            .page_size(size)
            .limit(0)
            .build()
            .unwrap()
    };
    LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(102u64)
                .quota(20_000)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .swap(64 << 20)
                .build()
                .unwrap(),
        )
        .hugepage_limits(vec![hugepage("2MB"), hugepage("1GB")])
        .build()
        .unwrap()
}

#[test]
fn hybrid_host_drops_hugetlb_and_unified_keys() {
    let host = hybrid();
    let layout = host.layout();
    assert_eq!(layout.mode(), Mode::Hybrid);
    assert!(
        !layout.has("hugetlb"),
        "hugetlb only on the unified hierarchy"
    );
    assert!(layout.has("cpu") && layout.has("memory") && layout.has("pids"));
    assert!(
        !layout.has("systemd"),
        "a named hierarchy is not a controller"
    );
    assert_eq!(
        layout.dir("cpuacct", "/kubepods/pod1/c"),
        Some(host.root().join("cpuacct/kubepods/pod1/c"))
    );
    assert_eq!(
        layout.oom_events("/kubepods/pod1/c"),
        Some(
            host.root()
                .join("memory/kubepods/pod1/c/memory.oom_control")
        )
    );

    let mut resources = kubelet_resources();
    let mut unified = std::collections::HashMap::new();
    unified.insert("memory.high".to_string(), "1000000".to_string());
    resources.set_unified(Some(unified));
    let dropped = layout.fit(&mut resources, "/kubepods/pod1/c").unwrap();
    assert_eq!(dropped, [Limit::Hugepages, Limit::Unified]);
    assert_eq!(resources.hugepage_limits(), &None);
    assert_eq!(resources.unified(), &None);
    let memory = resources.memory().unwrap();
    assert_eq!(
        (memory.limit(), memory.swap()),
        (Some(64 << 20), Some(64 << 20)),
        "memsw is there: swap stays"
    );
    let cpu = resources.cpu().clone().unwrap();
    assert_eq!((cpu.shares(), cpu.quota()), (Some(102), Some(20_000)));

    let omitted: Vec<&str> = layout.omissions().iter().map(|o| o.field).collect();
    assert_eq!(omitted, ["hugepage_limits", "network", "rdma", "unified"]);
    let hugetlb = &layout.omissions()[0];
    assert!(
        hugetlb.reason.contains("only on the cgroup v2 hierarchy"),
        "{hugetlb:?}"
    );
    let text = layout.summary().to_string();
    assert!(
        text.starts_with("cgroup hybrid; v1 controllers: blkio cpu cpuacct"),
        "{text}"
    );
    assert!(text.contains("omitted hugepage_limits"), "{text}");
}

#[test]
fn v1_host_with_hugetlb_keeps_it_and_refuses_unknown_page_sizes() {
    // cpu and cpuacct share a hierarchy, as on most v1 hosts; no memsw (swapaccount=0),
    // no RT group scheduling, and no cgroup2 at all.
    let host = FakeHost::new(&[2048])
        .v1("cpu,cpuacct", "cpu,cpuacct", &["cpu.shares"])
        .v1("memory", "memory", &["memory.limit_in_bytes"])
        .v1("hugetlb", "hugetlb", &[])
        .v1("pids", "pids", &[]);
    let layout = host.layout();
    assert_eq!(layout.mode(), Mode::V1);
    assert!(layout.has("hugetlb"));
    assert_eq!(
        layout.dir("cpuacct", "/p/c"),
        Some(host.root().join("cpu,cpuacct/p/c"))
    );
    assert_eq!(
        layout.dir("cpu", "/p/c"),
        layout.dir("cpuacct", "/p/c"),
        "one hierarchy"
    );

    let mut resources = kubelet_resources();
    let err = layout.fit(&mut resources, "/kubepods/pod1/c").unwrap_err();
    assert!(
        err.to_string().contains("no 1GB huge pages (it has 2MB)"),
        "{err}"
    );

    let mut resources = kubelet_resources();
    resources.set_hugepage_limits(Some(vec![
        LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(0)
            .build()
            .unwrap(),
    ]));
    let mut cpu = resources.cpu().clone().unwrap();
    cpu.set_realtime_runtime(Some(950_000));
    resources.set_cpu(Some(cpu));
    resources.set_pids(Some(
        LinuxPidsBuilder::default().limit(100).build().unwrap(),
    ));
    let dropped = layout.fit(&mut resources, "/kubepods/pod1/c").unwrap();
    assert_eq!(dropped, [Limit::CpuRealtime, Limit::Swap]);
    assert_eq!(resources.hugepage_limits().as_ref().map(Vec::len), Some(1));
    assert_eq!(resources.memory().unwrap().swap(), None);
    assert_eq!(resources.cpu().clone().unwrap().realtime_runtime(), None);
    assert!(resources.pids().is_some(), "the pids controller is there");
    let omitted: Vec<&str> = layout.omissions().iter().map(|o| o.field).collect();
    assert!(
        omitted.contains(&"memory_swap_limit_in_bytes"),
        "{omitted:?}"
    );
    assert!(omitted.contains(&"block_io"), "{omitted:?}");
    assert!(!omitted.contains(&"hugepage_limits"), "{omitted:?}");
}

#[test]
fn v2_host_keeps_keys_its_controllers_take() {
    let mut host = FakeHost::new(&[2048, 1_048_576]).v2(
        "",
        "cpuset cpu io memory hugetlb pids",
        &["system.slice/berth.service/memory.swap.max"],
    );
    host.self_cgroup = "0::/system.slice/berth.service\n".to_string();
    // v1 hierarchies mounted on a v2 host are not what the runtimes use.
    let host = host.v1("net_cls", "net_cls", &[]);
    let layout = host.layout();
    assert_eq!(layout.mode(), Mode::V2);
    assert!(layout.has("hugetlb") && layout.has("blkio") && layout.has("memory"));
    assert!(!layout.has("net_cls") && !layout.has("rdma"));
    assert_eq!(
        layout.dir("memory", "/kubepods/pod1/c"),
        Some(host.root().join("kubepods/pod1/c"))
    );
    assert_eq!(
        layout.oom_events("/kubepods/pod1/c"),
        Some(host.root().join("kubepods/pod1/c/memory.events"))
    );

    let mut resources = kubelet_resources();
    let mut unified = std::collections::HashMap::new();
    for (key, value) in [
        ("memory.high", "1000000"),
        ("cgroup.freeze", "0"),
        ("rdma.max", "mlx4_0 hca_handle=2"),
    ] {
        unified.insert(key.to_string(), value.to_string());
    }
    resources.set_unified(Some(unified));
    let dropped = layout.fit(&mut resources, "/kubepods/pod1/c").unwrap();
    assert_eq!(dropped, [Limit::Unified], "only the rdma key");
    let kept = resources.unified().clone().unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.contains_key("memory.high") && kept.contains_key("cgroup.freeze"));
    assert_eq!(resources.hugepage_limits().as_ref().map(Vec::len), Some(2));
    assert_eq!(resources.memory().unwrap().swap(), Some(64 << 20));
    let omitted: Vec<&str> = layout.omissions().iter().map(|o| o.field).collect();
    assert_eq!(
        omitted,
        ["cpu realtime_runtime, realtime_period", "network", "rdma"]
    );
}

#[test]
fn v2_host_without_swap_accounting_drops_swap() {
    // The daemon in the root cgroup, and no child with memory.swap.max.
    let host = FakeHost::new(&[]).v2("", "cpu memory pids", &["init.scope/memory.max"]);
    let layout = host.layout();
    assert_eq!(layout.mode(), Mode::V2);
    let mut resources = kubelet_resources();
    resources.set_hugepage_limits(None);
    // What a kubelet with NoSwap sends on v2.
    let mut unified = std::collections::HashMap::new();
    unified.insert("memory.swap.max".to_string(), "0".to_string());
    resources.set_unified(Some(unified));
    assert_eq!(
        layout.fit(&mut resources, "/kubepods/pod1/c").unwrap(),
        [Limit::Swap, Limit::Unified]
    );
    assert_eq!(resources.memory().unwrap().swap(), None);
    assert_eq!(resources.unified(), &None);
    let omitted: Vec<&str> = layout.omissions().iter().map(|o| o.field).collect();
    assert!(
        omitted.contains(&"memory_swap_limit_in_bytes"),
        "{omitted:?}"
    );
    assert!(omitted.contains(&"hugepage_limits"), "{omitted:?}");
    let realtime = layout
        .omissions()
        .into_iter()
        .find(|o| o.field.starts_with("cpu realtime"))
        .unwrap();
    assert_eq!(
        realtime.reason,
        "cgroup v2 has no real-time group scheduling"
    );

    // The daemon's cgroup does not delegate memory, but the kubelet's pod cgroups do:
    // swap accounting shows there, and a container under them keeps its swap limit.
    host.write("kubepods/pod2/memory.swap.max", "max\n");
    let mut resources = kubelet_resources();
    resources.set_hugepage_limits(None);
    assert_eq!(layout.fit(&mut resources, "/kubepods/pod2/c").unwrap(), []);
    assert_eq!(resources.memory().unwrap().swap(), Some(64 << 20));
}

#[test]
fn the_hierarchies_the_runtime_uses_win_over_other_mounts() {
    // A cgroup2 mount elsewhere (a container's view, a bind mount) before the root's.
    let stray = FakeHost::new(&[]).v2("/elsewhere", "", &[]);
    let host = stray.v2("", "cpu memory pids", &[]);
    let layout = host.layout();
    assert_eq!(layout.mode(), Mode::V2);
    assert!(layout.has("memory"));
    assert_eq!(layout.dir("memory", "/p"), Some(host.root().join("p")));
    // On a hybrid host, the one at `unified` over any other; a v1 controller mounted
    // under the root over an earlier mount elsewhere.
    let host = FakeHost::new(&[])
        .v2("/elsewhere", "", &[])
        .v1("/outside", "memory", &[])
        .v1("memory", "memory", &[])
        .v2("unified", "hugetlb", &[]);
    let layout = host.layout();
    assert_eq!(layout.mode(), Mode::Hybrid);
    assert_eq!(
        layout.dir("memory", "/p"),
        Some(host.root().join("memory/p"))
    );
    let summary = serde_json::to_value(layout.summary()).unwrap();
    assert_eq!(
        summary["unified"],
        host.root().join("unified").display().to_string()
    );
}

#[test]
fn a_host_without_cgroups_takes_no_limit() {
    let layout = FakeHost::new(&[]).layout();
    assert_eq!(layout.mode(), Mode::V1);
    let mut resources = kubelet_resources();
    let dropped = layout.fit(&mut resources, "/kubepods/pod1/c").unwrap();
    assert_eq!(dropped, [Limit::Cpu, Limit::Memory, Limit::Hugepages]);
    assert_eq!(layout.oom_events("/p/c"), None);
    assert_eq!(layout.dir("memory", "/p/c"), None);
}

#[test]
fn mount_table_parsing() {
    // The first mount of a controller wins; mount points are unescaped.
    let host = FakeHost::new(&[])
        .v1("mem ory", "memory", &[])
        .v1("again", "memory", &[]);
    let layout = host.layout();
    assert_eq!(
        layout.dir("memory", "/a"),
        Some(host.root().join("mem ory/a"))
    );
    assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
    assert_eq!(unescape("trailing\\04"), "trailing\\04");
    assert!(parse_mount("garbage").is_none());
    assert_eq!(
        (
            page_size_name(64),
            page_size_name(2048),
            page_size_name(1_048_576)
        ),
        ("64KB".to_string(), "2MB".to_string(), "1GB".to_string())
    );
    assert_eq!(page_size_name(32_768), "32MB");
}

#[test]
fn pod_limits_are_written_in_either_layout() {
    let host = FakeHost::new(&[])
        .v1(
            "cpu",
            "cpu",
            &[
                "pod/cpu.shares",
                "pod/cpu.cfs_quota_us",
                "pod/cpu.cfs_period_us",
            ],
        )
        .v1("memory", "memory", &["pod/memory.limit_in_bytes"]);
    let layout = host.layout();
    let limits = Limits {
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory: 64 << 20,
        // No cpuset hierarchy on this host: left out.
        cpuset_cpus: "0".to_string(),
        ..Default::default()
    };
    layout.set_limits("/pod", &limits).unwrap();
    let read = |f: &str| std::fs::read_to_string(host.root().join(f)).unwrap();
    assert_eq!(read("cpu/pod/cpu.shares"), "512");
    assert_eq!(read("cpu/pod/cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu/pod/cpu.cfs_period_us"), "100000");
    assert_eq!(
        read("memory/pod/memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    let err = layout.set_limits("/missing", &limits).unwrap_err();
    assert!(err.0.ends_with("cpu/missing/cpu.shares"), "{err:?}");
    assert!(!host.root().join("cpu/missing").exists(), "nothing created");

    let host = FakeHost::new(&[]).v2(
        "",
        "cpu memory",
        &["pod/cpu.weight", "pod/cpu.max", "pod/memory.max"],
    );
    host.layout().set_limits("/pod", &limits).unwrap();
    let read = |f: &str| std::fs::read_to_string(host.root().join(f)).unwrap();
    assert_eq!(read("pod/cpu.weight"), shares_to_weight(512).to_string());
    assert_eq!(read("pod/cpu.max"), "50000 100000");
    assert_eq!(read("pod/memory.max"), (64u64 << 20).to_string());
    assert_eq!(
        (
            shares_to_weight(2),
            shares_to_weight(1024),
            shares_to_weight(262_144)
        ),
        (1, 39, 10000)
    );
}
