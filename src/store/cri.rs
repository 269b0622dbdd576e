//! The CRI's view of the records: the configs the kubelet sent, kept with each record,
//! and the statuses, states and list entries the status RPCs and the events answer with.
//!
//! A record keeps its config as the kubelet sent it (protobuf, in base64). One that no
//! longer decodes is a corrupt record: it is reported as [`StoreError::Corrupt`] naming
//! the object, never silently taken for an empty config. The object's own status RPC
//! fails with it; where many objects are answered at once (a pod's containers, an
//! event), the corrupt one is answered from what its record holds besides the config
//! ([`ContainerRecord::cri_status_as_known`]), and the corruption is logged.

use std::collections::HashMap;

use base64::Engine as _;

use super::{ContainerRecord, ContainerState, SandboxRecord, SandboxState, StoreError};
use crate::proto::{
    Container, ContainerConfig, ContainerMetadata, ContainerResources,
    ContainerState as CriContainerState, ContainerStatus, ContainerUser, ImageSpec,
    LinuxContainerUser, LinuxPodSandboxStatus, Mount, Namespace, PodIp, PodSandbox,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxNetworkStatus, PodSandboxState,
    PodSandboxStatus,
};

/// A config as a record keeps it.
pub fn encode_config<M: prost::Message>(config: &M) -> String {
    base64::engine::general_purpose::STANDARD.encode(config.encode_to_vec())
}

/// The config a record keeps, decoded; `kind` and `id` name the record in the error.
fn decode_config<M: prost::Message + Default>(
    kept: &str,
    kind: &'static str,
    id: &str,
) -> Result<M, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        kind,
        id: id.to_string(),
        reason,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(kept)
        .map_err(|e| corrupt(format!("its config is not base64: {e}")))?;
    M::decode(bytes.as_slice()).map_err(|e| corrupt(format!("its config does not decode: {e}")))
}

/// A decoded config, or the empty one for a corrupt record, said in a warning.
fn as_known<M: Default>(config: Result<M, StoreError>) -> M {
    config
        .map_err(|err| tracing::warn!(%err, "answered without its config"))
        .unwrap_or_default()
}

impl SandboxRecord {
    /// The pod's config as the kubelet sent it.
    pub fn pod_config(&self) -> Result<PodSandboxConfig, StoreError> {
        decode_config(&self.config, "pod sandbox", &self.id)
    }

    /// The CRI state of the pod.
    pub fn cri_state(&self) -> PodSandboxState {
        match self.state {
            SandboxState::Ready => PodSandboxState::SandboxReady,
            SandboxState::NotReady => PodSandboxState::SandboxNotready,
        }
    }

    fn cri_metadata(&self) -> PodSandboxMetadata {
        PodSandboxMetadata {
            name: self.name.clone(),
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            attempt: self.attempt,
        }
    }

    /// The pod as ListPodSandbox lists it.
    pub fn cri_entry(&self) -> PodSandbox {
        PodSandbox {
            id: self.id.clone(),
            metadata: Some(self.cri_metadata()),
            state: self.cri_state() as i32,
            created_at: self.created_at_ns,
            labels: self.labels.clone().into_iter().collect(),
            annotations: self.annotations.clone().into_iter().collect(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// The pod's status, as the record has it.
    pub fn cri_status(&self) -> Result<PodSandboxStatus, StoreError> {
        Ok(self.status_with(&self.pod_config()?))
    }

    /// The pod's status; with a corrupt config, what the rest of the record holds (no
    /// namespace options), and a warning.
    pub fn cri_status_as_known(&self) -> PodSandboxStatus {
        self.status_with(&as_known(self.pod_config()))
    }

    fn status_with(&self, config: &PodSandboxConfig) -> PodSandboxStatus {
        let namespace_options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        // As long as the pod holds its network (a stop cut short keeps it until the
        // kubelet stops the pod again), its addresses are its own, as in containerd.
        let attached = self.state == SandboxState::Ready || self.netns.is_some();
        let network = attached.then(|| PodSandboxNetworkStatus {
            ip: self.ips.first().cloned().unwrap_or_default(),
            additional_ips: self
                .ips
                .iter()
                .skip(1)
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        });
        PodSandboxStatus {
            id: self.id.clone(),
            metadata: Some(self.cri_metadata()),
            state: self.cri_state() as i32,
            created_at: self.created_at_ns,
            network,
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(namespace_options.unwrap_or_default()),
                }),
            }),
            labels: self.labels.clone().into_iter().collect(),
            annotations: self.annotations.clone().into_iter().collect(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }
}

impl ContainerRecord {
    /// The container's config as the kubelet sent it (and UpdateContainerResources
    /// changed it).
    pub fn container_config(&self) -> Result<ContainerConfig, StoreError> {
        decode_config(&self.config, "container", &self.id)
    }

    /// The CRI state of the container.
    pub fn cri_state(&self) -> CriContainerState {
        match self.state {
            ContainerState::Created => CriContainerState::ContainerCreated,
            ContainerState::Running => CriContainerState::ContainerRunning,
            ContainerState::Exited => CriContainerState::ContainerExited,
        }
    }

    /// Whether the container passes the filters ListContainers and ListContainerStats
    /// share: id prefix, pod id prefix and labels (empty filters pass everything).
    pub fn selected(&self, id: &str, pod: &str, labels: &HashMap<String, String>) -> bool {
        self.id.starts_with(id)
            && self.sandbox_id.starts_with(pod)
            && labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    fn cri_metadata(&self) -> ContainerMetadata {
        ContainerMetadata {
            name: self.name.clone(),
            attempt: self.attempt,
        }
    }

    fn image_spec(&self) -> ImageSpec {
        ImageSpec {
            image: self.image.clone(),
            ..Default::default()
        }
    }

    /// The container as ListContainers lists it.
    pub fn cri_entry(&self) -> Container {
        Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: Some(self.cri_metadata()),
            image: Some(self.image_spec()),
            image_ref: self.image_ref.clone(),
            image_id: self.image_ref.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at_ns,
            labels: self.labels.clone().into_iter().collect(),
            annotations: self.annotations.clone().into_iter().collect(),
        }
    }

    /// The container's status, as the record has it.
    pub fn cri_status(&self) -> Result<ContainerStatus, StoreError> {
        Ok(self.status_with(&self.container_config()?))
    }

    /// The container's status; with a corrupt config, what the rest of the record holds
    /// (its state, exit, times, image, but no mounts, resources or stop signal), and a
    /// warning.
    pub fn cri_status_as_known(&self) -> ContainerStatus {
        self.status_with(&as_known(self.container_config()))
    }

    fn status_with(&self, config: &ContainerConfig) -> ContainerStatus {
        ContainerStatus {
            id: self.id.clone(),
            metadata: Some(self.cri_metadata()),
            state: self.cri_state() as i32,
            created_at: self.created_at_ns,
            started_at: self.started_at_ns,
            finished_at: self.finished_at_ns,
            exit_code: self.exit_code,
            image: Some(self.image_spec()),
            image_ref: self.image_ref.clone(),
            image_id: self.image_ref.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.labels.clone().into_iter().collect(),
            annotations: self.annotations.clone().into_iter().collect(),
            mounts: self.cri_mounts(config),
            log_path: self.log_path.clone(),
            resources: config.linux.as_ref().map(|l| ContainerResources {
                linux: l.resources.clone(),
                windows: None,
            }),
            user: Some(ContainerUser {
                linux: Some(LinuxContainerUser {
                    uid: i64::from(self.uid),
                    gid: i64::from(self.gid),
                    supplemental_groups: self
                        .supplemental_groups
                        .iter()
                        .map(|g| i64::from(*g))
                        .collect(),
                }),
            }),
            stop_signal: config.stop_signal,
        }
    }

    /// The container's mounts as requested, each image volume naming the id of the image
    /// mounted (what ListImages calls it: the kubelet's image GC keeps the images it finds
    /// there), the name it was asked by kept as `user_specified_image`.
    fn cri_mounts(&self, config: &ContainerConfig) -> Vec<Mount> {
        let mut mounts = config.mounts.clone();
        for (n, id) in &self.image_volumes {
            if let Some(image) = mounts.get_mut(*n).and_then(|m| m.image.as_mut()) {
                if image.user_specified_image.is_empty() {
                    image.user_specified_image = image.image.clone();
                }
                image.image = id.clone();
            }
        }
        mounts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_comes_back_as_it_was_kept() {
        let config = PodSandboxConfig {
            hostname: "web-0".into(),
            ..Default::default()
        };
        let record = SandboxRecord {
            id: "p1".into(),
            config: encode_config(&config),
            ..Default::default()
        };
        assert_eq!(record.pod_config().unwrap(), config);
        let status = record.cri_status().unwrap();
        assert_eq!(status.id, "p1");
        assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    }

    #[test]
    fn a_corrupt_config_is_reported_with_its_record() {
        let record = ContainerRecord {
            id: "c1".into(),
            config: "not base64!".into(),
            ..Default::default()
        };
        let err = record.cri_status().unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { kind: "container", id, .. } if id == "c1"),
            "{err}"
        );
        // Answered beside others, it is what the rest of its record holds.
        let known = record.cri_status_as_known();
        assert_eq!(known.id, "c1");
        assert!(known.mounts.is_empty() && known.resources.is_none());
        let garbage = SandboxRecord {
            id: "p2".into(),
            // Valid base64 of bytes that are no protobuf message (a truncated field).
            config: base64::engine::general_purpose::STANDARD.encode([0x0a, 0x05, b'a']),
            ..Default::default()
        };
        let err = garbage.pod_config().unwrap_err();
        assert!(err.to_string().contains("\"p2\""), "{err}");
    }

    #[test]
    fn image_volumes_name_the_image_id_and_keep_the_name_asked() {
        let config = ContainerConfig {
            mounts: vec![Mount {
                container_path: "/data".into(),
                image: Some(ImageSpec {
                    image: "registry/data:1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let record = ContainerRecord {
            id: "c2".into(),
            config: encode_config(&config),
            image_volumes: [(0, "sha256:abc".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let status = record.cri_status().unwrap();
        let image = status.mounts[0].image.as_ref().unwrap();
        assert_eq!(image.image, "sha256:abc");
        assert_eq!(image.user_specified_image, "registry/data:1");
    }

    #[test]
    fn filters_match_prefixes_and_every_label() {
        let record = ContainerRecord {
            id: "abcdef".into(),
            sandbox_id: "123456".into(),
            labels: [("app".to_string(), "web".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let none = HashMap::new();
        assert!(record.selected("", "", &none));
        assert!(record.selected("abc", "123", &none));
        assert!(!record.selected("abd", "", &none));
        assert!(!record.selected("", "124", &none));
        let web = HashMap::from([("app".to_string(), "web".to_string())]);
        let db = HashMap::from([("app".to_string(), "db".to_string())]);
        assert!(record.selected("", "", &web));
        assert!(!record.selected("", "", &db));
    }
}
