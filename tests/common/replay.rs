//! Replaying CRI calls a real kubelet made (`tests/data/*.jsonl.gz`, copied from the
//! shared `kubelet-requests/`): each recorded call is sent by its gRPC method path with
//! its recorded request (protobuf JSON with proto field names, turned into protobuf by
//! the CRI's own descriptors, compiled from `proto/` at test time), and answers come back
//! as the same JSON.
//!
//! Order: a call waits for the calls that, in the recording, had finished before it
//! started and touch one of its objects (a pod, a container, the image), and for
//! nothing else. So every call on one pod or container comes in its recorded order, calls
//! that overlapped in the recording run at once here too, and independent pods go on
//! side by side: a 30 s graceful stop of one pod does not hold up the next, and a 100 s
//! session replays in well under a minute. Calls about no object (Version, Status, the
//! lists, the filesystem and stats queries) wait for every call that changed something
//! before them: they see at least what the kubelet saw, and may see more, as pods that
//! came later in the recording may already run here.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use bytes::{Buf, BufMut};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, SerializeOptions};
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its line in the recording, from 0.
    pub line: usize,
    /// Seconds from the first call to this one's start, and its duration.
    pub t: f64,
    pub ms: f64,
    /// The gRPC path, `/runtime.v1.RuntimeService/RunPodSandbox`.
    pub method: String,
    pub request: Value,
    pub code: tonic::Code,
    /// The answer of a unary call that succeeded.
    pub response: Option<Value>,
}

impl Recorded {
    /// The RPC's name: `RunPodSandbox`.
    pub fn name(&self) -> &str {
        self.method.rsplit('/').next().unwrap_or("")
    }

    fn end(&self) -> f64 {
        self.t + self.ms / 1000.0
    }

    /// A call that changes the node (the others only look).
    pub fn changes_something(&self) -> bool {
        matches!(
            self.name(),
            "RunPodSandbox"
                | "StopPodSandbox"
                | "RemovePodSandbox"
                | "CreateContainer"
                | "StartContainer"
                | "StopContainer"
                | "RemoveContainer"
                | "UpdateContainerResources"
                | "UpdatePodSandboxResources"
                | "PullImage"
                | "RemoveImage"
                | "Exec"
                | "ExecSync"
                | "Attach"
                | "PortForward"
        )
    }
}

/// The recording at `path` (gzipped JSON lines), in the order it was written.
pub fn load(path: &Path) -> Vec<Recorded> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("a gzipped recording");
    text.lines()
        .enumerate()
        .map(|(line, json)| {
            let row: Value = serde_json::from_str(json).expect("a JSON line");
            let code = row["code"].as_str().expect("a code");
            Recorded {
                line,
                t: row["t"].as_f64().expect("t"),
                ms: row["ms"].as_f64().expect("ms"),
                method: row["method"].as_str().expect("a method").to_string(),
                request: row["request"].clone(),
                code: code_named(code).unwrap_or_else(|| panic!("unknown code {code}")),
                response: row.get("response").cloned(),
            }
        })
        .collect()
}

/// A gRPC code by its name in the recording (`NOT_FOUND`).
pub fn code_named(name: &str) -> Option<tonic::Code> {
    use tonic::Code::*;
    Some(match name {
        "OK" => Ok,
        "CANCELLED" => Cancelled,
        "UNKNOWN" => Unknown,
        "INVALID_ARGUMENT" => InvalidArgument,
        "DEADLINE_EXCEEDED" => DeadlineExceeded,
        "NOT_FOUND" => NotFound,
        "ALREADY_EXISTS" => AlreadyExists,
        "PERMISSION_DENIED" => PermissionDenied,
        "RESOURCE_EXHAUSTED" => ResourceExhausted,
        "FAILED_PRECONDITION" => FailedPrecondition,
        "ABORTED" => Aborted,
        "OUT_OF_RANGE" => OutOfRange,
        "UNIMPLEMENTED" => Unimplemented,
        "INTERNAL" => Internal,
        "UNAVAILABLE" => Unavailable,
        "DATA_LOSS" => DataLoss,
        "UNAUTHENTICATED" => Unauthenticated,
        _ => return None,
    })
}

/// The pod and container ids of the recording (what its RunPodSandbox and
/// CreateContainer calls answered), and the pod of each container.
#[derive(Debug, Default)]
pub struct RecordedObjects {
    pub pods: BTreeSet<String>,
    pub pod_of: HashMap<String, String>,
}

impl RecordedObjects {
    pub fn of(calls: &[Recorded]) -> RecordedObjects {
        let mut objects = RecordedObjects::default();
        for call in calls {
            let answered = |field: &str| {
                call.response
                    .as_ref()
                    .and_then(|r| r[field].as_str())
                    .map(str::to_string)
            };
            match call.name() {
                "RunPodSandbox" => objects.pods.extend(answered("pod_sandbox_id")),
                "CreateContainer" => {
                    if let (Some(id), Some(pod)) = (
                        answered("container_id"),
                        call.request["pod_sandbox_id"].as_str(),
                    ) {
                        objects.pod_of.insert(id, pod.to_string());
                    }
                }
                _ => {}
            }
        }
        objects
    }

    /// The objects `call` touches: the ids it names or was answered, each container's
    /// pod, and "image" for the calls that pull or use the image.
    fn touched_by(&self, call: &Recorded) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut note = |s: &str| {
            if self.pods.contains(s) || self.pod_of.contains_key(s) {
                found.insert(s.to_string());
            }
        };
        visit_strings(&call.request, &mut note);
        if matches!(call.name(), "RunPodSandbox" | "CreateContainer")
            && let Some(response) = &call.response
        {
            visit_strings(response, &mut note);
        }
        let pods: Vec<String> = found
            .iter()
            .filter_map(|id| self.pod_of.get(id).cloned())
            .collect();
        found.extend(pods);
        if matches!(
            call.name(),
            "PullImage" | "ImageStatus" | "ListImages" | "RemoveImage" | "CreateContainer"
        ) {
            found.insert("image".to_string());
        }
        found
    }
}

fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

/// For each call, the calls it waits for (see the module docs).
pub fn dependencies(calls: &[Recorded]) -> Vec<Vec<usize>> {
    let objects = RecordedObjects::of(calls);
    let touched: Vec<BTreeSet<String>> = calls.iter().map(|c| objects.touched_by(c)).collect();
    calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            (0..calls.len())
                .filter(|&j| j != i && calls[j].end() <= call.t)
                .filter(|&j| {
                    if touched[i].is_empty() {
                        calls[j].changes_something()
                    } else {
                        !touched[i].is_disjoint(&touched[j])
                    }
                })
                .collect()
        })
        .collect()
}

/// The recording's ids (and anything else that differs here) → this replay's.
#[derive(Debug, Default)]
pub struct Rewrites {
    map: Mutex<HashMap<String, String>>,
}

impl Rewrites {
    pub fn insert(&self, recorded: &str, ours: &str) {
        self.map
            .lock()
            .unwrap()
            .insert(recorded.to_string(), ours.to_string());
    }

    /// Learns the ids an answer gave: `fields` of `recorded` against the same of `ours`.
    pub fn learn(&self, recorded: &Value, ours: &Value, fields: &[&str]) {
        for field in fields {
            if let (Some(r), Some(o)) = (recorded[*field].as_str(), ours[*field].as_str()) {
                self.insert(r, o);
            }
        }
    }

    /// `value` with every string that is a recorded id replaced by ours, and `extra`
    /// applied to every string (paths, cgroups).
    pub fn apply(&self, value: &Value, extra: &dyn Fn(&str) -> String) -> Value {
        let map = self.map.lock().unwrap();
        rewrite(value, &|s| map.get(s).cloned().unwrap_or_else(|| extra(s)))
    }

    /// Our id for a recorded one.
    pub fn ours(&self, recorded: &str) -> Option<String> {
        self.map.lock().unwrap().get(recorded).cloned()
    }
}

fn rewrite(value: &Value, f: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::String(s) => Value::String(f(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| rewrite(v, f)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (f(k), rewrite(v, f))).collect())
        }
        other => other.clone(),
    }
}

/// The CRI by method path, over protobuf bytes made from and read back into the
/// recording's JSON.
#[derive(Clone)]
pub struct DynamicCri {
    pool: DescriptorPool,
    channel: Channel,
}

impl DynamicCri {
    pub fn new(channel: Channel) -> DynamicCri {
        let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let pool = protox::Compiler::new([proto])
            .expect("the proto directory")
            .include_imports(true)
            .open_file("runtime/v1/api.proto")
            .expect("compile api.proto")
            .descriptor_pool();
        DynamicCri { pool, channel }
    }

    fn method(&self, path: &str) -> MethodDescriptor {
        let (service, name) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or_else(|| panic!("{path} is not a gRPC path"));
        self.pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .unwrap_or_else(|| panic!("no method {path} in api.proto"))
    }

    /// Sends `request` (protobuf JSON) to the unary method `path`; the answer as JSON
    /// with proto field names and default fields left out, as the recording has it.
    pub async fn call(&self, path: &str, request: &Value) -> Result<Value, tonic::Status> {
        let method = self.method(path);
        let message = DynamicMessage::deserialize(method.input(), request.clone())
            .unwrap_or_else(|e| panic!("{path}: the recorded request does not decode: {e}"));
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path_and_query = http::uri::PathAndQuery::from_str(path).expect("a gRPC path");
        let answer = grpc
            .unary(
                tonic::Request::new(message.encode_to_vec()),
                path_and_query,
                RawCodec,
            )
            .await?
            .into_inner();
        let message = DynamicMessage::decode(method.output(), answer.as_slice())
            .unwrap_or_else(|e| panic!("{path}: the answer does not decode: {e}"));
        let options = SerializeOptions::new().use_proto_field_name(true);
        Ok(message
            .serialize_with_options(serde_json::value::Serializer, &options)
            .expect("an answer as JSON"))
    }
}

/// Protobuf bytes in and out, unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}
