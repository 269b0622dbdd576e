//! Figures at node scale (issue 18): pods started in parallel, and a dense node.
//!
//! - **Parallel starts**: `pods` pods (RunPodSandbox, CreateContainer, StartContainer of
//!   a `sleep`) with `in_flight` of them under way at once, as a kubelet's pod workers do:
//!   pods per second over the whole batch, and each pod's latency (p99 on a row of its
//!   own). The pods are then removed, untimed.
//! - **Dense node**: `pods` pods running a `sleep` each: the runtime's memory per pod
//!   (daemon and monitors or shims), the daemon's RSS, and the latency of the lists and
//!   stats a kubelet polls (`ListPodSandbox`, `ListContainers`, `ListContainerStats`,
//!   `ListPodSandboxStats`) at that size. A runtime that answers one of them with an
//!   error gets no sample there (the row says `–`), and the error is printed.

use std::time::Instant;

use berth::proto::{
    ListContainerStatsRequest, ListContainersRequest, ListPodSandboxRequest,
    ListPodSandboxStatsRequest,
};
use futures_util::StreamExt as _;

use super::report::Figure;
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
    for (i, target) in targets.iter_mut().enumerate() {
        super::settle().await;
        let started = Instant::now();
        let results: Vec<_> = futures_util::stream::iter(0..pods)
            .map(|n| {
                let mut target = target.fork();
                async move {
                    let begun = Instant::now();
                    let pod = target.run_pod(&format!("par-{in_flight}-{n}")).await;
                    let busybox = target.busybox.clone();
                    Target::create_start(
                        &mut target.runtime,
                        &busybox,
                        &pod,
                        "sleeper",
                        &["sleep", "3600"],
                    )
                    .await;
                    (pod, ms(begun.elapsed()))
                }
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
        let took = started.elapsed().as_secs_f64();
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
    vec![rate, latency, p99]
}

/// A dense node: `pods` running pods on each target, `samples` rounds of the polled calls.
pub async fn dense(targets: &mut [Target], pods: usize, samples: usize) -> Vec<Figure> {
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
    let mut running = Vec::new();
    for target in targets.iter_mut() {
        let mut mine = Vec::new();
        for n in 0..pods {
            let pod = target.run_pod(&format!("dense-{n}")).await;
            let busybox = target.busybox.clone();
            Target::create_start(
                &mut target.runtime,
                &busybox,
                &pod,
                "sleeper",
                &["sleep", "3600"],
            )
            .await;
            mine.push(pod);
        }
        running.push(mine);
    }
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
    for (target, pods) in targets.iter_mut().zip(&running) {
        for pod in pods {
            target.teardown(pod).await;
        }
    }
    let mut figures = vec![per_pod_rss, per_pod_pss, daemon_rss, helpers];
    figures.extend(calls);
    figures
}

impl Target {
    /// The same endpoint on the same connection, for calls made at once.
    fn fork(&self) -> Target {
        Target {
            name: self.name,
            runtime: self.runtime.clone(),
            images: self.images.clone(),
            dir: self.dir.clone(),
            pid: self.pid,
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
