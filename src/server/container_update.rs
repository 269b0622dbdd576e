//! UpdateContainerResources (in-place resize) and UpdatePodSandboxResources.
//!
//! Containers: new CPU, memory, cpuset and hugepage limits, fitted to the host's cgroups
//! as at CreateContainer, applied through the OCI runtime to a created or running
//! container, and kept in its spec and record so ContainerStatus reports them and a
//! created container starts with them. Pods: the new CPU, memory and cpuset total written
//! into the pod's cgroup, for the controllers the host has (a pod cgroup's swap, huge
//! page and v2 limits are the kubelet's, which made it).

use std::sync::Arc;

use super::{CriService, In, refused};
use crate::error::{Error, Result};
use crate::oci::runtime::OciRuntime;
use crate::proto::{LinuxContainerConfig, LinuxContainerResources};
use crate::spec::container::{ResourceError, ResourceField, check_resources, resources_of};
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
        check_resources(&linux).map_err(|e| refused(e, In::Update))?;
        // Read before anything changes: a corrupt record fails the update whole.
        let mut config = record.container_config()?;
        let mut resources = resources_of(&linux)?;
        let cgroup = self
            .sandboxes
            .find(&record.sandbox_id)
            .map(|sandbox| sandbox.container_cgroup(&record.id))
            .unwrap_or_default();
        self.fit_resources(&mut resources, &record.id, &cgroup, In::Update)?;
        // The spec keeps its device rules; only the limits change.
        let spec_path = self.containers.state_dir(&record.id).join("config.json");
        let bytes = std::fs::read(&spec_path).map_err(Error::io("reading the spec", &spec_path))?;
        let mut spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: format!("the spec {}", spec_path.display()),
                source,
            })?;
        if let Some(old) = spec.linux().as_ref().and_then(|l| l.resources().clone()) {
            resources.set_devices(old.devices().clone());
        }
        // A created container is not in the runtime yet: the spec below is what it will
        // run with.
        if record.state == ContainerState::Running {
            let json = serde_json::to_vec(&resources).map_err(|source| Error::Json {
                what: format!("encoding the resources of container {}", record.id),
                source,
            })?;
            self.runtime_of(&record)?.update(&record.id, &json).await?;
        }
        if let Some(mut linux_spec) = spec.linux().clone() {
            linux_spec.set_resources(Some(resources));
            spec.set_linux(Some(linux_spec));
        }
        let json = self
            .runtime_of(&record)?
            .bundle_config(&spec)
            .map_err(|source| Error::Json {
                what: format!("encoding the spec of container {}", record.id),
                source,
            })?;
        let tmp = spec_path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(Error::io("writing the spec", &tmp))?;
        std::fs::rename(&tmp, &spec_path).map_err(Error::io("writing the spec", &spec_path))?;

        config
            .linux
            .get_or_insert_with(LinuxContainerConfig::default)
            .resources = Some(linux);
        record.config = crate::store::cri::encode_config(&config);
        self.containers.save(&record)?;
        tracing::info!(container = %record.id, "resources updated");
        Ok(())
    }
}

impl CriService {
    /// Takes out of `resources` what this host's cgroups cannot apply to a container
    /// in cgroup `cgroup` (the same rules at CreateContainer and
    /// UpdateContainerResources); a huge page size the kernel lacks is refused, naming
    /// the field as request `within` has it.
    pub(super) fn fit_resources(
        &self,
        resources: &mut oci_spec::runtime::LinuxResources,
        container: &str,
        cgroup: &str,
        within: In,
    ) -> Result<()> {
        let dropped = self.cgroups.fit(resources, cgroup).map_err(|unknown| {
            let error = ResourceError {
                field: ResourceField::HugepageLimits,
                reason: unknown.to_string(),
            };
            refused(error, within)
        })?;
        if !dropped.is_empty() {
            let fields: Vec<&str> = dropped.iter().map(|l| l.field()).collect();
            tracing::debug!(container, ?fields, "left out limits this host cannot apply");
        }
        Ok(())
    }

    /// UpdatePodSandboxResources: the pod's new total (its containers' resources plus
    /// its overhead) written into the pod's cgroup, its `cgroup_parent`. A pod without a
    /// cgroup of its own (no `cgroup_parent`) cannot be resized.
    pub fn update_pod_sandbox_resources(
        &self,
        id: &str,
        overhead: Option<LinuxContainerResources>,
        resources: Option<LinuxContainerResources>,
    ) -> Result<()> {
        if overhead.is_none() && resources.is_none() {
            return Err(Error::invalid(
                "resources",
                "neither resources nor overhead given",
            ));
        }
        for (given, within) in [(&overhead, In::PodOverhead), (&resources, In::PodResources)] {
            if let Some(given) = given {
                check_resources(given).map_err(|e| refused(e, within))?;
            }
        }
        let sandbox = self.sandbox(id)?;
        let parent = sandbox
            .pod_config()?
            .linux
            .map(|l| l.cgroup_parent)
            .unwrap_or_default();
        if parent.is_empty() {
            return Err(Error::WrongState {
                kind: "pod sandbox",
                id: sandbox.id,
                reason: "it has no cgroup_parent, so no cgroup of its own to resize".to_string(),
            });
        }
        let limits = pod_limits(
            &resources.unwrap_or_default(),
            &overhead.unwrap_or_default(),
        );
        self.cgroups
            .set_limits(&parent, &limits)
            .map_err(|(path, source)| Error::Io {
                what: "setting the pod's limit in",
                path,
                source,
            })?;
        tracing::info!(sandbox = %sandbox.id, cgroup = %parent, "pod resources updated");
        Ok(())
    }
}

/// A pod's limits: its containers' total plus the overhead. Quotas add up over the
/// resources' period (the overhead's quota is rescaled to it).
pub fn pod_limits(
    resources: &LinuxContainerResources,
    overhead: &LinuxContainerResources,
) -> crate::cgroups::limits::Limits {
    let positive = |v: i64| u64::try_from(v).unwrap_or(0);
    let period = if resources.cpu_period > 0 {
        resources.cpu_period
    } else {
        overhead.cpu_period
    };
    let rescale = |quota: i64, own_period: i64| {
        if quota <= 0 {
            0
        } else if own_period > 0 && period > 0 && own_period != period {
            quota * period / own_period
        } else {
            quota
        }
    };
    let quota = if resources.cpu_quota > 0 {
        rescale(resources.cpu_quota, resources.cpu_period)
            + rescale(overhead.cpu_quota, overhead.cpu_period)
    } else {
        0
    };
    let memory = if resources.memory_limit_in_bytes > 0 {
        positive(resources.memory_limit_in_bytes) + positive(overhead.memory_limit_in_bytes)
    } else {
        0
    };
    crate::cgroups::limits::Limits {
        cpu_shares: positive(resources.cpu_shares) + positive(overhead.cpu_shares),
        cpu_quota: quota,
        cpu_period: if quota > 0 { positive(period) } else { 0 },
        memory,
        cpuset_cpus: resources.cpuset_cpus.clone(),
        cpuset_mems: resources.cpuset_mems.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_limits_add_the_overhead() {
        let resources = LinuxContainerResources {
            cpu_shares: 1024,
            cpu_quota: 100_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        };
        let overhead = LinuxContainerResources {
            cpu_shares: 10,
            cpu_quota: 5_000,
            cpu_period: 50_000,
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        };
        let limits = pod_limits(&resources, &overhead);
        assert_eq!(limits.cpu_shares, 1034);
        assert_eq!((limits.cpu_quota, limits.cpu_period), (110_000, 100_000));
        assert_eq!(limits.memory, 272 << 20);
        // An unlimited pod stays unlimited, whatever its overhead.
        let unlimited = pod_limits(&LinuxContainerResources::default(), &overhead);
        assert_eq!((unlimited.cpu_quota, unlimited.memory), (0, 0));
    }
}
