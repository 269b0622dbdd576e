//! A pod cgroup's limits as UpdatePodSandboxResources resizes them: written straight
//! into the existing cgroup (the pod's `cgroup_parent`, which the kubelet made), in the
//! files of whichever layout the host has, and only for controllers it has.

use std::path::PathBuf;

use super::{Layout, Mode};

/// Limits to write into a cgroup; zero means "leave as is" (the CRI's "not set").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu_shares: u64,
    pub cpu_quota: i64,
    pub cpu_period: u64,
    pub memory: u64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
}

impl Layout {
    /// Writes `limits` into the existing cgroup at `path` (the period before the quota;
    /// for cgroup v2, shares become a weight). Limits of a controller the host does not
    /// have are left out, as [`Layout::fit`] leaves them out of a container's spec.
    /// `Err` names the file that refused.
    pub fn set_limits(&self, path: &str, limits: &Limits) -> Result<(), (PathBuf, std::io::Error)> {
        let v2 = self.mode == Mode::V2;
        let mut writes: Vec<(&str, &str, String)> = Vec::new();
        if limits.cpu_shares > 0 {
            writes.push(if v2 {
                (
                    "cpu",
                    "cpu.weight",
                    shares_to_weight(limits.cpu_shares).to_string(),
                )
            } else {
                ("cpu", "cpu.shares", limits.cpu_shares.to_string())
            });
        }
        let period = if limits.cpu_period > 0 {
            limits.cpu_period
        } else {
            100_000
        };
        if v2 {
            if limits.cpu_quota > 0 {
                writes.push(("cpu", "cpu.max", format!("{} {period}", limits.cpu_quota)));
            }
        } else {
            if limits.cpu_period > 0 {
                writes.push(("cpu", "cpu.cfs_period_us", period.to_string()));
            }
            if limits.cpu_quota > 0 {
                writes.push(("cpu", "cpu.cfs_quota_us", limits.cpu_quota.to_string()));
            }
        }
        if limits.memory > 0 {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            writes.push(("memory", file, limits.memory.to_string()));
        }
        if !limits.cpuset_cpus.is_empty() {
            writes.push(("cpuset", "cpuset.cpus", limits.cpuset_cpus.clone()));
        }
        if !limits.cpuset_mems.is_empty() {
            writes.push(("cpuset", "cpuset.mems", limits.cpuset_mems.clone()));
        }
        for (controller, file, value) in writes {
            let Some(dir) = self
                .has(controller)
                .then(|| self.dir(controller, path))
                .flatten()
            else {
                continue;
            };
            let file = dir.join(file);
            // Only existing files of an existing cgroup: never create one by writing.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
                .map_err(|e| (file.clone(), e))?;
        }
        Ok(())
    }
}

/// cgroup v1 CPU shares (2–262144) as a v2 weight (1–10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}
