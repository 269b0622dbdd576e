//! The CRI service: berth's domain logic, one file per RPC family, each an
//! `impl CriService` block. The gRPC layer (`grpc/`) converts and delegates to it.

mod runtime_info;

pub use runtime_info::{NETWORK_READY, RUNTIME_API_VERSION, RUNTIME_NAME, RUNTIME_READY};

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::error::Result;
use crate::store::Store;

/// The store's `meta` key for the pod CIDR given by `UpdateRuntimeConfig`.
const META_POD_CIDR: &str = "pod_cidr";

/// The state shared by every CRI method.
#[derive(Debug)]
pub struct CriService {
    config: Arc<Config>,
    store: Arc<Store>,
    /// The node's pod CIDR(s) as the kubelet last gave them, comma separated; cached
    /// from the store.
    pod_cidr: RwLock<Option<String>>,
}

impl CriService {
    /// Builds the service over an opened store, rebuilding its caches from it.
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> Result<Self> {
        let pod_cidr = store.get_meta(META_POD_CIDR)?;
        Ok(CriService {
            config,
            store,
            pod_cidr: RwLock::new(pod_cidr),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}
