//! `runtime.v1.RuntimeService` over gRPC: converts, validates and delegates to
//! [`CriService`]. No domain logic lives here.

use std::sync::Arc;

use tonic::{Request, Response};

use super::{RpcResult, RpcStream};
use crate::proto::runtime_service_server::RuntimeService;
use crate::proto::*;
use crate::server::CriService;

/// The gRPC face of the runtime service.
#[derive(Clone)]
pub struct RuntimeApi {
    service: Arc<CriService>,
}

impl RuntimeApi {
    pub fn new(service: Arc<CriService>) -> Self {
        RuntimeApi { service }
    }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    type GetContainerEventsStream = RpcStream<ContainerEventResponse>;
    type StreamPodSandboxesStream = RpcStream<StreamPodSandboxesResponse>;
    type StreamContainersStream = RpcStream<StreamContainersResponse>;
    type StreamContainerStatsStream = RpcStream<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = RpcStream<StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = RpcStream<StreamPodSandboxMetricsResponse>;

    async fn version(&self, _request: Request<VersionRequest>) -> RpcResult<VersionResponse> {
        Ok(Response::new(self.service.version()))
    }

    async fn status(&self, request: Request<StatusRequest>) -> RpcResult<StatusResponse> {
        let verbose = request.into_inner().verbose;
        Ok(Response::new(self.service.status(verbose)?))
    }

    async fn runtime_config(
        &self,
        _request: Request<RuntimeConfigRequest>,
    ) -> RpcResult<RuntimeConfigResponse> {
        Ok(Response::new(self.service.runtime_config()))
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> RpcResult<UpdateRuntimeConfigResponse> {
        let pod_cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.service.update_pod_cidr(&pod_cidr)?;
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> RpcResult<ExecResponse> {
        let url = self.service.exec(request.into_inner())?;
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(&self, request: Request<AttachRequest>) -> RpcResult<AttachResponse> {
        let url = self.service.attach(request.into_inner())?;
        Ok(Response::new(AttachResponse { url }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> RpcResult<RunPodSandboxResponse> {
        let pod_sandbox_id = self.service.run_pod_sandbox(request.into_inner()).await?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> RpcResult<StopPodSandboxResponse> {
        let id = request.into_inner().pod_sandbox_id;
        self.service.stop_pod_sandbox(&id).await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> RpcResult<RemovePodSandboxResponse> {
        let id = request.into_inner().pod_sandbox_id;
        self.service.remove_pod_sandbox(&id).await?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> RpcResult<PodSandboxStatusResponse> {
        let request = request.into_inner();
        let status = self
            .service
            .pod_sandbox_status(&request.pod_sandbox_id, request.verbose)?;
        Ok(Response::new(status))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> RpcResult<ListPodSandboxResponse> {
        let items = self
            .service
            .list_pod_sandboxes(request.into_inner().filter)?;
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn stream_pod_sandboxes(
        &self,
        request: Request<StreamPodSandboxesRequest>,
    ) -> RpcResult<Self::StreamPodSandboxesStream> {
        let items = self
            .service
            .list_pod_sandboxes(request.into_inner().filter)?;
        super::chunked(items, |pod_sandboxes| StreamPodSandboxesResponse {
            pod_sandboxes,
        })
    }
    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> RpcResult<CreateContainerResponse> {
        let container_id = self.service.create_container(request.into_inner()).await?;
        Ok(Response::new(CreateContainerResponse { container_id }))
    }
    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> RpcResult<StartContainerResponse> {
        let id = request.into_inner().container_id;
        self.service.start_container(&id).await?;
        Ok(Response::new(StartContainerResponse {}))
    }
    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> RpcResult<StopContainerResponse> {
        let request = request.into_inner();
        self.service
            .stop_container(&request.container_id, request.timeout)
            .await?;
        Ok(Response::new(StopContainerResponse {}))
    }
    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> RpcResult<RemoveContainerResponse> {
        let id = request.into_inner().container_id;
        self.service.remove_container(&id).await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }
    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> RpcResult<ListContainersResponse> {
        let containers = self.service.list_containers(request.into_inner().filter)?;
        Ok(Response::new(ListContainersResponse { containers }))
    }
    async fn stream_containers(
        &self,
        request: Request<StreamContainersRequest>,
    ) -> RpcResult<Self::StreamContainersStream> {
        let containers = self.service.list_containers(request.into_inner().filter)?;
        super::chunked(containers, |containers| StreamContainersResponse {
            containers,
        })
    }
    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> RpcResult<ContainerStatusResponse> {
        let request = request.into_inner();
        let status = self
            .service
            .container_status(&request.container_id, request.verbose)?;
        Ok(Response::new(status))
    }
    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> RpcResult<UpdateContainerResourcesResponse> {
        let request = request.into_inner();
        self.service
            .update_container_resources(&request.container_id, request.linux)
            .await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }
    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> RpcResult<ReopenContainerLogResponse> {
        let id = request.into_inner().container_id;
        self.service.reopen_container_log(&id).await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }
    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> RpcResult<ExecSyncResponse> {
        let response = self.service.exec_sync(request.into_inner()).await?;
        Ok(Response::new(response))
    }
    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> RpcResult<PortForwardResponse> {
        let url = self.service.port_forward(request.into_inner())?;
        Ok(Response::new(PortForwardResponse { url }))
    }
    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> RpcResult<ContainerStatsResponse> {
        let id = request.into_inner().container_id;
        let stats = self.service.container_stats(&id)?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }
    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> RpcResult<ListContainerStatsResponse> {
        let stats = self
            .service
            .list_container_stats(request.into_inner().filter)?;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }
    async fn stream_container_stats(
        &self,
        request: Request<StreamContainerStatsRequest>,
    ) -> RpcResult<Self::StreamContainerStatsStream> {
        let stats = self
            .service
            .list_container_stats(request.into_inner().filter)?;
        super::chunked(stats, |container_stats| StreamContainerStatsResponse {
            container_stats,
        })
    }
    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> RpcResult<PodSandboxStatsResponse> {
        let id = request.into_inner().pod_sandbox_id;
        let stats = self.service.pod_sandbox_stats(&id)?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }
    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> RpcResult<ListPodSandboxStatsResponse> {
        let stats = self
            .service
            .list_pod_sandbox_stats(request.into_inner().filter)?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }
    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<StreamPodSandboxStatsRequest>,
    ) -> RpcResult<Self::StreamPodSandboxStatsStream> {
        let stats = self
            .service
            .list_pod_sandbox_stats(request.into_inner().filter)?;
        super::chunked(stats, |pod_sandbox_stats| StreamPodSandboxStatsResponse {
            pod_sandbox_stats,
        })
    }
    async fn checkpoint_container(
        &self,
        _request: Request<CheckpointContainerRequest>,
    ) -> RpcResult<CheckpointContainerResponse> {
        let why = crate::oci::criu_unusable().await;
        Err(tonic::Status::unimplemented(format!(
            "CheckpointContainer is not implemented: checkpoints need criu, and {why}"
        )))
    }
    async fn get_container_events(
        &self,
        _request: Request<GetEventsRequest>,
    ) -> RpcResult<Self::GetContainerEventsStream> {
        Ok(Response::new(self.service.subscribe_events()))
    }
    async fn list_metric_descriptors(
        &self,
        _request: Request<ListMetricDescriptorsRequest>,
    ) -> RpcResult<ListMetricDescriptorsResponse> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: self.service.list_metric_descriptors(),
        }))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<ListPodSandboxMetricsRequest>,
    ) -> RpcResult<ListPodSandboxMetricsResponse> {
        Ok(Response::new(ListPodSandboxMetricsResponse {
            pod_metrics: self.service.list_pod_sandbox_metrics()?,
        }))
    }
    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<StreamPodSandboxMetricsRequest>,
    ) -> RpcResult<Self::StreamPodSandboxMetricsStream> {
        let metrics = self.service.list_pod_sandbox_metrics()?;
        super::chunked(metrics, |pod_sandbox_metrics| {
            StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })
    }
    async fn update_pod_sandbox_resources(
        &self,
        request: Request<UpdatePodSandboxResourcesRequest>,
    ) -> RpcResult<UpdatePodSandboxResourcesResponse> {
        let request = request.into_inner();
        self.service.update_pod_sandbox_resources(
            &request.pod_sandbox_id,
            request.overhead,
            request.resources,
        )?;
        Ok(Response::new(UpdatePodSandboxResourcesResponse {}))
    }
}
