//! Daemon restarts with a dense node (issue 18, figure 5): the daemon is stopped with
//! SIGTERM (its pods run on, under their monitors or shims) and started again; timed
//! from the spawn to a socket that answers `Version`, and to the first pair of answers
//! that list every pod READY and every container RUNNING. Polled every 2 ms.

use std::time::{Duration, Instant};

use berth::proto::image_service_client::ImageServiceClient;
use berth::proto::runtime_service_client::RuntimeServiceClient;
use berth::proto::{
    ContainerState, ListContainersRequest, ListPodSandboxRequest, PodSandboxState, VersionRequest,
};

use super::containerd::Containerd;
use super::report::Figure;
use super::scale::Running;
use super::{Target, ms, turns};

/// How long a restarted daemon may take to list everything right.
const RESTART_DEADLINE: Duration = Duration::from_secs(60);

/// The daemon behind a target, which the restart figure stops and starts.
pub enum RuntimeDaemon<'a> {
    Berth(&'a mut super::common::Daemon),
    Containerd(&'a mut Containerd),
}

impl RuntimeDaemon<'_> {
    async fn stop(&mut self) {
        match self {
            RuntimeDaemon::Berth(daemon) => {
                let status = daemon.stop().await;
                assert!(status.success(), "berth exited with {status} on SIGTERM");
            }
            RuntimeDaemon::Containerd(containerd) => containerd.stop().await,
        }
    }

    /// Starts it again; returns its pid.
    fn spawn(&mut self) -> u32 {
        match self {
            RuntimeDaemon::Berth(daemon) => {
                daemon.spawn();
                daemon.pid()
            }
            RuntimeDaemon::Containerd(containerd) => {
                containerd.spawn();
                containerd.pid()
            }
        }
        .expect("the daemon was spawned")
    }
}

/// `rounds` restarts of each daemon in turn, with `running` pods on each.
pub async fn restarts(
    targets: &mut [Target],
    daemons: &mut [RuntimeDaemon<'_>],
    running: &[Vec<Running>],
    rounds: usize,
) -> Vec<Figure> {
    let pods = running.first().map_or(0, Vec::len);
    eprintln!("restarts: {pods} pods, {rounds} rounds");
    let label = |what: &str| format!("daemon restart, {pods} pods: {what}");
    let mut serving = Figure::new(&label("socket answers Version"), "ms");
    let mut listed = Figure::new(&label("every pod and container listed in its state"), "ms");
    for round in 0..rounds {
        for i in turns(round, targets.len()) {
            super::settle().await;
            daemons[i].stop().await;
            let started = Instant::now();
            targets[i].pid = daemons[i].spawn();
            let (answered, all) = targets[i].wait_listed(&running[i], started).await;
            serving.runtime(i).push(answered);
            listed.runtime(i).push(all);
        }
    }
    vec![serving, listed]
}

impl Target {
    /// Waits until the restarted daemon lists every pod of `running` READY and each of
    /// their containers RUNNING; returns the milliseconds from `started` to its first
    /// `Version` answer and to that listing. Then talks to it on the new connection.
    async fn wait_listed(&mut self, running: &[Running], started: Instant) -> (f64, f64) {
        let mut answered = None;
        loop {
            assert!(
                started.elapsed() < RESTART_DEADLINE,
                "{}: not everything listed right within {RESTART_DEADLINE:?} of a restart",
                self.name
            );
            if let Ok(channel) = berth::daemon::client::connect(&self.socket).await {
                let mut runtime = RuntimeServiceClient::new(channel.clone());
                if answered.is_none() && runtime.version(VersionRequest::default()).await.is_ok() {
                    answered = Some(ms(started.elapsed()));
                }
                if answered.is_some() && lists_all(&mut runtime, running).await {
                    let all = ms(started.elapsed());
                    self.runtime = runtime;
                    self.images = ImageServiceClient::new(channel);
                    return (answered.unwrap_or(all), all);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Whether `runtime` lists every pod of `running` READY and its container RUNNING.
async fn lists_all(
    runtime: &mut RuntimeServiceClient<tonic::transport::Channel>,
    running: &[Running],
) -> bool {
    let Ok(pods) = runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
    else {
        return false;
    };
    let Ok(containers) = runtime
        .list_containers(ListContainersRequest::default())
        .await
    else {
        return false;
    };
    let ready: std::collections::HashSet<&str> = pods
        .get_ref()
        .items
        .iter()
        .filter(|p| p.state == PodSandboxState::SandboxReady as i32)
        .map(|p| p.id.as_str())
        .collect();
    let live: std::collections::HashSet<&str> = containers
        .get_ref()
        .containers
        .iter()
        .filter(|c| c.state == ContainerState::ContainerRunning as i32)
        .map(|c| c.id.as_str())
        .collect();
    running
        .iter()
        .all(|r| ready.contains(r.pod.0.as_str()) && live.contains(r.container.as_str()))
}
