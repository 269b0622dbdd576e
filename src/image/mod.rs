//! Images: references, registry pulls, the content store, layer unpacking, import and
//! garbage collection.
//!
//! [`ImageManager`] owns the image side of berth. Image and layer records live in the
//! metadata store; an in-memory index of the images (a cache rebuilt at start-up) answers
//! the kubelet's frequent ImageStatus calls without touching the disk. Content lives in
//! the [`content::ContentStore`].
//!
//! Consistency: a pull holds the GC lock shared from the moment it decides which layers
//! it needs until its image record is written; garbage collection holds it exclusively.
//! So GC never removes a layer a pull is about to reference.

pub mod content;
pub mod digest;
mod gc;
mod import;
mod landing;
pub mod manifest;
mod pull;
pub mod reference;
pub mod registry;
mod single_flight;
pub mod unpack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use content::ContentStore;
use digest::Digest;
use reference::Reference;
use registry::RegistryClient;
use single_flight::SingleFlight;

use crate::store::{ImageRecord, LayerRecord, Store, StoreError};

pub use registry::Auth;

/// Why an image operation failed. Each variant names the image, registry or file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {reference:?} not found: {reason}")]
    NotFound { reference: String, reason: String },
    #[error("cannot pull {reference:?}: {reason}")]
    Unavailable { reference: String, reason: String },
    #[error("cannot pull {reference:?}: {reason}")]
    Unauthorized { reference: String, reason: String },
    #[error("cannot pull {reference:?}: {reason}")]
    Corrupt { reference: String, reason: String },
    #[error("cannot pull {reference:?}: {reason}")]
    Unsupported { reference: String, reason: String },
    #[error("cannot pull {reference:?}: {reason}")]
    Registry { reference: String, reason: String },
    #[error("image content {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot import {path}: {reason}")]
    Import { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A background task of the image service died (panicked or was cancelled).
    #[error("image task failed: {0}")]
    Task(String),
    /// The registries' HTTP client could not be made (its TLS set-up failed).
    #[error("cannot build the registries' HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("{0}")]
    Shared(Arc<ImageError>),
}

impl ImageError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        move |source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The gRPC code for this error; exhaustive, so a new variant needs a decision.
    pub fn code(&self) -> tonic::Code {
        match self {
            ImageError::InvalidReference { .. } | ImageError::Import { .. } => {
                tonic::Code::InvalidArgument
            }
            ImageError::NotFound { .. } => tonic::Code::NotFound,
            ImageError::Unavailable { .. } => tonic::Code::Unavailable,
            ImageError::Unauthorized { .. } => tonic::Code::Unauthenticated,
            ImageError::Corrupt { .. } => tonic::Code::DataLoss,
            ImageError::Unsupported { .. } => tonic::Code::FailedPrecondition,
            ImageError::Registry { .. } => tonic::Code::Unknown,
            ImageError::Io { .. }
            | ImageError::Store(_)
            | ImageError::Task(_)
            | ImageError::HttpClient(_) => tonic::Code::Internal,
            ImageError::Shared(inner) => inner.code(),
        }
    }
}

impl From<Arc<ImageError>> for ImageError {
    fn from(shared: Arc<ImageError>) -> Self {
        ImageError::Shared(shared)
    }
}

/// The image side of berth.
pub struct ImageManager {
    content: ContentStore,
    store: Arc<Store>,
    registry: Arc<RegistryClient>,
    /// Image records by id; a cache of the store's images table.
    images: RwLock<BTreeMap<String, ImageRecord>>,
    pulls: SingleFlight<String, String, ImageError>,
    layers: SingleFlight<Digest, (), ImageError>,
    gc_lock: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for ImageManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageManager")
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

impl ImageManager {
    /// Opens the content store under `<root>/images` (pulling through `registries`),
    /// loads the image index, and drops what an interrupted run left half done.
    pub fn open(
        root: &Path,
        registries: BTreeMap<String, registry::RegistryConfig>,
        store: Arc<Store>,
    ) -> Result<ImageManager, ImageError> {
        let dir = root.join("images");
        let content = ContentStore::open(&dir).map_err(ImageError::io(&dir))?;
        let registry = Arc::new(RegistryClient::new(registries).map_err(ImageError::HttpClient)?);
        let manager = ImageManager {
            content,
            store,
            registry,
            images: RwLock::new(BTreeMap::new()),
            pulls: SingleFlight::default(),
            layers: SingleFlight::default(),
            gc_lock: tokio::sync::RwLock::new(()),
        };
        manager.recover()?;
        Ok(manager)
    }

    /// Reconciles layer records with the layer directories (a crash may separate them)
    /// and loads the image index.
    fn recover(&self) -> Result<(), ImageError> {
        let records: Vec<LayerRecord> = self.store.list()?;
        let on_disk = self
            .content
            .layers_on_disk()
            .map_err(ImageError::io(self.content.root()))?;
        for record in &records {
            let present = Digest::parse(&record.diff_id).is_ok_and(|d| on_disk.contains(&d));
            if !present {
                tracing::warn!(layer = %record.diff_id, "layer record without its directory; forgetting it");
                self.store.delete::<LayerRecord>(&record.diff_id)?;
            }
        }
        for diff_id in on_disk {
            if !records.iter().any(|r| r.diff_id == diff_id.as_str()) {
                tracing::warn!(layer = %diff_id, "layer directory without a record; removing it");
                self.content
                    .remove_layer(&diff_id)
                    .map_err(ImageError::io(&self.content.layer_path(&diff_id)))?;
            }
        }
        let images: Vec<ImageRecord> = self.store.list()?;
        tracing::debug!(images = images.len(), "image index loaded");
        *self.write_index() = images.into_iter().map(|i| (i.id.clone(), i)).collect();
        Ok(())
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ImageRecord>> {
        self.images.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ImageRecord>> {
        self.images.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every image, in id order.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.read_index().values().cloned().collect()
    }

    /// Finds an image by id (`sha256:<hex>` or the bare hex), tag or digest reference,
    /// normalizing short names. `Ok(None)` when there is no such image; an error only for
    /// a malformed reference.
    pub fn lookup(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let index = self.read_index();
        if let Some(image) = index.get(name) {
            return Ok(Some(image.clone()));
        }
        if name.len() == 64
            && name.bytes().all(|b| b.is_ascii_hexdigit())
            && let Some(image) = index.get(&format!("sha256:{name}"))
        {
            return Ok(Some(image.clone()));
        }
        let reference = Reference::parse(name).map_err(|reason| ImageError::InvalidReference {
            reference: name.to_string(),
            reason,
        })?;
        let found = match (&reference.digest, reference.tagged()) {
            (Some(digest), _) => {
                let wanted = reference.with_digest(digest);
                index.values().find(|i| i.repo_digests.contains(&wanted))
            }
            (None, Some(tagged)) => index.values().find(|i| i.repo_tags.contains(&tagged)),
            (None, None) => None,
        };
        Ok(found.cloned())
    }

    /// The image config (JSON) of an image, for verbose status and container specs.
    pub fn config_json(&self, image: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        let digest = Digest::parse(&image.id).map_err(|reason| ImageError::Corrupt {
            reference: image.id.clone(),
            reason,
        })?;
        let path = self.content.blob_path(&digest);
        self.content
            .read_blob(&digest)
            .map_err(ImageError::io(&path))
    }

    /// The image's run configuration (entrypoint, command, user, environment).
    pub fn run_config(&self, image: &ImageRecord) -> Result<manifest::RunConfig, ImageError> {
        let config: manifest::ImageConfig = serde_json::from_slice(&self.config_json(image)?)
            .map_err(|e| ImageError::Corrupt {
                reference: image.id.clone(),
                reason: format!("stored config: {e}"),
            })?;
        Ok(config.config)
    }

    /// Marks an image as pinned (the sandbox image): ImageStatus reports it, and the
    /// kubelet's image garbage collection leaves it alone.
    pub fn pin(&self, image: &ImageRecord) -> Result<ImageRecord, ImageError> {
        let mut pinned = image.clone();
        pinned.pinned = true;
        self.commit_image(pinned)
    }

    /// The unpacked layer directories of an image, bottom first.
    pub fn layer_paths(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        image
            .layers
            .iter()
            .map(|l| {
                Digest::parse(l)
                    .map(|d| self.content.layer_path(&d))
                    .map_err(|reason| ImageError::Corrupt {
                        reference: image.id.clone(),
                        reason,
                    })
            })
            .collect()
    }

    /// Removes an image and all its names. Idempotent: an unknown image is not an error
    /// (api.proto RemoveImage). Its content is reclaimed by a garbage collection that
    /// keeps whatever other images and existing containers still use.
    pub fn remove(self: &Arc<Self>, name: &str) -> Result<Option<String>, ImageError> {
        let Some(image) = self.lookup(name)? else {
            return Ok(None);
        };
        self.store.delete::<ImageRecord>(&image.id)?;
        self.write_index().remove(&image.id);
        tracing::info!(image = %image.id, tags = ?image.repo_tags, "image removed");
        self.collect_garbage_soon();
        Ok(Some(image.id))
    }

    /// Where the image store keeps its blobs and layers: the mountpoint ImageFsInfo names.
    pub fn store_root(&self) -> &Path {
        self.content.root()
    }

    /// Bytes and inodes used by the image store.
    pub fn usage(&self) -> Result<(u64, u64), ImageError> {
        let layers: Vec<LayerRecord> = self.store.list()?;
        let (blobs, blob_bytes) = self
            .content
            .blobs_on_disk()
            .map_err(ImageError::io(self.content.root()))?;
        let bytes = blob_bytes + layers.iter().map(|l| l.bytes).sum::<u64>();
        let inodes = blobs.len() as u64 + layers.iter().map(|l| l.inodes).sum::<u64>();
        Ok((bytes, inodes))
    }

    /// Records an image, taking its tags away from any other image that had them.
    fn commit_image(&self, mut image: ImageRecord) -> Result<ImageRecord, ImageError> {
        let mut index = self.write_index();
        if let Some(existing) = index.get(&image.id) {
            for tag in &existing.repo_tags {
                if !image.repo_tags.contains(tag) {
                    image.repo_tags.push(tag.clone());
                }
            }
            for digest in &existing.repo_digests {
                if !image.repo_digests.contains(digest) {
                    image.repo_digests.push(digest.clone());
                }
            }
            image.pinned |= existing.pinned;
            image.created_at_ns = existing.created_at_ns;
        }
        image.repo_tags.sort();
        image.repo_digests.sort();
        let others: Vec<ImageRecord> = index
            .values()
            .filter(|other| {
                other.id != image.id && other.repo_tags.iter().any(|t| image.repo_tags.contains(t))
            })
            .cloned()
            .collect();
        for mut other in others {
            other.repo_tags.retain(|t| !image.repo_tags.contains(t));
            tracing::info!(image = %other.id, "tag moved to {}", image.id);
            self.store.put(&other)?;
            index.insert(other.id.clone(), other);
        }
        self.store.put(&image)?;
        index.insert(image.id.clone(), image.clone());
        Ok(image)
    }
}
