//! The figures of the stats RPCs as Prometheus-style metrics with cAdvisor's names, for
//! ListMetricDescriptors and ListPodSandboxMetrics (the kubelet's CRI metrics endpoint).
//! Pure conversion from `PodSandboxStats`.
//!
//! Container metrics carry the `container` label (its name); network metrics are the
//! pod's and carry `interface`. Values are CRI `uint64`s, so CPU time, which cAdvisor
//! gives in seconds, is whole seconds here.

use crate::proto::{ContainerMetrics, Metric, MetricType, PodSandboxMetrics, PodSandboxStats};

/// (name, help, label keys, type) of every metric berth reports.
pub const DESCRIPTORS: [(&str, &str, &[&str], MetricType); 9] = [
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        &["container"],
        MetricType::Counter,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        &["container"],
        MetricType::Gauge,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        &["container"],
        MetricType::Gauge,
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        &["container"],
        MetricType::Gauge,
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container's writable layer.",
        &["container"],
        MetricType::Gauge,
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        &["interface"],
        MetricType::Counter,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        &["interface"],
        MetricType::Counter,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        &["interface"],
        MetricType::Counter,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        &["interface"],
        MetricType::Counter,
    ),
];

fn metric(name: &str, timestamp: i64, labels: &[&str], value: Option<u64>) -> Option<Metric> {
    let kind = DESCRIPTORS.iter().find(|d| d.0 == name)?.3;
    Some(Metric {
        name: name.to_string(),
        timestamp,
        metric_type: kind as i32,
        label_values: labels.iter().map(|l| l.to_string()).collect(),
        value: value.map(|value| crate::proto::UInt64Value { value }),
    })
}

/// The metrics of one pod from its stats.
pub fn pod_metrics(stats: &PodSandboxStats) -> PodSandboxMetrics {
    let id = stats
        .attributes
        .as_ref()
        .map(|a| a.id.clone())
        .unwrap_or_default();
    let linux = stats.linux.clone().unwrap_or_default();
    let mut metrics = Vec::new();
    if let Some(network) = &linux.network {
        for i in &network.interfaces {
            let labels = [i.name.as_str()];
            let ts = network.timestamp;
            for (name, value) in [
                ("container_network_receive_bytes_total", &i.rx_bytes),
                ("container_network_receive_errors_total", &i.rx_errors),
                ("container_network_transmit_bytes_total", &i.tx_bytes),
                ("container_network_transmit_errors_total", &i.tx_errors),
            ] {
                metrics.extend(metric(name, ts, &labels, value.map(|v| v.value)));
            }
        }
    }
    let container_metrics = linux
        .containers
        .iter()
        .map(|c| {
            let attributes = c.attributes.clone().unwrap_or_default();
            let name = attributes.metadata.map(|m| m.name).unwrap_or_default();
            let labels = [name.as_str()];
            let mut list = Vec::new();
            if let Some(cpu) = &c.cpu {
                let seconds = cpu.usage_core_nano_seconds.map(|v| v.value / 1_000_000_000);
                list.extend(metric(
                    "container_cpu_usage_seconds_total",
                    cpu.timestamp,
                    &labels,
                    seconds,
                ));
            }
            if let Some(m) = &c.memory {
                for (name, value) in [
                    ("container_memory_usage_bytes", m.usage_bytes),
                    ("container_memory_working_set_bytes", m.working_set_bytes),
                    ("container_memory_rss", m.rss_bytes),
                ] {
                    list.extend(metric(name, m.timestamp, &labels, value.map(|v| v.value)));
                }
            }
            if let Some(fs) = &c.writable_layer {
                list.extend(metric(
                    "container_fs_usage_bytes",
                    fs.timestamp,
                    &labels,
                    fs.used_bytes.map(|v| v.value),
                ));
            }
            ContainerMetrics {
                container_id: attributes.id,
                metrics: list,
            }
        })
        .collect();
    PodSandboxMetrics {
        pod_sandbox_id: id,
        metrics,
        container_metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        ContainerAttributes, ContainerMetadata, ContainerStats, CpuUsage, LinuxPodSandboxStats,
        NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, UInt64Value,
    };

    #[test]
    fn stats_become_labelled_metrics() {
        let v = |value| Some(UInt64Value { value });
        let stats = PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: "pod1".into(),
                ..Default::default()
            }),
            linux: Some(LinuxPodSandboxStats {
                network: Some(NetworkUsage {
                    timestamp: 5,
                    interfaces: vec![NetworkInterfaceUsage {
                        name: "eth0".into(),
                        rx_bytes: v(100),
                        tx_bytes: v(200),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                containers: vec![ContainerStats {
                    attributes: Some(ContainerAttributes {
                        id: "c1".into(),
                        metadata: Some(ContainerMetadata {
                            name: "app".into(),
                            attempt: 0,
                        }),
                        ..Default::default()
                    }),
                    cpu: Some(CpuUsage {
                        timestamp: 7,
                        usage_core_nano_seconds: v(3_500_000_000),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            windows: None,
        };
        let m = pod_metrics(&stats);
        assert_eq!(m.pod_sandbox_id, "pod1");
        let rx = m
            .metrics
            .iter()
            .find(|m| m.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(
            (rx.label_values.clone(), rx.value),
            (vec!["eth0".to_string()], v(100))
        );
        assert_eq!(rx.metric_type, MetricType::Counter as i32);
        let c = &m.container_metrics[0];
        assert_eq!(c.container_id, "c1");
        assert_eq!(c.metrics[0].name, "container_cpu_usage_seconds_total");
        assert_eq!(c.metrics[0].value, v(3));
        assert_eq!(c.metrics[0].label_values, vec!["app".to_string()]);
        // Every metric is described, with as many labels as its values.
        for metric in m.metrics.iter().chain(&c.metrics) {
            let d = DESCRIPTORS.iter().find(|d| d.0 == metric.name).unwrap();
            assert_eq!(d.2.len(), metric.label_values.len());
        }
    }
}
