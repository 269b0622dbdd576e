//! Pod sandboxes with real runc and Debian's CNI plugins: addresses, reachability,
//! hostPort, host networking, DNS, idempotent stop and remove, complete clean-up,
//! rollback of a failed CNI ADD, and many pods at once. Each test daemon has its own
//! bridge, subnet, CNI config and lease directories.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth::proto::runtime_service_client::RuntimeServiceClient;
use berth::proto::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    PodSandboxState, PodSandboxStateValue, PodSandboxStatusRequest, PodSandboxStatusResponse,
    PortMapping, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use common::{Daemon, Setup, wait_for};
use tonic::transport::Channel;

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "berth-test".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "kept".to_string())].into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/berth-test".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run(
    client: &mut RuntimeServiceClient<Channel>,
    config: PodSandboxConfig,
) -> Result<String, tonic::Status> {
    client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(client: &mut RuntimeServiceClient<Channel>, id: &str) -> PodSandboxStatusResponse {
    client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
}

async fn stop(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .expect("StopPodSandbox");
}

async fn remove(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .expect("RemovePodSandbox");
}

/// What verbose status tells about the pod's host-side resources.
struct Host {
    pid: i32,
    netns: Option<PathBuf>,
    cgroups_path: String,
}

fn host_side(status: &PodSandboxStatusResponse) -> Host {
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).expect("verbose info");
    Host {
        pid: info["pid"].as_i64().unwrap() as i32,
        netns: info["netnsPath"].as_str().map(PathBuf::from),
        cgroups_path: info["cgroupsPath"].as_str().unwrap().to_string(),
    }
}

fn ip_of(status: &PodSandboxStatusResponse) -> String {
    status
        .status
        .as_ref()
        .unwrap()
        .network
        .as_ref()
        .expect("network status")
        .ip
        .clone()
}

/// busybox run inside a network namespace we made (through the pod's pin).
fn in_netns(netns: &Path, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("/bin/busybox")
        .args(args)
        .output()
        .expect("run nsenter (util-linux)")
}

fn ping_from_host(ip: &str) -> bool {
    Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "3", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A live process: one that exists and is not a zombie waiting for its reaper.
fn pid_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    pid > 0 && matches!(state, Some(s) if s != "Z" && s != "X")
}

/// Interfaces enslaved to the daemon's bridge: one veth per attached pod.
fn veths_on(bridge: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Addresses host-local has leased in the daemon's default network.
fn leases(daemon: &Daemon) -> usize {
    let dir = daemon.paths().state.join("cni/networks/berth");
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .parse::<std::net::IpAddr>()
                        .is_ok()
                })
                .count()
        })
        .unwrap_or(0)
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Checks that nothing of a removed pod is left on the host.
fn assert_gone(daemon: &Daemon, id: &str, host: &Host) {
    assert!(
        !pid_alive(host.pid),
        "the pause process {} is gone",
        host.pid
    );
    if let Some(netns) = &host.netns {
        assert!(!netns.exists(), "netns pin {} removed", netns.display());
    }
    for controller in ["pids", "memory", "cpu"] {
        let cgroup = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(host.cgroups_path.trim_start_matches('/'));
        assert!(!cgroup.exists(), "cgroup {} removed", cgroup.display());
    }
    let state = &daemon.paths().state;
    assert!(
        !state.join("sandboxes").join(id).exists(),
        "sandbox directory removed"
    );
    assert!(
        !state
            .join("cni/results")
            .join(format!("{id}.json"))
            .exists(),
        "CNI cache removed"
    );
    assert!(
        mounts_under(&state.join("sandboxes").join(id)).is_empty(),
        "no mounts left"
    );
    let runc = Command::new("runc")
        .arg("--root")
        .arg(state.join("runtime/runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&runc.stdout).contains(id),
        "runc forgot it"
    );
}

#[tokio::test]
async fn a_pod_gets_an_address_the_host_and_other_pods_reach() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let a = run(&mut client, pod("a")).await.expect("run pod a");
    let b = run(&mut client, pod("b")).await.expect("run pod b");
    let (sa, sb) = (status(&mut client, &a).await, status(&mut client, &b).await);
    let (ip_a, ip_b) = (ip_of(&sa), ip_of(&sb));
    assert_ne!(ip_a, ip_b);
    let prefix = daemon.setup.subnet.trim_end_matches("0/24");
    assert!(
        ip_a.starts_with(prefix) && ip_b.starts_with(prefix),
        "{ip_a} {ip_b} in {}",
        daemon.setup.subnet
    );

    let st = sa.status.as_ref().unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata.as_ref().unwrap().name, "a");
    assert_eq!(st.labels["app"], "a");
    assert_eq!(st.annotations["note"], "kept");
    assert!(st.created_at > 0);
    let spec: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&sa.info["info"]).unwrap()["runtimeSpec"].clone();
    assert_eq!(spec["process"]["args"][0], "/pause");
    assert_eq!(spec["root"]["readonly"], true);

    // The pause process: alive, in the pod's own network namespace, seeing a rootfs
    // that holds nothing but /pause, with no capabilities.
    let host = host_side(&sa);
    assert!(pid_alive(host.pid));
    let pin = host.netns.clone().expect("a pinned netns");
    let ns_of = |p: &str| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ns_of(&format!("/proc/{}/ns/net", host.pid)),
        std::fs::metadata(&pin).unwrap().ino()
    );
    assert_ne!(
        ns_of(&format!("/proc/{}/ns/net", host.pid)),
        ns_of("/proc/self/ns/net")
    );
    let root: HashSet<String> = std::fs::read_dir(format!("/proc/{}/root", host.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        root.contains("pause") && !root.contains("etc") && !root.contains("bin"),
        "{root:?}"
    );
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", host.pid)).unwrap();
    assert!(
        proc_status
            .lines()
            .any(|l| l == "CapEff:\t0000000000000000"),
        "{proc_status}"
    );
    let cgroup = Path::new("/sys/fs/cgroup/pids").join(host.cgroups_path.trim_start_matches('/'));
    assert!(cgroup.is_dir(), "{} exists", cgroup.display());

    assert!(ping_from_host(&ip_a), "the host reaches pod a at {ip_a}");
    let out = in_netns(&pin, &["ping", "-c", "1", "-W", "3", &ip_b]);
    assert!(
        out.status.success(),
        "pod a reaches pod b: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(veths_on(&daemon.setup.bridge), 2);
    assert_eq!(leases(&daemon), 2);

    for id in [&a, &b] {
        let host = host_side(&status(&mut client, id).await);
        stop(&mut client, id).await;
        remove(&mut client, id).await;
        assert_gone(&daemon, id, &host);
    }
    assert_eq!(veths_on(&daemon.setup.bridge), 0, "no veth left");
    assert_eq!(leases(&daemon), 0, "no lease left");
    assert!(!ping_from_host(&ip_a));
}

#[tokio::test]
async fn host_port_forwards_to_the_pod() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let host_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = pod("web");
    config.port_mappings = vec![PortMapping {
        protocol: 0,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let id = run(&mut client, config).await.expect("run pod");
    let s = status(&mut client, &id).await;
    let pin = host_side(&s).netns.unwrap();

    // A web server in the pod's network namespace, serving one file.
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello from the pod\n").unwrap();
    let mut server: Child = Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h"])
        .arg(www.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The bridge's own address is local to the host: portmap's DNAT applies to it.
    let gateway = daemon.setup.subnet.replace("0/24", "1");
    let target = format!("{gateway}:{host_port}");
    let body = wait_for("the hostPort to answer", Duration::from_secs(15), || {
        let target = target.clone();
        async move {
            let mut conn = std::net::TcpStream::connect(&target).ok()?;
            conn.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
            let mut response = String::new();
            conn.read_to_string(&mut response).ok()?;
            response.contains("hello from the pod").then_some(response)
        }
    })
    .await;
    assert!(body.starts_with("HTTP/1."), "{body}");
    let _ = server.kill();
    let _ = server.wait();

    stop(&mut client, &id).await;
    remove(&mut client, &id).await;
    let chains = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    let chains = String::from_utf8_lossy(&chains.stdout);
    assert!(
        !chains.contains(&format!("--dport {host_port}")),
        "the hostPort rule is gone:\n{chains}"
    );
}

#[tokio::test]
async fn host_network_pods_share_the_host_namespace_and_dns_lands_in_resolv_conf() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let mut config = pod("hostnet");
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["berth-test.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let id = run(&mut client, config)
        .await
        .expect("run host-network pod");
    let s = status(&mut client, &id).await;
    let host = host_side(&s);
    assert!(host.netns.is_none(), "no netns of its own");
    let ino = |p: String| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(format!("/proc/{}/ns/net", host.pid)),
        ino("/proc/self/ns/net".into())
    );
    let options = s
        .status
        .unwrap()
        .linux
        .unwrap()
        .namespaces
        .unwrap()
        .options
        .unwrap();
    assert_eq!(options.network, NamespaceMode::Node as i32);
    assert_eq!(veths_on(&daemon.setup.bridge), 0);
    let resolv = std::fs::read_to_string(
        daemon
            .paths()
            .state
            .join("sandboxes")
            .join(&id)
            .join("resolv.conf"),
    )
    .unwrap();
    assert_eq!(
        resolv,
        "search berth-test.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    remove(&mut client, &id).await;
    assert_gone(&daemon, &id, &host);
}

#[tokio::test]
async fn stop_and_remove_are_idempotent_and_list_filters() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let a = run(&mut client, pod("one")).await.unwrap();
    let b = run(&mut client, pod("two")).await.unwrap();
    let host_a = host_side(&status(&mut client, &a).await);
    stop(&mut client, &a).await;
    stop(&mut client, &a).await;
    let s = status(&mut client, &a).await;
    assert_eq!(
        s.status.unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );
    assert!(!pid_alive(host_a.pid));

    let lister = client.clone();
    let list = |filter: PodSandboxFilter| {
        let mut client = lister.clone();
        async move {
            let items = client
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .into_inner()
                .items;
            let mut ids: Vec<String> = items.into_iter().map(|p| p.id).collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(list(PodSandboxFilter::default()).await, both);
    let ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    assert_eq!(list(ready).await, vec![b.clone()]);
    let by_label = PodSandboxFilter {
        label_selector: [("app".to_string(), "one".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(list(by_label).await, vec![a.clone()]);
    let by_prefix = PodSandboxFilter {
        id: a[..12].to_string(),
        ..Default::default()
    };
    assert_eq!(list(by_prefix).await, vec![a.clone()]);

    remove(&mut client, &a).await;
    remove(&mut client, &a).await;
    let unknown = "f".repeat(64);
    stop(&mut client, &unknown).await;
    remove(&mut client, &unknown).await;
    let err = client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: a.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains(&a));
    // Remove without stop first.
    let host_b = host_side(&status(&mut client, &b).await);
    remove(&mut client, &b).await;
    assert_gone(&daemon, &a, &host_a);
    assert_gone(&daemon, &b, &host_b);
    assert!(list(PodSandboxFilter::default()).await.is_empty());
}

#[tokio::test]
async fn bad_requests_are_refused_cleanly() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let err = run(&mut client, PodSandboxConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("metadata"), "{}", err.message());
    let err = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod("h")),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("runtime_handler") && err.message().contains("kata"),
        "{}",
        err.message()
    );
    let mut escape = pod("esc");
    escape.linux.as_mut().unwrap().cgroup_parent = "/../../sys".into();
    let err = run(&mut client, escape).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cgroup_parent"), "{}", err.message());
    let mut dns = pod("dns");
    dns.dns_config = Some(DnsConfig {
        options: vec!["a\nnameserver 1.2.3.4".into()],
        ..Default::default()
    });
    assert_eq!(
        run(&mut client, dns).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    // What runc or the kernel would refuse is refused first, naming the field: a
    // sysctl of the node's own, one that is no sysctl name, a relative log directory.
    for (key, said) in [
        ("kernel.panic", "not namespaced"),
        ("../../etc/x", "not a sysctl name"),
    ] {
        let mut sysctl = pod("sysctl");
        sysctl
            .linux
            .as_mut()
            .unwrap()
            .sysctls
            .insert(key.into(), "1".into());
        let err = run(&mut client, sysctl).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("config.linux.sysctls") && err.message().contains(said),
            "{}",
            err.message()
        );
    }
    let mut relative = pod("relative-logs");
    relative.log_directory = "logs/pod".into();
    let err = run(&mut client, relative).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("config.log_directory"),
        "{}",
        err.message()
    );

    let id = run(&mut client, pod("dup")).await.unwrap();
    let err = run(&mut client, pod("dup")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains(&id), "{}", err.message());
    remove(&mut client, &id).await;
    let again = run(&mut client, pod("dup"))
        .await
        .expect("the name is free after removal");
    remove(&mut client, &again).await;
    assert!(
        std::fs::read_dir(daemon.paths().state.join("sandboxes"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn a_cni_failure_rolls_everything_back() {
    let setup = Setup::new();
    // A network whose IPAM cannot work: the bridge plugin fails after creating its bridge
    // and the veth. Its own bridge, removed at the end.
    let broken_bridge = format!("{}x", setup.bridge);
    std::fs::write(
        setup.paths.cni_conf.join("10-broken.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"broken","plugins":[{{"type":"bridge","bridge":"{broken_bridge}","ipam":{{"type":"host-local","ranges":[[{{"subnet":"not-a-subnet"}}]]}}}}]}}"#
        ),
    )
    .unwrap();
    let daemon = setup.start().await;
    let mut client = daemon.runtime().await;
    let err = run(&mut client, pod("doomed")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(err.message().contains("bridge"), "{}", err.message());

    let state = &daemon.paths().state;
    let empty = |dir: &str| std::fs::read_dir(state.join(dir)).unwrap().next().is_none();
    assert!(empty("sandboxes"), "no sandbox directory");
    assert!(empty("netns"), "no netns pin");
    // Its DEL fails too (the same IPAM config): the cache of what ADD ran with stays, for
    // the next start to try again, instead of dropping what the plugins may hold.
    let cache: Vec<_> = std::fs::read_dir(state.join("cni/results"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(cache.len(), 1, "the CNI cache, for a retry");
    assert!(
        mounts_under(state).is_empty(),
        "no mounts: {:?}",
        mounts_under(state)
    );
    assert!(
        Path::new("/sys/class/net").join(&broken_bridge).exists(),
        "the plugin got as far as its bridge"
    );
    assert_eq!(veths_on(&broken_bridge), 0, "no veth");
    let deleted = Command::new("ip")
        .args(["link", "del", &broken_bridge])
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{deleted:?}");
    let runc = Command::new("runc")
        .arg("--root")
        .arg(state.join("runtime/runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert!(runc.stdout.is_empty(), "no pause container");
    let listed = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.items.is_empty(), "no record");
    // The name was released: fixing the network lets the same pod run.
    std::fs::remove_file(daemon.paths().cni_conf.join("10-broken.conflist")).unwrap();
    std::fs::write(
        daemon.paths().cni_conf.join("10-fixed.conflist"),
        serde_json::to_string(&berth::network::cni::default_conflist(
            &daemon.setup.bridge,
            &daemon.setup.subnet,
            &state.join("cni/networks"),
        ))
        .unwrap(),
    )
    .unwrap();
    let id = run(&mut client, pod("doomed"))
        .await
        .expect("runs once the network works");
    remove(&mut client, &id).await;
}

#[tokio::test]
async fn twenty_pods_at_once_get_distinct_addresses() {
    let daemon = Setup::new().start().await;
    let mut runs = Vec::new();
    for i in 0..20 {
        let mut client = daemon.runtime().await;
        runs.push(tokio::spawn(async move {
            run(&mut client, pod(&format!("many-{i}"))).await
        }));
    }
    let mut ids = Vec::new();
    for r in runs {
        ids.push(r.await.unwrap().expect("run pod"));
    }
    let mut client = daemon.runtime().await;
    let mut ips = BTreeMap::new();
    for id in &ids {
        ips.insert(ip_of(&status(&mut client, id).await), id.clone());
    }
    assert_eq!(ips.len(), 20, "distinct addresses: {ips:?}");
    assert_eq!(veths_on(&daemon.setup.bridge), 20);
    let mut removes = Vec::new();
    for id in ids {
        let mut client = daemon.runtime().await;
        removes.push(tokio::spawn(async move { remove(&mut client, &id).await }));
    }
    for r in removes {
        r.await.unwrap();
    }
    assert_eq!(veths_on(&daemon.setup.bridge), 0);
    assert_eq!(leases(&daemon), 0);
}

#[tokio::test]
async fn pods_survive_a_daemon_restart() {
    let mut daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let id = run(&mut client, pod("durable")).await.unwrap();
    let before = host_side(&status(&mut client, &id).await);
    daemon.crash().await;
    assert!(
        pid_alive(before.pid),
        "the pause process outlives the daemon"
    );
    daemon.restart().await;
    let mut client = daemon.runtime().await;
    let s = status(&mut client, &id).await;
    assert_eq!(
        s.status.as_ref().unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
    assert!(ping_from_host(&ip_of(&s)));
    remove(&mut client, &id).await;
    assert_gone(&daemon, &id, &before);
}

/// Children of a process, with their states.
fn children_of(pid: i32) -> Vec<(i32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid) {
            children.push((child, fields[0].to_string()));
        }
    }
    children
}

#[tokio::test]
async fn pause_adopts_and_reaps_orphans_as_pid_1() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let id = run(&mut client, pod("reaper")).await.unwrap();
    let pause = host_side(&status(&mut client, &id).await).pid;
    // A shell in the pod's PID namespace leaves a sleeper behind and exits: the sleeper
    // is re-parented to the namespace's init, the pause process.
    let out = Command::new("nsenter")
        .args([
            "-t",
            &pause.to_string(),
            "-p",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
        ])
        .arg("/bin/busybox sleep 1 </dev/null >/dev/null 2>&1 & exit 0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let orphan = wait_for(
        "pause to adopt the orphan",
        Duration::from_secs(5),
        || async {
            children_of(pause)
                .into_iter()
                .find(|(_, state)| state != "Z")
                .map(|(pid, _)| pid)
        },
    )
    .await;
    // When it exits, pause reaps it: no zombie stays behind.
    wait_for(
        "the orphan to be reaped",
        Duration::from_secs(10),
        || async { (!Path::new(&format!("/proc/{orphan}")).exists()).then_some(()) },
    )
    .await;
    assert!(children_of(pause).is_empty(), "{:?}", children_of(pause));
    remove(&mut client, &id).await;
}

#[tokio::test]
async fn the_runtime_handler_picks_the_runtime() {
    let daemon = Setup::new()
        .toml("[runtime.handlers.second]\npath = \"runc\"")
        .start()
        .await;
    let mut client = daemon.runtime().await;
    let id = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod("handled")),
            runtime_handler: "second".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let s = status(&mut client, &id).await;
    assert_eq!(s.status.as_ref().unwrap().runtime_handler, "second");
    // The handler's own runtime state directory holds the pause container.
    let runc = Command::new("runc")
        .arg("--root")
        .arg(daemon.paths().state.join("runtime/second"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&runc.stdout).contains(&id));
    let host = host_side(&s);
    remove(&mut client, &id).await;
    assert!(!pid_alive(host.pid));
}

/// The entrypoint of the test's pause image.
const PAUSE_ENTRYPOINT: [&str; 3] = ["/bin/busybox", "sleep", "1000000"];

/// A daemon whose sandbox image is `test-pause:1` (busybox and a second layer, its
/// entrypoint [`PAUSE_ENTRYPOINT`], its user 65535), served by its own registry, with
/// one pod running. Tests bind it whole: a pattern that left its daemon out would drop
/// it at once.
struct PauseImaged {
    daemon: Daemon,
    _registry: common::registry::Registry,
    image: common::images::TestImage,
    client: RuntimeServiceClient<Channel>,
    pod: String,
    status: PodSandboxStatusResponse,
}

async fn a_pod_of_a_sandbox_image() -> PauseImaged {
    use common::images::{Compression, ImageConfig, LayerBuilder, TestImage};
    let registry = common::registry::Registry::start().await;
    let image = TestImage::new(
        vec![
            LayerBuilder::new().busybox().build(Compression::Gzip),
            LayerBuilder::new()
                .file("etc/pause-image", b"yes", 0o644)
                .build(Compression::Gzip),
        ],
        ImageConfig {
            entrypoint: PAUSE_ENTRYPOINT.map(String::from).to_vec(),
            cmd: Vec::new(),
            user: "65535:65535".into(),
            ..ImageConfig::default()
        },
    );
    registry.push("library/test-pause", "1", &image).await;
    let daemon = Setup::new()
        .top("sandbox_image = \"test-pause:1\"")
        .toml(&format!(
            "[registries.\"docker.io\"]\nmirrors = [\"{}\"]\nserver = \"http://127.0.0.1:9\"",
            registry.url()
        ))
        .start()
        .await;
    let mut client = daemon.runtime().await;
    let pod = run(&mut client, pod("imaged"))
        .await
        .expect("run pod with a pause image");
    let status = status(&mut client, &pod).await;
    PauseImaged {
        daemon,
        _registry: registry,
        image,
        client,
        pod,
        status,
    }
}

/// The sandbox image as the kubelet names it in ImageService requests.
fn test_pause() -> Option<berth::proto::ImageSpec> {
    Some(berth::proto::ImageSpec {
        image: "test-pause:1".into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn a_sandbox_images_entrypoint_runs_as_its_user_on_its_layers() {
    let imaged = a_pod_of_a_sandbox_image().await;
    let s = &imaged.status;
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(
        info["runtimeSpec"]["process"]["args"],
        serde_json::json!(PAUSE_ENTRYPOINT)
    );
    assert_eq!(info["runtimeSpec"]["process"]["user"]["uid"], 65535);
    let root = format!("/proc/{}/root", host_side(s).pid);
    assert!(
        Path::new(&root).join("bin/busybox").is_file(),
        "the image is its rootfs"
    );
    assert!(
        Path::new(&root).join("etc/pause-image").is_file(),
        "both layers"
    );
    assert!(ping_from_host(&ip_of(s)));
}

#[tokio::test]
async fn a_sandbox_image_is_pulled_on_first_use_and_pinned() {
    let imaged = a_pod_of_a_sandbox_image().await;
    let image = imaged
        .daemon
        .images()
        .await
        .image_status(berth::proto::ImageStatusRequest {
            image: test_pause(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .expect("pulled on first use");
    assert!(image.pinned);
}

/// A pinned image removed anyway leaves the running pod's layers alone; they go with the
/// pod.
#[tokio::test]
async fn a_removed_sandbox_image_stays_while_its_pod_runs_and_goes_with_it() {
    let mut imaged = a_pod_of_a_sandbox_image().await;
    let daemon = &imaged.daemon;
    daemon
        .images()
        .await
        .remove_image(berth::proto::RemoveImageRequest {
            image: test_pause(),
        })
        .await
        .unwrap();
    wait_for(
        "the collection after the removal",
        Duration::from_secs(10),
        || async {
            daemon
                .log()
                .contains("image content collected")
                .then_some(())
        },
    )
    .await;
    let layers = daemon.paths().root.join("images/layers/sha256");
    for layer in &imaged.image.layers {
        assert!(
            layers.join(&layer.diff_id["sha256:".len()..]).is_dir(),
            "kept while the pod runs"
        );
    }
    let host = host_side(&imaged.status);
    assert!(pid_alive(host.pid));

    remove(&mut imaged.client, &imaged.pod).await;
    assert_gone(&imaged.daemon, &imaged.pod, &host);
    wait_for(
        "the pause image layers to go with the pod",
        Duration::from_secs(10),
        || async { (std::fs::read_dir(&layers).unwrap().count() == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn sysctls_apply_in_the_pod_and_oom_score_adj_is_clamped() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let mut config = pod("tuned");
    config.linux.as_mut().unwrap().sysctls = [(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "79".to_string(),
    )]
    .into();
    let id = run(&mut client, config).await.expect("run pod");
    let host = host_side(&status(&mut client, &id).await);
    let out = in_netns(
        host.netns.as_ref().unwrap(),
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "79",
        "set in the pod's namespace"
    );
    let ours = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(ours.trim(), "79", "not on the host");
    // The sandbox asks for -998; berth cannot go below its own score, so it clamps.
    let read = |pid: u32| -> i32 {
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let daemon_score = read(daemon.pid().unwrap());
    assert_eq!(read(host.pid as u32), daemon_score.max(-998));
    remove(&mut client, &id).await;
}

#[tokio::test]
async fn a_plugin_failing_after_others_succeeded_releases_their_work() {
    let setup = Setup::new();
    // bridge + host-local succeed (a veth, a lease), then tuning fails on a bad sysctl.
    let mut list = berth::network::cni::default_conflist(
        &setup.bridge,
        &setup.subnet,
        &setup.paths.state.join("cni/networks"),
    );
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "tuning", "sysctl": {"net.no.such.sysctl": "1"}}));
    std::fs::write(
        setup.paths.cni_conf.join("10-net.conflist"),
        list.to_string(),
    )
    .unwrap();
    let daemon = setup.start().await;
    let mut client = daemon.runtime().await;
    let err = run(&mut client, pod("half")).await.unwrap_err();
    assert!(err.message().contains("tuning"), "{}", err.message());
    assert_eq!(
        leases(&daemon),
        0,
        "the lease bridge's IPAM took is released"
    );
    assert_eq!(veths_on(&daemon.setup.bridge), 0, "no veth");
    // The name is free again.
    std::fs::write(
        daemon.paths().cni_conf.join("10-net.conflist"),
        berth::network::cni::default_conflist(
            &daemon.setup.bridge,
            &daemon.setup.subnet,
            &daemon.paths().state.join("cni/networks"),
        )
        .to_string(),
    )
    .unwrap();
    let id = run(&mut client, pod("half"))
        .await
        .expect("runs with a working network");
    remove(&mut client, &id).await;
}

#[tokio::test]
async fn a_sandbox_whose_pause_died_is_not_ready() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let id = run(&mut client, pod("fragile")).await.unwrap();
    let host = host_side(&status(&mut client, &id).await);
    // Our own pod's pause process, by its pid.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let state = wait_for(
        "the sandbox to be reported not ready",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let s = status(&mut client, &id).await.status.unwrap();
                (s.state == PodSandboxState::SandboxNotready as i32).then_some(s.state)
            }
        },
    )
    .await;
    assert_eq!(state, PodSandboxState::SandboxNotready as i32);
    let listed = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed[0].state, PodSandboxState::SandboxNotready as i32);
    stop(&mut client, &id).await;
    remove(&mut client, &id).await;
    assert_gone(&daemon, &id, &host);
    assert_eq!(leases(&daemon), 0);
}

#[tokio::test]
async fn a_half_made_pod_is_swept_at_start_up() {
    let mut daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let id = run(&mut client, pod("orphan")).await.unwrap();
    let host = host_side(&status(&mut client, &id).await);
    daemon.crash().await;
    // As if the daemon had died before writing the record: everything else is real.
    {
        let store = berth::store::Store::open(&daemon.paths().root).unwrap();
        assert!(store.delete::<berth::store::SandboxRecord>(&id).unwrap());
    }
    daemon.restart().await;
    assert!(
        daemon
            .log()
            .contains("cleaning up a sandbox left half made")
    );
    assert_gone(&daemon, &id, &host);
    assert_eq!(veths_on(&daemon.setup.bridge), 0);
    assert_eq!(leases(&daemon), 0);
}
