//! The kubelet's steady polling (issue 18, figure 3): with a set of pods running, the
//! calls a kubelet makes every second for a minute, and what they cost the runtime in
//! CPU time.
//!
//! Each second, as the kubelet's relist and pod workers do (the call mix of
//! `kube-1.35-smoke-and-rich-pod.jsonl`): `ListPodSandbox` with no filter and with the
//! READY state, `ListContainers` with no filter and with the RUNNING state, and a
//! `PodSandboxStatus` and a `ContainerStatus` for every pod; every tenth second a
//! `ListContainerStats` too. The targets take turns, a third of the time each, three
//! times over, so that neither competes with the other for the CPUs; the CPU figures
//! have a sample per turn. CPU time is read from `/proc/<pid>/stat`
//! (user + system, with reaped children such as runc), for the daemon alone and for
//! every process of the runtime (daemon and monitors or shims).

use std::time::{Duration, Instant};

use berth::proto::{
    ContainerFilter, ContainerState, ContainerStateValue, ContainerStatusRequest,
    ListContainerStatsRequest, ListContainersRequest, ListPodSandboxRequest, PodSandboxFilter,
    PodSandboxState, PodSandboxStateValue, PodSandboxStatusRequest,
};

use super::report::Figure;
use super::scale::Running;
use super::{Target, ms, processes_mentioning};

/// The clock ticks of `/proc/<pid>/stat` (USER_HZ, 100 on Linux whatever the kernel's HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// Rounds the polling is cut into, the targets taking turns (which goes first changes),
/// so that a slow patch of the machine does not fall on one target only.
const ROUNDS: usize = 3;

/// `seconds` seconds of the kubelet's polling on each target, in [`ROUNDS`] turns.
pub async fn polling(
    targets: &mut [Target],
    running: &[Vec<Running>],
    seconds: usize,
) -> Vec<Figure> {
    let pods = running.first().map_or(0, Vec::len);
    eprintln!("kubelet polling: {pods} pods, {seconds} s");
    let label = |what: &str| format!("kubelet polling, {pods} pods: {what}");
    let mut daemon = Figure::new(&label("daemon CPU per minute"), "s");
    let mut runtime = Figure::new(
        &label("runtime CPU per minute (daemon + monitors or shims)"),
        "s",
    );
    let mut round = Figure::new(&label("one second's calls"), "ms");
    let share = seconds.div_ceil(ROUNDS).max(1);
    for turn in 0..ROUNDS {
        for i in super::turns(turn, targets.len()) {
            let target = &mut targets[i];
            super::settle().await;
            let processes = processes_mentioning(&target.dir);
            let daemon_before = cpu_ticks(target.pid);
            let before: u64 = processes.iter().map(|&pid| cpu_ticks(pid)).sum();
            let started = tokio::time::Instant::now();
            for tick in 0..share {
                tokio::time::sleep_until(started + Duration::from_secs(tick as u64)).await;
                let begun = Instant::now();
                target
                    .kubelet_second(&running[i], (turn * share + tick).is_multiple_of(10))
                    .await;
                round.runtime(i).push(ms(begun.elapsed()));
            }
            tokio::time::sleep_until(started + Duration::from_secs(share as u64)).await;
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            let after: u64 = processes.iter().map(|&pid| cpu_ticks(pid)).sum();
            let seconds_of = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / minutes;
            daemon.runtime(i).push(seconds_of(
                cpu_ticks(target.pid).saturating_sub(daemon_before),
            ));
            runtime
                .runtime(i)
                .push(seconds_of(after.saturating_sub(before)));
        }
    }
    vec![daemon, runtime, round]
}

/// A process's CPU time in clock ticks: user and system, its own and its reaped
/// children's (0 once it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis start at the state (field 3);
    // utime, stime, cutime and cstime are fields 14 to 17.
    stat.rsplit(')')
        .next()
        .map(|rest| {
            rest.split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

impl Target {
    /// One second of a kubelet's calls with `running` pods; `stats` adds the stats call.
    async fn kubelet_second(&mut self, running: &[Running], stats: bool) {
        let name = self.name;
        let fail = |what: &str, err: tonic::Status| -> ! { panic!("{name}: {what}: {err}") };
        let ready = PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        for filter in [None, Some(ready)] {
            let listed = self
                .runtime
                .list_pod_sandbox(ListPodSandboxRequest { filter })
                .await
                .unwrap_or_else(|e| fail("ListPodSandbox", e))
                .into_inner()
                .items
                .len();
            assert!(listed >= running.len(), "{name}: {listed} pods listed");
        }
        let live = ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        };
        for filter in [Some(ContainerFilter::default()), Some(live)] {
            let listed = self
                .runtime
                .list_containers(ListContainersRequest { filter })
                .await
                .unwrap_or_else(|e| fail("ListContainers", e))
                .into_inner()
                .containers
                .len();
            assert!(
                listed >= running.len(),
                "{name}: {listed} containers listed"
            );
        }
        for pod in running {
            self.runtime
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.pod.0.clone(),
                    verbose: false,
                })
                .await
                .unwrap_or_else(|e| fail("PodSandboxStatus", e));
            self.runtime
                .container_status(ContainerStatusRequest {
                    container_id: pod.container.clone(),
                    verbose: false,
                })
                .await
                .unwrap_or_else(|e| fail("ContainerStatus", e));
        }
        if stats {
            self.runtime
                .list_container_stats(ListContainerStatsRequest::default())
                .await
                .unwrap_or_else(|e| fail("ListContainerStats", e));
        }
    }
}
