//! Garbage collection of image content: layers and blobs that no image record, no
//! container and no sandbox (a pause image rootfs) uses any more. A container or sandbox
//! keeps its layers (recorded in its own record) even after its image is removed, so
//! removing an image never breaks what runs from it.

use std::collections::HashSet;

use super::digest::Digest;
use super::{ImageError, ImageManager};
use crate::store::{ContainerRecord, LayerRecord, SandboxRecord};

/// What one collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub layers: usize,
    pub blobs: usize,
}

impl ImageManager {
    /// Starts a collection in the background (api.proto: RemoveImage may reclaim disk
    /// space asynchronously); a failure is logged.
    pub fn collect_garbage_soon(self: &std::sync::Arc<Self>) {
        let manager = self.clone();
        tokio::spawn(async move {
            if let Err(err) = manager.collect_garbage().await {
                tracing::warn!(%err, "image garbage collection failed");
            }
        });
    }

    /// Removes every layer and blob nothing uses. Pulls wait while it runs.
    pub async fn collect_garbage(&self) -> Result<Collected, ImageError> {
        let _exclusive = self.gc_lock.write().await;
        let images = self.list();
        let containers: Vec<ContainerRecord> = self.store.list()?;
        let sandboxes: Vec<SandboxRecord> = self.store.list()?;
        let live_layers: HashSet<&str> = images
            .iter()
            .flat_map(|i| i.layers.iter())
            .chain(containers.iter().flat_map(|c| c.layers.iter()))
            .chain(sandboxes.iter().flat_map(|s| s.rootfs_layers.iter()))
            .map(String::as_str)
            .collect();
        let live_blobs: HashSet<&str> = images
            .iter()
            .flat_map(|i| [Some(&i.id), Some(&i.manifest), i.index.as_ref()])
            .flatten()
            .map(String::as_str)
            .collect();

        let mut collected = Collected::default();
        let mut dead_layers = Vec::new();
        for record in self.store.list::<LayerRecord>()? {
            if !live_layers.contains(record.diff_id.as_str()) {
                dead_layers.push(record.diff_id);
            }
        }
        for diff_id in &dead_layers {
            // The record goes first: a crash between the two leaves a directory without
            // a record, which start-up removes.
            self.store.delete::<LayerRecord>(diff_id)?;
            if let Ok(digest) = Digest::parse(diff_id) {
                let content = self.content.clone();
                let path = content.layer_path(&digest);
                tokio::task::spawn_blocking(move || content.remove_layer(&digest))
                    .await
                    .map_err(|e| ImageError::Task(e.to_string()))?
                    .map_err(ImageError::io(&path))?;
            }
            collected.layers += 1;
        }
        let (blobs, _) = self
            .content
            .blobs_on_disk()
            .map_err(ImageError::io(self.content.root()))?;
        for blob in blobs {
            if !live_blobs.contains(blob.as_str()) {
                self.content
                    .remove_blob(&blob)
                    .map_err(ImageError::io(&self.content.blob_path(&blob)))?;
                collected.blobs += 1;
            }
        }
        if collected != Collected::default() {
            tracing::info!(
                layers = collected.layers,
                blobs = collected.blobs,
                "image content collected"
            );
        }
        Ok(collected)
    }
}
