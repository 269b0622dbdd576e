//! PodSandboxStatus, ListPodSandbox and StreamPodSandboxes, from the in-memory records.

use std::collections::HashMap;

use base64::Engine as _;
use prost::Message as _;

use super::CriService;
use crate::error::{Error, Result};
use crate::proto::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandbox, PodSandboxConfig, PodSandboxFilter,
    PodSandboxMetadata, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
    PodSandboxStatusResponse,
};
use crate::store::{SandboxRecord, SandboxState};

impl CriService {
    /// The sandbox a request's `pod_sandbox_id` names (an id or unique prefix), its state
    /// brought up to date.
    pub(crate) fn sandbox(&self, id: &str) -> Result<SandboxRecord> {
        Ok(self.sandboxes.refresh(self.sandbox_as_stored(id)?)?)
    }

    /// The sandbox `pod_sandbox_id` names, its record as it is.
    fn sandbox_as_stored(&self, id: &str) -> Result<SandboxRecord> {
        if id.is_empty() {
            return Err(Error::invalid("pod_sandbox_id", "must not be empty"));
        }
        self.sandboxes.find(id).ok_or_else(|| Error::NotFound {
            kind: "pod sandbox",
            id: id.to_string(),
        })
    }

    /// The same, and an error unless it is ready.
    pub(crate) fn ready_sandbox(&self, id: &str) -> Result<SandboxRecord> {
        let sandbox = self.sandbox(id)?;
        if !sandbox.state.can_create_containers() {
            return Err(Error::WrongState {
                kind: "pod sandbox",
                id: sandbox.id,
                reason: "it is not ready".to_string(),
            });
        }
        Ok(sandbox)
    }

    /// A sandbox's status; `verbose` adds the pause pid, the netns path and the OCI spec.
    /// Its state and its containers' are as a listing has them
    /// ([`crate::sandbox::Sandboxes::current`]).
    pub fn pod_sandbox_status(&self, id: &str, verbose: bool) -> Result<PodSandboxStatusResponse> {
        let record = self.sandboxes.current(self.sandbox_as_stored(id)?)?;
        let status = sandbox_status_of(&record);
        let mut info = HashMap::new();
        if verbose {
            let spec = bundle_spec(&self.sandboxes.dir(&record.id));
            let details = serde_json::json!({
                "pid": record.pid,
                "netnsPath": record.netns,
                "cgroupsPath": record.cgroups_path,
                "runtimeSpec": spec,
                "image": self.config().sandbox_image.clone().unwrap_or_else(|| "berth-pause".to_string()),
            });
            info.insert("info".to_string(), details.to_string());
        }
        // With a timestamp, a kubelet running the evented PLEG takes the pod's containers
        // from here rather than listing them: all of them, brought up to date.
        let timestamp = crate::clock::now_ns();
        let containers_statuses = self
            .containers
            .of_sandbox_current(&record.id)?
            .iter()
            .map(super::container_status::container_status_of)
            .collect();
        Ok(PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses,
            timestamp,
        })
    }

    /// The sandboxes matching the filter: id prefix, state, and every label of the selector.
    pub fn list_pod_sandboxes(&self, filter: Option<PodSandboxFilter>) -> Result<Vec<PodSandbox>> {
        let filter = filter.unwrap_or_default();
        let wanted = |r: &SandboxRecord| {
            (filter.id.is_empty() || r.id.starts_with(&filter.id))
                && filter
                    .state
                    .is_none_or(|s| s.state == state(r.state) as i32)
                && filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| r.labels.get(k) == Some(v))
        };
        Ok(self.sandboxes.list_map(|r| {
            wanted(r).then(|| PodSandbox {
                id: r.id.clone(),
                metadata: Some(metadata(r)),
                state: state(r.state) as i32,
                created_at: r.created_at_ns,
                labels: r.labels.clone().into_iter().collect(),
                annotations: r.annotations.clone().into_iter().collect(),
                runtime_handler: r.runtime_handler.clone(),
            })
        })?)
    }
}

/// A sandbox's status, as its record has it.
pub(crate) fn sandbox_status_of(record: &SandboxRecord) -> PodSandboxStatus {
    let config = decode_config(record);
    let namespace_options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    // As long as the pod holds its network (a stop cut short keeps it until the
    // kubelet stops the pod again), its addresses are its own, as in containerd.
    let attached = record.state == SandboxState::Ready || record.netns.is_some();
    let network = attached.then(|| PodSandboxNetworkStatus {
        ip: record.ips.first().cloned().unwrap_or_default(),
        additional_ips: record
            .ips
            .iter()
            .skip(1)
            .map(|ip| PodIp { ip: ip.clone() })
            .collect(),
    });
    PodSandboxStatus {
        id: record.id.clone(),
        metadata: Some(metadata(record)),
        state: state(record.state) as i32,
        created_at: record.created_at_ns,
        network,
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(namespace_options.unwrap_or_default()),
            }),
        }),
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

fn state(state: SandboxState) -> PodSandboxState {
    match state {
        SandboxState::Ready => PodSandboxState::SandboxReady,
        SandboxState::NotReady => PodSandboxState::SandboxNotready,
    }
}

fn metadata(record: &SandboxRecord) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: record.name.clone(),
        uid: record.uid.clone(),
        namespace: record.namespace.clone(),
        attempt: record.attempt,
    }
}

/// The sandbox's config as the kubelet sent it.
/// The OCI spec in a bundle directory, for verbose statuses (null when unreadable).
pub(crate) fn bundle_spec(bundle: &std::path::Path) -> serde_json::Value {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

pub fn decode_config(record: &SandboxRecord) -> PodSandboxConfig {
    base64::engine::general_purpose::STANDARD
        .decode(&record.config)
        .ok()
        .and_then(|bytes| PodSandboxConfig::decode(bytes.as_slice()).ok())
        .unwrap_or_default()
}

/// A container's config as the kubelet sent it.
pub fn decode_container_config(
    record: &crate::store::ContainerRecord,
) -> crate::proto::ContainerConfig {
    base64::engine::general_purpose::STANDARD
        .decode(&record.config)
        .ok()
        .and_then(|bytes| crate::proto::ContainerConfig::decode(bytes.as_slice()).ok())
        .unwrap_or_default()
}
