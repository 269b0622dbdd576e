//! `runtime.v1.ImageService` over gRPC: converts, validates and delegates to
//! [`CriService`]. No domain logic lives here.

use std::sync::Arc;

use tonic::Request;

use super::{RpcResult, RpcStream, unimplemented};
use crate::proto::image_service_server::ImageService;
use crate::proto::*;
use crate::server::CriService;

/// The gRPC face of the image service.
#[derive(Clone)]
pub struct ImageApi {
    #[allow(dead_code)] // used as the image RPCs land
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
        _request: Request<ListImagesRequest>,
    ) -> RpcResult<ListImagesResponse> {
        Err(unimplemented("ListImages"))
    }
    async fn stream_images(
        &self,
        _request: Request<StreamImagesRequest>,
    ) -> RpcResult<Self::StreamImagesStream> {
        Err(unimplemented("StreamImages"))
    }
    async fn image_status(
        &self,
        _request: Request<ImageStatusRequest>,
    ) -> RpcResult<ImageStatusResponse> {
        Err(unimplemented("ImageStatus"))
    }
    async fn pull_image(
        &self,
        _request: Request<PullImageRequest>,
    ) -> RpcResult<PullImageResponse> {
        Err(unimplemented("PullImage"))
    }
    async fn remove_image(
        &self,
        _request: Request<RemoveImageRequest>,
    ) -> RpcResult<RemoveImageResponse> {
        Err(unimplemented("RemoveImage"))
    }
    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> RpcResult<ImageFsInfoResponse> {
        Err(unimplemented("ImageFsInfo"))
    }
}
