//! Pods with user namespaces of their own (KEP-127), as the conformance suite and the
//! kubelet ask for them: root in the pod is an unprivileged id on the host, the image's
//! files belong to the pod's root through id-mapped layers (nothing chowned), NODE mode
//! is the host's namespace, and what cannot be given is refused at RunPodSandbox.

mod common;

use berth::proto::{
    ContainerConfig, CreateContainerRequest, IdMapping, LinuxContainerConfig,
    LinuxContainerSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption,
    PodSandboxConfig, RunPodSandboxRequest, StartContainerRequest, StatusRequest, UserNamespace,
};
use common::leaks::assert_nothing_left;
use common::world::{World, container, pod_with_namespaces, remove_pod, world};

/// The cgroups the pods of these tests go under.
const CGROUPS: &str = "/berth-userns-test";
/// Where the pods' ids start on the host.
const HOST_BASE: u32 = 1_200_000;

fn range(container_id: u32, host_id: u32, length: u32) -> IdMapping {
    IdMapping {
        host_id,
        container_id,
        length,
    }
}

fn options(userns: UserNamespace) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        userns_options: Some(userns),
        ..Default::default()
    }
}

fn pod_mode(uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
    UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids,
        gids,
    }
}

fn pod_with(w: &World, name: &str, namespaces: NamespaceOption) -> PodSandboxConfig {
    pod_with_namespaces(w.logs.path(), name, CGROUPS, namespaces)
}

/// A container of `pod` with the pod's namespace options, as the kubelet (and the
/// conformance suite) send them.
async fn start_in(
    w: &mut World,
    pod: &str,
    pod_config: &PodSandboxConfig,
    namespaces: &NamespaceOption,
    config: ContainerConfig,
) -> String {
    let config = ContainerConfig {
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..config
    };
    let id = w
        .client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .expect("create container")
        .into_inner()
        .container_id;
    w.client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start container");
    id
}

/// The real uid and gid on the host of process `pid`.
fn host_ids(pid: i64) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    (field("Uid:"), field("Gid:"))
}

async fn container_pid(w: &mut World, id: &str) -> i64 {
    let status = w.status(id).await;
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    info["pid"].as_i64().expect("a pid")
}

#[tokio::test]
async fn the_runtime_announces_user_namespaces_from_its_probe() {
    let mut w = world().await;
    let status = w
        .client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let default = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features)
        .expect("the default handler");
    // runc has the user namespace, the kernel (6.18) id-mapped overlayfs layers, and the
    // state directory's filesystem (ext4) id-mapped mounts.
    assert!(default.user_namespaces, "{default:?}");
}

#[tokio::test]
async fn a_pod_of_its_own_user_namespace_runs_as_an_unprivileged_host_id() {
    let mut w = world().await;
    let namespaces = options(pod_mode(
        vec![range(0, HOST_BASE, 65536)],
        vec![range(0, HOST_BASE + 100_000, 65536)],
    ));
    let config = pod_with(&w, "userns-pod", namespaces.clone());
    let pod = w
        .client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("a pod with its own user namespace")
        .into_inner()
        .pod_sandbox_id;

    // A volume as the kubelet makes one: the host root's, with a file of the host root's.
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("from-host"), "host").unwrap();
    let with_volume = ContainerConfig {
        mounts: vec![berth::proto::Mount {
            container_path: "/data".into(),
            host_path: volume.path().display().to_string(),
            ..Default::default()
        }],
        ..container("userns", "sleep 3600")
    };
    let id = start_in(&mut w, &pod, &config, &namespaces, with_volume).await;
    // What the conformance suite reads: the pod's mapping, as the kernel prints it.
    let uid_map = w.sh(&id, "cat /proc/self/uid_map").await;
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(
        fields,
        ["0", &HOST_BASE.to_string(), "65536"],
        "{uid_map:?}"
    );
    let gid_map = w.sh(&id, "cat /proc/self/gid_map").await;
    assert!(
        gid_map.contains(&(HOST_BASE + 100_000).to_string()),
        "{gid_map:?}"
    );
    // Root in the pod is the mapping's first id on the host.
    let pid = container_pid(&mut w, &id).await;
    assert_eq!(host_ids(pid), (HOST_BASE, HOST_BASE + 100_000));

    // The image's files belong to the pod's root (through id-mapped layers, not a chown:
    // on disk they are still the host root's), and the container writes its own root.
    let owners = w
        .sh(&id, "stat -c '%u:%g' / /bin/busybox /etc/passwd")
        .await;
    assert_eq!(owners.lines().collect::<Vec<_>>(), ["0:0", "0:0", "0:0"]);
    w.sh(
        &id,
        "echo written > /made-here && chown 1000:1000 /made-here && touch /tmp/x",
    )
    .await;
    let layers = walk(&w.daemon.paths().root.join("images/layers"));
    assert!(
        layers.len() > 10,
        "the busybox layer is there: {}",
        layers.len()
    );
    for entry in layers {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        assert!(
            std::os::unix::fs::MetadataExt::uid(&meta) < HOST_BASE,
            "no image layer file was chowned: {}",
            entry.display()
        );
    }
    // The volume is id-mapped too: its files are the pod root's in the pod, and what the
    // pod's root writes there is the host root's on the host.
    let seen = w
        .sh(
            &id,
            "stat -c '%u:%g' /data /data/from-host && echo pod > /data/from-pod",
        )
        .await;
    assert_eq!(seen.lines().collect::<Vec<_>>(), ["0:0", "0:0"]);
    let written = std::fs::metadata(volume.path().join("from-pod")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&written),
            std::os::unix::fs::MetadataExt::gid(&written)
        ),
        (0, 0)
    );

    // /proc and /sys are the pod's own, and the pod's files are there.
    let seen = w
        .sh(
            &id,
            "ls /proc/1/ns/user && ls /sys/class/net && cat /etc/hostname /etc/resolv.conf",
        )
        .await;
    assert!(seen.contains("eth0") && seen.contains("lo"), "{seen}");

    // A second container joins the same namespace.
    let second = start_in(
        &mut w,
        &pod,
        &config,
        &namespaces,
        container("userns-second", "sleep 3600"),
    )
    .await;
    let one = w.sh(&id, "readlink /proc/self/ns/user").await;
    let two = w.sh(&second, "readlink /proc/self/ns/user").await;
    assert_eq!(one, two, "one user namespace for the pod");

    remove_pod(&mut w.client, &pod).await;
    let main_pod = w.sandbox.clone();
    remove_pod(&mut w.client, &main_pod).await;
    assert_nothing_left(&w.daemon, CGROUPS);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn node_mode_is_the_hosts_user_namespace() {
    let mut w = world().await;
    let namespaces = options(UserNamespace {
        mode: NamespaceMode::Node as i32,
        ..Default::default()
    });
    let config = pod_with(&w, "node-userns", namespaces.clone());
    let pod = w
        .client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("a pod in the host's user namespace")
        .into_inner()
        .pod_sandbox_id;
    let id = start_in(
        &mut w,
        &pod,
        &config,
        &namespaces,
        container("node", "sleep 3600"),
    )
    .await;
    let uid_map = w.sh(&id, "cat /proc/self/uid_map").await;
    let ours = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ours.split_whitespace().collect::<Vec<_>>()
    );
    remove_pod(&mut w.client, &pod).await;
}

#[tokio::test]
async fn user_namespaces_a_runtime_cannot_give_are_refused_at_run_pod_sandbox() {
    let mut w = world().await;
    let two = vec![
        range(0, HOST_BASE, 100_000),
        range(0, HOST_BASE + 200_000, 100_000),
    ];
    let unmapped_root = vec![range(1, HOST_BASE, 100_000)];
    let cases = [
        ("more than one mapping", pod_mode(two.clone(), two)),
        (
            "container id 0 not mapped",
            pod_mode(unmapped_root.clone(), unmapped_root),
        ),
        (
            "mode CONTAINER",
            UserNamespace {
                mode: NamespaceMode::Container as i32,
                ..Default::default()
            },
        ),
        (
            "mode TARGET",
            UserNamespace {
                mode: NamespaceMode::Target as i32,
                ..Default::default()
            },
        ),
        ("POD without mappings", pod_mode(vec![], vec![])),
    ];
    for (what, userns) in cases {
        let err = w
            .client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_with(&w, "refused", options(userns))),
                runtime_handler: String::new(),
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains("userns_options"), "{what}: {err:?}");
    }
    // With the host's network, a pod cannot have a user namespace of its own.
    let mut host_network = options(pod_mode(
        vec![range(0, HOST_BASE, 65536)],
        vec![range(0, HOST_BASE, 65536)],
    ));
    host_network.network = NamespaceMode::Node as i32;
    let err = w
        .client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_with(&w, "refused", host_network)),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("host network");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let pods = w
        .client
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1, "only the world's pod: {pods:?}");
    let pins = common::leaks::entries(&w.daemon.paths().state.join("userns"));
    assert!(pins.is_empty(), "{pins:?}");
}
