//! Resource usage as the kubelet reads it (`kubectl top`, eviction): CPU and memory from
//! the cgroups (v1 or v2, in the files the host's [`Layout`] says), processes from the
//! pids controller, the writable layer's bytes and inodes, and a pod's network counters
//! from its network namespace (read as `/proc/<pause pid>/net/dev`, which shows that
//! process's namespace).
//!
//! The parsers are pure and unit-tested; the readers return `None` for what the host
//! does not have (a cgroup that is gone, a controller that is not mounted).

pub mod metrics;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use crate::cgroups::{Layout, Mode};

/// A cgroup's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory: Option<MemoryFigures>,
    pub processes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryFigures {
    pub usage: u64,
    /// Usage less inactive file pages: what the kubelet evicts on.
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// The limit, when one is set.
    pub limit: Option<u64>,
}

impl CgroupUsage {
    /// The sum of several cgroups (a pod's pause and containers).
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a CgroupUsage>) -> CgroupUsage {
        let mut total = CgroupUsage::default();
        for part in parts {
            if let Some(cpu) = part.cpu_ns {
                total.cpu_ns = Some(total.cpu_ns.unwrap_or(0) + cpu);
            }
            if let Some(p) = part.processes {
                total.processes = Some(total.processes.unwrap_or(0) + p);
            }
            if let Some(m) = &part.memory {
                let t = total.memory.get_or_insert_with(MemoryFigures::default);
                t.usage += m.usage;
                t.working_set += m.working_set;
                t.rss += m.rss;
                t.page_faults += m.page_faults;
                t.major_page_faults += m.major_page_faults;
            }
        }
        total
    }
}

/// One network interface's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceFigures {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// `key value` lines (memory.stat, cpu.stat) as a map.
pub fn parse_flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// `/proc/<pid>/net/dev`: every interface but loopback.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceFigures> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let n: Vec<u64> = counters
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            // Receive: bytes packets errs drop fifo frame compressed multicast; then
            // transmit: bytes packets errs …
            Some(InterfaceFigures {
                name: name.to_string(),
                rx_bytes: *n.first()?,
                rx_errors: *n.get(2)?,
                tx_bytes: *n.get(8)?,
                tx_errors: *n.get(10)?,
            })
        })
        .collect()
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A limit file's value; "max" and v1's "no limit" (near 2^63) are `None`.
fn read_limit(path: &Path) -> Option<u64> {
    read_u64(path).filter(|v| *v < (1u64 << 62))
}

/// The figures of the cgroup at `path` (as in the OCI `cgroupsPath`), from the files
/// of the host's layout.
pub fn usage(layout: &Layout, path: &str) -> CgroupUsage {
    let processes = layout
        .dir("pids", path)
        .and_then(|d| read_u64(&d.join("pids.current")));
    if layout.mode() == Mode::V2 {
        let Some(dir) = layout.dir("memory", path) else {
            return CgroupUsage::default();
        };
        let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
            .ok()
            .and_then(|t| parse_flat_keyed(&t).get("usage_usec").map(|us| us * 1000));
        let memory = read_u64(&dir.join("memory.current")).map(|usage| {
            let text = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
            let stat = parse_flat_keyed(&text);
            let get = |k: &str| stat.get(k).copied().unwrap_or(0);
            MemoryFigures {
                usage,
                working_set: usage.saturating_sub(get("inactive_file")),
                rss: get("anon"),
                page_faults: get("pgfault"),
                major_page_faults: get("pgmajfault"),
                limit: read_limit(&dir.join("memory.max")),
            }
        });
        return CgroupUsage {
            cpu_ns: cpu,
            memory,
            processes,
        };
    }
    let memory = layout.dir("memory", path).and_then(|dir| {
        let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
        let text = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        let stat = parse_flat_keyed(&text);
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        Some(MemoryFigures {
            usage,
            working_set: usage.saturating_sub(get("total_inactive_file")),
            rss: get("total_rss"),
            page_faults: get("total_pgfault"),
            major_page_faults: get("total_pgmajfault"),
            limit: read_limit(&dir.join("memory.limit_in_bytes")),
        })
    });
    CgroupUsage {
        cpu_ns: layout
            .dir("cpuacct", path)
            .and_then(|d| read_u64(&d.join("cpuacct.usage"))),
        memory,
        processes,
    }
}

/// The network interfaces of the namespace `pid` lives in.
pub fn network(pid: i32) -> Option<Vec<InterfaceFigures>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    Some(parse_net_dev(&text))
}

/// Bytes (as allocated on disk) and inodes under `dir`, not following symlinks nor
/// leaving its filesystem.
pub fn disk_usage(dir: &Path) -> Option<(u64, u64)> {
    let top = std::fs::symlink_metadata(dir).ok()?;
    let device = top.dev();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            inodes += 1;
            bytes += meta.blocks() * 512;
            if meta.is_dir() && meta.dev() == device {
                pending.push(entry.path());
            }
        }
    }
    Some((bytes, inodes))
}

/// The CPU rate over the interval since the previous sample of the same object.
#[derive(Debug, Default)]
pub struct CpuRates {
    last: Mutex<HashMap<String, (i64, u64)>>,
}

impl CpuRates {
    /// Records `usage_ns` at `at_ns` for `key`; returns nano-cores since the previous
    /// sample, when there is one at least a millisecond older.
    pub fn nano_cores(&self, key: &str, at_ns: i64, usage_ns: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let previous = last.get(key).copied();
        match previous {
            Some((then, before)) if at_ns - then >= 1_000_000 => {
                last.insert(key.to_string(), (at_ns, usage_ns));
                let elapsed = (at_ns - then) as u128;
                let used = usage_ns.saturating_sub(before) as u128;
                Some((used * 1_000_000_000 / elapsed) as u64)
            }
            Some(_) => None,
            None => {
                last.insert(key.to_string(), (at_ns, usage_ns));
                None
            }
        }
    }

    /// Forgets objects that no longer exist.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::tests::FakeHost;

    #[test]
    fn net_dev_and_keyed_files() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
            eth0:    5000      40    2    0    0     0          0         0     7000      50    3    0    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(text),
            vec![InterfaceFigures {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_errors: 2,
                tx_bytes: 7000,
                tx_errors: 3,
            }]
        );
        let stat = parse_flat_keyed("cache 10\ntotal_rss 4096\nbogus x\n");
        assert_eq!(stat.get("total_rss"), Some(&4096));
        assert_eq!(stat.get("bogus"), None);
    }

    #[test]
    fn cgroup_v1_and_v2_layouts() {
        let v1 = FakeHost::new(&[])
            .v1("cpuacct", "cpuacct", &[])
            .v1("memory", "memory", &[])
            .v1("pids", "pids", &[]);
        v1.write("cpuacct/pod/c/cpuacct.usage", "123456\n");
        v1.write("memory/pod/c/memory.usage_in_bytes", "10000\n");
        v1.write(
            "memory/pod/c/memory.stat",
            "total_inactive_file 3000\ntotal_rss 5000\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
        );
        v1.write(
            "memory/pod/c/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        v1.write("pids/pod/c/pids.current", "3\n");
        let layout = v1.layout();
        let usage = usage(&layout, "/pod/c");
        assert_eq!(usage.cpu_ns, Some(123456));
        assert_eq!(usage.processes, Some(3));
        let memory = usage.memory.clone().unwrap();
        assert_eq!(
            (memory.usage, memory.working_set, memory.rss),
            (10000, 7000, 5000)
        );
        assert_eq!(
            (memory.page_faults, memory.major_page_faults, memory.limit),
            (7, 1, None)
        );
        assert_eq!(super::usage(&layout, "/gone"), CgroupUsage::default());

        let v2 = FakeHost::new(&[]).v2("", "cpu memory pids", &[]);
        v2.write("pod/c/cpu.stat", "usage_usec 50\nuser_usec 30\n");
        v2.write("pod/c/memory.current", "8000\n");
        v2.write(
            "pod/c/memory.stat",
            "anon 2000\ninactive_file 1000\npgfault 9\npgmajfault 2\n",
        );
        v2.write("pod/c/memory.max", "max\n");
        v2.write("pod/c/pids.current", "2\n");
        let usage = super::usage(&v2.layout(), "pod/c");
        assert_eq!(usage.cpu_ns, Some(50_000));
        assert_eq!(usage.processes, Some(2));
        let memory = usage.memory.clone().unwrap();
        assert_eq!(
            (memory.working_set, memory.rss, memory.limit),
            (7000, 2000, None)
        );
        let both = CgroupUsage::sum([&usage, &usage]);
        assert_eq!(both.cpu_ns, Some(100_000));
        assert_eq!(both.memory.unwrap().usage, 16000);
    }

    #[test]
    fn cpu_rates_need_two_samples() {
        let rates = CpuRates::default();
        assert_eq!(rates.nano_cores("c", 0, 0), None);
        assert_eq!(
            rates.nano_cores("c", 1_000_000_000, 500_000_000),
            Some(500_000_000)
        );
        assert_eq!(
            rates.nano_cores("c", 1_000_000_100, 600_000_000),
            None,
            "too soon"
        );
        rates.retain(|k| k != "c");
        assert_eq!(rates.nano_cores("c", 3_000_000_000, 0), None);
    }
}
