//! The Prometheus endpoint (`[metrics] address`), scraped by a real HTTP client (reqwest)
//! while a pod lives: what each part of the daemon counted, and the state gauges.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth::proto::runtime_service_client::RuntimeServiceClient;
use berth::proto::{
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, StartContainerRequest,
};
use common::leaks::assert_nothing_left;
use common::world::{busybox_mirror, container, pod_config, remove_pod, run_pod};
use common::{CgroupTree, Daemon};
use tonic::transport::Channel;

/// Every sample of a scrape: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("{key} in {samples:#?}"))
}

async fn scrape(http: &reqwest::Client, address: &str) -> BTreeMap<String, f64> {
    let response = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    samples(&text)
}

/// The daemon's config that turns the endpoint on, on a port of the kernel's choosing.
const METRICS_ON: &str = "[metrics]\naddress = \"127.0.0.1:0\"";

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_scrape_is_openmetrics_with_the_process_memory_and_other_paths_are_not_found() {
    let daemon = common::Setup::new().toml(METRICS_ON).start().await;
    let address = daemon.metrics_address().await;
    let http = http_client();
    let scraped = scrape(&http, &address).await;
    assert!(value(&scraped, "berth_process_resident_memory_bytes") > 1e6);
    let other = http
        .get(format!("http://{address}/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// One of each thing the daemon counts: pulls busybox, runs a pod under `tree` (its
/// logs in `logs`) with a container, execs `true` in it and asks the status of a
/// container that does not exist. Returns the client and the pod's id.
async fn run_a_pod_and_use_it(
    daemon: &Daemon,
    tree: &CgroupTree,
    logs: &Path,
) -> (RuntimeServiceClient<Channel>, String) {
    common::world::pull_busybox(daemon).await;
    let mut config = pod_config("scraped", &format!("/{}", tree.0));
    config.log_directory = logs.display().to_string();
    let mut client = daemon.runtime().await;
    let pod = run_pod(&mut client, config.clone()).await;
    let id = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container("scraped", "exec sleep 3600")),
            sandbox_config: Some(config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    client
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            timeout: 10,
        })
        .await
        .unwrap();
    let err = client
        .container_status(ContainerStatusRequest {
            container_id: "0".repeat(64),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    (client, pod)
}

/// What a scrape while the pod of `run_a_pod_and_use_it` runs counts: each RPC by its
/// method and code, the pull and its bytes, the CNI ADD, the runtime commands, and the
/// pod, its container and its monitor.
fn assert_counted_while_the_pod_runs(during: &BTreeMap<String, f64>) {
    for (key, expected) in [
        (
            "berth_grpc_requests_total{method=\"RunPodSandbox\",code=\"Ok\"}",
            1.0,
        ),
        (
            "berth_grpc_requests_total{method=\"PullImage\",code=\"Ok\"}",
            1.0,
        ),
        (
            "berth_grpc_requests_total{method=\"ContainerStatus\",code=\"NotFound\"}",
            1.0,
        ),
        (
            "berth_grpc_request_duration_seconds_count{method=\"StartContainer\"}",
            1.0,
        ),
        ("berth_image_pulls_total", 1.0),
        ("berth_image_pull_failures_total", 0.0),
        ("berth_image_pull_duration_seconds_count", 1.0),
        (
            "berth_cni_operation_duration_seconds_count{operation=\"ADD\"}",
            1.0,
        ),
        (
            "berth_runtime_command_duration_seconds_count{command=\"monitor_start\"}",
            1.0,
        ),
        ("berth_pod_sandboxes{state=\"ready\"}", 1.0),
        ("berth_containers{state=\"running\"}", 1.0),
        ("berth_monitors", 1.0),
    ] {
        assert_eq!(value(during, key), expected, "{key}");
    }
    assert!(
        value(during, "berth_image_pull_bytes_total") > 100_000.0,
        "the busybox layer"
    );
    assert!(
        value(
            during,
            "berth_runtime_command_duration_seconds_count{command=\"run\"}"
        ) >= 1.0,
        "the pause's runc run"
    );
    assert!(
        value(
            during,
            "berth_grpc_request_duration_seconds_sum{method=\"RunPodSandbox\"}"
        ) > 0.0
    );
}

/// What a scrape after the pod's removal shows: no pod, container or monitor, and the
/// CNI DEL.
fn assert_counted_after_the_removal(after: &BTreeMap<String, f64>) {
    assert_eq!(value(after, "berth_pod_sandboxes{state=\"ready\"}"), 0.0);
    assert_eq!(value(after, "berth_containers{state=\"running\"}"), 0.0);
    assert_eq!(value(after, "berth_monitors"), 0.0);
    assert_eq!(
        value(
            after,
            "berth_cni_operation_duration_seconds_count{operation=\"DEL\"}"
        ),
        1.0
    );
}

/// One sequence, as the counters are the daemon's whole life: each scrape counts what
/// happened since it started.
#[tokio::test]
async fn a_scrape_shows_what_the_daemon_did() {
    let (_registry, daemon) = busybox_mirror("latest", METRICS_ON).await;
    let address = daemon.metrics_address().await;
    let http = http_client();
    let before = scrape(&http, &address).await;
    assert_eq!(value(&before, "berth_pod_sandboxes{state=\"ready\"}"), 0.0);

    let tree = CgroupTree(format!("berth-metrics-{}", std::process::id()));
    let logs = tempfile::tempdir().unwrap();
    let (mut client, pod) = run_a_pod_and_use_it(&daemon, &tree, logs.path()).await;
    assert_counted_while_the_pod_runs(&scrape(&http, &address).await);

    remove_pod(&mut client, &pod).await;
    assert_counted_after_the_removal(&scrape(&http, &address).await);
    assert_nothing_left(&daemon, &tree.0);
}

#[tokio::test]
async fn no_address_no_endpoint() {
    let daemon = common::Setup::new().start().await;
    assert!(
        !daemon.log().contains("metrics served"),
        "off by default: {}",
        daemon.log()
    );
}
