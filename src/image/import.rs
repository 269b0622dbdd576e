//! `berth image import`: loads images from an OCI image layout (a directory) or an OCI
//! archive (a tar of one, as `skopeo copy … oci-archive:` writes) without a registry, for
//! air-gapped nodes. Every blob is checked against its digest, as in a pull.
//!
//! Images are named from their `index.json` annotations (`io.containerd.image.name`, or
//! `org.opencontainers.image.ref.name` when it is a full reference), or by the name the
//! caller gives when the archive holds one image.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::content::TempDir;
use super::digest::{Digest, HashingReader};
use super::manifest::{self, Document};
use super::reference::Reference;
use super::{ImageError, ImageManager, unpack};
use crate::clock::now_ns;
use crate::store::{ImageRecord, LayerRecord};

const LAYOUT_FILE: &str = "oci-layout";
const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

impl ImageManager {
    /// Imports every image of a layout or archive; returns the records made.
    pub async fn import(
        self: &Arc<Self>,
        path: &Path,
        name: Option<String>,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        if !path.is_absolute() {
            return Err(import_error(path, "the path must be absolute"));
        }
        let _gc = self.gc_lock.read().await;
        let manager = self.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || manager.import_blocking(&path, name))
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?
    }

    fn import_blocking(
        &self,
        path: &Path,
        name: Option<String>,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let meta = std::fs::metadata(path).map_err(|e| import_error(path, &e.to_string()))?;
        // An archive is unpacked (safely: it is a layer-like tar) into a work directory.
        let _extracted: Option<TempDir>;
        let layout: PathBuf = if meta.is_dir() {
            _extracted = None;
            path.to_path_buf()
        } else {
            let work = self
                .content
                .temp_dir()
                .map_err(ImageError::io(self.content.root()))?;
            let file = File::open(path).map_err(|e| import_error(path, &e.to_string()))?;
            unpack::unpack(file, work.path())
                .map_err(|e| import_error(path, &format!("not a readable tar: {e}")))?;
            let dir = work.path().to_path_buf();
            _extracted = Some(work);
            dir
        };
        if !layout.join(LAYOUT_FILE).is_file() {
            return Err(import_error(
                path,
                "no oci-layout file: not an OCI image layout",
            ));
        }
        let index_bytes = std::fs::read(layout.join("index.json"))
            .map_err(|e| import_error(path, &format!("index.json: {e}")))?;
        let Document::Index(index) = manifest::parse(manifest::OCI_INDEX, &index_bytes)
            .map_err(|e| import_error(path, &format!("index.json: {e}")))?
        else {
            return Err(import_error(path, "index.json is not an index"));
        };
        if name.is_some() && index.manifests.len() != 1 {
            return Err(import_error(
                path,
                "a name can only be given to an archive of one image",
            ));
        }
        let mut imported = Vec::new();
        for descriptor in &index.manifests {
            let image_name = name.clone().or_else(|| {
                NAME_ANNOTATIONS
                    .iter()
                    .filter_map(|key| descriptor.annotations.get(*key))
                    .find(|value| value.contains('/') || value.contains(':'))
                    .cloned()
            });
            let reference = image_name
                .map(|n| {
                    Reference::parse(&n).map_err(|reason| ImageError::InvalidReference {
                        reference: n,
                        reason,
                    })
                })
                .transpose()?;
            let digest = digest_of(path, &descriptor.digest)?;
            let image = self.import_one(path, &layout, &digest, reference.as_ref())?;
            imported.push(image);
        }
        Ok(imported)
    }

    /// Imports the image whose manifest (or index) has `digest`.
    fn import_one(
        &self,
        archive: &Path,
        layout: &Path,
        digest: &Digest,
        reference: Option<&Reference>,
    ) -> Result<ImageRecord, ImageError> {
        let top_bytes = read_verified(archive, layout, digest, super::registry::MAX_MANIFEST)?;
        let (platform_manifest, manifest_digest, manifest_bytes, index) =
            match manifest::parse("", &top_bytes).map_err(|e| import_error(archive, &e))? {
                Document::Manifest(m) => (m, digest.clone(), top_bytes.clone(), None),
                Document::Index(index) => {
                    let chosen = manifest::select_platform(&index).ok_or_else(|| {
                        import_error(
                            archive,
                            &format!("no linux/{} image in it", manifest::host_arch()),
                        )
                    })?;
                    let chosen_digest = digest_of(archive, &chosen.digest)?;
                    let bytes = read_verified(
                        archive,
                        layout,
                        &chosen_digest,
                        super::registry::MAX_MANIFEST,
                    )?;
                    let Document::Manifest(m) = manifest::parse(&chosen.media_type, &bytes)
                        .map_err(|e| import_error(archive, &e))?
                    else {
                        return Err(import_error(archive, "an index inside an index"));
                    };
                    (m, chosen_digest, bytes, Some(digest.clone()))
                }
            };
        let config_digest = digest_of(archive, &platform_manifest.config.digest)?;
        let config_bytes = read_verified(archive, layout, &config_digest, 16 << 20)?;
        let config: manifest::ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| import_error(archive, &format!("bad image config: {e}")))?;
        if config.rootfs.diff_ids.len() != platform_manifest.layers.len() {
            return Err(import_error(
                archive,
                "layer count differs between manifest and config",
            ));
        }
        for (layer, diff_id) in platform_manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let blob = digest_of(archive, &layer.digest)?;
            let diff_id = digest_of(archive, diff_id)?;
            self.import_layer(archive, layout, &blob, &diff_id)?;
        }
        let root = self.content.root().to_path_buf();
        for (d, bytes) in [
            (&config_digest, &config_bytes),
            (&manifest_digest, &manifest_bytes),
            (digest, &top_bytes),
        ] {
            self.content
                .write_blob(d, bytes)
                .map_err(ImageError::io(&root))?;
        }
        let image = ImageRecord {
            id: config_digest.to_string(),
            repo_tags: reference.and_then(Reference::tagged).into_iter().collect(),
            repo_digests: reference
                .map(|r| r.with_digest(digest))
                .into_iter()
                .collect(),
            size: platform_manifest.config.size
                + platform_manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            manifest: manifest_digest.to_string(),
            index: index.map(|d| d.to_string()),
            layers: config.rootfs.diff_ids.clone(),
            user: config.config.user.clone(),
            pinned: false,
            created_at_ns: now_ns(),
        };
        let image = self.commit_image(image)?;
        tracing::info!(archive = %archive.display(), id = %image.id, tags = ?image.repo_tags, "image imported");
        Ok(image)
    }

    fn import_layer(
        &self,
        archive: &Path,
        layout: &Path,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<(), ImageError> {
        if self.content.has_layer(diff_id)
            && self.store.get::<LayerRecord>(diff_id.as_str())?.is_some()
        {
            return Ok(());
        }
        let path = layout.join("blobs/sha256").join(blob.hex());
        let file =
            File::open(&path).map_err(|e| import_error(archive, &format!("layer {blob}: {e}")))?;
        let (actual, _) = HashingReader::new(file)
            .finish()
            .map_err(|e| import_error(archive, &format!("layer {blob}: {e}")))?;
        if actual != *blob {
            return Err(ImageError::Corrupt {
                reference: archive.display().to_string(),
                reason: format!("layer {blob} has digest {actual}"),
            });
        }
        let target = self
            .content
            .temp_dir()
            .map_err(ImageError::io(self.content.root()))?;
        let file =
            File::open(&path).map_err(|e| import_error(archive, &format!("layer {blob}: {e}")))?;
        let stats = unpack::unpack(file, target.path()).map_err(|e| ImageError::Corrupt {
            reference: archive.display().to_string(),
            reason: format!("layer {blob}: {e}"),
        })?;
        if stats.diff_id != *diff_id {
            return Err(ImageError::Corrupt {
                reference: archive.display().to_string(),
                reason: format!(
                    "layer {blob} unpacks to diff ID {}, the config says {diff_id}",
                    stats.diff_id
                ),
            });
        }
        self.content
            .commit_layer(target, diff_id)
            .map_err(ImageError::io(&self.content.layer_path(diff_id)))?;
        self.store.put(&LayerRecord {
            diff_id: diff_id.to_string(),
            bytes: stats.bytes,
            inodes: stats.inodes,
            created_at_ns: now_ns(),
        })?;
        Ok(())
    }
}

fn import_error(path: &Path, reason: &str) -> ImageError {
    ImageError::Import {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn digest_of(archive: &Path, text: &str) -> Result<Digest, ImageError> {
    Digest::parse(text).map_err(|reason| import_error(archive, &reason))
}

/// Reads a small blob of the layout, refusing one that is too large or does not match.
fn read_verified(
    archive: &Path,
    layout: &Path,
    digest: &Digest,
    limit: u64,
) -> Result<Vec<u8>, ImageError> {
    let path = layout.join("blobs/sha256").join(digest.hex());
    let len = std::fs::metadata(&path)
        .map_err(|e| import_error(archive, &format!("blob {digest}: {e}")))?
        .len();
    if len > limit {
        return Err(import_error(
            archive,
            &format!("blob {digest} is larger than {limit} bytes"),
        ));
    }
    let bytes =
        std::fs::read(&path).map_err(|e| import_error(archive, &format!("blob {digest}: {e}")))?;
    if Digest::of(&bytes) != *digest {
        return Err(ImageError::Corrupt {
            reference: archive.display().to_string(),
            reason: format!("blob {digest} does not match its digest"),
        });
    }
    Ok(bytes)
}
