//! ImageStatus, ListImages and StreamImages: what the kubelet asks before every container
//! and for its image garbage collection. Served from the in-memory image index.

use std::collections::HashMap;

use super::CriService;
use crate::error::{Error, Result};
use crate::image::ImageError;
use crate::proto::{
    Image, ImageFilter, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value,
    ListImagesResponse,
};
use crate::store::ImageRecord;

impl CriService {
    /// The image's status, or no image (not an error: api.proto ImageStatus) when it is
    /// not present.
    pub fn image_status(&self, request: ImageStatusRequest) -> Result<ImageStatusResponse> {
        let name = request.image.map(|spec| spec.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Error::invalid("image.image", "no image named"));
        }
        let Some(record) = self.images.lookup(&name)? else {
            return Ok(ImageStatusResponse::default());
        };
        let mut info = HashMap::new();
        if request.verbose {
            info.insert("info".to_string(), self.verbose_image_info(&record)?);
        }
        Ok(ImageStatusResponse {
            image: Some(to_cri(&record)),
            info,
        })
    }

    /// The images matching the filter (by reference or id), or all of them.
    pub fn list_images(&self, filter: Option<ImageFilter>) -> Result<ListImagesResponse> {
        let wanted = filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .unwrap_or_default();
        let images = if wanted.is_empty() {
            self.images.list().iter().map(to_cri).collect()
        } else {
            self.images.lookup(&wanted)?.iter().map(to_cri).collect()
        };
        Ok(ListImagesResponse { images })
    }

    fn verbose_image_info(&self, record: &ImageRecord) -> Result<String> {
        let config: serde_json::Value = serde_json::from_slice(&self.images.config_json(record)?)
            .map_err(|e| {
            Error::from(ImageError::Corrupt {
                reference: record.id.clone(),
                reason: format!("stored config is not JSON: {e}"),
            })
        })?;
        let layers: Vec<String> = self
            .images
            .layer_paths(record)?
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let info = serde_json::json!({
            "imageSpec": config,
            "manifestDigest": record.manifest,
            "indexDigest": record.index,
            "diffIDs": record.layers,
            "layerPaths": layers,
        });
        Ok(info.to_string())
    }
}

/// The CRI view of an image record.
pub fn to_cri(record: &ImageRecord) -> Image {
    let (uid, username) = split_user(&record.user);
    Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: record.id.clone(),
            ..Default::default()
        }),
        pinned: record.pinned,
    }
}

/// The image config's `User` (`name`, `uid`, `uid:gid`, `name:group`) as the CRI's
/// mutually exclusive uid or username.
fn split_user(user: &str) -> (Option<i64>, String) {
    let user = user.split(':').next().unwrap_or("");
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_user;

    #[test]
    fn users() {
        assert_eq!(split_user(""), (None, String::new()));
        assert_eq!(split_user("0"), (Some(0), String::new()));
        assert_eq!(split_user("1000:1000"), (Some(1000), String::new()));
        assert_eq!(split_user("nobody"), (None, "nobody".to_string()));
        assert_eq!(split_user("app:staff"), (None, "app".to_string()));
    }
}
