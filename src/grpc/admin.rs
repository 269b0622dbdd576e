//! `berth.admin.v1.Admin` over gRPC: berth's own operations that the CRI has no RPC for.

use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Response};

use super::RpcResult;
use crate::error::Error;
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{ImportImageRequest, ImportImageResponse, ImportedImage};
use crate::server::CriService;

/// The gRPC face of the admin service.
#[derive(Clone)]
pub struct AdminApi {
    service: Arc<CriService>,
}

impl AdminApi {
    pub fn new(service: Arc<CriService>) -> Self {
        AdminApi { service }
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn import_image(
        &self,
        request: Request<ImportImageRequest>,
    ) -> RpcResult<ImportImageResponse> {
        let request = request.into_inner();
        let path = Path::new(&request.path);
        if !path.is_absolute() {
            return Err(Error::invalid("path", "must be an absolute path on the node").into());
        }
        let name = Some(request.name).filter(|n| !n.is_empty());
        let images = self
            .service
            .images()
            .import(path, name)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(ImportImageResponse {
            images: images
                .into_iter()
                .map(|i| ImportedImage {
                    id: i.id,
                    repo_tags: i.repo_tags,
                })
                .collect(),
        }))
    }
}
