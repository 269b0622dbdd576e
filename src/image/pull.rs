//! PullImage: resolve the reference on the first endpoint that serves it (mirrors first),
//! pick the host platform from an index, fetch and verify the config, then fetch, verify
//! and unpack the layers that are not on disk yet (three at a time, each shared with any
//! concurrent pull that needs it), and record the image.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};

use super::digest::Digest;
use super::manifest::{self, Document};
use super::reference::Reference;
use super::registry::{Auth, Endpoint, FetchError, Fetched};
use super::unpack;
use super::{ImageError, ImageManager};
use crate::clock::now_ns;
use crate::store::{ImageRecord, LayerRecord};

/// Where a pull fetches from: the endpoint that served its manifest.
struct Source<'a> {
    /// The reference, as the errors show it.
    shown: &'a str,
    endpoint: &'a Endpoint,
    repository: &'a str,
    auth: &'a Auth,
}

/// The largest image config accepted.
const MAX_CONFIG: u64 = 16 << 20;
/// Layers fetched at once by one pull.
const LAYER_CONCURRENCY: usize = 3;

/// What a layer needs from the pull that wants it.
#[derive(Clone)]
struct LayerJob {
    reference: String,
    repository: String,
    endpoints: Vec<Endpoint>,
    auth: Auth,
    digest: Digest,
    size: u64,
    diff_id: Digest,
}

impl ImageManager {
    /// Pulls an image and returns its id. Concurrent pulls of the same reference with the
    /// same credentials share one pull; concurrent pulls of images sharing layers share
    /// those layers' downloads (a layer is only fetched by a pull that was allowed to read
    /// its manifest).
    pub async fn pull(self: &Arc<Self>, name: &str, auth: Auth) -> Result<String, ImageError> {
        let reference = Reference::parse(name).map_err(|reason| ImageError::InvalidReference {
            reference: name.to_string(),
            reason,
        })?;
        let manager = self.clone();
        // Pulls share work only with pulls that have the same credentials: a pull must
        // never succeed on someone else's.
        let key = format!("{reference}#{}", auth.fingerprint());
        self.pulls
            .run(
                key,
                move || async move { manager.pull_now(reference, auth).await },
                ImageError::Task,
            )
            .await
            .map_err(ImageError::from)
    }

    /// The pull itself, measured ([`crate::metrics::pull`]).
    async fn pull_now(
        self: Arc<Self>,
        reference: Reference,
        auth: Auth,
    ) -> Result<String, ImageError> {
        let started = Instant::now();
        let pulled = self.pull_measured(reference, auth, started).await;
        crate::metrics::pull(pulled.is_ok(), started.elapsed());
        pulled.map(|(id, _)| id)
    }

    /// Pulls; returns the image's id and the bytes fetched.
    async fn pull_measured(
        self: Arc<Self>,
        reference: Reference,
        auth: Auth,
        started: Instant,
    ) -> Result<(String, u64), ImageError> {
        let shown = reference.to_string();
        tracing::info!(image = %shown, "pulling");
        let mut endpoints = self.registry.endpoints(&reference);
        let (served_by, top) = self.resolve(&reference, &endpoints, &auth).await?;
        // From the first blob written to the image record, garbage collection must not
        // remove what this pull writes or needs.
        let _gc = self.gc_lock.read().await;
        // Blobs come from the endpoint that served the manifest first.
        endpoints.rotate_left(served_by);
        let endpoint = &endpoints[0];
        let repository = reference.repository.as_str();
        let source = Source {
            shown: &shown,
            endpoint,
            repository,
            auth: &auth,
        };
        let (platform_manifest, index_digest) = self.platform_manifest(&source, &top).await?;
        let manifest_digest = match &index_digest {
            Some((_, manifest)) => manifest.clone(),
            None => top.digest.clone(),
        };
        let (config_digest, config_bytes, config) =
            self.image_config(&source, &platform_manifest).await?;

        let jobs = layer_jobs(&source, &endpoints, &platform_manifest, &config)?;
        let fetched: Vec<u64> = futures_util::stream::iter(jobs)
            .map(|job| self.ensure_layer(job))
            .buffer_unordered(LAYER_CONCURRENCY)
            .try_collect()
            .await?;

        self.content
            .write_blob(&config_digest, &config_bytes)
            .map_err(ImageError::io(self.content.root()))?;
        self.content
            .write_blob(&top.digest, &top.bytes)
            .map_err(ImageError::io(self.content.root()))?;
        let image = ImageRecord {
            id: config_digest.to_string(),
            repo_tags: reference.tagged().into_iter().collect(),
            repo_digests: vec![reference.with_digest(&top.digest)],
            size: platform_manifest.config.size
                + platform_manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            manifest: manifest_digest.to_string(),
            index: index_digest.map(|(index, _)| index.to_string()),
            layers: config.rootfs.diff_ids.clone(),
            user: config.config.user.clone(),
            pinned: false,
            created_at_ns: now_ns(),
        };
        let image = self.commit_image(image)?;
        tracing::info!(
            image = %shown,
            id = %image.id,
            layers = image.layers.len(),
            layers_fetched = fetched.iter().filter(|b| **b > 0).count(),
            bytes_fetched = fetched.iter().sum::<u64>(),
            ms = started.elapsed().as_millis() as u64,
            "pulled"
        );
        Ok((image.id, fetched.iter().sum::<u64>()))
    }

    /// The manifest for this host: `top` itself, or the one its index names for the host's
    /// platform (fetched and stored), with the index's and that manifest's digests.
    async fn platform_manifest(
        &self,
        source: &Source<'_>,
        top: &Fetched,
    ) -> Result<(manifest::Manifest, Option<(Digest, Digest)>), ImageError> {
        let shown = source.shown;
        let corrupt = |reason: String| ImageError::Corrupt {
            reference: shown.to_string(),
            reason,
        };
        let index = match manifest::parse(&top.media_type, &top.bytes)
            .map_err(|r| unsupported(shown, r))?
        {
            Document::Manifest(m) => return Ok((m, None)),
            Document::Index(index) => index,
        };
        let chosen = manifest::select_platform(&index).ok_or_else(|| ImageError::NotFound {
            reference: shown.to_string(),
            reason: format!(
                "no linux/{} image in its index (it has {})",
                manifest::host_arch(),
                manifest::platforms(&index)
            ),
        })?;
        let digest = Digest::parse(&chosen.digest).map_err(corrupt)?;
        let fetched = self
            .registry
            .manifest(
                source.endpoint,
                source.repository,
                digest.as_str(),
                source.auth,
            )
            .await
            .map_err(|e| fetch_error(shown, vec![e]))?;
        let Document::Manifest(m) = manifest::parse(&fetched.media_type, &fetched.bytes)
            .map_err(|r| unsupported(shown, r))?
        else {
            return Err(unsupported(shown, "an index inside an index".to_string()));
        };
        self.content
            .write_blob(&fetched.digest, &fetched.bytes)
            .map_err(ImageError::io(self.content.root()))?;
        Ok((m, Some((top.digest.clone(), fetched.digest))))
    }

    /// The image's config blob (its digest, bytes and contents), checked against the host
    /// and against the manifest.
    async fn image_config(
        &self,
        source: &Source<'_>,
        platform_manifest: &manifest::Manifest,
    ) -> Result<(Digest, Vec<u8>, manifest::ImageConfig), ImageError> {
        let shown = source.shown;
        let corrupt = |reason: String| ImageError::Corrupt {
            reference: shown.to_string(),
            reason,
        };
        let config_digest = Digest::parse(&platform_manifest.config.digest).map_err(corrupt)?;
        let config_bytes = self
            .registry
            .small_blob(
                source.endpoint,
                source.repository,
                &config_digest,
                MAX_CONFIG,
                source.auth,
            )
            .await
            .map_err(|e| fetch_error(shown, vec![e]))?;
        let config: manifest::ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| corrupt(format!("bad image config {config_digest}: {e}")))?;
        let (os, arch) = (config.os.as_str(), config.architecture.as_str());
        if (!os.is_empty() && os != "linux") || (!arch.is_empty() && arch != manifest::host_arch())
        {
            return Err(ImageError::NotFound {
                reference: shown.to_string(),
                reason: format!(
                    "the image is for {os}/{arch}; this node runs linux/{}",
                    manifest::host_arch()
                ),
            });
        }
        if config.rootfs.diff_ids.len() != platform_manifest.layers.len() {
            return Err(corrupt(format!(
                "the manifest has {} layers but the config {} diff IDs",
                platform_manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        Ok((config_digest, config_bytes, config))
    }

    /// Fetches the manifest (or index) the reference names from the first endpoint that
    /// has it.
    async fn resolve(
        &self,
        reference: &Reference,
        endpoints: &[Endpoint],
        auth: &Auth,
    ) -> Result<(usize, Fetched), ImageError> {
        let wanted = reference.manifest_reference();
        let mut failures = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            match self
                .registry
                .manifest(endpoint, &reference.repository, &wanted, auth)
                .await
            {
                Ok(fetched) => return Ok((i, fetched)),
                Err(err) => {
                    tracing::debug!(endpoint = %endpoint.name, %err, "manifest not served here");
                    failures.push(err);
                }
            }
        }
        Err(fetch_error(&reference.to_string(), failures))
    }

    /// Makes sure a layer is unpacked on disk; returns the bytes downloaded for it (0 when
    /// it was there already or another pull fetched it).
    async fn ensure_layer(&self, job: LayerJob) -> Result<u64, ImageError> {
        if self.layer_ready(&job.diff_id)? {
            return Ok(0);
        }
        let size = job.size;
        let manager = self.clone_handles();
        let diff_id = job.diff_id.clone();
        self.layers
            .run(diff_id, move || manager.fetch_layer(job), ImageError::Task)
            .await
            .map_err(ImageError::from)?;
        Ok(size)
    }

    fn layer_ready(&self, diff_id: &Digest) -> Result<bool, ImageError> {
        Ok(self.content.has_layer(diff_id)
            && self.store.get::<LayerRecord>(diff_id.as_str())?.is_some())
    }

    fn clone_handles(&self) -> LayerFetcher {
        LayerFetcher {
            content: self.content.clone(),
            store: self.store.clone(),
            registry: self.registry.clone(),
        }
    }
}

/// What a layer fetch needs, owned, so it can run as its own task.
struct LayerFetcher {
    content: super::content::ContentStore,
    store: Arc<crate::store::Store>,
    registry: Arc<super::registry::RegistryClient>,
}

impl LayerFetcher {
    async fn fetch_layer(self, job: LayerJob) -> Result<(), ImageError> {
        let started = Instant::now();
        // Another pull may have finished it while this one waited its turn.
        if self.content.has_layer(&job.diff_id)
            && self
                .store
                .get::<LayerRecord>(job.diff_id.as_str())?
                .is_some()
        {
            return Ok(());
        }
        let mut failures = Vec::new();
        let mut unpacked = None;
        for endpoint in &job.endpoints {
            match self.stream_and_unpack(&job, endpoint).await? {
                Ok(done) => {
                    unpacked = Some(done);
                    break;
                }
                Err(err) => {
                    tracing::warn!(layer = %job.digest, from = %endpoint.name, %err, "layer fetch failed");
                    failures.push(err);
                }
            }
        }
        let Some((stats, target)) = unpacked else {
            return Err(fetch_error(&job.reference, failures));
        };
        if stats.diff_id != job.diff_id {
            tokio::task::spawn_blocking(move || drop(target));
            return Err(ImageError::Corrupt {
                reference: job.reference.clone(),
                reason: format!(
                    "layer {} unpacks to diff ID {}, but the config says {}",
                    job.digest, stats.diff_id, job.diff_id
                ),
            });
        }
        self.content
            .commit_layer(target, &job.diff_id)
            .map_err(ImageError::io(&self.content.layer_path(&job.diff_id)))?;
        self.store.put(&LayerRecord {
            diff_id: job.diff_id.to_string(),
            bytes: stats.bytes,
            inodes: stats.inodes,
            created_at_ns: now_ns(),
        })?;
        tracing::debug!(
            layer = %job.digest,
            bytes = job.size,
            compression = ?stats.compression,
            total_ms = started.elapsed().as_millis() as u64,
            "layer ready"
        );
        // Counted here, once, whichever pulls shared the download.
        crate::metrics::pulled_bytes(job.size);
        Ok(())
    }
}

impl LayerFetcher {
    /// Downloads the layer's blob from `endpoint` into a landing file and unpacks it from
    /// there as it grows ([`super::landing`]), into a temporary directory that is kept
    /// only if the whole blob came and matched its digest. The outer error ends the pull
    /// (the blob matched and is no layer, or the host failed); the inner one is this
    /// endpoint's failure (unreachable, wrong bytes), for the next endpoint to make good.
    async fn stream_and_unpack(
        &self,
        job: &LayerJob,
        endpoint: &Endpoint,
    ) -> Result<Result<Unpacked, FetchError>, ImageError> {
        let io = |source| ImageError::Io {
            path: self.content.root().to_path_buf(),
            source,
        };
        let download = self.content.temp_dir().map_err(io)?;
        let target = self.content.temp_dir().map_err(io)?;
        let (mut landing, reader) =
            super::landing::open(&download.path().join("blob")).map_err(io)?;
        let unpacking = tokio::task::spawn_blocking(move || {
            unpack::unpack(reader, target.path()).map(|stats| (stats, target))
        });
        let fetched = self
            .registry
            .stream_blob(
                endpoint,
                &job.repository,
                &job.digest,
                job.size,
                &mut landing,
                &job.auth,
            )
            .await;
        landing.finish(fetched.is_ok());
        let unpacked = unpacking
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?;
        // Both directories go in the blocking pool: an unpacked layer can be large.
        let discard = |dirs: Vec<super::content::TempDir>| {
            tokio::task::spawn_blocking(move || drop(dirs));
        };
        match (fetched, unpacked) {
            (Ok(()), Ok(done)) => {
                discard(vec![download]);
                Ok(Ok(done))
            }
            // All of the blob came and matched, and it is no layer.
            (Ok(()), Err(err)) => {
                discard(vec![download]);
                Err(ImageError::Corrupt {
                    reference: job.reference.clone(),
                    reason: format!("layer {}: {err}", job.digest),
                })
            }
            // What the unpacking made of bytes that did not come whole or right goes.
            (Err(err), unpacked) => {
                let mut dirs = vec![download];
                dirs.extend(unpacked.ok().map(|(_, target)| target));
                discard(dirs);
                Ok(Err(err))
            }
        }
    }
}

/// A layer unpacked into its temporary directory.
type Unpacked = (unpack::UnpackStats, super::content::TempDir);

/// The layers to fetch: one job each, from the endpoints in their order.
fn layer_jobs(
    source: &Source<'_>,
    endpoints: &[Endpoint],
    platform_manifest: &manifest::Manifest,
    config: &manifest::ImageConfig,
) -> Result<Vec<LayerJob>, ImageError> {
    let corrupt = |reason: String| ImageError::Corrupt {
        reference: source.shown.to_string(),
        reason,
    };
    let mut jobs = Vec::new();
    for (layer, diff_id) in platform_manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        jobs.push(LayerJob {
            reference: source.shown.to_string(),
            repository: source.repository.to_string(),
            endpoints: endpoints.to_vec(),
            auth: source.auth.clone(),
            digest: Digest::parse(&layer.digest).map_err(corrupt)?,
            size: layer.size,
            diff_id: Digest::parse(diff_id).map_err(corrupt)?,
        });
    }
    Ok(jobs)
}

fn unsupported(reference: &str, reason: String) -> ImageError {
    ImageError::Unsupported {
        reference: reference.to_string(),
        reason,
    }
}

/// Turns the failures of every endpoint tried into one error. Content that did not match
/// its digest anywhere decides the code; otherwise the last endpoint does (the registry
/// itself; mirrors are a best effort). The message lists every failure.
fn fetch_error(reference: &str, failures: Vec<FetchError>) -> ImageError {
    let reason = failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let reference = reference.to_string();
    let decisive = failures
        .iter()
        .find(|f| matches!(f, FetchError::DigestMismatch { .. }))
        .or(failures.last());
    match decisive {
        Some(FetchError::NotFound { .. }) => ImageError::NotFound { reference, reason },
        Some(FetchError::Unauthorized { .. }) => ImageError::Unauthorized { reference, reason },
        Some(FetchError::DigestMismatch { .. }) => ImageError::Corrupt { reference, reason },
        Some(FetchError::Status { status, .. }) if *status >= 500 => {
            ImageError::Unavailable { reference, reason }
        }
        Some(FetchError::Status { .. }) | Some(FetchError::Invalid { .. }) => {
            ImageError::Registry { reference, reason }
        }
        Some(FetchError::Local { path, reason }) => ImageError::Io {
            path: path.into(),
            source: std::io::Error::other(reason.clone()),
        },
        Some(FetchError::Unreachable { .. }) | None => {
            ImageError::Unavailable { reference, reason }
        }
    }
}
