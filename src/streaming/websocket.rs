//! The WebSocket transports (docs/streaming-protocol.md §4): each message carries one
//! channel, its number in the first byte (binary protocols) or as an ASCII digit before
//! base64 text (`base64.` protocols).
//!
//! - exec / attach (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`,
//!   `base64.channel.k8s.io`, `channel.k8s.io`): channels 0 stdin, 1 stdout, 2 stderr,
//!   3 error, 4 resize; the server first sends an empty message on its lowest writable
//!   channel; v5 clients half-close stdin with `[255, 0]`; the server ends with a Close
//!   frame (1000) after the status.
//! - port-forward (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`): for the i-th port of
//!   the request, channel 2i is its data and 2i+1 its error; the server first writes the
//!   port (2 bytes, little-endian) on both.
//!
//! The channels become [`Stream`]s with the headers their SPDY counterparts carry, so
//! the same exec, attach and port-forward code serves both transports. One task writes
//! the socket (`write_messages`), one reads it (`read_messages`).

use base64::Engine as _;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::connection::{Connection, Options, version};
use super::spdy::frame::Frame;
use super::spdy::session::{Session, Stream};

/// Exec and attach subprotocols, newest first.
pub const REMOTECOMMAND_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
    "channel.k8s.io",
];
/// Port-forward subprotocols.
pub const PORTFORWARD_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

/// The v5 signal that half-closes a channel.
const CLOSE_CHANNEL: u8 = 255;

/// What the connection carries, and so which channels it has.
#[derive(Debug, Clone)]
pub enum Channels {
    RemoteCommand(Options),
    PortForward(Vec<u16>),
}

/// A channel's stream and the sender of what the client writes on it.
type Channel = (Stream, mpsc::UnboundedSender<Vec<u8>>);
/// Messages the server writes before anything else: (channel, payload).
type Preamble = Vec<(u8, Vec<u8>)>;

/// The channels' streams, in the order the SPDY client would open them, and the
/// preamble the server writes first.
fn layout(
    channels: &Channels,
    protocol: &str,
    frames: &mpsc::Sender<Frame>,
) -> (Vec<Channel>, Preamble) {
    let header = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    };
    match channels {
        Channels::RemoteCommand(o) => {
            let mut wanted = vec![(3u8, "error")];
            if o.stdin {
                wanted.push((0, "stdin"));
            }
            if o.stdout {
                wanted.push((1, "stdout"));
            }
            if o.stderr && !o.tty {
                wanted.push((2, "stderr"));
            }
            // Resizing came with v3; older protocols have no such channel.
            if o.tty && version(protocol) >= 3 {
                wanted.push((4, "resize"));
            }
            let ready = if o.stdout {
                1
            } else if o.stderr && !o.tty {
                2
            } else {
                3
            };
            let streams = wanted
                .into_iter()
                .map(|(channel, kind)| {
                    Stream::carried(
                        channel as u32,
                        header(&[("streamtype", kind.to_string())]),
                        frames.clone(),
                    )
                })
                .collect();
            (streams, vec![(ready, Vec::new())])
        }
        Channels::PortForward(ports) => {
            let mut streams = Vec::new();
            let mut preamble = Vec::new();
            for (i, port) in ports.iter().enumerate() {
                for (number, kind) in [(2 * i, "data"), (2 * i + 1, "error")] {
                    streams.push(Stream::carried(
                        number as u32,
                        header(&[
                            ("streamtype", kind.to_string()),
                            ("port", port.to_string()),
                            ("requestid", i.to_string()),
                        ]),
                        frames.clone(),
                    ));
                    preamble.push((number as u8, port.to_le_bytes().to_vec()));
                }
            }
            (streams, preamble)
        }
    }
}

/// What one message of the client is, on the remotecommand or port-forward channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Bytes for a channel: a binary message's first byte is the channel; a text
    /// message (the base64 protocols) starts with the channel as a digit.
    Data(u8, Vec<u8>),
    /// The v5 signal that the client closed its side of a channel.
    CloseChannel(u8),
    Ping,
    Close,
    /// Empty, malformed or of no channel: skipped.
    Nothing,
}

/// Reads one message of the client; bytes from outside the process, so nothing here
/// may fail on them.
pub fn incoming(message: &Message) -> Incoming {
    match message {
        Message::Binary(bytes) => match bytes.split_first() {
            Some((&CLOSE_CHANNEL, [channel])) => Incoming::CloseChannel(*channel),
            Some((_, [])) | None => Incoming::Nothing,
            Some((&channel, rest)) => Incoming::Data(channel, rest.to_vec()),
        },
        Message::Text(text) => {
            let text = text.as_str();
            let (Some(first), Some(rest)) = (text.bytes().next(), text.get(1..)) else {
                return Incoming::Nothing;
            };
            match base64::engine::general_purpose::STANDARD.decode(rest) {
                Ok(data) if !data.is_empty() => Incoming::Data(first.wrapping_sub(b'0'), data),
                _ => Incoming::Nothing,
            }
        }
        Message::Ping(_) => Incoming::Ping,
        Message::Close(_) => Incoming::Close,
        _ => Incoming::Nothing,
    }
}

/// Serves a WebSocket connection that negotiated `protocol`, until the client has sent
/// nothing (not even a ping) for `idle`.
pub fn serve<S>(
    socket: WebSocketStream<S>,
    protocol: &str,
    channels: Channels,
    idle: std::time::Duration,
) -> Connection
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (frames_tx, frames_rx) = mpsc::channel::<Frame>(64);
    let (ended_tx, ended_rx) = watch::channel(false);
    let (streams_tx, streams_rx) = mpsc::channel(16);
    let (streams, preamble) = layout(&channels, protocol, &frames_tx);
    let mut inputs = Inputs::new();
    for (stream, input) in streams {
        inputs.insert(stream.id as u8, input);
        // The channel has room for all of them: they are known up front.
        let _ = streams_tx.try_send(stream);
    }
    let (sink, source) = socket.split();
    let encoding = Encoding::of(protocol);
    tokio::spawn(write_messages(sink, frames_rx, preamble, encoding));
    let pinger = frames_tx.clone();
    tokio::spawn(async move {
        read_messages(source, inputs, pinger, idle).await;
        let _ = ended_tx.send(true);
    });
    Connection {
        protocol: protocol.to_string(),
        session: Session::carried(frames_tx, ended_rx),
        streams: streams_rx,
    }
}

/// Where what the client writes on each channel goes, by channel number.
type Inputs = std::collections::HashMap<u8, mpsc::UnboundedSender<Vec<u8>>>;

/// How a protocol's messages carry their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// The channel in the first byte, then the bytes.
    Binary,
    /// Text: the channel as a digit, then the bytes in base64 (`base64.` protocols).
    Base64,
}

impl Encoding {
    fn of(protocol: &str) -> Encoding {
        if protocol.contains("base64") {
            Encoding::Base64
        } else {
            Encoding::Binary
        }
    }

    /// The message carrying `data` on `channel`.
    fn message(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Encoding::Base64 => {
                let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
                text.push((b'0' + channel) as char);
                text.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
                Message::text(text)
            }
            Encoding::Binary => {
                let mut bytes = Vec::with_capacity(1 + data.len());
                bytes.push(channel);
                bytes.extend_from_slice(data);
                Message::binary(bytes)
            }
        }
    }
}

/// The server's side of the socket: the preamble, then what the streams send, each
/// DATA frame a message on its channel, until a GOAWAY (sent as a Close frame) or the
/// socket fails.
async fn write_messages<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut frames: mpsc::Receiver<Frame>,
    preamble: Preamble,
    encoding: Encoding,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for (channel, data) in preamble {
        if sink.send(encoding.message(channel, &data)).await.is_err() {
            return;
        }
    }
    while let Some(frame) = frames.recv().await {
        let sent = match frame {
            Frame::Data { stream, data, .. } if !data.is_empty() => {
                sink.send(encoding.message(stream as u8, &data)).await
            }
            // A PING from the reader: flush the pongs the socket has queued.
            Frame::Ping { .. } => sink.flush().await,
            Frame::GoAway { .. } => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })))
                    .await;
                return;
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The client's side of the socket: each message to its channel's input, until the
/// client closes or goes, or has sent nothing for `idle` (then a GOAWAY to `pinger` has
/// the writer close the socket).
async fn read_messages<S>(
    mut source: SplitStream<WebSocketStream<S>>,
    mut inputs: Inputs,
    pinger: mpsc::Sender<Frame>,
    idle: std::time::Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = match tokio::time::timeout(idle, source.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(_) => break,
            Err(_) => {
                tracing::debug!(?idle, "websocket connection idle; closing it");
                let _ = pinger
                    .send(Frame::GoAway {
                        last_stream: 0,
                        status: 0,
                    })
                    .await;
                break;
            }
        };
        let (channel, data) = match incoming(&message) {
            Incoming::Data(channel, data) => (channel, data),
            Incoming::CloseChannel(channel) => {
                inputs.remove(&channel);
                continue;
            }
            Incoming::Ping => {
                let _ = pinger.send(Frame::Ping { id: 0 }).await;
                continue;
            }
            Incoming::Close => break,
            Incoming::Nothing => continue,
        };
        if let Some(input) = inputs.get(&channel) {
            let _ = input.send(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages() {
        let binary = |b: &[u8]| incoming(&Message::binary(b.to_vec()));
        assert_eq!(binary(&[0, b'h', b'i']), Incoming::Data(0, b"hi".to_vec()));
        assert_eq!(binary(&[CLOSE_CHANNEL, 0]), Incoming::CloseChannel(0));
        assert_eq!(
            binary(&[CLOSE_CHANNEL, 0, 1]),
            Incoming::Data(255, vec![0, 1])
        );
        assert_eq!(binary(&[1]), Incoming::Nothing);
        assert_eq!(binary(&[]), Incoming::Nothing);
        let text = |t: &str| incoming(&Message::text(t.to_string()));
        assert_eq!(text("0aGk="), Incoming::Data(0, b"hi".to_vec()));
        assert_eq!(text("0"), Incoming::Nothing);
        assert_eq!(text("0not base64!"), Incoming::Nothing);
        assert_eq!(text(""), Incoming::Nothing);
        assert_eq!(
            text("é"),
            Incoming::Nothing,
            "a first character of two bytes"
        );
        assert_eq!(incoming(&Message::Ping(Vec::new().into())), Incoming::Ping);
    }
}
