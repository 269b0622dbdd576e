//! ExecSync against real runc: output and exit codes, the container's own user and
//! environment, timeouts that kill, output caps, cancelled calls, and no process or
//! zombie left behind after many calls.

mod common;

use std::time::{Duration, Instant};

use berth::proto::{
    ContainerStatusRequest, ExecSyncRequest, ExecSyncResponse, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext,
};
use common::wait_for;
use common::world::{World, container, world};

/// The pids in the container's pids cgroup (the pod's cgroup parent is /berth-test).
fn container_pids(id: &str) -> Vec<i32> {
    let path = format!("/sys/fs/cgroup/pids/berth-test/{id}/cgroup.procs");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The daemon's children that are zombies.
fn zombie_children(w: &World) -> Vec<String> {
    let daemon = w.daemon.pid().expect("the daemon runs").to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&daemon.as_str()) {
            zombies.push(stat);
        }
    }
    zombies
}

impl World {
    async fn running(&mut self, config: berth::proto::ContainerConfig) -> String {
        let id = self.create(config).await;
        self.start(&id).await;
        id
    }

    async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        self.client
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }
}

#[tokio::test]
async fn exec_sync_output_exit_codes_user_and_errors() {
    let mut w = world().await;
    let mut config = container("app", "sleep 3600");
    config.envs = vec![KeyValue {
        key: "GREETING".into(),
        value: "hello".into(),
    }];
    config.working_dir = "/tmp".into();
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.running(config).await;
    let r = w
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"], 0)
        .await
        .expect("exec");
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );
    let r = w
        .exec(&id, &["sh", "-c", "echo $GREETING; id -u; pwd"], 5)
        .await
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&r.stdout), "hello\n1000\n/tmp\n");
    assert_eq!(r.exit_code, 0);

    // Bad requests.
    let err = w.exec(&id, &[], 0).await.expect_err("no command");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cmd"), "{err:?}");
    let err = w
        .exec("no-such-container", &["true"], 0)
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = w
        .exec(&id, &["/no/such/binary"], 0)
        .await
        .expect_err("a missing binary");
    assert!(
        err.message().contains("no such file") || err.message().contains("not found"),
        "{err:?}"
    );
    let created = w.create(container("idle", "true")).await;
    let err = w
        .exec(&created, &["true"], 0)
        .await
        .expect_err("not running");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // youki's half-made process of the failed exec ends a moment after youki does.
    common::wait_for(
        "only the container's init",
        std::time::Duration::from_secs(5),
        || {
            let left = container_pids(&id).len() == 1;
            async move { left.then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn exec_sync_timeouts_caps_cancels_and_leaves_nothing_behind() {
    let mut w = world().await;
    let id = w.running(container("app", "sleep 3600")).await;
    let baseline = container_pids(&id);
    assert_eq!(baseline.len(), 1);

    // A timeout kills the process and says so.
    let started = Instant::now();
    let err = w
        .exec(&id, &["sleep", "100"], 1)
        .await
        .expect_err("a timeout");
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "the timeout took {took:?}"
    );
    assert_eq!(container_pids(&id), baseline, "the sleep was left running");

    // Output beyond the cap is dropped, and the process still finishes.
    let mut client = w.client.clone().max_decoding_message_size(32 << 20);
    let big = client
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "head -c 20000000 /dev/zero; echo done >&2".into(),
            ],
            timeout: 30,
        })
        .await
        .expect("a big output")
        .into_inner();
    assert_eq!(big.exit_code, 0);
    assert_eq!(big.stdout.len(), (16 << 20) - 4096);
    assert!(big.stdout.iter().all(|b| *b == 0));

    // A caller that goes away: the process is killed.
    let mut client = w.client.clone();
    let request = ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["sleep".into(), "100".into()],
        timeout: 0,
    };
    let gone = tokio::time::timeout(Duration::from_millis(700), client.exec_sync(request)).await;
    assert!(gone.is_err(), "the call should still have been running");
    wait_for(
        "the cancelled exec to be killed",
        Duration::from_secs(10),
        || async { (container_pids(&id) == baseline).then_some(()) },
    )
    .await;

    // Many calls in a row: no zombie, no process left.
    for i in 0..200 {
        let r = w
            .exec(&id, &["true"], 5)
            .await
            .unwrap_or_else(|e| panic!("exec {i}: {e}"));
        assert_eq!(r.exit_code, 0);
    }
    assert_eq!(container_pids(&id), baseline);
    assert!(zombie_children(&w).is_empty(), "{:?}", zombie_children(&w));
    let status = w
        .client
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        status.state,
        berth::proto::ContainerState::ContainerRunning as i32
    );
    let leftovers: Vec<_> = std::fs::read_dir(w.daemon.paths().state.join("containers").join(&id))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("exec-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
