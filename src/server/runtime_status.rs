//! Version and Status: what the kubelet asks about the runtime itself, its conditions
//! (RuntimeReady, NetworkReady) and its handlers' features.

use std::collections::HashMap;

use super::CriService;
use crate::error::Result;
use crate::oci::runtime::OciRuntime;
use crate::proto::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus,
    StatusResponse, VersionResponse,
};

/// The runtime name reported by `Version`.
pub const RUNTIME_NAME: &str = "berth";
/// The CRI API version berth serves.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The "kubelet runtime API version" of `VersionResponse.version`: the CRI has only ever
/// used this value.
const KUBELET_API_VERSION: &str = "0.1.0";

/// Condition types the kubelet requires (api.proto `RuntimeCondition`).
pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";

impl CriService {
    pub fn version(&self) -> VersionResponse {
        VersionResponse {
            version: KUBELET_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        }
    }

    /// The runtime's conditions as they are now: RuntimeReady needs the default handler's
    /// OCI runtime binary; NetworkReady needs a usable CNI configuration.
    pub fn status(&self, verbose: bool) -> Result<StatusResponse> {
        let config = self.config();
        let conditions = vec![self.runtime_condition(), self.network_condition()];
        let mut info = HashMap::new();
        if verbose {
            info.insert("config".to_string(), to_json(config));
            let pod_cidr = self.pod_cidr();
            info.insert("podCIDR".to_string(), to_json(&pod_cidr));
            info.insert("cgroups".to_string(), to_json(&self.cgroups.summary()));
        }
        // The default handler is announced under the empty name too (api.proto
        // RuntimeHandler), with what it was found to support at start-up.
        let features = |f: crate::oci::runtime::Features| {
            Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: f.recursive_read_only,
                user_namespaces: f.user_namespaces,
            })
        };
        let mut runtime_handlers: Vec<RuntimeHandler> = self
            .sandboxes
            .runtime("")
            .map(|default| RuntimeHandler {
                name: String::new(),
                features: features(default.features()),
            })
            .into_iter()
            .collect();
        runtime_handlers.extend(
            self.sandboxes
                .handlers()
                .map(|(name, runtime)| RuntimeHandler {
                    name: name.to_string(),
                    features: features(runtime.features()),
                }),
        );
        Ok(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers,
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: true,
                ..Default::default()
            }),
        })
    }

    fn runtime_condition(&self) -> RuntimeCondition {
        let config = self.config();
        let handler = config.runtime.default_handler.as_str();
        let path = config.handlers().get(handler).map(|p| p.to_path_buf());
        match path.as_deref().and_then(crate::oci::resolve_binary) {
            Some(_) => condition(RUNTIME_READY, None),
            None => condition(
                RUNTIME_READY,
                Some((
                    "OCIRuntimeNotFound",
                    format!(
                        "the OCI runtime {:?} of the default handler {handler:?} is not an executable",
                        path.unwrap_or_default().display()
                    ),
                )),
            ),
        }
    }

    fn network_condition(&self) -> RuntimeCondition {
        let network = &self.config().network;
        match crate::network::readiness(&network.conf_dir, &network.bin_dirs) {
            Ok(_) => condition(NETWORK_READY, None),
            Err(reason) => condition(
                NETWORK_READY,
                Some(("NetworkPluginNotReady", reason.to_string())),
            ),
        }
    }
}

fn condition(kind: &str, not_ready: Option<(&str, String)>) -> RuntimeCondition {
    let (status, reason, message) = match not_ready {
        None => (true, String::new(), String::new()),
        Some((reason, message)) => (false, reason.to_string(), message),
    };
    RuntimeCondition {
        r#type: kind.to_string(),
        status,
        reason,
        message,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain config structs cannot fail; an empty object is a safe fallback.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string())
}
