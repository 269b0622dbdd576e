//! youki as a second runtime handler beside the default runc, reached the way a
//! RuntimeClass reaches it (`runtime_handler: "youki"`): what it was found to support, a
//! pod and a kubelet-like container on it, and what it cannot do refused up front. (The
//! fast suites also run whole with youki as the default: `make test`.)

mod common;

use berth::proto::{
    ContainerConfig, CreateContainerRequest, ExecSyncRequest, IdMapping, LinuxContainerConfig,
    LinuxContainerSecurityContext, NamespaceMode, NamespaceOption, RunPodSandboxRequest,
    SecurityProfile, StartContainerRequest, StatusRequest, UserNamespace,
    security_profile::ProfileType,
};
use common::leaks::assert_nothing_left;
use common::world::{World, container, pod_with_namespaces, remove_pod, world_with};

const CGROUPS: &str = "/berth-youki-test";

async fn youki_world() -> World {
    assert!(
        berth::oci::resolve_binary(std::path::Path::new("youki")).is_some(),
        "youki is not on PATH: `make youki` installs it"
    );
    world_with("[runtime.handlers.youki]\npath = \"youki\"").await
}

fn pod(w: &World, name: &str, namespaces: NamespaceOption) -> berth::proto::PodSandboxConfig {
    pod_with_namespaces(w.logs.path(), name, CGROUPS, namespaces)
}

async fn run_on_youki(
    w: &mut World,
    config: berth::proto::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    w.client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: "youki".into(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

/// Creates and starts `container` in the youki pod `pod_id`; its id.
async fn run_container_on_youki(
    w: &mut World,
    pod_id: &str,
    pod: &berth::proto::PodSandboxConfig,
    container: ContainerConfig,
) -> String {
    let id = w
        .client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(container),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .expect("create on youki")
        .into_inner()
        .container_id;
    w.client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start on youki");
    id
}

/// What the kubelet sends for a container of a pod that does not share its processes,
/// with the RuntimeDefault seccomp profile and privilege escalation allowed.
fn kubelet_like(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                no_new_privs: false,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..container(name, script)
    }
}

#[tokio::test]
async fn youki_is_announced_with_what_its_probe_found() {
    let mut w = youki_world().await;
    let status = w
        .client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let youki = status
        .runtime_handlers
        .iter()
        .find(|h| h.name == "youki")
        .and_then(|h| h.features)
        .expect("youki is announced");
    // Its features document lists no rro, but the daemon's test mount shows it makes
    // one; it cannot put a pod's containers in the pod's user namespace.
    assert!(youki.recursive_read_only_mounts, "{youki:?}");
    assert!(!youki.user_namespaces, "{youki:?}");
}

#[tokio::test]
async fn a_pod_on_the_youki_handler_runs_kubelet_containers_and_leaves_nothing() {
    let mut w = youki_world().await;
    let namespaces = NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let config = pod(&w, "youki-pod", namespaces);
    let pod_id = run_on_youki(&mut w, config.clone())
        .await
        .expect("a pod on youki");
    let state = w.daemon.paths().state.clone();
    assert!(
        state.join("runtime/youki").join(&pod_id).exists(),
        "youki holds the pause container"
    );

    let id =
        run_container_on_youki(&mut w, &pod_id, &config, kubelet_like("app", "sleep 3600")).await;
    assert!(state.join("runtime/youki").join(&id).exists());
    let r = w
        .client
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "grep -E '^(Seccomp|NoNewPrivs):' /proc/1/status; exit 3".into(),
            ],
            timeout: 10,
        })
        .await
        .expect("exec on youki")
        .into_inner();
    let out = String::from_utf8_lossy(&r.stdout);
    // The container's process is filtered although privileges may still be gained
    // (youki loads the filter only when the spec leaves noNewPrivileges out rather than
    // false). youki 0.7 does not filter exec'd processes: see the README.
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert_eq!(r.exit_code, 3, "the process's own exit code");

    // What youki cannot do is refused before it is asked.
    let mut shared_pid = kubelet_like("shared-pid", "true");
    if let Some(options) = shared_pid
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        options.pid = NamespaceMode::Pod as i32;
    }
    let err = w
        .client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(shared_pid),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect_err("youki cannot join the pod's PID namespace");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("namespace_options.pid") && err.message().contains("youki"),
        "{err:?}"
    );
    let userns = NamespaceOption {
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: vec![IdMapping {
                host_id: 1_300_000,
                container_id: 0,
                length: 65536,
            }],
            gids: vec![IdMapping {
                host_id: 1_300_000,
                container_id: 0,
                length: 65536,
            }],
        }),
        ..Default::default()
    };
    let refused = pod(&w, "youki-userns", userns);
    let err = run_on_youki(&mut w, refused)
        .await
        .expect_err("no user namespaces on youki");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("userns_options") && err.message().contains("youki"),
        "{err:?}"
    );

    remove_pod(&mut w.client, &pod_id).await;
    let main_pod = w.sandbox.clone();
    remove_pod(&mut w.client, &main_pod).await;
    assert_nothing_left(&w.daemon, CGROUPS);
}

/// A test that fails before it removes its pods leaves them to the harness, which ends
/// them with the runtime that made them: nothing of a youki pod outlives its test
/// daemon (a youki root is not runc's to list).
#[tokio::test]
async fn what_a_test_leaves_on_youki_ends_with_its_daemon() {
    let mut w = youki_world().await;
    let namespaces = NamespaceOption {
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    };
    let config = pod(&w, "youki-left", namespaces);
    let pod_id = run_on_youki(&mut w, config.clone())
        .await
        .expect("a pod on youki");
    let id =
        run_container_on_youki(&mut w, &pod_id, &config, kubelet_like("left", "sleep 3600")).await;
    let pid = w.status(&id).await.status.map(|s| s.state);
    assert_eq!(
        pid,
        Some(berth::proto::ContainerState::ContainerRunning as i32)
    );
    let procs = format!("/sys/fs/cgroup/pids{CGROUPS}/{id}/cgroup.procs");
    let running: Vec<i32> = std::fs::read_to_string(&procs)
        .expect("the container's pids cgroup")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert!(!running.is_empty(), "the container runs in {procs}");
    // Not removed: the test ends here, as a failed one would.
    drop(w);
    common::wait_for(
        "the container's processes to end with the daemon",
        std::time::Duration::from_secs(10),
        || {
            let gone = running
                .iter()
                .all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
            async move { gone.then_some(()) }
        },
    )
    .await;
}
