//! ContainerStatus, ListContainers and StreamContainers.

use std::collections::HashMap;

use super::CriService;
use super::sandbox_status::decode_container_config;
use crate::error::Result;
use crate::proto::{
    Container, ContainerFilter, ContainerMetadata, ContainerResources, ContainerState as CriState,
    ContainerStatus, ContainerStatusResponse, ContainerUser, ImageSpec, LinuxContainerUser,
};
use crate::store::{ContainerRecord, ContainerState};

impl CriService {
    /// A container's status, its state as a listing has it
    /// ([`crate::container::Containers::current`]).
    pub fn container_status(&self, id: &str, verbose: bool) -> Result<ContainerStatusResponse> {
        let record = self.containers.current(self.container_as_stored(id)?)?;
        let status = container_status_of(&record);
        let mut info = HashMap::new();
        if verbose {
            let spec = super::sandbox_status::bundle_spec(&self.containers.state_dir(&record.id));
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
            let wanted = selected(
                r,
                &filter.id,
                &filter.pod_sandbox_id,
                &filter.label_selector,
            ) && filter
                .state
                .is_none_or(|s| s.state == state(r.state) as i32);
            wanted.then(|| to_cri(r))
        })?)
    }
}

/// Whether a container passes the filters ListContainers and ListContainerStats share:
/// id prefix, pod id prefix and labels (empty filters pass everything).
pub(crate) fn selected(
    record: &ContainerRecord,
    id: &str,
    pod: &str,
    labels: &HashMap<String, String>,
) -> bool {
    record.id.starts_with(id)
        && record.sandbox_id.starts_with(pod)
        && labels.iter().all(|(k, v)| record.labels.get(k) == Some(v))
}

/// A container's status, as its record has it.
pub(crate) fn container_status_of(record: &ContainerRecord) -> ContainerStatus {
    let config = decode_container_config(record);
    let image = Some(ImageSpec {
        image: record.image.clone(),
        ..Default::default()
    });
    ContainerStatus {
        id: record.id.clone(),
        metadata: Some(ContainerMetadata {
            name: record.name.clone(),
            attempt: record.attempt,
        }),
        state: state(record.state) as i32,
        created_at: record.created_at_ns,
        started_at: record.started_at_ns,
        finished_at: record.finished_at_ns,
        exit_code: record.exit_code,
        image,
        image_ref: record.image_ref.clone(),
        image_id: record.image_ref.clone(),
        reason: record.reason.clone(),
        message: record.message.clone(),
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
        mounts: mounts_of(record, &config),
        log_path: record.log_path.clone(),
        resources: config.linux.as_ref().map(|l| ContainerResources {
            linux: l.resources.clone(),
            windows: None,
        }),
        user: Some(ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: record.uid as i64,
                gid: record.gid as i64,
                supplemental_groups: record
                    .supplemental_groups
                    .iter()
                    .map(|g| *g as i64)
                    .collect(),
            }),
        }),
        stop_signal: config.stop_signal,
    }
}

/// The container's mounts as requested, each image volume naming the id of the image
/// mounted (what ListImages calls it: the kubelet's image GC keeps the images it finds
/// there), the name it was asked by kept as `user_specified_image`.
fn mounts_of(
    record: &ContainerRecord,
    config: &crate::proto::ContainerConfig,
) -> Vec<crate::proto::Mount> {
    let mut mounts = config.mounts.clone();
    for (n, id) in &record.image_volumes {
        if let Some(image) = mounts.get_mut(*n).and_then(|m| m.image.as_mut()) {
            if image.user_specified_image.is_empty() {
                image.user_specified_image = image.image.clone();
            }
            image.image = id.clone();
        }
    }
    mounts
}

fn to_cri(record: &ContainerRecord) -> Container {
    Container {
        id: record.id.clone(),
        pod_sandbox_id: record.sandbox_id.clone(),
        metadata: Some(ContainerMetadata {
            name: record.name.clone(),
            attempt: record.attempt,
        }),
        image: Some(ImageSpec {
            image: record.image.clone(),
            ..Default::default()
        }),
        image_ref: record.image_ref.clone(),
        image_id: record.image_ref.clone(),
        state: state(record.state) as i32,
        created_at: record.created_at_ns,
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
    }
}

fn state(state: ContainerState) -> CriState {
    match state {
        ContainerState::Created => CriState::ContainerCreated,
        ContainerState::Running => CriState::ContainerRunning,
        ContainerState::Exited => CriState::ContainerExited,
    }
}
