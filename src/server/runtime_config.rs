//! RuntimeConfig and UpdateRuntimeConfig: the node-level settings the kubelet reads (the
//! cgroup driver) and gives (the node's pod CIDR, kept in the store).

use super::{CriService, META_POD_CIDR};
use crate::error::{Error, Result};
use crate::proto::{CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigResponse};

impl CriService {
    pub fn runtime_config(&self) -> RuntimeConfigResponse {
        RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        }
    }

    /// The pod CIDR(s) last recorded by `UpdateRuntimeConfig`.
    pub fn pod_cidr(&self) -> Option<String> {
        self.pod_cidr
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records the node's pod CIDR (one, or two comma separated for dual stack). An empty
    /// value changes nothing: api.proto says runtimes should omit an empty CIDR.
    pub fn update_pod_cidr(&self, pod_cidr: &str) -> Result<()> {
        if pod_cidr.is_empty() {
            return Ok(());
        }
        for cidr in pod_cidr.split(',') {
            crate::network::validate_cidr(cidr.trim()).map_err(|reason| {
                Error::invalid("runtime_config.network_config.pod_cidr", reason)
            })?;
        }
        self.store.set_meta(META_POD_CIDR, pod_cidr)?;
        *self
            .pod_cidr
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(pod_cidr.to_string());
        tracing::info!(pod_cidr, "pod CIDR recorded");
        Ok(())
    }
}
