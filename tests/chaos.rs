//! Nothing is lost at any kill point. Rounds of concurrent operations (run a pod with a
//! container, exec in a container, stop and remove a pod) are cut short by a `kill -9`
//! of the daemon, each round at a later point (counted in RPCs sent, from the first of
//! the round to the last); the daemon is started again on the same directories, and:
//! - every container whose StartContainer answered OK runs, monitored (its log holds
//!   what it printed), unless its pod was being stopped when the daemon died;
//! - every pod is Ready or NotReady; nothing on the host is without a record (netns
//!   pins, IP leases, pod and container directories, runtime containers) and no Ready
//!   pod is without its parts;
//!
//! and after everything is removed, nothing is left: no netns pin, veth on the test
//! bridge, IP lease, iptables rule naming a pod IP or a chain of the test network, mount
//! under the test directories, cgroup, runtime container, helper, monitor or container
//! process, nor any file under the state directory but what start-up makes.
//!
//! Also here: a killed monitor, a CNI plugin that hangs, a runtime that hangs on create,
//! a plugin a dead daemon left running, a runtime's create and a pod's CNI DEL cut short
//! by a kill. (A killed pause is in `tests/sandboxes.rs`:
//! `a_sandbox_whose_pause_died_is_not_ready`.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth::proto::runtime_service_client::RuntimeServiceClient;
use berth::proto::{
    ContainerState, ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandboxConfig, PodSandboxState,
    PodSandboxStatusRequest, PortMapping, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use common::leaks::{assert_nothing_left, entries, leases, runc_containers};
use common::world::{busybox_mirror, container, pod_config, pull_busybox, records};
use common::{CgroupTree, Daemon};
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// Rounds, and operations started at once in each.
const ROUNDS: usize = 10;
const OPERATIONS: usize = 24;

/// What the test knows of the pods it made.
#[derive(Debug, Default)]
struct Ledger {
    /// Pod id → its containers whose StartContainer answered OK (id → name).
    started: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods a stop or removal was sent for: their containers may have been stopped.
    stopping: BTreeSet<String>,
    /// Pods whose removal answered OK.
    removed: BTreeSet<String>,
    /// Names given out so far.
    next: usize,
}

/// The daemon under test and what the operations share.
struct Chaos {
    daemon: Mutex<Daemon>,
    _registry: common::registry::Registry,
    logs: tempfile::TempDir,
    cgroups: CgroupTree,
    ledger: Mutex<Ledger>,
    /// RPCs sent in this round, and the one the daemon dies at.
    sent: AtomicUsize,
    kill_at: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_killed_at_any_point_loses_nothing() {
    let (registry, daemon) = busybox_mirror("latest", "").await;
    pull_busybox(&daemon).await;
    let chaos = Arc::new(Chaos {
        daemon: Mutex::new(daemon),
        _registry: registry,
        logs: tempfile::tempdir().unwrap(),
        cgroups: CgroupTree(format!("berth-chaos-{}", std::process::id())),
        ledger: Mutex::new(Ledger::default()),
        sent: AtomicUsize::new(0),
        kill_at: AtomicUsize::new(usize::MAX),
    });
    // A round sends about this many RPCs (see `operation`): the kill points spread over
    // them, first to last.
    let per_round = OPERATIONS / 4 * (3 + 3 + 1 + 2);
    for round in 0..ROUNDS {
        let point = 1 + round * (per_round - 1) / (ROUNDS - 1);
        chaos.round(round, point).await;
        chaos.check_consistency().await;
    }
    // The kills came in the middle of things: what the restarts had to finish or undo.
    let log = chaos.daemon.lock().await.log();
    let count = |what: &str| log.matches(what).count();
    let recovered = [
        ("pods undone", count("cleaning up a sandbox left half made")),
        (
            "containers undone",
            count("cleaning up a container left half made"),
        ),
        ("starts finished", count("a start cut short had run it")),
        ("starts undone", count("undoing a start cut short")),
        (
            "helper groups ended",
            count("ended helpers a dead daemon left running"),
        ),
    ];
    eprintln!("recovered over {ROUNDS} kills: {recovered:?}");
    assert!(
        recovered[0].1 > 0 && recovered[2].1 > 0,
        "no kill came in the middle of a RunPodSandbox or a StartContainer: {recovered:?}"
    );
    chaos.remove_everything().await;
    chaos.assert_nothing_left().await;
}

impl Chaos {
    async fn client(&self) -> RuntimeServiceClient<Channel> {
        self.daemon.lock().await.runtime().await
    }

    /// One round: the operations at once, the daemon killed at RPC `point`, then started
    /// again.
    async fn round(self: &Arc<Self>, round: usize, point: usize) {
        self.sent.store(0, Ordering::SeqCst);
        self.kill_at.store(point, Ordering::SeqCst);
        let client = self.client().await;
        let pods: Vec<String> = {
            let ledger = self.ledger.lock().await;
            ledger
                .started
                .keys()
                .filter(|p| !ledger.stopping.contains(*p))
                .cloned()
                .collect()
        };
        let mut tasks = Vec::new();
        for i in 0..OPERATIONS {
            let chaos = self.clone();
            let client = client.clone();
            let target = (!pods.is_empty()).then(|| pods[(round * 7 + i) % pods.len()].clone());
            tasks.push(tokio::spawn(async move {
                chaos.operation(i % 4, client, target).await
            }));
        }
        for task in tasks {
            let _ = task.await.expect("an operation task");
        }
        // Every operation has ended: the kill came (or the round sent fewer RPCs).
        let mut daemon = self.daemon.lock().await;
        if daemon.pid().is_some() {
            daemon.crash().await;
        }
        daemon.restart().await;
    }

    /// Counts an RPC about to be sent; the one at the kill point kills the daemon (a
    /// few milliseconds later, so that the RPCs in flight are in the middle of their
    /// work).
    async fn send(&self) {
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.kill_at.load(Ordering::SeqCst) {
            let delay = Duration::from_millis((n % 4) as u64 * 7);
            let chaos_daemon = &self.daemon;
            tokio::time::sleep(delay).await;
            chaos_daemon.lock().await.crash().await;
        }
    }

    /// Operation `kind`: 0 and 1 run a pod with a container (one in four with a
    /// hostPort), 2 execs in a running container of `target`, 3 stops and removes
    /// `target`. Ends at the first RPC that fails (the daemon died).
    async fn operation(
        &self,
        kind: usize,
        mut client: RuntimeServiceClient<Channel>,
        target: Option<String>,
    ) -> Result<(), tonic::Status> {
        match (kind, target) {
            (0 | 1, _) => self.run_pod(&mut client).await,
            (2, Some(pod)) => {
                let started = self.ledger.lock().await.started.get(&pod).cloned();
                let Some((id, _)) = started.and_then(|c| c.into_iter().next()) else {
                    return Ok(());
                };
                self.send().await;
                client
                    .exec_sync(ExecSyncRequest {
                        container_id: id,
                        cmd: vec!["true".into()],
                        timeout: 10,
                    })
                    .await
                    .map(drop)
            }
            (3, Some(pod)) => {
                self.ledger.lock().await.stopping.insert(pod.clone());
                self.send().await;
                client
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: pod.clone(),
                    })
                    .await?;
                self.send().await;
                client
                    .remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: pod.clone(),
                    })
                    .await?;
                self.ledger.lock().await.removed.insert(pod);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn run_pod(
        &self,
        client: &mut RuntimeServiceClient<Channel>,
    ) -> Result<(), tonic::Status> {
        let n = {
            let mut ledger = self.ledger.lock().await;
            ledger.next += 1;
            ledger.next
        };
        let name = format!("chaos-{n}");
        let mut config: PodSandboxConfig = pod_config(&name, &format!("/{}", self.cgroups.0));
        config.log_directory = self.logs.path().join(&name).display().to_string();
        if n % 4 == 0 {
            config.port_mappings = vec![PortMapping {
                protocol: 0,
                container_port: 80,
                host_port: 21000 + n as i32,
                host_ip: String::new(),
            }];
        }
        self.send().await;
        let pod = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        self.ledger
            .lock()
            .await
            .started
            .entry(pod.clone())
            .or_default();
        self.send().await;
        let id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container(
                    &name,
                    &format!("echo ready-{name}; exec sleep 3600"),
                )),
                sandbox_config: Some(config),
            })
            .await?
            .into_inner()
            .container_id;
        self.send().await;
        client
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
        let mut ledger = self.ledger.lock().await;
        ledger.started.entry(pod).or_default().insert(id, name);
        Ok(())
    }

    /// After a restart: what the module docs promise.
    async fn check_consistency(&self) {
        let mut client = self.client().await;
        let pods = client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .expect("list pods")
            .into_inner()
            .items;
        let containers = client
            .list_containers(ListContainersRequest { filter: None })
            .await
            .expect("list containers")
            .into_inner()
            .containers;
        let pod_ids: BTreeSet<String> = pods.iter().map(|p| p.id.clone()).collect();
        let container_ids: BTreeSet<String> = containers.iter().map(|c| c.id.clone()).collect();
        for pod in &pods {
            assert!(
                pod.state == PodSandboxState::SandboxReady as i32
                    || pod.state == PodSandboxState::SandboxNotready as i32,
                "{pod:?}"
            );
            assert!(pod_ids.contains(&pod.id));
        }
        let ledger = self.ledger.lock().await;
        for (pod, started) in &ledger.started {
            if ledger.stopping.contains(pod) {
                continue;
            }
            for (id, name) in started {
                let status = client
                    .container_status(ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("the started container {name}: {e}"))
                    .into_inner()
                    .status
                    .unwrap();
                assert_eq!(
                    status.state,
                    ContainerState::ContainerRunning as i32,
                    "{name} was started and nothing stopped it: {status:?}"
                );
                let log = self.logs.path().join(name).join(format!("{name}/0.log"));
                let printed: Vec<String> = records(&log).into_iter().map(|r| r.2).collect();
                assert_eq!(printed, [format!("ready-{name}")], "{name}'s log");
            }
        }
        drop(ledger);
        self.assert_parts_match(&pod_ids, &container_ids, &mut client)
            .await;
    }

    /// Nothing on the host without a record; no Ready pod without its parts.
    async fn assert_parts_match(
        &self,
        pods: &BTreeSet<String>,
        containers: &BTreeSet<String>,
        client: &mut RuntimeServiceClient<Channel>,
    ) {
        let daemon = self.daemon.lock().await;
        let paths = daemon.paths().clone();
        let records: BTreeSet<&String> = pods.iter().chain(containers).collect();
        for dir in [paths.state.join("sandboxes"), paths.state.join("netns")] {
            for id in entries(&dir) {
                assert!(
                    pods.contains(&id),
                    "{} without a pod record",
                    dir.join(&id).display()
                );
            }
        }
        for dir in [
            paths.root.join("containers"),
            paths.state.join("containers"),
        ] {
            for id in entries(&dir) {
                assert!(
                    containers.contains(&id),
                    "{} without a container record",
                    dir.join(&id).display()
                );
            }
        }
        for id in runc_containers(&paths.state) {
            assert!(
                records.contains(&id),
                "runtime container {id} without a record"
            );
        }
        let mut pod_ips = BTreeSet::new();
        for id in pods {
            let status = client
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                })
                .await
                .expect("pod status")
                .into_inner()
                .status
                .unwrap();
            let ip = status.network.map(|n| n.ip).unwrap_or_default();
            if status.state == PodSandboxState::SandboxReady as i32 {
                assert!(!ip.is_empty(), "a Ready pod without an IP: {id}");
                assert!(
                    paths.state.join("netns").join(id).exists(),
                    "a Ready pod without its netns: {id}"
                );
            }
            if !ip.is_empty() {
                pod_ips.insert(ip);
            }
        }
        let leases = leases(&paths.state);
        for lease in &leases {
            assert!(
                pod_ips.contains(lease),
                "IP lease {lease} of no pod (pods: {pod_ips:?})"
            );
        }
    }

    /// Stops and removes every pod there is.
    async fn remove_everything(&self) {
        let mut client = self.client().await;
        let pods = client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .expect("list pods")
            .into_inner()
            .items;
        for pod in pods {
            client
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await
                .expect("stop pod");
            client
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await
                .expect("remove pod");
        }
    }

    async fn assert_nothing_left(&self) {
        let daemon = self.daemon.lock().await;
        assert_nothing_left(&daemon, &self.cgroups.0);
    }
}

/// A monitor killed with SIGKILL cannot record its container's exit: the container is
/// reported exited with code 255 and a message that says why, its unmonitored process
/// is ended, and it can be removed with nothing left.
#[tokio::test]
async fn a_killed_monitor_is_reported_and_its_container_removed() {
    let mut w = common::world::world().await;
    let id = w.create(container("orphaned", "exec sleep 3600")).await;
    w.start(&id).await;
    let paths = w.daemon.paths().clone();
    let dir = paths.state.join("containers").join(&id);
    let read_pid = |file: &str| -> i32 {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (monitor, init) = (read_pid("monitor.pid"), read_pid("container.pid"));
    // Our own container's monitor, by its pid.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = common::wait_for(
        "the container to be reported exited",
        Duration::from_secs(10),
        || {
            let mut client = w.client.clone();
            let id = id.clone();
            async move {
                let s = client
                    .container_status(ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status?;
                (s.state == ContainerState::ContainerExited as i32).then_some(s)
            }
        },
    )
    .await;
    assert_eq!(status.exit_code, 255, "{status:?}");
    assert!(status.message.contains("monitor"), "{status:?}");
    common::wait_for("its process to end", Duration::from_secs(10), || async {
        (!Path::new(&format!("/proc/{init}")).exists()
            || std::fs::read_to_string(format!("/proc/{init}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            }))
        .then_some(())
    })
    .await;
    w.client
        .remove_container(berth::proto::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("remove the container");
    assert!(!dir.exists(), "its state directory");
    assert!(
        !paths.root.join("containers").join(&id).exists(),
        "its layer"
    );
    assert_eq!(
        entries(&paths.state.join("m")),
        Vec::<String>::new(),
        "its socket"
    );
    assert!(!runc_containers(&paths.state).contains(&id));
}

/// A conflist whose second plugin never answers ADD (it answers DEL at once).
fn hanging_network(setup: &common::Setup, bin: &Path) -> String {
    chained_network(
        setup,
        bin,
        "hang",
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then exec sleep 3600; fi\n",
    )
}

/// The test network (the bridge plugin with host-local), then plugin `name` of the
/// shell `text`, written in `bin`: a conflist.
fn chained_network(setup: &common::Setup, bin: &Path, name: &str, text: &str) -> String {
    script(&bin.join(name), text);
    let leases = setup.paths.state.join("cni/networks");
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "berth",
        "plugins": [
            {
                "type": "bridge", "bridge": setup.bridge, "isGateway": true, "ipMasq": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": setup.subnet}]], "dataDir": leases}
            },
            {"type": name}
        ]
    })
    .to_string()
}

/// A CNI plugin that hangs: RunPodSandbox fails once the plugin timeout has passed, the
/// plugin (and what it ran) is killed, and what the plugins before it made (an address,
/// a veth, masquerading) is released.
#[tokio::test]
async fn a_hanging_cni_plugin_fails_the_pod_in_time_and_leaves_nothing() {
    let bin = tempfile::tempdir().unwrap();
    let setup = common::Setup::new().toml(&format!(
        "bin_dirs = [{:?}, \"/usr/lib/cni\"]\nplugin_timeout_seconds = 5",
        bin.path()
    ));
    std::fs::write(
        setup.paths.cni_conf.join("10-hang.conflist"),
        hanging_network(&setup, bin.path()),
    )
    .unwrap();
    let tree = CgroupTree(format!("berth-hang-net-{}", std::process::id()));
    let daemon = setup.start().await;
    let mut client = daemon.runtime().await;
    let started = std::time::Instant::now();
    let err = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("hung-network", &format!("/{}", tree.0))),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("the plugin never answers");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.message().contains("hang") && err.message().contains("no answer"),
        "{err:?}"
    );
    assert_nothing_left(&daemon, &tree.0);
}

/// A runtime that makes and starts the pause container (`run`), then hangs:
/// RunPodSandbox fails once the start timeout has passed, the runtime command is killed,
/// and the container it made, its cgroup and the pod's network are undone.
#[tokio::test]
async fn a_runtime_hanging_on_create_fails_the_pod_in_time_and_leaves_nothing() {
    let bin = tempfile::tempdir().unwrap();
    let runtime = bin.path().join("hang-runc");
    std::fs::write(
        &runtime,
        "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = run ]; then /usr/sbin/runc \"$@\"; exec sleep 3600; fi\ndone\nexec /usr/sbin/runc \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = format!("berth-hang-{}", std::process::id());
    let _cgroups = CgroupTree(tree.clone());
    let daemon = common::Setup::new()
        .toml(&format!(
            "[runtime]\nstart_timeout_seconds = 5\n[runtime.handlers.hang]\npath = {runtime:?}"
        ))
        .start()
        .await;
    let mut client = daemon.runtime().await;
    let started = std::time::Instant::now();
    let err = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("hung-runtime", &format!("/{tree}"))),
            runtime_handler: "hang".into(),
        })
        .await
        .expect_err("the runtime never answers");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(err.message().contains("no answer"), "{err:?}");
    let hang_root = daemon.paths().state.join("runtime/hang");
    let output = std::process::Command::new("runc")
        .arg("--root")
        .arg(&hang_root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "",
        "the pause it made is gone"
    );
    assert_nothing_left(&daemon, &tree);
}

/// A daemon killed while a CNI plugin of a RunPodSandbox still runs: the next daemon ends
/// that plugin before it undoes the pod, so the plugin cannot allocate an address after
/// the undoing has released the pod's (here an IPAM plugin that starts only after a
/// pause, as a slow one would).
#[tokio::test]
async fn a_plugin_the_dead_daemon_left_running_allocates_nothing_after_the_sweep() {
    let bin = tempfile::tempdir().unwrap();
    let slow = bin.path().join("slow-local");
    std::fs::write(
        &slow,
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then sleep 5; fi\nexec /usr/lib/cni/host-local\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let setup =
        common::Setup::new().toml(&format!("bin_dirs = [{:?}, \"/usr/lib/cni\"]", bin.path()));
    let leases_dir = setup.paths.state.join("cni/networks");
    let second = setup.subnet.replacen("10.231.", "10.232.", 1);
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "berth",
        "plugins": [
            {
                "type": "bridge", "bridge": setup.bridge, "isGateway": true, "ipMasq": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": setup.subnet}]], "dataDir": leases_dir}
            },
            {
                "type": "slow-local",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": second}]], "dataDir": leases_dir}
            }
        ]
    });
    std::fs::write(
        setup.paths.cni_conf.join("10-slow.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    let tree = CgroupTree(format!("berth-slow-net-{}", std::process::id()));
    let mut daemon = setup.start().await;
    let mut client = daemon.runtime().await;
    let parent = format!("/{}", tree.0);
    let pending = tokio::spawn(async move {
        client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config("slow-network", &parent)),
                runtime_handler: String::new(),
            })
            .await
    });
    let state = daemon.paths().state.clone();
    let tag = common::leaks::helper_tag(&state);
    let helpers = move || -> Vec<String> {
        entries(Path::new("/proc"))
            .into_iter()
            .filter(|pid| pid.parse::<u32>().is_ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|e| e.split(|&b| b == 0).any(|v| v == tag.as_bytes()))
            })
            .collect()
    };
    let waiting = helpers.clone();
    common::wait_for("the slow plugin to run", Duration::from_secs(10), || {
        let slow = waiting().into_iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("sleep"))
        });
        async move { slow.then_some(()) }
    })
    .await;
    daemon.crash().await;
    let _ = pending.await;
    assert!(!helpers().is_empty(), "the plugin outlived its daemon");
    daemon.restart().await;
    let left = helpers.clone();
    common::wait_for(
        "the dead daemon's plugins to be gone",
        Duration::from_secs(10),
        || {
            let running = left();
            async move { running.is_empty().then_some(()) }
        },
    )
    .await;
    assert_nothing_left(&daemon, &tree.0);
    assert!(
        daemon
            .log()
            .contains("ended helpers a dead daemon left running")
    );
}

/// Writes an executable shell script.
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A daemon killed while the runtime was making a pod's pause, the runtime killed with
/// it before it saved the container's state: what runc leaves then (the container's
/// directory under its root, with its exec fifo, and no `state.json`) is made here by a
/// wrapper, at once, and the wrapper then hangs as the cut-short `run` would. The runtime
/// says it does not know that container; the sweep removes its directory all the same.
#[tokio::test]
async fn a_create_cut_short_leaves_no_runtime_directory_after_the_sweep() {
    let bin = tempfile::tempdir().unwrap();
    let runtime = bin.path().join("cut-runc");
    script(
        &runtime,
        "#!/bin/sh\nroot=$2\nfor id; do :; done\nfor a in \"$@\"; do\n  if [ \"$a\" = run ]; then mkdir -p \"$root/$id\" && mkfifo \"$root/$id/exec.fifo\"; exec sleep 3600; fi\ndone\nexec /usr/sbin/runc \"$@\"\n",
    );
    let tree = CgroupTree(format!("berth-cut-{}", std::process::id()));
    let mut daemon = common::Setup::new()
        .toml(&format!("[runtime.handlers.cut]\npath = {runtime:?}"))
        .start()
        .await;
    let mut client = daemon.runtime().await;
    let parent = format!("/{}", tree.0);
    let pending = tokio::spawn(async move {
        client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config("cut-short", &parent)),
                runtime_handler: "cut".into(),
            })
            .await
    });
    let root = daemon.paths().state.join("runtime/cut");
    let made = root.clone();
    let id = common::wait_for("the cut-short create", Duration::from_secs(20), || {
        let id = entries(&made)
            .into_iter()
            .find(|id| made.join(id).join("exec.fifo").exists());
        async move { id }
    })
    .await;
    daemon.crash().await;
    let _ = pending.await;
    daemon.restart().await;
    assert!(
        daemon
            .log()
            .contains("cleaning up a sandbox left half made")
    );
    assert!(
        !root.join(&id).exists(),
        "the runtime's directory of {id} stays: {:?}",
        entries(&root.join(&id))
    );
    assert_nothing_left(&daemon, &tree.0);
}

/// A daemon killed in the middle of a StopPodSandbox's CNI DEL (a chained plugin that
/// hangs on DEL, before the bridge plugin's DEL releases the address): the pod is
/// NotReady and still holds its address, which its status reports, as containerd's does,
/// until a new stop has released it.
#[tokio::test]
async fn a_stop_cut_short_reports_the_address_the_pod_still_holds() {
    let bin = tempfile::tempdir().unwrap();
    let armed = bin.path().join("armed");
    let setup =
        common::Setup::new().toml(&format!("bin_dirs = [{:?}, \"/usr/lib/cni\"]", bin.path()));
    let conflist = chained_network(
        &setup,
        bin.path(),
        "hang-on-del",
        &format!(
            "#!/bin/sh\nif [ \"$CNI_COMMAND\" = DEL ] && [ -e {armed:?} ]; then exec sleep 3600; fi\nexec /usr/lib/cni/tuning\n"
        ),
    );
    std::fs::write(setup.paths.cni_conf.join("10-hang.conflist"), conflist).unwrap();
    let tree = CgroupTree(format!("berth-cut-stop-{}", std::process::id()));
    let mut daemon = setup.start().await;
    let mut client = daemon.runtime().await;
    let id = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("cut-stop", &format!("/{}", tree.0))),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let status = |client: RuntimeServiceClient<Channel>, id: String| async move {
        let mut client = client;
        client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    };
    let ip = status(client.clone(), id.clone()).await.network.unwrap().ip;
    std::fs::write(&armed, "").unwrap();
    let stopping = {
        let (mut client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            client
                .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        })
    };
    let state = daemon.paths().state.clone();
    let tag = common::leaks::helper_tag(&state);
    common::wait_for("the DEL to hang", Duration::from_secs(20), || {
        let hanging = entries(Path::new("/proc")).into_iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| e.split(|&b| b == 0).any(|v| v == tag.as_bytes()))
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("sleep"))
        });
        async move { hanging.then_some(()) }
    })
    .await;
    daemon.crash().await;
    let _ = stopping.await;
    std::fs::remove_file(&armed).unwrap();
    daemon.restart().await;
    let client = daemon.runtime().await;
    let cut = status(client.clone(), id.clone()).await;
    assert_eq!(cut.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(
        cut.network.map(|n| n.ip),
        Some(ip.clone()),
        "the address the pod still holds"
    );
    assert!(leases(&state).contains(&ip), "{:?}", leases(&state));
    let mut again = client.clone();
    again
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    let stopped = status(client.clone(), id.clone()).await;
    assert_eq!(stopped.network, None, "released by the second stop");
    assert!(!leases(&state).contains(&ip), "{:?}", leases(&state));
    again
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert_nothing_left(&daemon, &tree.0);
}

/// What a RunPodSandbox cut short between the bridge plugin's address and its masquerade
/// chain leaves: a pod whose chain (and the POSTROUTING rule jumping to it) is not there.
/// The bridge plugin's DEL then fails on iptables-nft ("Chain … does not exist"), after
/// it has released the address and the veth. Made here by removing the pod's own rule
/// and chain by hand: the pod is stopped and removed all the same, and nothing is left.
#[tokio::test]
async fn a_pod_whose_masquerade_chain_is_gone_is_removed_all_the_same() {
    let tree = CgroupTree(format!("berth-gone-chain-{}", std::process::id()));
    let daemon = common::Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let id = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("gone-chain", &format!("/{}", tree.0))),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let iptables = |args: &[&str]| {
        let out = std::process::Command::new("iptables")
            .args(["-t", "nat"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "iptables {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The pod's own masquerading: the POSTROUTING rule whose comment names it.
    let rules = iptables(&["-S", "POSTROUTING"]);
    let rule = rules
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("the pod's masquerade rule in {rules}"))
        .to_string();
    let chain = rule
        .split_whitespace()
        .skip_while(|w| *w != "-j")
        .nth(1)
        .unwrap()
        .to_string();
    assert!(chain.starts_with("CNI-"), "{rule}");
    let words = shell_words(rule.trim_start_matches("-A POSTROUTING "));
    let mut delete = vec!["-D".to_string(), "POSTROUTING".to_string()];
    delete.extend(words);
    iptables(&delete.iter().map(String::as_str).collect::<Vec<_>>());
    iptables(&["-F", &chain]);
    iptables(&["-X", &chain]);

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("the stop goes through without the chain");
    client
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert!(daemon.log().contains("found its rules gone already"));
    assert_nothing_left(&daemon, &tree.0);
}

/// `iptables -S` words, its double-quoted ones (a comment) kept whole, quotes removed.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
