//! Container and pod stats from real cgroups, a real writable layer and a real pod
//! network namespace: CPU moves when a container burns it, memory and the writable layer
//! grow when it writes, and the pod's interface counts the bytes it sent; resource
//! updates of containers and pods; metrics.

mod common;

use std::time::Duration;

use berth::proto::{
    ContainerConfig, ContainerStats, ContainerStatsFilter, ContainerStatsRequest,
    LinuxContainerResources, ListContainerStatsRequest, ListMetricDescriptorsRequest,
    ListPodSandboxMetricsRequest, ListPodSandboxStatsRequest, PodSandboxStatsFilter,
    PodSandboxStatsRequest, PodSandboxStatusRequest, UpdateContainerResourcesRequest,
    UpdatePodSandboxResourcesRequest,
};
use common::wait_for;
use common::world::{World, container, pod_config, remove_pod, run_pod, world};

/// ContainerStats of container `id`.
async fn stats(w: &World, id: &str) -> ContainerStats {
    w.client
        .clone()
        .container_stats(ContainerStatsRequest {
            container_id: id.to_string(),
        })
        .await
        .expect("container stats")
        .into_inner()
        .stats
        .unwrap()
}

/// Starts a container that burns CPU in a busy loop; returns its id.
async fn start_burner(w: &mut World) -> String {
    let burner = w
        .create(container("burner", "while true; do :; done"))
        .await;
    w.start(&burner).await;
    burner
}

/// Starts a container that writes 8 MiB into its writable layer, then talks to the
/// bridge (nothing listens on port 9 there: the connection is refused, but packets go
/// out), and waits until it has done both; returns its id.
async fn start_writer(w: &mut World) -> String {
    let status = w
        .client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: w.sandbox.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let ip = status.network.unwrap().ip;
    let gateway = format!("{}.1", ip.rsplit_once('.').unwrap().0);
    let script = format!(
        "dd if=/dev/zero of=/filler bs=1M count=8 2>/dev/null; echo written; \
         wget -q -T 2 http://{gateway}:9/ 2>/dev/null; echo talked; sleep 3600"
    );
    let writer = w.create(container("writer", &script)).await;
    w.start(&writer).await;
    let log = w.log_path("writer");
    wait_for("the writer to finish", Duration::from_secs(20), || async {
        common::world::records(&log)
            .iter()
            .any(|r| r.2 == "talked")
            .then_some(())
    })
    .await;
    writer
}

/// A world whose pod runs a burner and a writer that has finished writing and talking:
/// the world, the burner's id and its first stats (taken after the writer finished),
/// and the writer's id.
async fn world_with_burner_and_writer() -> (World, String, ContainerStats, String) {
    let mut w = world().await;
    let burner = start_burner(&mut w).await;
    let writer = start_writer(&mut w).await;
    let first = stats(&w, &burner).await;
    (w, burner, first, writer)
}

#[tokio::test]
async fn a_busy_loops_cpu_usage_moves_and_has_a_rate() {
    let mut w = world().await;
    let burner = start_burner(&mut w).await;
    let first = stats(&w, &burner).await;
    let cpu_before = first.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    let second = wait_for("the burner's CPU to move", Duration::from_secs(10), || {
        let s = stats(&w, &burner);
        async move {
            let s = s.await;
            let cpu = s.cpu?;
            (cpu.usage_core_nano_seconds?.value > cpu_before + 100_000_000).then_some(s)
        }
    })
    .await;
    let rate = second
        .cpu
        .unwrap()
        .usage_nano_cores
        .expect("a rate on the second sample")
        .value;
    assert!(
        rate > 100_000_000,
        "a busy loop used only {rate} nano-cores"
    );
}

#[tokio::test]
async fn written_bytes_fill_the_writable_layer_and_the_memory_cgroup() {
    let (w, _burner, first, writer) = world_with_burner_and_writer().await;
    let writer_stats = stats(&w, &writer).await;
    let layer = writer_stats.writable_layer.clone().unwrap();
    assert!(layer.used_bytes.unwrap().value >= 8 << 20, "{layer:?}");
    assert!(layer.inodes_used.unwrap().value >= 1);
    let memory = writer_stats.memory.unwrap();
    // The 8 MiB it wrote sit in the page cache, charged to its memory cgroup.
    let burner_memory = first.memory.unwrap().usage_bytes.unwrap().value;
    assert!(
        memory.usage_bytes.unwrap().value > burner_memory + (4 << 20),
        "writer {:?}, burner {burner_memory}",
        memory.usage_bytes
    );
    assert!(memory.working_set_bytes.unwrap().value <= memory.usage_bytes.unwrap().value);
    let burner_layer = first.writable_layer.unwrap().used_bytes.unwrap().value;
    assert!(
        burner_layer < 1 << 20,
        "the burner wrote nothing: {burner_layer}"
    );
}

/// ImageFsInfo counts the writable layers as the containers' filesystem, named as the
/// images' when both are on one filesystem (here: both under the daemon's root), so the
/// kubelet's eviction manager sees one disk; the layer stats name the same one.
#[tokio::test]
async fn the_containers_filesystem_is_the_images_and_holds_the_writable_layers() {
    let mut w = world().await;
    let writer = start_writer(&mut w).await;
    let layer = stats(&w, &writer).await.writable_layer.unwrap();
    let fs = w
        .daemon
        .images()
        .await
        .image_fs_info(berth::proto::ImageFsInfoRequest {})
        .await
        .expect("image fs info")
        .into_inner();
    let (images, containers) = (&fs.image_filesystems[0], &fs.container_filesystems[0]);
    let mountpoint = |u: &berth::proto::FilesystemUsage| u.fs_id.clone().unwrap().mountpoint;
    assert_eq!(mountpoint(containers), mountpoint(images));
    assert_eq!(mountpoint(containers), mountpoint(&layer));
    let device = |p: String| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap());
    assert_eq!(
        device(mountpoint(images)),
        device(
            w.daemon
                .paths()
                .root
                .join("containers")
                .display()
                .to_string()
        ),
        "one filesystem"
    );
    assert!(
        containers.used_bytes.unwrap().value >= layer.used_bytes.unwrap().value,
        "{containers:?} holds the writer's {layer:?}"
    );
    assert!(containers.inodes_used.unwrap().value >= layer.inodes_used.unwrap().value);
}

#[tokio::test]
async fn container_stats_are_listed_all_or_filtered_by_an_id_prefix() {
    let mut w = world().await;
    let listed_id = w.create(container("listed", "sleep 3600")).await;
    w.start(&listed_id).await;
    let other = w.create(container("other", "sleep 3600")).await;
    w.start(&other).await;
    let listed = w
        .client
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                id: listed_id[..12].to_string(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attributes.as_ref().unwrap().id, listed_id);
    let all = w
        .client
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 2);
}

/// The pod's stats: its containers, the sum of their CPU, its processes and its network.
#[tokio::test]
async fn pod_stats_sum_its_containers_and_count_its_network() {
    let (mut w, _burner, first, _writer) = world_with_burner_and_writer().await;
    let cpu_before = first.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    let pod = w
        .client
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: w.sandbox.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = pod.linux.unwrap();
    assert_eq!(linux.containers.len(), 2);
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value >= cpu_before);
    assert!(linux.process.unwrap().process_count.unwrap().value >= 3);
    let eth0 = linux.network.unwrap().default_interface.unwrap();
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.tx_bytes.unwrap().value > 0 && eth0.rx_bytes.unwrap().value > 0);
}

#[tokio::test]
async fn pod_stats_of_unknown_pods_are_none_listed_and_not_found_asked() {
    let mut w = world().await;
    let pods = w
        .client
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: "nope".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(pods.is_empty());
    let err = w
        .client
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: "missing".into(),
        })
        .await
        .expect_err("an unknown pod");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn resource_updates_reach_the_cgroup_and_the_status() {
    let mut w = world().await;
    let id = w.create(container("resized", "sleep 3600")).await;
    w.start(&id).await;
    let cgroup = std::path::Path::new("/sys/fs/cgroup/memory/berth-test").join(&id);
    let limit = || {
        std::fs::read_to_string(cgroup.join("memory.limit_in_bytes"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert!(limit() > 1 << 40, "no limit at first");
    w.client
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("update");
    assert_eq!(limit(), 64 << 20);
    let shares = std::fs::read_to_string(
        std::path::Path::new("/sys/fs/cgroup/cpu/berth-test")
            .join(&id)
            .join("cpu.shares"),
    )
    .unwrap();
    assert_eq!(shares.trim(), "256");
    let status = w.status(&id).await.status.unwrap();
    let resources = status.resources.unwrap().linux.unwrap();
    assert_eq!(
        (resources.memory_limit_in_bytes, resources.cpu_shares),
        (64 << 20, 256)
    );
    let err = w
        .client
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: None,
            ..Default::default()
        })
        .await
        .expect_err("no resources");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = w
        .client
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: "missing".into(),
            linux: Some(LinuxContainerResources::default()),
            ..Default::default()
        })
        .await
        .expect_err("unknown container");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// The huge page sizes of this host, as a kubelet sends them: every size, limit 0.
fn host_hugepage_limits() -> Vec<berth::proto::HugepageLimit> {
    let mut sizes: Vec<u64> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    sizes.sort();
    sizes
        .into_iter()
        .map(|kb| berth::proto::HugepageLimit {
            page_size: if kb % (1 << 20) == 0 {
                format!("{}GB", kb >> 20)
            } else if kb % (1 << 10) == 0 {
                format!("{}MB", kb >> 10)
            } else {
                format!("{kb}KB")
            },
            limit: 0,
        })
        .collect()
}

/// The resources a kubelet 1.35 sends for a container with 200m CPU (`quota` 20_000) and
/// 64Mi of memory (CreateContainer, and the same with 300m in an in-place resize): a
/// limit for every huge page size, swap equal to the memory limit.
fn kubelet_resources(quota: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: quota,
        cpu_shares: 102,
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 64 << 20,
        oom_score_adj: 999,
        hugepage_limits: host_hugepage_limits(),
        ..Default::default()
    }
}

/// A container `name` with these resources.
fn with_resources(name: &str, resources: LinuxContainerResources) -> ContainerConfig {
    let mut config = container(name, "sleep 3600");
    config.linux = Some(berth::proto::LinuxContainerConfig {
        resources: Some(resources),
        ..Default::default()
    });
    config
}

/// The CPU quota of container `id` as the kernel holds it: cgroup v1's
/// cpu.cfs_quota_us, or the first field of v2's cpu.max.
fn cpu_quota(id: &str) -> String {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (dir, file) = if v2 {
        ("/sys/fs/cgroup/berth-test", "cpu.max")
    } else {
        ("/sys/fs/cgroup/cpu/berth-test", "cpu.cfs_quota_us")
    };
    let text = std::fs::read_to_string(std::path::Path::new(dir).join(id).join(file))
        .unwrap_or_else(|e| panic!("{dir}/{id}/{file}: {e}"));
    text.split_whitespace().next().unwrap_or("").to_string()
}

/// `e` refuses a request as invalid, naming `field`.
fn assert_refused(field: &str, e: tonic::Status) {
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(field), "{field}: {}", e.message());
}

/// What a container leaves on disk and in the mount table while it exists: the entries
/// of the daemon's containers directories under its root and its state, and the mounts
/// under the daemon's directory.
fn traces(w: &World) -> (usize, usize, usize) {
    let paths = w.daemon.paths();
    let count = |dir: std::path::PathBuf| std::fs::read_dir(dir).map_or(0, |d| d.count());
    let prefix = w.daemon.setup.dir().to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(&prefix)))
        .count();
    (
        count(paths.root.join("containers")),
        count(paths.state.join("containers")),
        mounts,
    )
}

/// Whatever this host's cgroups can take of what the kubelet sends, the container
/// starts and the in-place resize applies.
#[tokio::test]
async fn the_kubelets_resources_start_a_container_and_resize_it_in_place() {
    let mut w = world().await;
    let id = w
        .create(with_resources(
            "kubelet-resources",
            kubelet_resources(20_000),
        ))
        .await;
    w.start(&id).await;
    let status = w.status(&id).await.status.unwrap();
    assert_eq!(
        status.state,
        berth::proto::ContainerState::ContainerRunning as i32
    );
    assert_eq!(cpu_quota(&id), "20000");
    w.client
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(kubelet_resources(30_000)),
            ..Default::default()
        })
        .await
        .expect("the kubelet's in-place resize");
    assert_eq!(cpu_quota(&id), "30000");
}

/// An update no host could take is refused, naming the field, before the runtime sees
/// it: the resize it comes with does not happen.
#[tokio::test]
async fn an_update_with_a_unified_key_outside_the_cgroup_is_refused_and_changes_nothing() {
    let mut w = world().await;
    let id = w
        .create(with_resources("unified-refused", kubelet_resources(20_000)))
        .await;
    w.start(&id).await;
    let mut bad = kubelet_resources(30_000);
    bad.unified.insert("../../../etc/x".into(), "1".into());
    let err = w
        .client
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(bad),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused("linux.unified", err);
    assert_eq!(cpu_quota(&id), "20000", "a refused update changes nothing");
}

/// A container whose resources no host could take is refused, naming the field, before
/// the runtime sees it: nothing of it is left half made.
#[tokio::test]
async fn a_page_size_no_host_has_is_refused_at_create_and_nothing_is_half_made() {
    let mut w = world().await;
    let mut bad = kubelet_resources(20_000);
    bad.hugepage_limits.push(berth::proto::HugepageLimit {
        page_size: "3XB".into(),
        limit: 0,
    });
    let before = traces(&w);
    let err = w
        .client
        .create_container(berth::proto::CreateContainerRequest {
            pod_sandbox_id: w.sandbox.clone(),
            config: Some(common::world::for_the_runtime(with_resources(
                "bad-page-size",
                bad,
            ))),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_refused("config.linux.resources.hugepage_limits", err);
    assert_eq!(traces(&w), before, "nothing half made");
}

/// A created container is not in the runtime yet: an update before its start goes into
/// the spec it starts with.
#[tokio::test]
async fn resources_updated_before_the_start_apply_at_the_start() {
    let mut w = world().await;
    let id = w.create(container("resized-early", "sleep 3600")).await;
    w.client
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 48 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("update a created container");
    w.start(&id).await;
    let limit = std::fs::read_to_string(
        std::path::Path::new("/sys/fs/cgroup/memory/berth-test")
            .join(&id)
            .join("memory.limit_in_bytes"),
    )
    .expect("the started container's memory cgroup");
    assert_eq!(limit.trim(), (48u64 << 20).to_string());
}

#[tokio::test]
async fn pod_resources_and_metrics() {
    let mut w = world().await;
    let parent = common::CgroupTree(format!("berth-test-pod-{}", std::process::id()));
    let pod = run_pod(
        &mut w.client,
        pod_config("resized-pod", &format!("/{}", parent.0)),
    )
    .await;
    let update = |overhead, resources| UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.clone(),
        overhead,
        resources,
    };
    w.client
        .update_pod_sandbox_resources(update(
            Some(LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
            Some(LinuxContainerResources {
                memory_limit_in_bytes: 256 << 20,
                cpu_shares: 512,
                ..Default::default()
            }),
        ))
        .await
        .expect("update the pod");
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(
            std::path::Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(parent.0.trim_start_matches('/'))
                .join(file),
        )
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (272u64 << 20).to_string()
    );
    assert_eq!(read("cpu", "cpu.shares"), "512");
    let err = w
        .client
        .update_pod_sandbox_resources(update(None, None))
        .await
        .expect_err("nothing to update");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Metrics: described, and reported for the world's pod and its container.
    let descriptors = w
        .client
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    assert!(
        descriptors
            .iter()
            .any(|d| d.name == "container_memory_working_set_bytes")
    );
    let id = w.create(container("measured", "sleep 3600")).await;
    w.start(&id).await;
    let metrics = w
        .client
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let ours = metrics
        .iter()
        .find(|m| m.pod_sandbox_id == w.sandbox)
        .expect("the world's pod");
    assert!(
        ours.metrics
            .iter()
            .any(|m| m.name == "container_network_receive_bytes_total"
                && m.label_values == vec!["eth0".to_string()])
    );
    let container = ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .expect("the container's metrics");
    let working_set = container
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .expect("a working set");
    assert_eq!(working_set.label_values, vec!["measured".to_string()]);
    assert!(working_set.value.unwrap().value > 0);

    remove_pod(&mut w.client, &pod).await;
    drop(parent);
}
