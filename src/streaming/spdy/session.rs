//! The server side of a SPDY/3.1 connection: the client opens streams, the server
//! answers each SYN_STREAM with a SYN_REPLY at once (spdystream's `CreateStream` waits
//! for it) and hands the stream to whoever serves the connection.
//!
//! One task reads frames and routes DATA to its stream. A stream may hold up to
//! [`STREAM_BACKLOG`] unread bytes; past that the reader waits for its consumer (the
//! connection stalls rather than losing or cutting data: spdystream has no flow control,
//! so TCP is the only backpressure there is). One task
//! owns the write half and the header compressor; streams send through it. PING is
//! echoed. GOAWAY, EOF, a protocol error, or no traffic either way for the idle timeout
//! ends the session: every stream then reads end-of-stream.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame::{
    Decoder, FLAG_FIN, Frame, HeaderCompressor, Headers, RST_INVALID_STREAM, RST_PROTOCOL_ERROR,
    encode,
};

/// Frames waiting for the writer.
const OUTGOING_QUEUE: usize = 64;
/// Unread bytes a stream may hold before it is reset.
pub const STREAM_BACKLOG: usize = 4 << 20;
/// New streams waiting for the connection's handler.
const NEW_STREAMS_QUEUE: usize = 32;

/// A stream the client opened.
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    /// Its SYN_STREAM headers, names lowercase.
    pub headers: Headers,
    incoming: Incoming,
    out: StreamWriter,
}

/// The receiving half of a stream.
#[derive(Debug)]
pub struct Incoming {
    data: mpsc::UnboundedReceiver<Vec<u8>>,
    unread: Arc<Backlog>,
}

/// What a stream holds unread, and a wake-up for the reader waiting on it.
#[derive(Debug, Default)]
struct Backlog {
    bytes: AtomicUsize,
    drained: tokio::sync::Notify,
}

impl Incoming {
    /// The next chunk of data, or `None` once the client has half-closed the stream (or
    /// reset it, or the connection ended).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let data = self.data.recv().await?;
        self.unread.bytes.fetch_sub(data.len(), Ordering::Relaxed);
        self.unread.drained.notify_one();
        Some(data)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // A reader waiting for this consumer must not wait for ever.
        self.unread.drained.notify_one();
    }
}

/// The sending half of a stream; cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    id: u32,
    frames: mpsc::Sender<Frame>,
}

impl Stream {
    /// The header `name` (lowercase), if the client sent it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of data, or `None` once the client has half-closed the stream (or
    /// reset it, or the connection ended).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.incoming.recv().await
    }

    pub fn writer(&self) -> StreamWriter {
        self.out.clone()
    }

    /// Splits the stream into its receiving and sending halves.
    pub fn split(self) -> (Incoming, StreamWriter) {
        (self.incoming, self.out)
    }
}

impl StreamWriter {
    /// Sends data; `false` once the connection is gone.
    pub async fn send(&self, data: Vec<u8>) -> bool {
        self.frames
            .send(Frame::Data {
                stream: self.id,
                flags: 0,
                data,
            })
            .await
            .is_ok()
    }

    /// Half-closes the stream (DATA with FIN): the server sends nothing more on it.
    pub async fn close(&self) {
        let _ = self
            .frames
            .send(Frame::Data {
                stream: self.id,
                flags: FLAG_FIN,
                data: Vec::new(),
            })
            .await;
    }
}

impl Stream {
    /// A stream made by another transport (a WebSocket channel): its data comes through
    /// the returned sender, and what is sent on it goes to `frames` as DATA frames with
    /// `id` as their stream id, for that transport's writer to translate.
    pub fn carried(
        id: u32,
        headers: Headers,
        frames: mpsc::Sender<Frame>,
    ) -> (Stream, mpsc::UnboundedSender<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = Stream {
            id,
            headers,
            incoming: Incoming {
                data: rx,
                unread: Arc::new(Backlog::default()),
            },
            out: StreamWriter { id, frames },
        };
        (stream, tx)
    }
}

/// A live connection's handle: stays usable to end it.
#[derive(Debug, Clone)]
pub struct Session {
    frames: mpsc::Sender<Frame>,
    last_stream: Arc<Mutex<u32>>,
    ended: tokio::sync::watch::Receiver<bool>,
}

impl Session {
    /// The handle of a connection another transport carries: GOAWAY goes to `frames`
    /// (its writer ends the connection), and `ended` turns true when the client's side
    /// is gone.
    pub fn carried(
        frames: mpsc::Sender<Frame>,
        ended: tokio::sync::watch::Receiver<bool>,
    ) -> Session {
        Session {
            frames,
            last_stream: Arc::new(Mutex::new(0)),
            ended,
        }
    }

    /// Resolves once the client's side of the connection has ended (EOF, GOAWAY, error).
    pub async fn closed(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|ended| *ended).await;
    }

    /// Ends the connection politely (GOAWAY); the writer closes it once its queue is out.
    pub async fn go_away(&self) {
        let last = *self.last_stream.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .frames
            .send(Frame::GoAway {
                last_stream: last,
                status: 0,
            })
            .await;
    }
}

/// When a connection last carried a frame either way.
#[derive(Debug, Clone)]
struct Activity {
    start: tokio::time::Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: std::time::Duration) {
        loop {
            let last =
                self.start + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Serves SPDY on `io` until it has been idle for `idle`; returns the session and the
/// streams the client opens, in order.
pub fn serve<IO>(io: IO, idle: std::time::Duration) -> (Session, mpsc::Receiver<Stream>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(io);
    let (frames_tx, frames_rx) = mpsc::channel(OUTGOING_QUEUE);
    let (streams_tx, streams_rx) = mpsc::channel(NEW_STREAMS_QUEUE);
    let last_stream = Arc::new(Mutex::new(0));
    let (ended_tx, ended_rx) = tokio::sync::watch::channel(false);
    let activity = Activity::new();
    tokio::spawn(write_frames(write_half, frames_rx, activity.clone()));
    let frames = frames_tx.clone();
    let last = last_stream.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = read_frames(read_half, frames.clone(), streams_tx, last.clone(), activity.clone()) => {}
            () = activity.idle_for(idle) => {
                tracing::debug!(?idle, "streaming connection idle; closing it");
                let last = *last.lock().unwrap_or_else(|p| p.into_inner());
                let _ = frames.send(Frame::GoAway { last_stream: last, status: 0 }).await;
            }
        }
        let _ = ended_tx.send(true);
    });
    (
        Session {
            frames: frames_tx,
            last_stream,
            ended: ended_rx,
        },
        streams_rx,
    )
}

async fn write_frames<W: AsyncWrite + Unpin>(
    mut out: W,
    mut frames: mpsc::Receiver<Frame>,
    activity: Activity,
) {
    let mut compressor = HeaderCompressor::default();
    let mut buffer = Vec::new();
    while let Some(frame) = frames.recv().await {
        buffer.clear();
        let mut going_away = matches!(frame, Frame::GoAway { .. });
        encode(&frame, &mut compressor, &mut buffer);
        // Whatever else is queued goes out in the same write, up to a GOAWAY.
        while !going_away && let Ok(more) = frames.try_recv() {
            going_away = matches!(more, Frame::GoAway { .. });
            encode(&more, &mut compressor, &mut buffer);
        }
        if out.write_all(&buffer).await.is_err() || out.flush().await.is_err() {
            return;
        }
        activity.touch();
        if going_away {
            let _ = out.shutdown().await;
            return;
        }
    }
    let _ = out.shutdown().await;
}

/// The streams the client has open to send on, by id: where their data goes and what
/// each holds unread.
type Open = HashMap<u32, (mpsc::UnboundedSender<Vec<u8>>, Arc<Backlog>)>;

async fn read_frames<R: AsyncRead + Unpin>(
    mut input: R,
    frames: mpsc::Sender<Frame>,
    new_streams: mpsc::Sender<Stream>,
    last_stream: Arc<Mutex<u32>>,
    activity: Activity,
) {
    let mut router = Router {
        frames,
        new_streams,
        last_stream,
        open: HashMap::new(),
    };
    let mut decoder = Decoder::default();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match input.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        activity.touch();
        decoder.push(&chunk[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%err, "SPDY protocol error; closing the connection");
                    router.go_away(RST_PROTOCOL_ERROR).await;
                    return;
                }
            };
            if router.route(frame).await.is_break() {
                return;
            }
        }
    }
}

/// What the reading task acts on: each frame the client sends goes to its stream, or
/// is answered.
struct Router {
    frames: mpsc::Sender<Frame>,
    new_streams: mpsc::Sender<Stream>,
    last_stream: Arc<Mutex<u32>>,
    open: Open,
}

impl Router {
    /// Acts on one frame; `Break` ends the connection's reading.
    async fn route(&mut self, frame: Frame) -> ControlFlow<()> {
        match frame {
            Frame::SynStream {
                stream,
                flags,
                headers,
                ..
            } => return self.open_stream(stream, flags, headers).await,
            Frame::Data {
                stream,
                flags,
                data,
            } => self.deliver(stream, flags, data).await,
            Frame::RstStream { stream, .. } => {
                self.open.remove(&stream);
            }
            Frame::Ping { id } => {
                let _ = self.frames.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => return ControlFlow::Break(()),
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. } => {}
        }
        ControlFlow::Continue(())
    }

    fn last_stream(&self) -> u32 {
        *self.last_stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn go_away(&self, status: u32) {
        let _ = self
            .frames
            .send(Frame::GoAway {
                last_stream: self.last_stream(),
                status,
            })
            .await;
    }

    async fn reset(&self, stream: u32, status: u32) {
        let _ = self.frames.send(Frame::RstStream { stream, status }).await;
    }

    /// A SYN_STREAM: answered with a SYN_REPLY and handed to the connection's handler;
    /// `Break` once the connection has nobody to write to it or serve it.
    async fn open_stream(&mut self, stream: u32, flags: u8, headers: Headers) -> ControlFlow<()> {
        // Client streams are odd and increasing; anything else is refused.
        if stream.is_multiple_of(2)
            || stream <= self.last_stream()
            || self.open.contains_key(&stream)
        {
            self.reset(stream, RST_PROTOCOL_ERROR).await;
            return ControlFlow::Continue(());
        }
        *self.last_stream.lock().unwrap_or_else(|p| p.into_inner()) = stream;
        let (tx, rx) = mpsc::unbounded_channel();
        let unread = Arc::new(Backlog::default());
        if flags & FLAG_FIN == 0 {
            self.open.insert(stream, (tx, unread.clone()));
        }
        let reply = Frame::SynReply {
            stream,
            flags: 0,
            headers: Vec::new(),
        };
        if self.frames.send(reply).await.is_err() {
            return ControlFlow::Break(());
        }
        let new = Stream {
            id: stream,
            headers,
            incoming: Incoming { data: rx, unread },
            out: StreamWriter {
                id: stream,
                frames: self.frames.clone(),
            },
        };
        if self.new_streams.send(new).await.is_err() {
            // Nobody serves this connection any more.
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// DATA: to its stream once the stream has room, which closes with FIN; a stream
    /// not open is reset.
    async fn deliver(&mut self, stream: u32, flags: u8, data: Vec<u8>) {
        let Some((tx, unread)) = self.open.get(&stream) else {
            self.reset(stream, RST_INVALID_STREAM).await;
            return;
        };
        // Wait for the consumer to catch up (one oversized frame still passes).
        loop {
            let drained = unread.drained.notified();
            let held = unread.bytes.load(Ordering::Relaxed);
            if held == 0 || held + data.len() <= STREAM_BACKLOG || tx.is_closed() {
                break;
            }
            drained.await;
        }
        // A consumer that went away just drops what comes.
        if !data.is_empty() {
            unread.bytes.fetch_add(data.len(), Ordering::Relaxed);
            let _ = tx.send(data);
        }
        if flags & FLAG_FIN != 0 {
            self.open.remove(&stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the session with our own encoder as the client (the Go client is the
    /// integration test's).
    struct Client {
        io: tokio::io::DuplexStream,
        compressor: HeaderCompressor,
        decoder: Decoder,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut bytes = Vec::new();
            encode(&frame, &mut self.compressor, &mut bytes);
            self.io.write_all(&bytes).await.unwrap();
        }

        async fn next(&mut self) -> Option<Frame> {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(frame) = self.decoder.next_frame().unwrap() {
                    return Some(frame);
                }
                let n = self.io.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return None;
                }
                self.decoder.push(&chunk[..n]);
            }
        }
    }

    #[tokio::test]
    async fn streams_are_answered_routed_and_closed() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let (session, mut streams) = serve(server_io, std::time::Duration::from_secs(3600));
        let mut client = Client {
            io: client_io,
            compressor: HeaderCompressor::default(),
            decoder: Decoder::default(),
        };
        client
            .send(Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            })
            .await;
        assert_eq!(
            client.next().await,
            Some(Frame::SynReply {
                stream: 1,
                flags: 0,
                headers: Vec::new()
            })
        );
        let mut stream = streams.recv().await.unwrap();
        assert_eq!(stream.header("streamtype"), Some("stdin"));
        client
            .send(Frame::Data {
                stream: 1,
                flags: FLAG_FIN,
                data: b"input".to_vec(),
            })
            .await;
        assert_eq!(stream.recv().await, Some(b"input".to_vec()));
        assert_eq!(stream.recv().await, None, "FIN ends the stream");

        stream.writer().send(b"output".to_vec()).await;
        stream.writer().close().await;
        assert_eq!(
            client.next().await,
            Some(Frame::Data {
                stream: 1,
                flags: 0,
                data: b"output".to_vec()
            })
        );
        assert!(matches!(
            client.next().await,
            Some(Frame::Data {
                flags: FLAG_FIN,
                ..
            })
        ));

        client.send(Frame::Ping { id: 5 }).await;
        assert_eq!(client.next().await, Some(Frame::Ping { id: 5 }));
        // An even (server-side) id is refused.
        client
            .send(Frame::SynStream {
                stream: 2,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: Vec::new(),
            })
            .await;
        assert!(matches!(
            client.next().await,
            Some(Frame::RstStream { stream: 2, .. })
        ));
        // A stream read slowly holds the connection back, but loses nothing: 5 MiB go
        // through a 4 MiB backlog, and the PING behind them is answered once they are.
        client
            .send(Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: Vec::new(),
            })
            .await;
        assert!(matches!(
            client.next().await,
            Some(Frame::SynReply { stream: 3, .. })
        ));
        let mut slow = streams.recv().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut total = 0;
            while let Some(chunk) = slow.recv().await {
                total += chunk.len();
                if total == 5 << 20 {
                    break;
                }
            }
            total
        });
        for _ in 0..5 {
            client
                .send(Frame::Data {
                    stream: 3,
                    flags: 0,
                    data: vec![0u8; 1 << 20],
                })
                .await;
        }
        client.send(Frame::Ping { id: 7 }).await;
        assert_eq!(client.next().await, Some(Frame::Ping { id: 7 }));
        assert_eq!(reader.await.unwrap(), 5 << 20);
        session.go_away().await;
        assert!(matches!(
            client.next().await,
            Some(Frame::GoAway { last_stream: 3, .. })
        ));
        assert_eq!(client.next().await, None, "the connection is closed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let (session, _streams) = serve(server_io, std::time::Duration::from_secs(60));
        let mut client = Client {
            io: client_io,
            compressor: HeaderCompressor::default(),
            decoder: Decoder::default(),
        };
        // Traffic keeps it open past the timeout.
        for id in 1..=3 {
            tokio::time::sleep(std::time::Duration::from_secs(40)).await;
            client.send(Frame::Ping { id }).await;
            assert_eq!(client.next().await, Some(Frame::Ping { id }));
        }
        tokio::time::sleep(std::time::Duration::from_secs(61)).await;
        assert!(matches!(client.next().await, Some(Frame::GoAway { .. })));
        session.closed().await;
    }
}
