//! PodSandboxStatus, ListPodSandbox and StreamPodSandboxes, from the in-memory records.

use std::collections::HashMap;

use super::CriService;
use crate::error::Result;
use crate::proto::{PodSandbox, PodSandboxFilter, PodSandboxStatusResponse};
use crate::store::SandboxRecord;

impl CriService {
    /// A sandbox's status; `verbose` adds the pause pid, the netns path and the OCI spec.
    /// Its state and its containers' are as a listing has them
    /// ([`crate::sandbox::Sandboxes::current`]).
    pub fn pod_sandbox_status(&self, id: &str, verbose: bool) -> Result<PodSandboxStatusResponse> {
        let record = self.sandboxes.current(self.sandbox_as_stored(id)?)?;
        let status = record.cri_status()?;
        let mut info = HashMap::new();
        if verbose {
            let spec = crate::oci::bundle_spec(&self.sandboxes.dir(&record.id));
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
            .map(crate::store::ContainerRecord::cri_status_as_known)
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
                && filter.state.is_none_or(|s| s.state == r.cri_state() as i32)
                && filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| r.labels.get(k) == Some(v))
        };
        Ok(self
            .sandboxes
            .list_map(|r| wanted(r).then(|| r.cri_entry()))?)
    }
}
