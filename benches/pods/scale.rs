//! Figures at node scale (issue 18): pods started in parallel, and a dense node.
//!
//! - **Parallel starts**: `pods` pods (RunPodSandbox, CreateContainer, StartContainer of
//!   a `sleep`) with `in_flight` of them under way at once, as a kubelet's pod workers do:
//!   pods per second over the whole batch, and each pod's latency (p99 on a row of its
//!   own). The pods are then removed, untimed. Where the time goes: the share of the
//!   machine's CPUs busy during the batch and its CPU seconds per pod (all processes: the
//!   daemon, runc, the CNI plugins, the pods), and, from berth's own timings (its metrics
//!   endpoint, scraped before and after), the mean time of each RPC, CNI operation and
//!   runtime command the batch made.
//! - **The node figures** (`node`), on one set of pods that grows: the kubelet's steady
//!   polling (`polling.rs`), a dense node, and daemon restarts (`restart.rs`).
//! - **Dense node**: `pods` pods running a `sleep` each: the runtime's memory per pod
//!   (daemon and monitors or shims), the daemon's RSS, and the latency of the lists and
//!   stats a kubelet polls (`ListPodSandbox`, `ListContainers`, `ListContainerStats`,
//!   `ListPodSandboxStats`) at that size. A runtime that answers one of them with an
//!   error gets no sample there (the row says `–`), and the error is printed.

use std::time::Instant;

use berth::proto::{
    ListContainerStatsRequest, ListContainersRequest, ListPodSandboxRequest,
    ListPodSandboxStatsRequest, PodSandboxConfig,
};
use futures_util::StreamExt as _;

use super::report::Figure;
use super::restart::RuntimeDaemon;
use super::{Target, kb_to_mb, ms, processes_mentioning, pss_kb, rss_kb, turns};

/// The nearest-rank percentile `p` (0..=1) of `samples`.
fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

/// Parallel starts of `pods` pods, `in_flight` at a time, on each target in turn.
pub async fn parallel(targets: &mut [Target], pods: usize, in_flight: usize) -> Vec<Figure> {
    eprintln!("parallel starts: {pods} pods, {in_flight} in flight");
    let label = format!("parallel starts, {pods} pods, {in_flight} in flight");
    let mut rate = Figure::new(&format!("{label}: pods per second"), "pods/s");
    let mut latency = Figure::new(&format!("{label}: latency per pod"), "ms");
    let mut p99 = Figure::new(&format!("{label}: p99 latency per pod"), "ms");
    let mut busy = Figure::new(&format!("{label}: machine CPU busy"), "%");
    let mut cpu = Figure::new(&format!("{label}: machine CPU seconds per pod"), "ms");
    let mut daemon_cpu = Figure::new(
        &format!(
            "{label}: daemon and the commands it ran (runc, CNI, iptables), CPU seconds per pod"
        ),
        "ms",
    );
    let mut parts = Vec::new();
    for (i, target) in targets.iter_mut().enumerate() {
        super::settle().await;
        let scraped = match &target.metrics {
            Some(address) => scrape(address).await,
            None => Vec::new(),
        };
        let machine = MachineCpu::now();
        let daemon = super::polling::cpu_ticks(target.pid);
        let started = Instant::now();
        let results: Vec<_> = futures_util::stream::iter(0..pods)
            .map(|n| {
                let mut target = target.fork();
                async move {
                    let begun = Instant::now();
                    let running = target.sleeper_pod(&format!("par-{in_flight}-{n}")).await;
                    (running.pod, ms(begun.elapsed()))
                }
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
        let took = started.elapsed().as_secs_f64();
        let (busy_share, cpu_seconds) = machine.since();
        busy.runtime(i).push(busy_share * 100.0);
        cpu.runtime(i).push(cpu_seconds * 1e3 / pods as f64);
        let daemon_ticks = super::polling::cpu_ticks(target.pid).saturating_sub(daemon);
        daemon_cpu
            .runtime(i)
            .push(daemon_ticks as f64 * 10.0 / pods as f64);
        if let Some(address) = &target.metrics {
            parts.extend(where_the_time_goes(
                &label,
                &scraped,
                &scrape(address).await,
                pods,
            ));
        }
        rate.runtime(i).push(pods as f64 / took);
        let latencies: Vec<f64> = results.iter().map(|(_, ms)| *ms).collect();
        p99.runtime(i).push(percentile(&latencies, 0.99));
        latency.runtime(i).extend(latencies);
        futures_util::stream::iter(results)
            .map(|(pod, _)| {
                let mut target = target.fork();
                async move { target.teardown(&pod).await }
            })
            .buffer_unordered(in_flight)
            .collect::<Vec<_>>()
            .await;
    }
    let mut figures = vec![rate, latency, p99, busy, cpu, daemon_cpu];
    figures.extend(parts);
    figures
}

/// The whole machine's CPU time, from `/proc/stat`: (busy, all) in clock ticks.
struct MachineCpu(u64, u64);

impl MachineCpu {
    fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        let all: u64 = ticks.iter().take(8).sum();
        // idle and iowait are the 4th and 5th.
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        MachineCpu(all - idle, all)
    }

    /// The share of the machine's CPUs busy since, and the busy CPU seconds.
    fn since(&self) -> (f64, f64) {
        let now = MachineCpu::now();
        let busy = now.0.saturating_sub(self.0) as f64;
        let all = now.1.saturating_sub(self.1).max(1) as f64;
        (busy / all, busy / 100.0)
    }
}

/// The daemon's Prometheus samples, as (series, value).
async fn scrape(address: &str) -> Vec<(String, f64)> {
    let response = match reqwest::get(format!("http://{address}/metrics")).await {
        Ok(response) => response,
        Err(err) => {
            eprintln!("scrape {address}: {err}");
            return Vec::new();
        }
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// From the daemon's timings before and after a batch of `pods` pods: the mean time per
/// call of each RPC, CNI operation and runtime command the batch made, a row each (what
/// the pod's latency is made of; the rest of an RPC's time is the daemon's own).
fn where_the_time_goes(
    label: &str,
    before: &[(String, f64)],
    after: &[(String, f64)],
    pods: usize,
) -> Vec<Figure> {
    let value = |samples: &[(String, f64)], key: &str| {
        samples
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0.0, |(_, v)| *v)
    };
    let mut figures = Vec::new();
    for (series, sum) in after {
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let Some(name) = name.strip_suffix("_sum") else {
            continue;
        };
        let count_key = format!("{name}_count{{{labels}");
        let calls = value(after, &count_key) - value(before, &count_key);
        if calls < 1.0 || !name.contains("duration_seconds") {
            continue;
        }
        let seconds = sum - value(before, series);
        let what = name
            .trim_start_matches("berth_")
            .trim_end_matches("_duration_seconds");
        let mut figure = Figure::new(
            &format!(
                "{label}: berth's {what} {{{labels}, mean of {calls:.0} ({:.1} per pod)",
                calls / pods as f64
            ),
            "ms",
        );
        figure.berth.push(seconds * 1e3 / calls);
        figures.push(figure);
    }
    figures
}

/// A pod of the node figures, running one `sleep`.
#[derive(Clone)]
pub struct Running {
    pub pod: (String, PodSandboxConfig),
    pub container: String,
}

/// How many pods the node figures keep, and for how long they poll.
pub struct NodeCounts {
    pub polling_pods: usize,
    pub polling_seconds: usize,
    pub dense_pods: usize,
    pub samples: usize,
    pub restarts: usize,
}

/// The node figures, on one set of pods per target that grows as it goes: the kubelet's
/// steady polling with `polling_pods` running, then a dense node of `dense_pods` (memory,
/// lists, stats), then daemon restarts with all of those running. `daemons[i]` is the
/// daemon that serves `targets[i]`.
pub async fn node(
    targets: &mut [Target],
    daemons: &mut [RuntimeDaemon<'_>],
    counts: &NodeCounts,
) -> Vec<Figure> {
    let mut running = vec![Vec::new(); targets.len()];
    grow(targets, &mut running, counts.polling_pods).await;
    let mut figures = super::polling::polling(targets, &running, counts.polling_seconds).await;
    grow(targets, &mut running, counts.dense_pods).await;
    figures.extend(dense(targets, &running, counts.samples).await);
    figures.extend(super::restart::restarts(targets, daemons, &running, counts.restarts).await);
    for (target, pods) in targets.iter_mut().zip(&running) {
        futures_util::stream::iter(pods)
            .map(|running| {
                let mut target = target.fork();
                async move { target.teardown(&running.pod).await }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
    }
    figures
}

/// Starts pods on each target until it runs `pods` of them.
async fn grow(targets: &mut [Target], running: &mut [Vec<Running>], pods: usize) {
    for (target, mine) in targets.iter_mut().zip(running.iter_mut()) {
        for n in mine.len()..pods {
            mine.push(target.sleeper_pod(&format!("node-{n}")).await);
        }
    }
}

/// A dense node: the runtime's memory with `running` pods, and `samples` rounds of the
/// polled lists and stats.
async fn dense(targets: &mut [Target], running: &[Vec<Running>], samples: usize) -> Vec<Figure> {
    let pods = running.first().map_or(0, Vec::len);
    eprintln!("dense node: {pods} pods");
    let label = |what: &str| format!("dense node, {pods} pods: {what}");
    let mut per_pod_rss = Figure::new(&label("runtime RSS per pod"), "MB");
    let mut per_pod_pss = Figure::new(&label("runtime PSS per pod"), "MB");
    let mut daemon_rss = Figure::new(&label("daemon RSS"), "MB");
    let mut helpers = Figure::new(
        &label("runtime processes (daemon + monitors or shims)"),
        "count",
    );
    let mut calls = [
        Figure::new(&label("ListPodSandbox"), "ms"),
        Figure::new(&label("ListContainers"), "ms"),
        Figure::new(&label("ListContainerStats"), "ms"),
        Figure::new(&label("ListPodSandboxStats"), "ms"),
    ];
    for (i, target) in targets.iter_mut().enumerate() {
        let ours = processes_mentioning(&target.dir);
        let rss: u64 = ours.iter().map(|&pid| rss_kb(pid)).sum();
        let pss: u64 = ours.iter().map(|&pid| pss_kb(pid)).sum();
        per_pod_rss.runtime(i).push(kb_to_mb(rss) / pods as f64);
        per_pod_pss.runtime(i).push(kb_to_mb(pss) / pods as f64);
        daemon_rss.runtime(i).push(kb_to_mb(rss_kb(target.pid)));
        helpers.runtime(i).push(ours.len() as f64);
    }
    for sample in 0..samples {
        for i in turns(sample, targets.len()) {
            for (figure, took) in calls.iter_mut().zip(targets[i].poll(pods).await) {
                if let Some(took) = took {
                    figure.runtime(i).push(took);
                }
            }
        }
    }
    let mut figures = vec![per_pod_rss, per_pod_pss, daemon_rss, helpers];
    figures.extend(calls);
    figures
}

impl Target {
    /// A pod running one busybox `sleep`.
    async fn sleeper_pod(&mut self, name: &str) -> Running {
        let pod = self.run_pod(name).await;
        let busybox = self.busybox.clone();
        let (container, _, _) = Target::create_start(
            &mut self.runtime,
            &busybox,
            &pod,
            "sleeper",
            &["sleep", "3600"],
        )
        .await;
        Running { pod, container }
    }

    /// The same endpoint on the same connection, for calls made at once.
    pub fn fork(&self) -> Target {
        Target {
            name: self.name,
            runtime: self.runtime.clone(),
            images: self.images.clone(),
            dir: self.dir.clone(),
            pid: self.pid,
            socket: self.socket.clone(),
            metrics: self.metrics.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            logs: self.logs.clone(),
            busybox: self.busybox.clone(),
            handler: self.handler,
        }
    }

    /// Times the four polled calls with `pods` pods running (`None`: the call failed).
    async fn poll(&mut self, pods: usize) -> [Option<f64>; 4] {
        let name = self.name;
        let timed = |took: Instant, result: Result<usize, tonic::Status>, what: &str| {
            let took = ms(took.elapsed());
            match result {
                Ok(n) => {
                    assert!(n >= pods, "{name}: {what} listed {n} of {pods}");
                    Some(took)
                }
                Err(err) => {
                    eprintln!("{name}: {what}: {err}");
                    None
                }
            }
        };
        // One timed call: `$call` on the runtime client, `$len` counts what it listed.
        macro_rules! time {
            ($what:literal, $call:ident, $request:expr, $len:expr) => {{
                let start = Instant::now();
                let listed = self
                    .runtime
                    .$call($request)
                    .await
                    .map(|r| $len(r.into_inner()));
                timed(start, listed, $what)
            }};
        }
        let pods_listed = time!(
            "ListPodSandbox",
            list_pod_sandbox,
            ListPodSandboxRequest::default(),
            |r: berth::proto::ListPodSandboxResponse| r.items.len()
        );
        let containers = time!(
            "ListContainers",
            list_containers,
            ListContainersRequest::default(),
            |r: berth::proto::ListContainersResponse| r.containers.len()
        );
        let container_stats = time!(
            "ListContainerStats",
            list_container_stats,
            ListContainerStatsRequest::default(),
            |r: berth::proto::ListContainerStatsResponse| r.stats.len()
        );
        let pod_stats = time!(
            "ListPodSandboxStats",
            list_pod_sandbox_stats,
            ListPodSandboxStatsRequest::default(),
            |r: berth::proto::ListPodSandboxStatsResponse| r.stats.len()
        );
        [pods_listed, containers, container_stats, pod_stats]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&samples, 0.99), 99.0);
        assert_eq!(super::percentile(&[3.0], 0.99), 3.0);
        assert_eq!(super::percentile(&[], 0.99), 0.0);
    }
}
