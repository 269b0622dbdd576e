//! GetContainerEvents against the real daemon, with tonic and with grpc-go (the client
//! the kubelet's evented PLEG uses, `tests/go/criwatch`):
//! - a pod with two containers, one exiting on its own, then stopped and removed: each
//!   event in order, with the pod's and the containers' statuses after it;
//! - a container that exits while the daemon is down: its STOPPED event comes once the
//!   daemon is back, and nothing it had told before comes again;
//! - a subscriber that never reads: pod operations go on, a reading subscriber hears
//!   everything, and the one that never read gets ResourceExhausted.

mod common;

use std::process::Stdio;
use std::time::Duration;

use berth::proto::runtime_service_client::RuntimeServiceClient;
use berth::proto::{
    ContainerEventResponse, ContainerEventType, ContainerState, CreateContainerRequest,
    GetEventsRequest, PodSandboxConfig, PodSandboxState, RemovePodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use common::leaks::assert_nothing_left;
use common::world::{busybox_mirror, container, pod_config, pull_busybox, run_pod};
use common::{CgroupTree, Daemon, wait_for};
use futures_util::StreamExt;
use tokio::io::AsyncBufReadExt;
use tonic::transport::Channel;

use ContainerEventType::{
    ContainerCreatedEvent as Created, ContainerDeletedEvent as Deleted,
    ContainerStartedEvent as Started, ContainerStoppedEvent as Stopped,
};

type Events = tonic::Streaming<ContainerEventResponse>;

async fn subscribe(client: &mut RuntimeServiceClient<Channel>) -> Events {
    client
        .get_container_events(GetEventsRequest {})
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next event, within a deadline.
async fn next(events: &mut Events) -> ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("an event within 30 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

fn kind(event: &ContainerEventResponse) -> ContainerEventType {
    ContainerEventType::try_from(event.container_event_type).unwrap()
}

/// The state of container `id` in the event's statuses.
fn state_of(event: &ContainerEventResponse, id: &str) -> Option<(ContainerState, i32)> {
    event
        .containers_statuses
        .iter()
        .find(|c| c.id == id)
        .map(|c| (ContainerState::try_from(c.state).unwrap(), c.exit_code))
}

fn pod_state(event: &ContainerEventResponse) -> PodSandboxState {
    PodSandboxState::try_from(
        event
            .pod_sandbox_status
            .as_ref()
            .expect("a pod status")
            .state,
    )
    .unwrap()
}

fn pod(name: &str, tree: &CgroupTree, logs: &tempfile::TempDir) -> PodSandboxConfig {
    let mut config = pod_config(name, &format!("/{}", tree.0));
    config.log_directory = logs.path().display().to_string();
    config
}

async fn create(
    client: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    config: &PodSandboxConfig,
    name: &str,
    script: &str,
) -> String {
    client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(container(name, script)),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id
}

async fn start(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .expect("start");
}

/// The grpc-go subscriber: started, and ready (subscribed) once it says so.
async fn go_watcher(daemon: &Daemon, count: usize) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(common::go_program("criwatch"))
        .arg("-socket")
        .arg(&daemon.paths().socket)
        .arg("-count")
        .arg(count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run criwatch");
    let stdout = child.stdout.take().unwrap();
    let mut ready = String::new();
    let mut reader = tokio::io::BufReader::new(stdout);
    tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut ready))
        .await
        .expect("criwatch subscribes")
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    // Nothing comes past that line before an event: the reader buffered none.
    child.stdout = Some(reader.into_inner());
    child
}

/// The next event, which must be of `want` for `id`.
async fn expect_event(
    events: &mut Events,
    want: ContainerEventType,
    id: &str,
) -> ContainerEventResponse {
    let e = next(events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (want, id));
    e
}

/// A pod is told as CREATED, then STARTED with a ready status that has an IP and no
/// containers yet.
async fn expect_pod_run(events: &mut Events, pod_id: &str) {
    expect_event(events, Created, pod_id).await;
    let e = expect_event(events, Started, pod_id).await;
    assert_eq!(pod_state(&e), PodSandboxState::SandboxReady);
    assert!(
        !e.pod_sandbox_status
            .as_ref()
            .unwrap()
            .network
            .as_ref()
            .unwrap()
            .ip
            .is_empty()
    );
    assert!(e.containers_statuses.is_empty());
    assert!(e.created_at > 0);
}

/// The kubelet's evented PLEG takes a pod's containers from its status when the status
/// has a timestamp: the status is newer than the event at `after` and has all of them.
async fn assert_status_lists_all(
    client: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    after: i64,
    mut expected: Vec<(String, i32)>,
) {
    let status = client
        .pod_sandbox_status(berth::proto::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.timestamp > after, "{} {}", status.timestamp, after);
    let mut listed: Vec<(String, i32)> = status
        .containers_statuses
        .iter()
        .map(|c| (c.id.clone(), c.state))
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
}

/// StopPodSandbox is told as the pod's STOPPED and the running container's, in either
/// order, the pod not ready and the container exited after it.
async fn expect_pod_stop(
    client: &mut RuntimeServiceClient<Channel>,
    events: &mut Events,
    pod_id: &str,
    running: &str,
) {
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await
        .unwrap();
    let mut stopped = [next(events).await, next(events).await];
    stopped.sort_by_key(|e| e.container_id != pod_id);
    assert_eq!(
        (kind(&stopped[0]), stopped[0].container_id.as_str()),
        (Stopped, pod_id)
    );
    assert_eq!(
        (kind(&stopped[1]), stopped[1].container_id.as_str()),
        (Stopped, running)
    );
    assert_eq!(pod_state(&stopped[1]), PodSandboxState::SandboxNotready);
    assert_eq!(
        state_of(&stopped[1], running).map(|s| s.0),
        Some(ContainerState::ContainerExited)
    );
}

/// RemovePodSandbox is told as the containers' DELETED, then the pod's with its last
/// status.
async fn expect_pod_removal(
    client: &mut RuntimeServiceClient<Channel>,
    events: &mut Events,
    pod_id: &str,
    containers: [&str; 2],
) {
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await
        .unwrap();
    let mut deleted = Vec::new();
    for _ in 0..3 {
        deleted.push(next(events).await);
    }
    assert!(deleted.iter().all(|e| kind(e) == Deleted), "{deleted:?}");
    let mut ids: Vec<&str> = deleted[..2]
        .iter()
        .map(|e| e.container_id.as_str())
        .collect();
    ids.sort();
    let mut both = containers.to_vec();
    both.sort();
    assert_eq!(ids, both, "the containers go first");
    let last = &deleted[2];
    assert_eq!(last.container_id, pod_id, "then the pod");
    assert_eq!(
        pod_state(last),
        PodSandboxState::SandboxNotready,
        "its last status"
    );
    assert!(last.containers_statuses.is_empty());
}

/// grpc-go heard the same twelve events: the pod's CREATED and STARTED first, the short
/// container's STOPPED seventh with its exit code, the pod's DELETED last.
async fn assert_go_heard_the_same(go: tokio::process::Child, pod_id: &str, short: &str) {
    let out = tokio::time::timeout(Duration::from_secs(30), go.wait_with_output())
        .await
        .expect("criwatch ends")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    eprintln!("criwatch:\n{}", lines.join("\n"));
    assert_eq!(lines.len(), 12, "{lines:?}");
    let short_id = |id: &str| id[..12].to_string();
    let (pod, short) = (short_id(pod_id), short_id(short));
    let expected_first = [
        format!("CREATED {pod} pod={pod}:READY containers="),
        format!("STARTED {pod} pod={pod}:READY containers="),
    ];
    assert_eq!(lines[..2], expected_first);
    assert!(
        lines[6].starts_with(&format!("STOPPED {short}"))
            && lines[6].contains(&format!("{short}:EXITED:3")),
        "{}",
        lines[6]
    );
    assert_eq!(
        lines[11],
        format!("DELETED {pod} pod={pod}:NOTREADY containers=")
    );
}

#[tokio::test]
async fn a_pods_life_is_told_event_by_event_with_statuses_after_each() {
    let (_registry, daemon) = busybox_mirror("latest", "").await;
    pull_busybox(&daemon).await;
    let tree = CgroupTree(format!("berth-events-{}", std::process::id()));
    let logs = tempfile::tempdir().unwrap();
    let mut client = daemon.runtime().await;
    let mut events = subscribe(&mut client).await;
    let go = go_watcher(&daemon, 12).await;

    let config = pod("told", &tree, &logs);
    let pod_id = run_pod(&mut client, config.clone()).await;
    expect_pod_run(&mut events, &pod_id).await;

    let long = create(&mut client, &pod_id, &config, "long", "exec sleep 3600").await;
    let e = expect_event(&mut events, Created, &long).await;
    assert_eq!(
        state_of(&e, &long),
        Some((ContainerState::ContainerCreated, 0))
    );
    let short = create(&mut client, &pod_id, &config, "short", "sleep 1; exit 3").await;
    let e = expect_event(&mut events, Created, &short).await;
    assert_eq!(e.containers_statuses.len(), 2, "both containers: {e:?}");

    start(&mut client, &long).await;
    let e = expect_event(&mut events, Started, &long).await;
    assert_eq!(
        state_of(&e, &long),
        Some((ContainerState::ContainerRunning, 0))
    );
    assert_eq!(
        state_of(&e, &short),
        Some((ContainerState::ContainerCreated, 0))
    );
    start(&mut client, &short).await;
    expect_event(&mut events, Started, &short).await;

    // Its own exit, with nobody asking for its status.
    let e = expect_event(&mut events, Stopped, &short).await;
    assert_eq!(
        state_of(&e, &short),
        Some((ContainerState::ContainerExited, 3))
    );
    assert_eq!(
        state_of(&e, &long),
        Some((ContainerState::ContainerRunning, 0))
    );
    let expected = vec![
        (long.clone(), ContainerState::ContainerRunning as i32),
        (short.clone(), ContainerState::ContainerExited as i32),
    ];
    assert_status_lists_all(&mut client, &pod_id, e.created_at, expected).await;

    expect_pod_stop(&mut client, &mut events, &pod_id, &long).await;
    expect_pod_removal(&mut client, &mut events, &pod_id, [&long, &short]).await;
    assert_go_heard_the_same(go, &pod_id, &short).await;
    assert_nothing_left(&daemon, &tree.0);
}

#[tokio::test]
async fn an_exit_while_the_daemon_is_down_is_told_once_it_is_back_and_nothing_twice() {
    let (_registry, mut daemon) = busybox_mirror("latest", "").await;
    pull_busybox(&daemon).await;
    let tree = CgroupTree(format!("berth-events-down-{}", std::process::id()));
    let logs = tempfile::tempdir().unwrap();
    let mut client = daemon.runtime().await;
    let mut events = subscribe(&mut client).await;
    let config = pod("down", &tree, &logs);
    let pod_id = run_pod(&mut client, config.clone()).await;
    let id = create(&mut client, &pod_id, &config, "later", "sleep 2; exit 7").await;
    start(&mut client, &id).await;
    let mut told = Vec::new();
    for _ in 0..4 {
        told.push(kind(&next(&mut events).await));
    }
    assert_eq!(told, [Created, Started, Created, Started]);
    daemon.crash().await;
    drop(events);
    // The container ends while nobody watches but its monitor.
    let exit_file = daemon
        .paths()
        .state
        .join("containers")
        .join(&id)
        .join("exit.json");
    wait_for(
        "the exit while the daemon is down",
        Duration::from_secs(20),
        || {
            let exited = exit_file.exists();
            async move { exited.then_some(()) }
        },
    )
    .await;
    daemon.restart().await;
    let mut client = daemon.runtime().await;
    let mut events = subscribe(&mut client).await;
    let e = next(&mut events).await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (Stopped, id.as_str()),
        "{e:?}"
    );
    assert_eq!(
        state_of(&e, &id),
        Some((ContainerState::ContainerExited, 7))
    );
    assert_eq!(pod_state(&e), PodSandboxState::SandboxReady);
    // Nothing else was kept: the next event is the stop that comes now.
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    let e = next(&mut events).await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (Stopped, pod_id.as_str()),
        "{e:?}"
    );
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        })
        .await
        .unwrap();
    assert_nothing_left(&daemon, &tree.0);
}

#[tokio::test]
async fn a_subscriber_that_never_reads_slows_nothing_and_is_cut_off() {
    let (_registry, daemon) = busybox_mirror("latest", "[events]\nsubscriber_buffer = 4").await;
    pull_busybox(&daemon).await;
    let tree = CgroupTree(format!("berth-events-slow-{}", std::process::id()));
    let logs = tempfile::tempdir().unwrap();
    // A connection whose window lets through almost nothing the subscriber does not read.
    let socket = daemon.paths().socket.clone();
    let channel = tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .initial_stream_window_size(Some(64))
        .initial_connection_window_size(Some(64))
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut never_reads = subscribe(&mut RuntimeServiceClient::new(channel)).await;
    let mut client = daemon.runtime().await;
    let mut reads = subscribe(&mut client).await;
    let started = std::time::Instant::now();
    let pods = 4;
    for n in 0..pods {
        let id = run_pod(&mut client, pod(&format!("slow-{n}"), &tree, &logs)).await;
        common::world::remove_pod(&mut client, &id).await;
    }
    eprintln!("{pods} pods run and removed in {:?}", started.elapsed());
    // CREATED, STARTED, STOPPED, DELETED of each: all heard by the one that reads.
    let mut heard = Vec::new();
    for _ in 0..pods * 4 {
        heard.push(kind(&next(&mut reads).await));
    }
    assert_eq!(heard, [Created, Started, Stopped, Deleted].repeat(pods));
    let mut got = 0;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(30), never_reads.next())
            .await
            .expect("the stream ends in time")
        {
            Some(Ok(_)) => got += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without an error after {got} events"),
        }
    };
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
    assert!(got < pods * 4, "it had only what its buffer held: {got}");
    assert_nothing_left(&daemon, &tree.0);
}
