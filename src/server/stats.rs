//! ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats; and
//! ListMetricDescriptors and ListPodSandboxMetrics, the same figures as metrics
//! ([`crate::stats::metrics`]).
//!
//! A container's figures come from its own cgroup (`<pod cgroup parent>/<id>`); a pod's
//! are the sum of its pause's and its containers' cgroups (right whether or not the
//! kubelet gave it a pod-level cgroup of its own), plus the network counters of its
//! namespace. `usage_nano_cores` is the rate since the previous request for the same
//! object, so the first request has none.

use super::CriService;
use crate::error::Result;
use crate::proto::{
    ContainerAttributes, ContainerMetadata, ContainerStats, ContainerStatsFilter, CpuUsage,
    FilesystemIdentifier, FilesystemUsage, LinuxPodSandboxStats, MemoryUsage, MetricDescriptor,
    NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, PodSandboxMetadata,
    PodSandboxMetrics, PodSandboxStats, PodSandboxStatsFilter, ProcessUsage, UInt64Value,
};
use crate::stats::{CgroupUsage, InterfaceFigures, disk_usage, network};
use crate::store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

impl CriService {
    pub fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let record = self.container(id)?;
        let sandbox = self.sandboxes.find(&record.sandbox_id);
        Ok(self.stats_of(&record, sandbox.as_ref()).0)
    }

    pub fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>> {
        let filter = filter.unwrap_or_default();
        let stats = self
            .containers
            .list()?
            .into_iter()
            .filter(|r| {
                crate::store::ContainerRecord::selected(
                    r,
                    &filter.id,
                    &filter.pod_sandbox_id,
                    &filter.label_selector,
                )
            })
            .map(|r| {
                let sandbox = self.sandboxes.find(&r.sandbox_id);
                self.stats_of(&r, sandbox.as_ref()).0
            })
            .collect();
        self.forget_gone_rates();
        Ok(stats)
    }

    pub fn pod_sandbox_stats(&self, id: &str) -> Result<PodSandboxStats> {
        let sandbox = self.sandbox(id)?;
        self.pod_stats(&sandbox)
    }

    pub fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>> {
        let filter = filter.unwrap_or_default();
        let stats = self
            .sandboxes
            .list()
            .into_iter()
            .filter(|s| s.state == SandboxState::Ready)
            .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
            .filter(|s| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .map(|s| self.pod_stats(&s))
            .collect::<Result<Vec<_>>>()?;
        self.forget_gone_rates();
        Ok(stats)
    }

    fn pod_stats(&self, sandbox: &SandboxRecord) -> Result<PodSandboxStats> {
        let now = crate::clock::now_ns();
        let containers: Vec<ContainerRecord> = self
            .containers
            .list()?
            .into_iter()
            .filter(|c| c.sandbox_id == sandbox.id)
            .collect();
        let mut parts = Vec::new();
        let mut container_stats = Vec::new();
        for record in &containers {
            let (stats, usage) = self.stats_of(record, Some(sandbox));
            parts.push(usage);
            container_stats.push(stats);
        }
        let pause = if sandbox.state == SandboxState::Ready {
            crate::stats::usage(&self.cgroups, &sandbox.cgroups_path)
        } else {
            CgroupUsage::default()
        };
        parts.push(pause);
        let total = CgroupUsage::sum(&parts);
        let interfaces = if sandbox.state == SandboxState::Ready && sandbox.netns.is_some() {
            network(sandbox.pid).unwrap_or_default()
        } else {
            Vec::new()
        };
        let network = (!interfaces.is_empty()).then(|| {
            let cri: Vec<NetworkInterfaceUsage> = interfaces.iter().map(interface).collect();
            NetworkUsage {
                timestamp: now,
                default_interface: cri
                    .iter()
                    .find(|i| i.name == "eth0")
                    .or(cri.first())
                    .cloned(),
                interfaces: cri,
            }
        });
        Ok(PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: sandbox.id.clone(),
                metadata: Some(PodSandboxMetadata {
                    name: sandbox.name.clone(),
                    uid: sandbox.uid.clone(),
                    namespace: sandbox.namespace.clone(),
                    attempt: sandbox.attempt,
                }),
                labels: sandbox.labels.clone().into_iter().collect(),
                annotations: sandbox.annotations.clone().into_iter().collect(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: self.cpu(&format!("pod/{}", sandbox.id), now, &total),
                memory: memory(now, &total),
                network,
                process: total.processes.map(|count| ProcessUsage {
                    timestamp: now,
                    process_count: value(count),
                }),
                containers: container_stats,
                io: None,
            }),
            windows: None,
        })
    }

    /// A container's stats, and its cgroup figures for its pod's sum.
    fn stats_of(
        &self,
        record: &ContainerRecord,
        sandbox: Option<&SandboxRecord>,
    ) -> (ContainerStats, CgroupUsage) {
        let now = crate::clock::now_ns();
        let usage = match (record.state, sandbox) {
            (ContainerState::Running, Some(sandbox)) => {
                crate::stats::usage(&self.cgroups, &sandbox.container_cgroup(&record.id))
            }
            _ => CgroupUsage::default(),
        };
        let upper = self.containers.layer_dir(&record.id).join("upper");
        let writable_layer = disk_usage(&upper).map(|(bytes, inodes)| FilesystemUsage {
            timestamp: now,
            // The filesystem ImageFsInfo names for the containers.
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self
                    .container_fs_mountpoint(self.images.store_root())
                    .display()
                    .to_string(),
            }),
            used_bytes: value(bytes),
            inodes_used: value(inodes),
        });
        let stats = ContainerStats {
            attributes: Some(ContainerAttributes {
                id: record.id.clone(),
                metadata: Some(ContainerMetadata {
                    name: record.name.clone(),
                    attempt: record.attempt,
                }),
                labels: record.labels.clone().into_iter().collect(),
                annotations: record.annotations.clone().into_iter().collect(),
            }),
            cpu: self.cpu(&format!("container/{}", record.id), now, &usage),
            memory: memory(now, &usage),
            writable_layer,
            swap: None,
            io: None,
        };
        (stats, usage)
    }

    fn cpu(&self, key: &str, now: i64, usage: &CgroupUsage) -> Option<CpuUsage> {
        let total = usage.cpu_ns?;
        Some(CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(total),
            usage_nano_cores: self.cpu_rates.nano_cores(key, now, total).and_then(value),
            psi: None,
        })
    }

    /// Drops the CPU samples of pods and containers that are gone.
    fn forget_gone_rates(&self) {
        let pods: std::collections::HashSet<String> =
            self.sandboxes.list().into_iter().map(|s| s.id).collect();
        let containers: std::collections::HashSet<String> = self
            .containers
            .list()
            .map(|l| l.into_iter().map(|c| c.id).collect())
            .unwrap_or_default();
        self.cpu_rates.retain(|key| match key.split_once('/') {
            Some(("pod", id)) => pods.contains(id),
            Some(("container", id)) => containers.contains(id),
            _ => false,
        });
    }

    /// The metrics berth reports, described.
    pub fn list_metric_descriptors(&self) -> Vec<MetricDescriptor> {
        crate::stats::metrics::DESCRIPTORS
            .iter()
            .map(|(name, help, keys, _)| MetricDescriptor {
                name: name.to_string(),
                help: help.to_string(),
                label_keys: keys.iter().map(|k| k.to_string()).collect(),
            })
            .collect()
    }

    pub fn list_pod_sandbox_metrics(&self) -> Result<Vec<PodSandboxMetrics>> {
        Ok(self
            .list_pod_sandbox_stats(None)?
            .iter()
            .map(crate::stats::metrics::pod_metrics)
            .collect())
    }
}

fn memory(now: i64, usage: &CgroupUsage) -> Option<MemoryUsage> {
    let m = usage.memory.as_ref()?;
    Some(MemoryUsage {
        timestamp: now,
        working_set_bytes: value(m.working_set),
        available_bytes: m
            .limit
            .map(|l| l.saturating_sub(m.working_set))
            .and_then(value),
        usage_bytes: value(m.usage),
        rss_bytes: value(m.rss),
        page_faults: value(m.page_faults),
        major_page_faults: value(m.major_page_faults),
        psi: None,
    })
}

fn interface(i: &InterfaceFigures) -> NetworkInterfaceUsage {
    NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    }
}
