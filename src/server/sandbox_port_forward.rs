//! PortForward: the RPC leaves the request under a token of the streaming server and
//! returns its URL; the client's connection is then served by
//! [`crate::streaming::port_forward`], inside the pod's network namespace.

use super::CriService;
use crate::error::{Error, Result};
use crate::proto::PortForwardRequest;
use crate::store::SandboxState;
use crate::streaming::StreamRequest;
use crate::streaming::connection::Connection;

impl CriService {
    /// PortForward: the URL where the client forwards connections to the pod's ports.
    pub fn port_forward(&self, request: PortForwardRequest) -> Result<String> {
        let sandbox = self.ready_sandbox(&request.pod_sandbox_id)?;
        // Over WebSocket each port takes two one-byte channel numbers.
        if request.port.len() > 127 {
            return Err(Error::invalid(
                "port",
                format!("at most 127 ports per request, not {}", request.port.len()),
            ));
        }
        if let Some(bad) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::invalid("port", format!("{bad} is not a TCP port")));
        }
        let mut request = request;
        request.pod_sandbox_id = sandbox.id;
        self.stream_url(StreamRequest::PortForward(request))
    }

    /// `portforward.k8s.io` for the pod: its namespace is checked again now (the pod
    /// may have stopped since the RPC), and only a host-network pod is reached on the
    /// host's loopback.
    pub(super) async fn serve_port_forward(
        &self,
        request: PortForwardRequest,
        connection: Connection,
    ) {
        let sandbox = self
            .sandboxes
            .find(&request.pod_sandbox_id)
            .and_then(|s| self.sandboxes.refresh(s).ok())
            .filter(|s| s.state == SandboxState::Ready);
        let netns = match sandbox {
            Some(s) if host_network(&s) => None,
            Some(s) if s.netns.is_some() => s.netns.map(std::path::PathBuf::from),
            _ => {
                tracing::debug!(sandbox = %request.pod_sandbox_id, "port-forward to a pod that is gone");
                connection.session.go_away().await;
                return;
            }
        };
        crate::streaming::port_forward::serve(connection, netns, request.pod_sandbox_id).await;
    }
}

/// Whether the pod shares the node's network namespace.
fn host_network(sandbox: &crate::store::SandboxRecord) -> bool {
    sandbox
        .pod_config()
        .map_err(|err| tracing::warn!(%err, "taken for a pod with its own network"))
        .unwrap_or_default()
        .linux
        .and_then(|l| l.security_context)
        .and_then(|c| c.namespace_options)
        .is_some_and(|o| o.network == crate::proto::NamespaceMode::Node as i32)
}
