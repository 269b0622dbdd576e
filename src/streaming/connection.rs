//! What a transport hands over once the HTTP server ([`super::server`]) has upgraded a
//! request, whether to SPDY ([`super::spdy`]) or to WebSocket ([`super::websocket`]),
//! and what the stream servers ([`super::remotecommand`], [`super::attach`],
//! [`super::port_forward`]) read from it: the [`Connection`] with its negotiated protocol,
//! the [`Options`] an exec or attach asked for, and the `channel.k8s.io` [`version`]
//! that decides which streams exist. It names nothing of the HTTP server, so the
//! transports depend on it rather than on the server or on each other.

use super::spdy::session::{Session, Stream};

/// An upgraded connection and what it carries.
pub struct Connection {
    /// The negotiated `X-Stream-Protocol-Version`.
    pub protocol: String,
    pub session: Session,
    /// The streams the client opens, in order.
    pub streams: tokio::sync::mpsc::Receiver<Stream>,
}

/// Which streams the request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The protocol's version number: 5 for `v5.channel.k8s.io` … 1 for `channel.k8s.io`.
pub fn version(protocol: &str) -> u8 {
    protocol
        .strip_prefix('v')
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}
