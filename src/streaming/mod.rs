//! The streaming server behind `Exec`, `Attach` and `PortForward` (`kubectl exec -ti`,
//! `kubectl attach`, `kubectl port-forward`, `crictl exec -it`). The wire protocols are
//! described in `docs/streaming-protocol.md`.
//!
//! Its parts:
//! - [`tokens`]: the one-time tokens of the URLs the RPCs return;
//! - [`server`]: the HTTP server, protocol negotiation and the upgrade to SPDY or
//!   WebSocket;
//! - the transports under it: [`spdy`] (SPDY/3.1 frames and header compression, and the
//!   server side of a SPDY connection: streams opened by the client, answered, routed,
//!   closed) and [`websocket`] (the same streams as WebSocket channels);
//! - [`remotecommand`]: the `channel.k8s.io` stream set (error, stdin, stdout, stderr,
//!   resize) and its exit status;
//! - [`connection`]: what the transports hand over and the stream servers read, the
//!   upgraded connection and the streams a request asked for;
//! - [`attach`]: an exec or attach client's streams bridged to a container monitor's
//!   attach socket;
//! - [`port_forward`]: the port-forward stream pairs, each a TCP connection made inside
//!   the pod's network namespace.
//!
//! Dependencies point one way: `server` → `websocket`, `spdy`, `connection`, `tokens`;
//! `websocket`, `remotecommand` → `connection`, `spdy`; `attach`, `port_forward` →
//! `remotecommand`, `connection`, `spdy` (and `attach` → `monitor::attach`). No
//! transport names the server (`tests/module_graph.rs` holds the crate to it). The RPCs that leave requests here are
//! `server/container_exec.rs`, `container_attach.rs` and `sandbox_port_forward.rs`.

pub mod attach;
pub mod connection;
pub mod port_forward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod tokens;
pub mod websocket;

use crate::proto::{AttachRequest, ExecRequest, PortForwardRequest};

/// Which kind of stream a URL serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    pub fn path(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }
}

/// A validated request waiting for its client.
#[derive(Debug, Clone)]
pub enum StreamRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl StreamRequest {
    pub fn kind(&self) -> Kind {
        match self {
            StreamRequest::Exec(_) => Kind::Exec,
            StreamRequest::Attach(_) => Kind::Attach,
            StreamRequest::PortForward(_) => Kind::PortForward,
        }
    }

    /// What the request is for, in words for an error: `container <id>` or
    /// `pod sandbox <id>`.
    pub fn target(&self) -> String {
        match self {
            StreamRequest::Exec(r) => format!("container {}", r.container_id),
            StreamRequest::Attach(r) => format!("container {}", r.container_id),
            StreamRequest::PortForward(r) => format!("pod sandbox {}", r.pod_sandbox_id),
        }
    }

    /// The streams an exec or attach asked for; `None` for port-forward.
    pub fn options(&self) -> Option<connection::Options> {
        let (stdin, stdout, stderr, tty) = match self {
            StreamRequest::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            StreamRequest::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            StreamRequest::PortForward(_) => return None,
        };
        Some(connection::Options {
            stdin,
            stdout,
            stderr,
            tty,
        })
    }
}
