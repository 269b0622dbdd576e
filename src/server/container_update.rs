//! UpdateContainerResources (in-place resize): new CPU, memory, cpuset and hugepage
//! limits applied through the OCI runtime to a created or running container, and kept in
//! its spec
//! and record so ContainerStatus reports them and a created container starts with them.

use std::sync::Arc;

use base64::Engine as _;
use prost::Message as _;

use super::CriService;
use super::sandbox_status::decode_container_config;
use crate::error::{Error, Result};
use crate::proto::{LinuxContainerConfig, LinuxContainerResources};
use crate::spec::container::resources_of;
use crate::store::ContainerState;

impl CriService {
    pub async fn update_container_resources(
        self: &Arc<Self>,
        id: &str,
        linux: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let linux = linux.ok_or_else(|| Error::invalid("linux", "no resources given"))?;
        let record = self.container(id)?;
        let lock = self.containers.lock(&record.id);
        let _held = lock.lock().await;
        let mut record = self.container(&record.id)?;
        if record.state == ContainerState::Exited {
            return Err(Error::WrongState {
                kind: "container",
                id: record.id,
                reason: "it has exited".to_string(),
            });
        }
        let mut resources = resources_of(&linux)?;
        // The spec keeps its device rules; only the limits change.
        let spec_path = self.containers.state_dir(&record.id).join("config.json");
        let bytes = std::fs::read(&spec_path).map_err(Error::io("reading the spec", &spec_path))?;
        let mut spec: oci_spec::runtime::Spec = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Task(format!("the container's spec is unreadable: {e}")))?;
        if let Some(old) = spec.linux().as_ref().and_then(|l| l.resources().clone()) {
            resources.set_devices(old.devices().clone());
        }
        // A created container has its cgroup already: it is updated the same way.
        let json = serde_json::to_vec(&resources)
            .map_err(|e| Error::Task(format!("encoding the resources: {e}")))?;
        let runtime = self.runtime_of(&record)?;
        runtime.update(&record.id, &json).await?;
        if let Some(mut linux_spec) = spec.linux().clone() {
            linux_spec.set_resources(Some(resources));
            spec.set_linux(Some(linux_spec));
        }
        let json = serde_json::to_vec(&spec)
            .map_err(|e| Error::Task(format!("encoding the spec: {e}")))?;
        let tmp = spec_path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(Error::io("writing the spec", &tmp))?;
        std::fs::rename(&tmp, &spec_path).map_err(Error::io("writing the spec", &spec_path))?;

        let mut config = decode_container_config(&record);
        config
            .linux
            .get_or_insert_with(LinuxContainerConfig::default)
            .resources = Some(linux);
        record.config = base64::engine::general_purpose::STANDARD.encode(config.encode_to_vec());
        self.containers.save(&record)?;
        tracing::info!(container = %record.id, "resources updated");
        Ok(())
    }
}
