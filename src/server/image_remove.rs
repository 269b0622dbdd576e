//! RemoveImage and ImageFsInfo.

use super::CriService;
use crate::error::{Error, Result};
use crate::proto::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoResponse, UInt64Value};

impl CriService {
    /// Removes an image with all its tags; an unknown image is not an error (api.proto:
    /// RemoveImage is idempotent). Disk space is reclaimed asynchronously.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("image.image", "no image named"));
        }
        self.images.remove(name)?;
        Ok(())
    }

    /// Bytes and inodes used by the image store.
    pub fn image_fs_info(&self) -> Result<ImageFsInfoResponse> {
        let (mountpoint, bytes, inodes) = self.images.usage()?;
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp: crate::image::now_ns(),
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: mountpoint.display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: bytes }),
                inodes_used: Some(UInt64Value { value: inodes }),
            }],
            container_filesystems: Vec::new(),
        })
    }
}
