//! The CRI service: berth's domain logic, one file per RPC family, each an
//! `impl CriService` block. The gRPC layer (`grpc/`) converts and delegates to it.

mod image_pull;
mod image_remove;
mod image_status;
mod runtime_info;

pub use image_status::{STREAM_CHUNK, to_cri as image_to_cri};
pub use runtime_info::{NETWORK_READY, RUNTIME_API_VERSION, RUNTIME_NAME, RUNTIME_READY};

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::error::Result;
use crate::image::ImageManager;
use crate::store::Store;

/// The store's `meta` key for the pod CIDR given by `UpdateRuntimeConfig`.
const META_POD_CIDR: &str = "pod_cidr";

/// The state shared by every CRI method.
#[derive(Debug)]
pub struct CriService {
    config: Arc<Config>,
    store: Arc<Store>,
    images: Arc<ImageManager>,
    /// The node's pod CIDR(s) as the kubelet last gave them, comma separated; cached
    /// from the store.
    pod_cidr: RwLock<Option<String>>,
}

impl CriService {
    /// Builds the service over an opened store, rebuilding its caches from it.
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> Result<Self> {
        let pod_cidr = store.get_meta(META_POD_CIDR)?;
        let images = Arc::new(ImageManager::open(&config, store.clone())?);
        Ok(CriService {
            config,
            store,
            images,
            pod_cidr: RwLock::new(pod_cidr),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The image side, for the admin service (image import).
    pub fn images(&self) -> &Arc<ImageManager> {
        &self.images
    }
}
