//! ContainerStatus, ListContainers and StreamContainers.

use std::collections::HashMap;

use super::CriService;
use crate::error::Result;
use crate::proto::{Container, ContainerFilter, ContainerStatusResponse};

impl CriService {
    /// A container's status, its state as a listing has it
    /// ([`crate::container::Containers::current`]).
    pub fn container_status(&self, id: &str, verbose: bool) -> Result<ContainerStatusResponse> {
        let record = self.containers.current(self.container_as_stored(id)?)?;
        let status = record.cri_status()?;
        let mut info = HashMap::new();
        if verbose {
            let spec = crate::oci::bundle_spec(&self.containers.state_dir(&record.id));
            let details = serde_json::json!({
                "pid": record.pid,
                "sandboxID": record.sandbox_id,
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    pub fn list_containers(&self, filter: Option<ContainerFilter>) -> Result<Vec<Container>> {
        let filter = filter.unwrap_or_default();
        Ok(self.containers.list_map(|r| {
            let wanted = r.selected(&filter.id, &filter.pod_sandbox_id, &filter.label_selector)
                && filter.state.is_none_or(|s| s.state == r.cri_state() as i32);
            wanted.then(|| r.cri_entry())
        })?)
    }
}
