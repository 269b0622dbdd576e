//! The streaming HTTP server: `/{exec,attach,portforward}/<token>` upgraded to SPDY/3.1
//! after protocol negotiation, as the kubelet's own server does (docs/streaming-protocol.md
//! §2), or to WebSocket ([`super::websocket`]) when the client asks for it. The request
//! behind the token is taken (once) and handed with the live [`Connection`] (defined in
//! [`super::connection`], which the transports share) to the [`Serve`] callback.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::connection::Connection;
use super::tokens::Tokens;
use super::{Kind, StreamRequest};

/// The exec and attach protocols, newest first.
pub const REMOTECOMMAND_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward protocol over SPDY.
pub const PORTFORWARD_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The pause after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves one upgraded connection for its request.
pub type Serve = Arc<
    dyn Fn(StreamRequest, Connection) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// The first protocol the client offers that the server supports (the client's order
/// wins). Offers may be repeated headers or comma-separated lists.
pub fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    offered
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .find_map(|p| supported.iter().copied().find(|s| *s == p))
}

fn text(status: StatusCode, message: String) -> Response<String> {
    let mut response = Response::new(message);
    *response.status_mut() = status;
    response
}

/// A 101 answer upgrading to `protocol`.
fn switching_to(protocol: &'static str) -> Response<String> {
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(header::UPGRADE, header::HeaderValue::from_static(protocol));
    response
}

fn header_has(request: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    request.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Answers one HTTP request: an upgrade, or why not.
fn handle(
    mut request: Request<Incoming>,
    tokens: &Tokens<StreamRequest>,
    serve: &Serve,
    idle: std::time::Duration,
) -> Response<String> {
    let path = request.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let kind = match parts.next() {
        Some("exec") => Kind::Exec,
        Some("attach") => Kind::Attach,
        Some("portforward") => Kind::PortForward,
        _ => return text(StatusCode::NOT_FOUND, format!("no such path {path}\n")),
    };
    let token = parts.next().unwrap_or("");
    let Some(pending) = tokens.take(token).filter(|p| p.kind() == kind) else {
        return text(
            StatusCode::NOT_FOUND,
            "unknown or expired streaming token\n".to_string(),
        );
    };
    if header_has(&request, header::UPGRADE, "websocket") {
        return upgrade_websocket(request, pending, serve, idle);
    }
    let supported: &[&'static str] = match kind {
        Kind::PortForward => &PORTFORWARD_PROTOCOLS,
        Kind::Exec | Kind::Attach => &REMOTECOMMAND_PROTOCOLS,
    };
    let offered = header_values(&request, "x-stream-protocol-version");
    let Some(protocol) = negotiate(&offered, supported) else {
        let mut response = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server accepts {supported:?}\n"
            ),
        );
        for p in supported {
            response.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                header::HeaderValue::from_static(p),
            );
        }
        return response;
    };
    if !header_has(&request, header::CONNECTION, "upgrade")
        || !header_has(&request, header::UPGRADE, "spdy/3.1")
    {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (SPDY/3.1 expected)\n"
                .to_string(),
        );
    }
    let upgrade = hyper::upgrade::on(&mut request);
    let serve = serve.clone();
    tokio::spawn(async move {
        let Some(io) = upgraded(upgrade, "streaming").await else {
            return;
        };
        let (session, streams) = super::spdy::session::serve(io, idle);
        serve(
            pending,
            Connection {
                protocol: protocol.to_string(),
                session,
                streams,
            },
        )
        .await;
    });
    let mut response = switching_to("SPDY/3.1");
    let headers = response.headers_mut();
    headers.insert(
        "x-stream-protocol-version",
        header::HeaderValue::from_static(protocol),
    );
    response
}

/// The WebSocket handshake (RFC 6455) with the Kubernetes subprotocols; no offer at all
/// means the plain binary protocol.
fn upgrade_websocket(
    mut request: Request<Incoming>,
    pending: StreamRequest,
    serve: &Serve,
    idle: std::time::Duration,
) -> Response<String> {
    use super::websocket::{Channels, PORTFORWARD_PROTOCOLS, REMOTECOMMAND_PROTOCOLS};
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: no Sec-WebSocket-Key\n".to_string(),
        );
    };
    let offered = header_values(&request, "sec-websocket-protocol");
    let (supported, fallback): (&[&'static str], &'static str) = match pending.kind() {
        Kind::PortForward => (&PORTFORWARD_PROTOCOLS, ""),
        Kind::Exec | Kind::Attach => (&REMOTECOMMAND_PROTOCOLS, "channel.k8s.io"),
    };
    let chosen = if offered.is_empty() {
        None
    } else {
        match negotiate(&offered, supported) {
            Some(p) => Some(p),
            None => {
                return text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: client offers {offered:?}, server accepts {supported:?}\n"
                    ),
                );
            }
        }
    };
    let channels = match &pending {
        StreamRequest::Exec(_) | StreamRequest::Attach(_) => {
            Channels::RemoteCommand(pending.options().unwrap_or_default())
        }
        StreamRequest::PortForward(r) => Channels::PortForward(
            r.port
                .iter()
                .filter_map(|p| u16::try_from(*p).ok())
                .collect(),
        ),
    };
    let protocol = chosen.unwrap_or(fallback);
    let upgrade = hyper::upgrade::on(&mut request);
    let serve = serve.clone();
    tokio::spawn(async move {
        let Some(io) = upgraded(upgrade, "websocket").await else {
            return;
        };
        let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let connection = super::websocket::serve(socket, protocol, channels, idle);
        serve(pending, connection).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = switching_to("websocket");
    let headers = response.headers_mut();
    if let Ok(value) = header::HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", value);
    }
    if let Some(p) = chosen {
        headers.insert(
            "sec-websocket-protocol",
            header::HeaderValue::from_static(p),
        );
    }
    response
}

/// Binds the streaming server's address (port 0 picks one).
pub async fn bind(address: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Accepts connections until the task is dropped; upgraded connections idle for `idle`
/// are closed.
pub async fn run(
    listener: TcpListener,
    tokens: Arc<Tokens<StreamRequest>>,
    serve: Serve,
    idle: std::time::Duration,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                // Out of descriptors, most likely: wait for some to be freed rather than
                // spinning.
                tracing::warn!(%err, "streaming server cannot accept");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let tokens = tokens.clone();
        let serve = serve.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = handle(request, &tokens, &serve, idle);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

/// The connection once the 101 has gone out; `None` (logged) when the upgrade failed.
async fn upgraded(
    upgrade: hyper::upgrade::OnUpgrade,
    what: &str,
) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    match upgrade.await {
        Ok(upgraded) => Some(TokioIo::new(upgraded)),
        Err(err) => {
            tracing::debug!(%err, "{what} upgrade failed");
            None
        }
    }
}

/// Every value of header `name` that is text, in order.
fn header_values<B>(request: &Request<B>, name: &str) -> Vec<String> {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_order_wins() {
        let offered = vec![
            "v5.channel.k8s.io".to_string(),
            "v4.channel.k8s.io, channel.k8s.io".to_string(),
        ];
        assert_eq!(
            negotiate(&offered, &REMOTECOMMAND_PROTOCOLS),
            Some("v5.channel.k8s.io")
        );
        let older = vec!["v9.channel.k8s.io, v3.channel.k8s.io".to_string()];
        assert_eq!(
            negotiate(&older, &REMOTECOMMAND_PROTOCOLS),
            Some("v3.channel.k8s.io")
        );
        assert_eq!(negotiate(&[], &REMOTECOMMAND_PROTOCOLS), None);
        assert_eq!(
            negotiate(&["channel.k8s.io".to_string()], &PORTFORWARD_PROTOCOLS),
            None
        );
    }
}
