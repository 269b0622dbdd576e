//! The soak: many pod cycles on one daemon, then many ExecSync calls, watching what the
//! daemon holds.
//!
//! `make soak` (`cargo bench --bench soak`, against the release build) runs 1 000 cycles
//! (RunPodSandbox, CreateContainer, StartContainer, ExecSync, the container's log read as
//! `kubectl logs` reads it, StopPodSandbox, RemovePodSandbox), sampling the daemon's RSS,
//! open file descriptors and threads every 100, then 1 000 ExecSync calls in one
//! container. It requires flat figures (RSS within 10 % of the first sample, which comes
//! after warm-up; descriptors and threads back where they were), no zombie under the
//! daemon or the container, and nothing left on the host once it is over
//! (`BERTH_SOAK_CYCLES`, `BERTH_SOAK_EXECS` change the counts). Under `cargo test` it
//! runs as a smoke test with tiny counts: every step must work and nothing may be left;
//! no figure is judged.
//!
//! The figures go to stdout and to `target/tmp/soak.md`; `bench/RESULTS.md` keeps the
//! runs worth keeping.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use berth::proto::runtime_service_client::RuntimeServiceClient;
use berth::proto::{
    CreateContainerRequest, ExecSyncRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use common::world::{busybox_mirror, container, pod_config, records};
use tonic::transport::Channel;

/// One sample of what the daemon holds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cycles: usize,
    rss_kb: u64,
    fds: usize,
    threads: u64,
}

impl Sample {
    fn of(pid: u32, cycles: usize) -> Sample {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        Sample {
            cycles,
            rss_kb: field("VmRSS:"),
            fds,
            threads: field("Threads:"),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let count = |variable: &str, full_count: usize, smoke: usize| {
        std::env::var(variable)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(if full { full_count } else { smoke })
    };
    let cycles = count("BERTH_SOAK_CYCLES", 1000, 20);
    let execs = count("BERTH_SOAK_EXECS", 1000, 20);
    let every = (cycles / 10).max(1);

    let tree = common::CgroupTree(format!("berth-soak-{}", std::process::id()));
    let (_registry, daemon) = busybox_mirror("latest", "").await;
    common::world::pull_busybox(&daemon).await;
    let logs = tempfile::tempdir().expect("a log directory");
    let mut client = daemon.runtime().await;
    let pid = daemon.pid().expect("the daemon runs");

    let started = Instant::now();
    let mut samples = Vec::new();
    for cycle in 1..=cycles {
        pod_cycle(&mut client, cycle, logs.path(), &tree.0).await;
        if cycle % every == 0 {
            samples.push(Sample::of(pid, cycle));
        }
    }
    let cycle_time = started.elapsed();

    let state = daemon.paths().state.clone();
    let (exec_time, zombies) =
        exec_soak(&mut client, execs, logs.path(), &tree.0, (pid, &state)).await;
    let after = Sample::of(pid, cycles);

    let report = report(&samples, after, cycle_time, execs, exec_time, zombies);
    println!("{report}");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak.md");
    std::fs::write(&out, &report).expect("write the report");
    println!("written: {}", out.display());

    assert_eq!(zombies, 0, "zombies after {execs} ExecSync calls");
    common::leaks::assert_nothing_left(&daemon, &tree.0);
    if full {
        assert_flat(&samples);
    }
}

/// One pod's life, as the kubelet drives it.
async fn pod_cycle(client: &mut RuntimeServiceClient<Channel>, n: usize, logs: &Path, tree: &str) {
    let name = format!("soak-{n}");
    let mut config = pod_config(&name, &format!("/{tree}"));
    config.log_directory = logs.join(&name).display().to_string();
    let pod = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run the pod")
        .into_inner()
        .pod_sandbox_id;
    let id = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container(
                &name,
                &format!("echo cycle-{n}; exec sleep 3600"),
            )),
            sandbox_config: Some(config),
        })
        .await
        .expect("create the container")
        .into_inner()
        .container_id;
    client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start the container");
    let answer = client
        .exec_sync(ExecSyncRequest {
            container_id: id,
            cmd: vec!["echo".into(), format!("exec-{n}")],
            timeout: 10,
        })
        .await
        .expect("exec in the container")
        .into_inner();
    assert_eq!(answer.stdout, format!("exec-{n}\n").into_bytes());
    let log = logs.join(&name).join(format!("{name}/0.log"));
    let wanted = format!("cycle-{n}");
    let start = Instant::now();
    while !records(&log).iter().any(|r| r.2 == wanted) {
        assert!(
            start.elapsed().as_secs() < 10,
            "{} never held {wanted:?}",
            log.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("stop the pod");
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .expect("remove the pod");
}

/// `execs` ExecSync calls in one container; returns how long they took and how many
/// zombies the daemon, the container's monitor and its init have afterwards.
async fn exec_soak(
    client: &mut RuntimeServiceClient<Channel>,
    execs: usize,
    logs: &Path,
    tree: &str,
    (daemon, state): (u32, &Path),
) -> (std::time::Duration, usize) {
    let mut config = pod_config("soak-exec", &format!("/{tree}"));
    config.log_directory = logs.join("soak-exec").display().to_string();
    let pod = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run the exec pod")
        .into_inner()
        .pod_sandbox_id;
    let id = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container("soak-exec", "exec sleep 3600")),
            sandbox_config: Some(config),
        })
        .await
        .expect("create the exec container")
        .into_inner()
        .container_id;
    client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start the exec container");
    let started = Instant::now();
    for n in 0..execs {
        let answer = client
            .exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into(), "-c".into(), format!("exit {}", n % 3)],
                timeout: 10,
            })
            .await
            .expect("exec")
            .into_inner();
        assert_eq!(answer.exit_code, (n % 3) as i32);
    }
    let took = started.elapsed();
    let parents: Vec<i32> = std::iter::once(daemon as i32)
        .chain(family(&state.join("containers").join(&id)))
        .collect();
    let zombies = zombies_of(&parents);
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("stop the exec pod");
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .expect("remove the exec pod");
    (took, zombies)
}

/// The container's monitor and init (from their pid files in the container's state
/// directory `dir`): an exec'd process left to them would end as their zombie.
fn family(dir: &Path) -> Vec<i32> {
    ["monitor.pid", "container.pid"]
        .iter()
        .filter_map(|file| {
            std::fs::read_to_string(dir.join(file))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

/// Processes in state Z whose parent is one of `parents`.
fn zombies_of(parents: &[i32]) -> usize {
    common::leaks::entries(Path::new("/proc"))
        .into_iter()
        .filter(|pid| pid.parse::<u32>().is_ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter(|stat| {
            let rest = stat.rsplit(')').next().unwrap_or("");
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let parent: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            state == Some("Z") && parents.contains(&parent)
        })
        .count()
}

/// RSS within 10 % of the first sample (taken after warm-up), descriptors and threads
/// back to the first sample's, give or take the runtime's worker pool.
fn assert_flat(samples: &[Sample]) {
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    assert!(
        last.rss_kb * 10 <= first.rss_kb * 11,
        "RSS grew from {} to {} kB",
        first.rss_kb,
        last.rss_kb
    );
    assert!(
        last.fds <= first.fds + 2,
        "descriptors grew from {} to {}",
        first.fds,
        last.fds
    );
    assert!(
        last.threads <= first.threads + 4,
        "threads grew from {} to {}",
        first.threads,
        last.threads
    );
}

fn report(
    samples: &[Sample],
    after: Sample,
    cycle_time: std::time::Duration,
    execs: usize,
    exec_time: std::time::Duration,
    zombies: usize,
) -> String {
    let cycles = samples.last().map_or(0, |s| s.cycles);
    let mut out = "| cycles | daemon RSS (kB) | open fds | threads |\n| --- | --- | --- | --- |\n"
        .to_string();
    for s in samples {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s.cycles, s.rss_kb, s.fds, s.threads
        ));
    }
    out.push_str(&format!(
        "| after {execs} ExecSync | {} | {} | {} |\n\n",
        after.rss_kb, after.fds, after.threads
    ));
    out.push_str(&format!(
        "{cycles} pod cycles in {:.1} s ({:.0} ms each); {execs} ExecSync in {:.1} s \
         ({:.1} ms each); zombies afterwards: {zombies}\n",
        cycle_time.as_secs_f64(),
        cycle_time.as_secs_f64() * 1000.0 / cycles.max(1) as f64,
        exec_time.as_secs_f64(),
        exec_time.as_secs_f64() * 1000.0 / execs.max(1) as f64,
    ));
    out
}
