//! Prometheus metrics, served at `GET /metrics` on `[metrics] address` when one is set
//! (off by default), in the OpenMetrics text format of the `prometheus-client` crate.
//!
//! What is counted as it happens (always: an atomic add each, whether anyone scrapes):
//! every RPC by method and gRPC code, with its latency; image pulls (bytes fetched,
//! duration, failures); CNI ADD and DEL (duration, failures); OCI runtime commands
//! (duration, failures). What is read at each scrape: pods and containers by state, the
//! running monitors, the event subscribers and the daemon's resident memory, from a
//! [`Snapshot`] the daemon makes (this module knows nothing of the server).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// An RPC's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// A CNI operation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum CniOperation {
    ADD,
    DEL,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CniLabels {
    operation: CniOperation,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// Every metric, registered once.
struct Metrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    rpc_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pulls: Counter,
    pull_failures: Counter,
    pull_bytes: Counter,
    pull_seconds: Histogram,
    cni_seconds: Family<CniLabels, Histogram, fn() -> Histogram>,
    cni_failures: Family<CniLabels, Counter>,
    runtime_seconds: Family<CommandLabels, Histogram, fn() -> Histogram>,
    runtime_failures: Family<CommandLabels, Counter>,
    pods: Family<StateLabels, Gauge>,
    containers: Family<StateLabels, Gauge>,
    monitors: Gauge,
    subscribers: Gauge,
    resident: Gauge,
}

/// Latency buckets from 0.5 ms to about 66 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Registers `metric` under `name` and returns it (a handle on the same values).
fn add<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// A family of histograms with [`latency`] buckets.
fn timings<S>() -> Family<S, Histogram, fn() -> Histogram>
where
    S: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(latency as fn() -> Histogram)
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut r = Registry::with_prefix("berth");
        let r = &mut r;
        Metrics {
            rpcs: add(r, "grpc_requests", "CRI RPCs served, by method and gRPC code", Family::default()),
            rpc_seconds: add(
                r,
                "grpc_request_duration_seconds",
                "Time to answer a CRI RPC (to its first response, for a stream)",
                timings(),
            ),
            pulls: add(r, "image_pulls", "Image pulls that ended with the image stored", Counter::default()),
            pull_failures: add(r, "image_pull_failures", "Image pulls that failed", Counter::default()),
            pull_bytes: add(
                r,
                "image_pull_bytes",
                "Bytes of layer blobs downloaded from registries",
                Counter::default(),
            ),
            pull_seconds: add(r, "image_pull_duration_seconds", "Time an image pull took, failed or not", latency()),
            cni_seconds: add(
                r,
                "cni_operation_duration_seconds",
                "Time a pod's CNI ADD or DEL took (every plugin of the network)",
                timings(),
            ),
            cni_failures: add(r, "cni_operation_failures", "CNI ADDs and DELs that failed", Family::default()),
            runtime_seconds: add(
                r,
                "runtime_command_duration_seconds",
                "Time an OCI runtime command took (monitor_start: a container's start through its monitor)",
                timings(),
            ),
            runtime_failures: add(
                r,
                "runtime_command_failures",
                "OCI runtime commands that failed or timed out",
                Family::default(),
            ),
            pods: add(r, "pod_sandboxes", "Pod sandboxes by state", Family::default()),
            containers: add(r, "containers", "Containers by state", Family::default()),
            monitors: add(r, "monitors", "Container monitors running", Gauge::default()),
            subscribers: add(r, "event_subscribers", "GetContainerEvents streams open", Gauge::default()),
            resident: add(
                r,
                "process_resident_memory_bytes",
                "The daemon's resident memory (VmRSS)",
                Gauge::default(),
            ),
            registry: std::mem::take(r),
        }
    })
}

/// One RPC answered: `method` as the path names it, unless the server has no such method
/// (Unimplemented): any name a client sends would otherwise be a label of its own.
pub fn rpc(method: &str, code: tonic::Code, took: Duration) {
    let method = if code == tonic::Code::Unimplemented {
        "unknown".to_string()
    } else {
        method.to_string()
    };
    let m = metrics();
    m.rpcs
        .get_or_create(&RpcLabels {
            method: method.clone(),
            code: format!("{code:?}"),
        })
        .inc();
    m.rpc_seconds
        .get_or_create(&MethodLabels { method })
        .observe(took.as_secs_f64());
}

/// One image pull ended, stored or failed.
pub fn pull(stored: bool, took: Duration) {
    let m = metrics();
    if stored {
        m.pulls.inc();
    } else {
        m.pull_failures.inc();
    }
    m.pull_seconds.observe(took.as_secs_f64());
}

/// A layer's blob was downloaded (once, however many pulls waited for it).
pub fn pulled_bytes(bytes: u64) {
    metrics().pull_bytes.inc_by(bytes);
}

/// One CNI ADD or DEL ended.
pub fn cni(operation: CniOperation, ok: bool, took: Duration) {
    let m = metrics();
    let labels = CniLabels { operation };
    m.cni_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if !ok {
        m.cni_failures.get_or_create(&labels).inc();
    }
}

/// One OCI runtime command ended.
pub fn runtime_command(command: &'static str, ok: bool, took: Duration) {
    let m = metrics();
    let labels = CommandLabels {
        command: command.to_string(),
    };
    m.runtime_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if !ok {
        m.runtime_failures.get_or_create(&labels).inc();
    }
}

/// What a scrape reads of the daemon's state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (state, count), every state named even at 0.
    pub pods: Vec<(&'static str, i64)>,
    pub containers: Vec<(&'static str, i64)>,
    pub monitors: i64,
    pub subscribers: i64,
}

/// The daemon's resident memory, from `/proc/self/status`.
fn resident_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The metrics in the OpenMetrics text format, the gauges set from `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let m = metrics();
    for (state, count) in &snapshot.pods {
        m.pods
            .get_or_create(&StateLabels {
                state: state.to_string(),
            })
            .set(*count);
    }
    for (state, count) in &snapshot.containers {
        m.containers
            .get_or_create(&StateLabels {
                state: state.to_string(),
            })
            .set(*count);
    }
    m.monitors.set(snapshot.monitors);
    m.subscribers.set(snapshot.subscribers);
    m.resident.set(resident_bytes());
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        tracing::warn!(%err, "cannot encode the metrics");
    }
    text
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `address` until the process ends; `snapshot` is called at
/// each scrape. Returns the address it listens on (port 0 picks one).
pub async fn serve(
    address: SocketAddr,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    tracing::warn!(%err, "metrics server cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let snapshot = snapshot.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = answer(&request, &*snapshot);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn answer<B>(
    request: &http::Request<B>,
    snapshot: &dyn Fn() -> Snapshot,
) -> http::Response<String> {
    let reply = |status: http::StatusCode, body: String, kind: &str| {
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        if let Ok(kind) = http::HeaderValue::from_str(kind) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, kind);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            http::StatusCode::NOT_FOUND,
            "only /metrics is here\n".into(),
            "text/plain",
        );
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics\n".into(),
            "text/plain",
        );
    }
    reply(http::StatusCode::OK, render(&snapshot()), CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_counted_is_in_the_text() {
        rpc("Version", tonic::Code::Ok, Duration::from_millis(2));
        rpc(
            "NoSuchMethod",
            tonic::Code::Unimplemented,
            Duration::from_millis(1),
        );
        cni(CniOperation::DEL, false, Duration::from_millis(30));
        runtime_command("delete", true, Duration::from_millis(20));
        pull(true, Duration::from_secs(1));
        pulled_bytes(1234);
        let text = render(&Snapshot {
            pods: vec![("ready", 2), ("notready", 0)],
            containers: vec![("running", 3)],
            monitors: 3,
            subscribers: 1,
        });
        for line in [
            "berth_grpc_requests_total{method=\"Version\",code=\"Ok\"} ",
            "berth_grpc_requests_total{method=\"unknown\",code=\"Unimplemented\"} ",
            "berth_cni_operation_failures_total{operation=\"DEL\"} ",
            "berth_runtime_command_duration_seconds_count{command=\"delete\"} ",
            "berth_pod_sandboxes{state=\"ready\"} 2",
            "berth_pod_sandboxes{state=\"notready\"} 0",
            "berth_containers{state=\"running\"} 3",
            "berth_monitors 3",
            "berth_event_subscribers 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert!(
            !text.contains("NoSuchMethod"),
            "no label from a client's whim"
        );
        assert!(text.trim_end().ends_with("# EOF"));
        let resident = text
            .lines()
            .find_map(|l| l.strip_prefix("berth_process_resident_memory_bytes "))
            .and_then(|v| v.parse::<i64>().ok());
        assert!(resident.is_some_and(|b| b > 1_000_000), "{resident:?}");
    }
}
