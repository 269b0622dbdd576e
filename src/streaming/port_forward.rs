//! Port forwarding on the streaming server's side (`portforward.k8s.io`): the client's
//! error and data streams are paired by `requestid`; each pair is one TCP connection to
//! `127.0.0.1:PORT` made inside the pod's network namespace, ended when the pod's side
//! ends; a failure is written on the error stream. A pair whose second stream does not
//! come within the creation timeout is given up, and the client told.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::streaming::connection::Connection;
use crate::streaming::remotecommand::STREAM_CREATION_TIMEOUT;
use crate::streaming::spdy::session::Stream;

/// Serves one port-forward connection to the pod `pod`, whose network namespace is
/// `netns` (`None`: the host's, for a host-network pod), until the client has no more
/// streams and every forwarded connection has ended.
pub async fn serve(mut connection: Connection, netns: Option<PathBuf>, pod: String) {
    let mut pairs = Pairs::default();
    let mut forwards = tokio::task::JoinSet::new();
    loop {
        // Pairs still waiting for their second stream expire after the timeout.
        let next = match pairs.oldest() {
            Some(since) => {
                let deadline = since + STREAM_CREATION_TIMEOUT;
                match tokio::time::timeout_at(deadline, connection.streams.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        pairs.expire_stale().await;
                        continue;
                    }
                }
            }
            None => connection.streams.recv().await,
        };
        let Some(stream) = next else { break };
        if let Some((port, error, data)) = pairs.add(stream).await {
            let session = connection.session.clone();
            let one = forward(netns.clone(), pod.clone(), port, error, data);
            // A client that goes away takes its connections with it.
            forwards.spawn(async move {
                tokio::select! {
                    () = one => {}
                    () = session.closed() => {}
                }
            });
        }
    }
    // No more streams (a WebSocket carries them all up front): end the connection
    // once every forwarded connection has.
    while forwards.join_next().await.is_some() {}
    connection.session.go_away().await;
}

/// One port-forward request's streams, as they arrive.
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    /// When its first stream came: the other must follow within the creation timeout.
    since: Instant,
}

impl Pair {
    /// Gives up on a pair whose other stream never came, telling the client why.
    async fn expire(self, key: &str) {
        if let Some(error) = &self.error {
            let message = format!("(request={key}) timed out waiting for streams");
            error.writer().send(message.into_bytes()).await;
            error.writer().close().await;
        }
        if let Some(data) = &self.data {
            data.writer().close().await;
        }
    }
}

/// The pairs still waiting for a stream, by request key.
#[derive(Default)]
struct Pairs(HashMap<String, Pair>);

impl Pairs {
    /// When the oldest waiting pair got its first stream.
    fn oldest(&self) -> Option<Instant> {
        self.0.values().map(|p| p.since).min()
    }

    /// Gives up on every pair that waited past the creation timeout.
    async fn expire_stale(&mut self) {
        let now = Instant::now();
        let stale: Vec<String> = self
            .0
            .iter()
            .filter(|(_, p)| now >= p.since + STREAM_CREATION_TIMEOUT)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(pair) = self.0.remove(&key) {
                pair.expire(&key).await;
            }
        }
    }

    /// Takes a new stream: the port and both streams once its pair is complete. A
    /// stream without a port or type is closed; a second stream of a kind is refused on
    /// the pair's error stream.
    async fn add(&mut self, stream: Stream) -> Option<(u16, Stream, Stream)> {
        let port = stream
            .header("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0);
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        let (Some(port), "error" | "data") = (port, kind.as_str()) else {
            tracing::debug!(
                stream = stream.id,
                "port-forward stream without a port or type"
            );
            stream.writer().close().await;
            return None;
        };
        // Old clients send no request id: the pair's error stream is the data's - 2.
        let key = match stream.header("requestid") {
            Some(id) => id.to_string(),
            None if kind == "error" => stream.id.to_string(),
            None => stream.id.saturating_sub(2).to_string(),
        };
        let pair = self.0.entry(key.clone()).or_insert_with(|| Pair {
            error: None,
            data: None,
            since: Instant::now(),
        });
        let slot = if kind == "error" {
            &mut pair.error
        } else {
            &mut pair.data
        };
        if slot.is_some() {
            if let Some(error) = &pair.error {
                let message =
                    format!("error processing stream for request {key}: two {kind} streams");
                error.writer().send(message.into_bytes()).await;
            }
            return None;
        }
        *slot = Some(stream);
        if pair.error.is_none() || pair.data.is_none() {
            return None;
        }
        let pair = self.0.remove(&key)?;
        Some((port, pair.error?, pair.data?))
    }
}

/// One forwarded connection: the client's data stream to and from the pod's port. A
/// failure is written on the error stream; both streams are closed at the end.
async fn forward(
    netns: Option<std::path::PathBuf>,
    pod: String,
    port: u16,
    error: Stream,
    data: Stream,
) {
    let error_writer = error.writer();
    let (mut from_client, to_client) = data.split();
    let dialled = tokio::task::spawn_blocking(move || {
        let socket = connect_inside(netns.as_deref(), port)?;
        socket.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(socket)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    let socket = match dialled {
        Ok(socket) => socket,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod}: {e}");
            error_writer.send(message.into_bytes()).await;
            error_writer.close().await;
            to_client.close().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = socket.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // The client's side reached end-of-file: so does the pod's socket.
        let _ = to_pod.shutdown().await;
    });
    // The connection is over when the pod's side is (as the kubelet's runtimes do): the
    // client may never half-close its data stream.
    let downstream = async {
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !to_client.send(chunk[..n].to_vec()).await {
                        break;
                    }
                }
            }
        }
        to_client.close().await;
    };
    downstream.await;
    upstream.abort();
    error_writer.close().await;
}

/// Connects to `127.0.0.1:port` inside the network namespace pinned at `pin` (the host's
/// when `None`). A short-lived thread enters the namespace to make the socket, which
/// stays in that namespace; the thread ends right after, so nothing else runs there.
fn connect_inside(pin: Option<&Path>, port: u16) -> std::io::Result<std::net::TcpStream> {
    let Some(pin) = pin else {
        return std::net::TcpStream::connect(("127.0.0.1", port));
    };
    let namespace = std::fs::File::open(pin)?;
    std::thread::spawn(move || -> std::io::Result<std::net::TcpStream> {
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)?;
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            std::time::Duration::from_secs(10),
        )
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}
