//! PullImage.

use super::CriService;
use crate::error::{Error, Result};
use crate::image::Auth;
use crate::proto::{AuthConfig, PullImageRequest, PullImageResponse};

impl CriService {
    /// Pulls the image and returns its id (`image_ref`), the config digest that Image.id
    /// also carries (api.proto: the two must match).
    pub async fn pull_image(&self, request: PullImageRequest) -> Result<PullImageResponse> {
        let name = request.image.map(|spec| spec.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Error::invalid("image.image", "no image named"));
        }
        let auth = auth_from_cri(request.auth.as_ref())?;
        let image_ref = self.images.pull(&name, auth).await?;
        Ok(PullImageResponse { image_ref })
    }
}

fn auth_from_cri(auth: Option<&AuthConfig>) -> Result<Auth> {
    let Some(a) = auth else {
        return Ok(Auth::Anonymous);
    };
    Auth::from_cri(
        &a.username,
        &a.password,
        &a.auth,
        &a.identity_token,
        &a.registry_token,
    )
    .map_err(|reason| Error::invalid("auth", reason))
}
