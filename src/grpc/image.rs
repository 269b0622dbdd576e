//! `runtime.v1.ImageService` over gRPC: converts, validates and delegates to
//! [`CriService`]. No domain logic lives here.

use std::sync::Arc;

use tonic::{Request, Response};

use super::{RpcResult, RpcStream};
use crate::proto::image_service_server::ImageService;
use crate::proto::*;
use crate::server::CriService;

/// The gRPC face of the image service.
#[derive(Clone)]
pub struct ImageApi {
    service: Arc<CriService>,
}

impl ImageApi {
    pub fn new(service: Arc<CriService>) -> Self {
        ImageApi { service }
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    type StreamImagesStream = RpcStream<StreamImagesResponse>;

    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> RpcResult<ListImagesResponse> {
        let filter = request.into_inner().filter;
        Ok(Response::new(self.service.list_images(filter)?))
    }

    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> RpcResult<Self::StreamImagesStream> {
        let filter = request.into_inner().filter;
        let images = self.service.list_images(filter)?.images;
        // api.proto: each response holds at least one item; an empty list is an empty
        // stream.
        super::chunked(images, |images| StreamImagesResponse { images })
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> RpcResult<ImageStatusResponse> {
        Ok(Response::new(
            self.service.image_status(request.into_inner())?,
        ))
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> RpcResult<PullImageResponse> {
        Ok(Response::new(
            self.service.pull_image(request.into_inner()).await?,
        ))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> RpcResult<RemoveImageResponse> {
        let name = request
            .into_inner()
            .image
            .map(|s| s.image)
            .unwrap_or_default();
        self.service.remove_image(&name)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> RpcResult<ImageFsInfoResponse> {
        Ok(Response::new(self.service.image_fs_info()?))
    }
}
