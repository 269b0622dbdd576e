//! RemoveImage and ImageFsInfo (the image store and the containers' writable layers).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::CriService;
use crate::error::{Error, Result};
use crate::proto::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoResponse, UInt64Value};

impl CriService {
    /// Removes an image with all its tags; an unknown image is not an error (api.proto:
    /// RemoveImage is idempotent). Disk space is reclaimed asynchronously. An image that
    /// a container mounts as an image volume stays (FailedPrecondition naming it, as
    /// CRI-O answers); a container's own image may go, as in containerd: its layers stay
    /// while the container does.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("image.image", "no image named"));
        }
        if let Some(image) = self.images.lookup(name)? {
            let mut users = self
                .containers
                .ids_where(|r| r.image_volumes.iter().any(|(_, id)| *id == image.id));
            users.extend(self.creating_with_image_volume(&image.id));
            if let Some(user) = users.first() {
                return Err(Error::WrongState {
                    kind: "image",
                    id: image.id,
                    reason: format!(
                        "container {user} mounts it as an image volume; remove the container first"
                    ),
                });
            }
        }
        self.images.remove(name)?;
        Ok(())
    }

    /// Bytes and inodes used by the image store, and by the containers' writable
    /// layers. The kubelet's eviction manager treats the two as one filesystem when their
    /// mountpoints are the same string (`IsContainerFsSeparateFromImageFs`), so the
    /// containers' is the images' own when both directories are on one filesystem (the
    /// usual case: both under `root`), and the containers' directory when an operator
    /// mounted a disk of its own there.
    pub fn image_fs_info(&self) -> Result<ImageFsInfoResponse> {
        let (bytes, inodes) = self.images.usage()?;
        let images = self.images.store_root();
        let now = crate::clock::now_ns();
        let usage = |mountpoint: &Path, bytes, inodes| FilesystemUsage {
            timestamp: now,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: mountpoint.display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        };
        let (layer_bytes, layer_inodes) = self
            .containers
            .list()?
            .iter()
            .filter_map(|r| {
                crate::stats::disk_usage(&self.containers.layer_dir(&r.id).join("upper"))
            })
            .fold((0, 0), |(b, i), (bytes, inodes)| (b + bytes, i + inodes));
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![usage(images, bytes, inodes)],
            container_filesystems: vec![usage(
                &self.container_fs_mountpoint(images),
                layer_bytes,
                layer_inodes,
            )],
        })
    }

    /// Where the containers' writable layers are, as a filesystem: see
    /// [`CriService::image_fs_info`]. `images` is the image store's mountpoint.
    pub(super) fn container_fs_mountpoint(&self, images: &Path) -> PathBuf {
        let layers = self.containers.layers_root();
        // Before the first container, its directory is not there yet: it will be made in
        // the root.
        let existing = if layers.exists() {
            layers
        } else {
            self.config.root.as_path()
        };
        let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        match (device(images), device(existing)) {
            (Some(a), Some(b)) if a != b => layers.to_path_buf(),
            _ => images.to_path_buf(),
        }
    }
}
