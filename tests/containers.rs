//! Containers with real runc and an image built from busybox-static, served by a real
//! registry: CRI log lines, exit codes and reasons, stop escalation, removal, and a
//! daemon crash that the containers and their logs survive.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::monitor::attach;
use berth::proto::image_service_client::ImageServiceClient;
use berth::proto::security_profile::ProfileType;
use berth::proto::{
    Capability, Device, Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext,
    Mount, SecurityProfile,
};
use berth::proto::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, ListContainersRequest, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, ReopenContainerLogRequest,
    StopContainerRequest,
};
use berth::proto::{ContainerStatus, LinuxContainerResources, SupplementalGroupsPolicy};
use common::images::{Compression, ImageConfig, LayerBuilder, TestImage};
use common::wait_for;
use common::world::{World, container, pod_config, records, run_pod, shell, world};

#[tokio::test]
async fn output_lands_in_the_cri_log_and_the_exit_code_is_reported() {
    let mut w = world().await;
    let long = "x".repeat(20_000);
    let script = format!("echo out; echo err >&2; echo {long}; printf tail; exit 3");
    let id = w.create(container("talker", &script)).await;
    let s = w.status(&id).await.status.unwrap();
    assert_eq!(s.state, ContainerState::ContainerCreated as i32);
    assert!(s.created_at > 0 && s.started_at == 0);
    w.start(&id).await;
    let s = w.wait_exited(&id).await.status.unwrap();
    assert_eq!(s.exit_code, 3);
    assert_eq!(s.reason, "Error");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at);
    assert_eq!(s.log_path, w.log_path("talker").display().to_string());
    let log = records(&w.log_path("talker"));
    let stdout: Vec<_> = log.iter().filter(|r| r.0 == "stdout").collect();
    assert!(
        log.contains(&("stderr".into(), "F".into(), "err".into())),
        "{log:?}"
    );
    assert_eq!(stdout[0], &("stdout".into(), "F".into(), "out".into()));
    // 20 000 bytes: one 16 KiB partial piece and the rest.
    assert_eq!(stdout[1].1, "P");
    assert_eq!(stdout[1].2.len() + stdout[2].2.len(), 20_000);
    assert_eq!(stdout[2].1, "F");
    assert_eq!(stdout[3], &("stdout".into(), "F".into(), "tail".into()));

    let ok = w.create(container("quiet", "true")).await;
    w.start(&ok).await;
    let s = w.wait_exited(&ok).await.status.unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));

    let listed = w
        .client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn stop_escalates_to_sigkill_and_remove_keeps_only_the_log() {
    let mut w = world().await;
    let id = w
        .create(container(
            "stubborn",
            "trap '' TERM; echo ready; while true; do sleep 1; done",
        ))
        .await;
    w.start(&id).await;
    let log = w.log_path("stubborn");
    wait_for(
        "the container to be ready",
        Duration::from_secs(10),
        || async { records(&log).iter().any(|r| r.2 == "ready").then_some(()) },
    )
    .await;
    let started = std::time::Instant::now();
    w.client
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .expect("stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "SIGTERM was ignored for the timeout: {took:?}"
    );
    let s = w.status(&id).await.status.unwrap();
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137, "killed by SIGKILL");
    // Idempotent.
    w.client
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .expect("stop again");

    let info: serde_json::Value = serde_json::from_str(&w.status(&id).await.info["info"]).unwrap();
    let rootfs = PathBuf::from(info["runtimeSpec"]["root"]["path"].as_str().unwrap());
    w.client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("remove");
    w.client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("remove again");
    assert!(!rootfs.exists(), "rootfs gone");
    assert!(
        !w.daemon.paths().state.join("containers").join(&id).exists(),
        "bundle and monitor files gone"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "no mount left");
    assert!(log.exists(), "the log stays");
    let err = w
        .client
        .container_status(ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn containers_and_logs_survive_a_daemon_crash() {
    let mut w = world().await;
    let ticker = w
        .create(container(
            "ticker",
            "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done",
        ))
        .await;
    w.start(&ticker).await;
    let short = w.create(container("short", "sleep 1; exit 7")).await;
    w.start(&short).await;
    let log = w.log_path("ticker");
    wait_for("ticks in the log", Duration::from_secs(10), || async {
        (records(&log).len() >= 3).then_some(())
    })
    .await;
    w.daemon.crash().await;
    let before = records(&log).len();
    wait_for(
        "more ticks while the daemon is down",
        Duration::from_secs(10),
        || async { (records(&log).len() > before + 5).then_some(()) },
    )
    .await;
    // The short container exits while nobody listens.
    let exit_file = w
        .daemon
        .paths()
        .state
        .join("containers")
        .join(&short)
        .join("exit.json");
    wait_for(
        "the short container to exit",
        Duration::from_secs(10),
        || async { exit_file.exists().then_some(()) },
    )
    .await;
    w.daemon.restart().await;
    w.client = w.daemon.runtime().await;
    let s = w.status(&ticker).await.status.unwrap();
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    let s = w.status(&short).await.status.unwrap();
    assert_eq!(
        (s.state, s.exit_code),
        (ContainerState::ContainerExited as i32, 7)
    );
    assert!(s.finished_at > 0);

    // Rotation: the kubelet renames the file and asks for a reopen.
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    w.client
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await
        .expect("reopen");
    wait_for("ticks in the new log", Duration::from_secs(10), || async {
        (!records(&log).is_empty()).then_some(())
    })
    .await;
    // No tick lost across the crash and the rotation.
    let mut ticks: Vec<u64> = records(&log.with_extension("log.1"))
        .into_iter()
        .chain(records(&log))
        .filter_map(|r| r.2.strip_prefix("tick ").and_then(|n| n.parse().ok()))
        .collect();
    let n = ticks.len() as u64;
    ticks.dedup();
    assert_eq!(ticks, (1..=n).collect::<Vec<_>>());
    let err = w
        .client
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: short.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "not running");

    // Removing the pod removes its containers.
    w.client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: w.sandbox.clone(),
        })
        .await
        .expect("remove pod");
    let left = w
        .client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert!(left.containers.is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&ticker) && !mounts.contains(&short));
}

impl World {
    async fn run_to_exit(
        &mut self,
        config: ContainerConfig,
    ) -> (String, i32, Vec<(String, String, String)>) {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let id = self.create(config).await;
        self.start(&id).await;
        let status = self.wait_exited(&id).await.status.unwrap();
        (id, status.exit_code, records(&self.log_path(&name)))
    }
}

fn text(log: &[(String, String, String)]) -> String {
    log.iter()
        .map(|r| r.2.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn secured(
    mut config: ContainerConfig,
    security: LinuxContainerSecurityContext,
) -> ContainerConfig {
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(security),
        resources: None,
    });
    config
}

/// A world that also has `entry:1`, an image with an entrypoint, a command, an
/// environment and a stop signal.
async fn world_with_entry_image() -> World {
    let w = world().await;
    let entry = TestImage::new(
        vec![LayerBuilder::new().busybox().build(Compression::Gzip)],
        ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo from-image-cmd $FROM_IMAGE".into()],
            env: vec!["PATH=/bin".into(), "FROM_IMAGE=yes".into()],
            stop_signal: "SIGINT".into(),
            ..ImageConfig::default()
        },
    );
    w.registry.push("library/entry", "1", &entry).await;
    let mut images =
        ImageServiceClient::new(common::connect(&w.daemon.paths().socket).await.unwrap());
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "entry:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull entry:1");
    w
}

/// A container of `entry:1` with these args (none: the image's Cmd) and MODE=cri.
fn from_entry(name: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "entry:1".into(),
            ..Default::default()
        }),
        args: args.iter().map(|a| a.to_string()).collect(),
        envs: vec![KeyValue {
            key: "MODE".into(),
            value: "cri".into(),
        }],
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_image_entrypoint_runs_its_cmd_or_the_args_with_both_environments() {
    let mut w = world_with_entry_image().await;
    let (_, code, log) = w.run_to_exit(from_entry("image-cmd", &[])).await;
    assert_eq!((code, text(&log)), (0, "from-image-cmd yes".to_string()));
    let (_, _, log) = w
        .run_to_exit(from_entry("args", &["echo from-args $FROM_IMAGE $MODE"]))
        .await;
    assert_eq!(text(&log), "from-args yes cri");
}

#[tokio::test]
async fn the_user_is_taken_by_name_or_by_uid_with_a_group() {
    let mut w = world().await;
    let user = secured(
        container("user", "id -u; id -g"),
        LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            ..Default::default()
        },
    );
    let (_, _, log) = w.run_to_exit(user).await;
    assert_eq!(text(&log), "1000\n1000");
    let by_id = secured(
        container("uid", "id -u; id -g"),
        LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 4242 }),
            run_as_group: Some(Int64Value { value: 4343 }),
            ..Default::default()
        },
    );
    let (_, _, log) = w.run_to_exit(by_id).await;
    assert_eq!(text(&log), "4242\n4343");
}

#[tokio::test]
async fn a_volume_is_made_when_missing_and_outlives_the_container_that_wrote_it() {
    let mut w = world().await;
    let volumes = tempfile::tempdir().unwrap();
    let volume = volumes.path().join("not/yet/there");
    let with_volume = |name: &str, script: &str| {
        let mut c = container(name, script);
        c.mounts = vec![Mount {
            container_path: "/data".into(),
            host_path: volume.display().to_string(),
            ..Default::default()
        }];
        c
    };
    let (writer, code, _) = w
        .run_to_exit(with_volume("writer", "echo shared > /data/file"))
        .await;
    assert_eq!(code, 0);
    w.client
        .remove_container(RemoveContainerRequest {
            container_id: writer,
        })
        .await
        .unwrap();
    let (_, _, log) = w.run_to_exit(with_volume("reader", "cat /data/file")).await;
    assert_eq!(text(&log), "shared");
    assert_eq!(
        std::fs::read_to_string(volume.join("file")).unwrap(),
        "shared\n"
    );
}

#[tokio::test]
async fn a_read_only_rootfs_refuses_a_write() {
    let mut w = world().await;
    let readonly = secured(
        container("readonly", "touch /new-file"),
        LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        },
    );
    let (_, code, log) = w.run_to_exit(readonly).await;
    assert_ne!(code, 0);
    assert!(text(&log).contains("Read-only file system"), "{log:?}");
}

#[tokio::test]
async fn capabilities_dropped_all_keep_only_the_added_one() {
    let mut w = world().await;
    // Drop all, add NET_ADMIN (bit 12).
    let caps = secured(
        container("caps", "grep CapEff /proc/self/status"),
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let (_, _, log) = w.run_to_exit(caps).await;
    assert_eq!(text(&log), "CapEff:\t0000000000001000");
}

#[tokio::test]
async fn a_container_has_the_pods_pid_namespace_and_hostname() {
    let mut w = world().await;
    // Pause is PID 1. Under youki the container has a PID namespace of its own (it cannot
    // join one).
    let (_, _, log) = w
        .run_to_exit(container("pid1", "cat /proc/1/cmdline; echo; hostname"))
        .await;
    let first = match std::env::var("BERTH_TEST_RUNTIME").as_deref() {
        Ok("youki") => "sh-ccat /proc/1/cmdline; echo; hostname",
        _ => "/pause",
    };
    assert_eq!(text(&log).replace('\0', ""), format!("{first}\nctr-pod"));
}

#[tokio::test]
async fn containers_of_a_pod_reach_each_other_on_localhost() {
    let mut w = world().await;
    let server = w
        .create(container(
            "server",
            "echo served > /tmp/index.html; httpd -f -p 8080 -h /tmp",
        ))
        .await;
    w.start(&server).await;
    let client_log = w.log_path("client");
    let client = w.create(container("client", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://127.0.0.1:8080/index.html && exit 0; sleep 0.3; done; exit 1")).await;
    w.start(&client).await;
    let status = w.wait_exited(&client).await.status.unwrap();
    assert_eq!(status.exit_code, 0, "{:?}", records(&client_log));
    assert_eq!(text(&records(&client_log)), "served");

    // RemovePodSandbox takes the pod with its server still running.
    w.client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: w.sandbox.clone(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_images_stop_signal_stops_it_before_the_timeout() {
    let mut w = world_with_entry_image().await;
    // The image's STOPSIGNAL is SIGINT.
    let mut trapper = from_entry(
        "trapper",
        &["trap 'echo got-int; exit 0' INT; echo ready; while true; do sleep 0.1; done"],
    );
    trapper.envs.clear();
    let id = w.create(trapper).await;
    w.start(&id).await;
    let log = w.log_path("trapper");
    wait_for(
        "the trapper to be ready",
        Duration::from_secs(10),
        || async { records(&log).iter().any(|r| r.2 == "ready").then_some(()) },
    )
    .await;
    w.client
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 30,
        })
        .await
        .unwrap();
    let s = w.status(&id).await.status.unwrap();
    assert_eq!(s.exit_code, 0, "stopped by SIGINT, not killed");
    assert!(records(&log).iter().any(|r| r.2 == "got-int"));
}

#[tokio::test]
async fn removing_the_image_of_a_running_container_does_not_break_it() {
    let mut w = world().await;
    let id = w
        .create(container(
            "survivor",
            "while true; do cat /bin/busybox > /dev/null; echo alive; sleep 0.1; done",
        ))
        .await;
    w.start(&id).await;
    let mut images =
        ImageServiceClient::new(common::connect(&w.daemon.paths().socket).await.unwrap());
    let spec = Some(ImageSpec {
        image: "busybox".into(),
        ..Default::default()
    });
    images
        .remove_image(berth::proto::RemoveImageRequest {
            image: spec.clone(),
        })
        .await
        .unwrap();
    let gone = images
        .image_status(berth::proto::ImageStatusRequest {
            image: spec,
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image;
    assert!(gone.is_none(), "the image is gone");
    let daemon_log = w.daemon.paths().log.clone();
    wait_for(
        "the collection after the removal",
        Duration::from_secs(10),
        || async {
            std::fs::read_to_string(&daemon_log)
                .unwrap_or_default()
                .contains("image content collected")
                .then_some(())
        },
    )
    .await;
    let layers = w.daemon.paths().root.join("images/layers/sha256");
    assert_eq!(
        std::fs::read_dir(&layers).unwrap().count(),
        1,
        "its layer stays"
    );
    // Still running, still reading its rootfs.
    let log = w.log_path("survivor");
    let before = records(&log).len();
    wait_for(
        "more output after the removal",
        Duration::from_secs(10),
        || async { (records(&log).len() > before + 3).then_some(()) },
    )
    .await;
    assert_eq!(
        w.status(&id).await.status.unwrap().state,
        ContainerState::ContainerRunning as i32
    );
    w.client
        .remove_container(RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    wait_for(
        "the layer to go with the container",
        Duration::from_secs(10),
        || async { (std::fs::read_dir(&layers).unwrap().count() == 0).then_some(()) },
    )
    .await;
    w.client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: w.sandbox.clone(),
        })
        .await
        .unwrap();
}

/// A client of a container monitor's attach socket (the streaming server's side of it).
struct Attached {
    stream: std::os::unix::net::UnixStream,
    decoder: attach::Decoder,
    output: Vec<u8>,
    exit: Option<i32>,
}

impl Attached {
    fn new(w: &World, id: &str, streams: &str) -> std::io::Result<Attached> {
        let paths = berth::monitor::MonitorPaths::of(&w.daemon.paths().state, id);
        let streams = attach::Streams::parse(streams).expect("stream letters");
        let stream = attach::attach(&paths, streams)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Attached {
            stream,
            decoder: attach::Decoder::default(),
            output: Vec::new(),
            exit: None,
        })
    }

    fn send(&mut self, kind: attach::Kind, payload: &[u8]) {
        use std::io::Write;
        let mut frame = Vec::new();
        attach::encode(kind, payload, &mut frame);
        self.stream.write_all(&frame).expect("send a frame");
    }

    /// Reads frames until `done` holds for what arrived, or panics after 20 s.
    fn read_until(&mut self, what: &str, done: impl Fn(&Attached) -> bool) {
        use std::io::Read;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut chunk = [0u8; 4096];
        while !done(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; got {:?} exit {:?}",
                String::from_utf8_lossy(&self.output),
                self.exit
            );
            match self.stream.read(&mut chunk) {
                Ok(0) => assert!(done(self), "closed before {what}"),
                Ok(n) => self.decoder.push(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("reading the attach socket: {e}"),
            }
            while let Some((kind, payload)) = self.decoder.next_frame().expect("a good frame") {
                match kind {
                    attach::Kind::Stdout | attach::Kind::Stderr => {
                        self.output.extend_from_slice(&payload)
                    }
                    attach::Kind::Exit => {
                        let code: [u8; 4] = payload.as_slice().try_into().expect("an i32");
                        self.exit = Some(i32::from_be_bytes(code));
                    }
                    other => panic!("unexpected frame {other:?} from the monitor"),
                }
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

#[tokio::test]
async fn stdin_attach_and_stdin_once() {
    let mut w = world().await;
    // Without stdin, the container reads end-of-file at once.
    let mut deaf = container("deaf", "cat; echo cat-done");
    deaf.stdin = false;
    let deaf = w.create(deaf).await;
    w.start(&deaf).await;
    let s = w.wait_exited(&deaf).await.status.unwrap();
    assert_eq!(s.exit_code, 0);
    assert!(
        records(&w.log_path("deaf"))
            .iter()
            .any(|r| r.2 == "cat-done")
    );

    // As critest's attach spec: a shell reading stdin, closed after the first attach.
    let id = w.create(shell("shell", false, true)).await;
    w.start(&id).await;
    let mut talker = Attached::new(&w, &id, "ioe").expect("attach with stdin");
    let mut watcher = Attached::new(&w, &id, "o").expect("a second attach");
    talker.send(attach::Kind::Stdin, b"echo -n hello; echo oops >&2\n");
    talker.read_until("hello and oops", |a| {
        a.text().contains("hello") && a.text().contains("oops")
    });
    watcher.read_until("hello", |a| a.text().contains("hello"));
    assert_eq!(
        w.status(&id).await.status.unwrap().state,
        ContainerState::ContainerRunning as i32,
        "stdin is still open: the shell waits for more"
    );
    talker.send(attach::Kind::CloseStdin, b"");
    talker.read_until("the exit", |a| a.exit.is_some());
    watcher.read_until("the exit", |a| a.exit.is_some());
    assert_eq!((talker.exit, watcher.exit), (Some(0), Some(0)));
    assert!(
        !watcher.text().contains("oops"),
        "stderr went to a client that did not ask for it"
    );
    let s = w.wait_exited(&id).await.status.unwrap();
    assert_eq!(s.exit_code, 0);
    let log = records(&w.log_path("shell"));
    assert!(
        log.contains(&("stdout".into(), "F".into(), "hello".into())),
        "{log:?}"
    );
    assert!(
        log.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{log:?}"
    );
    assert!(
        Attached::new(&w, &id, "o").is_err(),
        "attached to an exited container"
    );
}

#[tokio::test]
async fn a_terminal_with_resize_survives_a_detach() {
    let mut w = world().await;
    let id = w.create(shell("term", true, false)).await;
    w.start(&id).await;
    // Attach and go away: the container keeps running.
    let first = Attached::new(&w, &id, "io").expect("attach");
    drop(first);
    let mut client = Attached::new(&w, &id, "io").expect("attach again");
    assert_eq!(
        w.status(&id).await.status.unwrap().state,
        ContainerState::ContainerRunning as i32
    );
    client.send(attach::Kind::Resize, &attach::resize_payload(123, 45));
    client.send(
        attach::Kind::Stdin,
        b"tty; stty size; echo in-$((6*7)); exit 7\n",
    );
    client.read_until("the exit", |a| a.exit.is_some());
    assert_eq!(client.exit, Some(7), "{}", client.text());
    let text = client.text();
    assert!(text.contains("45 123"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    let s = w.wait_exited(&id).await.status.unwrap();
    assert_eq!(s.exit_code, 7);
    // A terminal's lines land as stdout records without their "\r".
    let log = records(&w.log_path("term"));
    assert!(
        log.contains(&("stdout".into(), "F".into(), "in-42".into())),
        "{log:?}"
    );
    assert!(log.iter().all(|r| r.0 == "stdout"), "{log:?}");
}

fn secure(name: &str, script: &str, security: LinuxContainerSecurityContext) -> ContainerConfig {
    let mut config = container(name, script);
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(security),
        ..Default::default()
    });
    config
}

fn profile(kind: ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: localhost_ref.into(),
    })
}

fn sys_admin() -> Option<Capability> {
    Some(Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    })
}

impl World {
    /// Runs containers to their exit, all at once; returns each one's log texts.
    async fn run_all(&mut self, configs: Vec<ContainerConfig>) -> Vec<Vec<String>> {
        let mut ids = Vec::new();
        for config in &configs {
            let id = self.create(config.clone()).await;
            self.start(&id).await;
            ids.push(id);
        }
        let mut logs = Vec::new();
        for (id, config) in ids.iter().zip(&configs) {
            self.wait_exited(id).await;
            let name = &config.metadata.as_ref().unwrap().name;
            logs.push(
                records(&self.log_path(name))
                    .into_iter()
                    .map(|r| r.2)
                    .collect(),
            );
        }
        logs
    }
}

/// A seccomp profile `name` under `dir` that allows every syscall but `calls` (which fail
/// with an errno); its path.
fn blocking_profile(dir: &Path, name: &str, calls: &[&str]) -> String {
    let path = dir.join(name);
    let text = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": calls, "action": "SCMP_ACT_ERRNO"}],
    });
    std::fs::write(&path, text.to_string()).unwrap();
    path.display().to_string()
}

/// Prints its own seccomp mode.
const SECCOMP_STATUS: &str = "grep Seccomp: /proc/self/status";
/// Tries sethostname and prints its exit code.
const RENAME: &str = "hostname renamed 2>&1; echo rc=$?";

#[tokio::test]
async fn seccomp_is_off_without_a_profile_or_unconfined_and_filters_by_default() {
    let mut w = world().await;
    let logs = w
        .run_all(vec![
            secure(
                "nil",
                SECCOMP_STATUS,
                LinuxContainerSecurityContext::default(),
            ),
            secure(
                "default",
                SECCOMP_STATUS,
                LinuxContainerSecurityContext {
                    seccomp: Some(SecurityProfile::default()),
                    ..Default::default()
                },
            ),
            secure(
                "unconfined",
                SECCOMP_STATUS,
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::Unconfined, ""),
                    ..Default::default()
                },
            ),
        ])
        .await;
    let seccomp_mode = |log: &Vec<String>| log.iter().find(|l| l.starts_with("Seccomp:")).cloned();
    assert_eq!(
        seccomp_mode(&logs[0]).as_deref(),
        Some("Seccomp:\t0"),
        "nil"
    );
    assert_eq!(
        seccomp_mode(&logs[1]).as_deref(),
        Some("Seccomp:\t2"),
        "default"
    );
    assert_eq!(
        seccomp_mode(&logs[2]).as_deref(),
        Some("Seccomp:\t0"),
        "unconfined"
    );
}

#[tokio::test]
async fn a_localhost_profile_makes_the_syscalls_it_blocks_fail() {
    let mut w = world().await;
    let profiles = tempfile::tempdir().unwrap();
    let no_chmod = blocking_profile(
        profiles.path(),
        "block-chmod.json",
        &["chmod", "fchmodat", "fchmodat2"],
    );
    let no_hostname = blocking_profile(profiles.path(), "block-host-name.json", &["sethostname"]);
    let logs = w
        .run_all(vec![
            secure(
                "chmod",
                "chmod 400 / 2>&1; echo rc=$?",
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::Localhost, &no_chmod),
                    ..Default::default()
                },
            ),
            secure(
                "hostname-blocked",
                RENAME,
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::Localhost, &no_hostname),
                    capabilities: sys_admin(),
                    ..Default::default()
                },
            ),
        ])
        .await;
    assert!(
        logs[0]
            .iter()
            .any(|l| l.contains("Operation not permitted")),
        "{:?}",
        logs[0]
    );
    assert_eq!(logs[0].last().map(String::as_str), Some("rc=1"));
    assert_eq!(
        logs[1].last().map(String::as_str),
        Some("rc=1"),
        "{:?}",
        logs[1]
    );
}

#[tokio::test]
async fn sys_admin_sets_the_hostname_unconfined_or_privileged_whatever_the_profile() {
    let mut w = world().await;
    let profiles = tempfile::tempdir().unwrap();
    let no_hostname = blocking_profile(profiles.path(), "block-host-name.json", &["sethostname"]);
    let logs = w
        .run_all(vec![
            secure(
                "hostname-unconfined",
                RENAME,
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::Unconfined, ""),
                    capabilities: sys_admin(),
                    ..Default::default()
                },
            ),
            secure(
                "hostname-privileged",
                RENAME,
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::Localhost, &no_hostname),
                    privileged: true,
                    ..Default::default()
                },
            ),
        ])
        .await;
    assert_eq!(
        logs[0],
        vec!["rc=0".to_string()],
        "unconfined with SYS_ADMIN"
    );
    assert_eq!(
        logs[1],
        vec!["rc=0".to_string()],
        "privileged ignores the profile"
    );
}

#[tokio::test]
async fn the_default_profile_without_sys_admin_refuses_sethostname_but_runs_a_child() {
    let mut w = world().await;
    let logs = w
        .run_all(vec![secure(
            "default-no-admin",
            "hostname renamed 2>&1; echo rc=$?; sh -c 'echo child-ran'",
            LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile::default()),
                ..Default::default()
            },
        )])
        .await;
    assert!(logs[0].contains(&"rc=1".to_string()), "{:?}", logs[0]);
    assert!(logs[0].contains(&"child-ran".to_string()), "{:?}", logs[0]);
}

#[tokio::test]
async fn listed_devices_have_their_permissions_and_any_other_device_is_denied() {
    let mut w = world().await;
    // One read-write, one read-only by the device cgroup; any other device is denied,
    // even one the container makes itself.
    let mut devices = container(
        "devices",
        "echo x > /dev/mynull && echo null-written; \
         (exec 3</dev/fuse-ro) && echo fuse-read; \
         (exec 4>/dev/fuse-ro) 2>/dev/null || echo fuse-write-denied; \
         mknod /tmp/loop c 10 237 && ((exec 3</tmp/loop) 2>/dev/null || echo unlisted-denied)",
    );
    devices.devices = vec![
        Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        },
        Device {
            container_path: "/dev/fuse-ro".into(),
            host_path: "/dev/fuse".into(),
            permissions: "r".into(),
        },
    ];
    let logs = w.run_all(vec![devices]).await;
    for expected in [
        "null-written",
        "fuse-read",
        "fuse-write-denied",
        "unlisted-denied",
    ] {
        assert!(
            logs[0].iter().any(|l| l == expected),
            "{expected}: {:?}",
            logs[0]
        );
    }
}

/// Container configs CreateContainer refuses, each with the field its error names: a
/// missing or relative seccomp profile, a device that is not one, a mount over /proc or
/// /sys.
fn bad_container_configs() -> Vec<(ContainerConfig, &'static str)> {
    let localhost = |name: &str, path: &str| {
        secure(
            name,
            "true",
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Localhost, path),
                ..Default::default()
            },
        )
    };
    let mut not_a_device = container("not-a-device", "true");
    not_a_device.devices = vec![Device {
        container_path: "/dev/x".into(),
        host_path: "/etc/hostname".into(),
        permissions: "r".into(),
    }];
    let over = |name: &str, path: &str| {
        let mut config = container(name, "true");
        config.mounts = vec![berth::proto::Mount {
            container_path: path.into(),
            host_path: "/tmp".into(),
            ..Default::default()
        }];
        config
    };
    vec![
        (
            localhost("missing-profile", "/no/such/profile.json"),
            "seccomp",
        ),
        (not_a_device, "config.devices"),
        (localhost("relative-profile", "profile.json"), "seccomp"),
        (over("over-proc", "/proc"), "config.mounts.container_path"),
        (over("over-sys", "/sys"), "config.mounts.container_path"),
    ]
}

impl World {
    async fn container_count(&mut self) -> usize {
        self.client
            .list_containers(ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers
            .len()
    }
}

#[tokio::test]
async fn a_bad_profile_device_or_mount_is_refused_naming_its_field_leaving_nothing() {
    let mut w = world().await;
    let before = w.container_count().await;
    for (config, field) in bad_container_configs() {
        let err = w
            .client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: w.sandbox.clone(),
                config: Some(common::world::for_the_runtime(config)),
                sandbox_config: None,
            })
            .await
            .expect_err("a bad container config");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }
    let after = w.container_count().await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn groups_policy_user_and_resources_in_status_and_oom_kills() {
    let mut w = world().await;
    let features = w
        .client
        .status(berth::proto::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .features
        .unwrap();
    assert!(features.supplemental_groups_policy);
    let grouped = |name: &str, policy: SupplementalGroupsPolicy| {
        secure(
            name,
            "id -G",
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            },
        )
    };
    let mut oom = container("oom", "dd if=/dev/zero of=/dev/null bs=20M");
    oom.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 15 << 20,
            memory_swap_limit_in_bytes: 15 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let configs = vec![
        grouped("merge", SupplementalGroupsPolicy::Merge),
        grouped("strict", SupplementalGroupsPolicy::Strict),
        oom,
    ];
    let mut ids = Vec::new();
    for config in &configs {
        let id = w.create(config.clone()).await;
        w.start(&id).await;
        ids.push(id);
    }
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(w.wait_exited(id).await.status.unwrap());
    }
    let groups = |s: &ContainerStatus| {
        let user = s.user.clone().unwrap().linux.unwrap();
        let mut groups = user.supplemental_groups.clone();
        groups.sort();
        (user.uid, user.gid, groups)
    };
    assert_eq!(groups(&statuses[0]), (1000, 1000, vec![1000, 1234, 50000]));
    assert_eq!(groups(&statuses[1]), (1000, 1000, vec![1000, 1234]));
    let texts = |name: &str| -> Vec<String> {
        records(&w.log_path(name))
            .into_iter()
            .map(|r| r.2)
            .collect()
    };
    assert_eq!(texts("merge"), vec!["1000 1234 50000".to_string()]);
    assert_eq!(texts("strict"), vec!["1000 1234".to_string()]);

    let oom = &statuses[2];
    assert_eq!((oom.exit_code, oom.reason.as_str()), (137, "OOMKilled"));
    let limits = oom.resources.clone().unwrap().linux.unwrap();
    assert_eq!(limits.memory_limit_in_bytes, 15 << 20);
}

/// The runtime hears of a container at StartContainer (as in containerd): a created
/// container has no process, so stopping it changes nothing, and a command that cannot
/// run fails the start and leaves the container exited with StartError, as containerd
/// reports it.
#[tokio::test]
async fn a_created_container_runs_only_when_started() {
    let mut w = world().await;
    let mut config = container("broken", "");
    config.command = vec!["/no/such/program".into()];
    let id = w.create(config).await;
    let state = |s: &ContainerStatus| ContainerState::try_from(s.state).ok();
    let status = w.status(&id).await.status.expect("status");
    assert_eq!(state(&status), Some(ContainerState::ContainerCreated));
    w.client
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("stopping a created container");
    let status = w.status(&id).await.status.expect("status");
    assert_eq!(state(&status), Some(ContainerState::ContainerCreated));

    let err = w
        .try_start(&id)
        .await
        .expect_err("a missing program cannot start");
    assert!(
        err.message().contains("/no/such/program"),
        "the error names the program: {err:?}"
    );
    let status = w.status(&id).await.status.expect("status");
    assert_eq!(state(&status), Some(ContainerState::ContainerExited));
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (128, "StartError")
    );
    assert!(status.started_at > 0 && status.finished_at >= status.started_at);
    w.client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("remove");
    assert!(
        w.client
            .container_status(ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await
            .is_err(),
        "removed"
    );

    // Its spec joins the pause's namespaces: a container of a stopped pod cannot start.
    let pod = run_pod(&mut w.client, pod_config("stopped-pod", "/berth-test")).await;
    let id = w
        .client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(common::world::for_the_runtime(container(
                "late", "sleep 60",
            ))),
            sandbox_config: None,
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    w.client
        .stop_pod_sandbox(berth::proto::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("stop the pod");
    let err = w.try_start(&id).await.expect_err("its pod is stopped");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let status = w.status(&id).await.status.expect("status");
    assert_eq!(state(&status), Some(ContainerState::ContainerCreated));
    w.client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .expect("remove the pod and its created container");
}
