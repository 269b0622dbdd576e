//! Accepting the `:authority` that gRPC clients send over unix sockets.
//!
//! kubelet and crictl (grpc-go) dial the CRI socket and send `localhost` as the HTTP/2
//! `:authority`; older grpc-go releases, grpc-java and grpc-python send the socket path
//! (`/run/berth/berth.sock`) or its percent-encoding instead. The h2 server under tonic
//! rejects a request whose `:authority` is not a valid URI authority as malformed and
//! resets the stream with PROTOCOL_ERROR (hyperium/h2#487), so such clients could not talk
//! to berth at all.
//!
//! [`AuthorityFix`] sits between the accepted socket and h2. It follows the client's side
//! of the connection frame by frame and decodes every header block with its own HPACK
//! decoder, so it always knows the client's compression state. Blocks are passed through
//! byte for byte until one carries an invalid `:authority`; from then on every block is
//! re-encoded with this connection's own HPACK encoder, with `:authority` replaced by
//! `localhost`. The first re-encoded block starts with two dynamic table size updates (to
//! 0, then back to 4096), which empty h2's decoding table so that it matches the new
//! encoder's. Everything else (DATA, SETTINGS, PING, …) and the server's side of the
//! connection are untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame the h2 server accepts by default (SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;
/// The largest header block this layer will buffer.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The dynamic table size h2 decodes with (its SETTINGS_HEADER_TABLE_SIZE default).
const TABLE_SIZE: usize = 4096;
/// What replaces an authority h2 would refuse.
const REPLACEMENT: &[u8] = b"localhost";

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the connection preface has been seen whole.
    Preface,
    /// At a frame boundary.
    FrameHeader,
    /// Inside the payload of a frame that is passed through; `left` bytes to go.
    Payload { left: usize },
    /// Not HTTP/2 with prior knowledge: h2 will refuse it; pass everything.
    Passthrough,
}

/// A header block being gathered from a HEADERS frame and its CONTINUATIONs.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The frames exactly as received, for pass-through.
    raw: Vec<u8>,
}

/// A client connection whose header blocks are made acceptable to h2; see the module docs.
pub struct AuthorityFix<S> {
    inner: S,
    input: BytesMut,
    output: BytesMut,
    phase: Phase,
    pending: Option<PendingBlock>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    rewriting: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            input: BytesMut::new(),
            output: BytesMut::new(),
            phase: Phase::Preface,
            pending: None,
            decoder: Decoder::new(),
            encoder: Encoder::new(),
            rewriting: false,
        }
    }

    /// Moves every complete unit of `input` to `output`, rewriting header blocks.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.phase {
                Phase::Passthrough => {
                    let all = self.input.split();
                    self.output.extend_from_slice(&all);
                    return Ok(());
                }
                Phase::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.phase = Phase::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.extend_from_slice(&self.input.split_to(n));
                    self.phase = Phase::FrameHeader;
                }
                Phase::Payload { left } => {
                    let n = left.min(self.input.len());
                    if n == 0 {
                        return Ok(());
                    }
                    self.output.extend_from_slice(&self.input.split_to(n));
                    self.phase = if n == left {
                        Phase::FrameHeader
                    } else {
                        Phase::Payload { left: left - n }
                    };
                }
                Phase::FrameHeader => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]])
                        as usize;
                    let kind = self.input[3];
                    if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
                        if len > MAX_HEADER_BLOCK {
                            return Err(invalid("header frame too large"));
                        }
                        if self.input.len() < FRAME_HEADER_LEN + len {
                            return Ok(());
                        }
                        let frame = self.input.split_to(FRAME_HEADER_LEN + len);
                        self.header_frame(&frame)?;
                    } else {
                        if self.pending.is_some() {
                            return Err(invalid("header block interrupted by another frame"));
                        }
                        let header = self.input.split_to(FRAME_HEADER_LEN);
                        self.output.extend_from_slice(&header);
                        if len > 0 {
                            self.phase = Phase::Payload { left: len };
                        }
                    }
                }
            }
        }
    }

    /// Takes one whole HEADERS or CONTINUATION frame.
    fn header_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        if kind == TYPE_HEADERS {
            if self.pending.is_some() {
                return Err(invalid("HEADERS inside an unfinished header block"));
            }
            let (priority, fragment) = split_headers_payload(flags, payload)?;
            self.pending = Some(PendingBlock {
                stream_id,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                block: fragment.to_vec(),
                raw: frame.to_vec(),
            });
        } else {
            let Some(pending) = self.pending.as_mut() else {
                return Err(invalid("CONTINUATION without HEADERS"));
            };
            if pending.stream_id != stream_id {
                return Err(invalid("CONTINUATION on another stream"));
            }
            if pending.block.len() + payload.len() > MAX_HEADER_BLOCK {
                return Err(invalid("header block too large"));
            }
            pending.block.extend_from_slice(payload);
            pending.raw.extend_from_slice(frame);
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.pending.take()
        {
            self.finish_block(block)?;
        }
        Ok(())
    }

    /// Decodes a complete header block and emits it, as received or re-encoded.
    fn finish_block(&mut self, pending: PendingBlock) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = self
            .decoder
            .decode(&pending.block)
            .map_err(|err| invalid(&format!("HPACK: {err:?}")))?;
        let mut needs_fix = false;
        for (name, value) in headers.iter_mut() {
            if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                needs_fix = true;
                *value = REPLACEMENT.to_vec();
            }
        }
        if !self.rewriting && !needs_fix {
            self.output.extend_from_slice(&pending.raw);
            return Ok(());
        }
        let mut block = Vec::with_capacity(pending.block.len() + 8);
        if !self.rewriting {
            tracing::info!(
                "client sent an :authority h2 refuses (a socket path?); rewriting it to localhost on this connection"
            );
            // Empty h2's dynamic table so it matches our fresh encoder's.
            block.extend(size_update(0));
            block.extend(size_update(TABLE_SIZE));
            self.rewriting = true;
        }
        self.encoder
            .encode_into(
                headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                &mut block,
            )
            .map_err(|err| invalid(&format!("HPACK encode: {err}")))?;
        self.emit_block(&pending, &block);
        Ok(())
    }

    /// Writes a header block as one HEADERS frame and as many CONTINUATIONs as needed.
    fn emit_block(&mut self, pending: &PendingBlock, block: &[u8]) {
        let prefix = pending.priority.map_or(0, |p| p.len());
        let first_len = block.len().min(MAX_FRAME - prefix);
        let mut flags = 0;
        if pending.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if pending.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if first_len == block.len() {
            flags |= FLAG_END_HEADERS;
        }
        self.frame_header(prefix + first_len, TYPE_HEADERS, flags, pending.stream_id);
        if let Some(priority) = pending.priority {
            self.output.extend_from_slice(&priority);
        }
        self.output.extend_from_slice(&block[..first_len]);
        let mut rest = &block[first_len..];
        while !rest.is_empty() {
            let n = rest.len().min(MAX_FRAME);
            let flags = if n == rest.len() { FLAG_END_HEADERS } else { 0 };
            self.frame_header(n, TYPE_CONTINUATION, flags, pending.stream_id);
            self.output.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }

    fn frame_header(&mut self, len: usize, kind: u8, flags: u8, stream_id: u32) {
        let len = (len as u32).to_be_bytes();
        self.output.extend_from_slice(&len[1..]);
        self.output.extend_from_slice(&[kind, flags]);
        self.output.extend_from_slice(&stream_id.to_be_bytes());
    }
}

/// Splits a HEADERS payload into its priority fields and header block fragment,
/// dropping any padding.
fn split_headers_payload(flags: u8, payload: &[u8]) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        let (&len, rest) = body
            .split_first()
            .ok_or_else(|| invalid("PADDED HEADERS without pad length"))?;
        pad = usize::from(len);
        body = rest;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if body.len() < 5 {
            return Err(invalid("HEADERS too short for its priority"));
        }
        let mut fields = [0; 5];
        fields.copy_from_slice(&body[..5]);
        priority = Some(fields);
        body = &body[5..];
    }
    if pad > body.len() {
        return Err(invalid("HEADERS padding longer than the frame"));
    }
    Ok((priority, &body[..body.len() - pad]))
}

/// An HPACK dynamic table size update (RFC 7541 §6.3).
fn size_update(size: usize) -> Vec<u8> {
    let mut bytes = loona_hpack::encoder::encode_integer(size, 5);
    bytes[0] |= 0x20;
    bytes
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from client: {what}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream: hand over whatever incomplete frame is left and let h2
                // judge it; then report the end.
                if this.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let rest = this.input.split();
                this.output.extend_from_slice(&rest);
                continue;
            }
            this.input.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(authority: &str, path: &str) -> Headers {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    fn encode(encoder: &mut Encoder<'static>, headers: &Headers) -> Vec<u8> {
        encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    /// Runs client bytes through the fix and returns what h2 would read.
    async fn through_fix(client: Vec<u8>) -> Vec<u8> {
        let (mut near, far) = tokio::io::duplex(1 << 20);
        // Written in small pieces, so frames arrive split across reads.
        let writer = tokio::spawn(async move {
            for piece in client.chunks(7) {
                near.write_all(piece).await.unwrap();
            }
            near.shutdown().await.unwrap();
        });
        let mut fixed = AuthorityFix::new(far);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    /// Parses frames after the preface: (type, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE.len()], PREFACE);
        let mut rest = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            out.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        out
    }

    /// Decodes every header block the way h2 would, with one decoder for the connection.
    fn decode_blocks(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<Headers> {
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        for (kind, flags, _, payload) in frames {
            match *kind {
                TYPE_HEADERS => {
                    let (_, fragment) = split_headers_payload(*flags, payload).unwrap();
                    block = fragment.to_vec();
                }
                TYPE_CONTINUATION => block.extend_from_slice(payload),
                _ => continue,
            }
            if flags & FLAG_END_HEADERS != 0 {
                blocks.push(decoder.decode(&block).unwrap());
            }
        }
        blocks
    }

    fn authority(headers: &Headers) -> &[u8] {
        &headers.iter().find(|(n, _)| n == b":authority").unwrap().1
    }

    #[tokio::test]
    async fn valid_authorities_pass_byte_for_byte() {
        let mut encoder = Encoder::new();
        let mut client = PREFACE.to_vec();
        client.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        for stream in [1, 3, 5] {
            let block = encode(
                &mut encoder,
                &request("localhost", "/runtime.v1.RuntimeService/Version"),
            );
            client.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
            client.extend(frame(0x0, FLAG_END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        assert_eq!(through_fix(client.clone()).await, client);
    }

    #[tokio::test]
    async fn socket_path_authority_becomes_localhost_and_state_stays_in_sync() {
        let mut encoder = Encoder::new();
        let mut client = PREFACE.to_vec();
        client.extend(frame(0x4, 0, 0, &[]));
        // A first request with a valid authority fills both dynamic tables.
        let first = request("localhost", "/a");
        client.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &encode(&mut encoder, &first),
        ));
        // Then the socket path, padded and with priority, split over a CONTINUATION.
        let second = request("/run/berth/berth.sock", "/b");
        let block = encode(&mut encoder, &second);
        let mut payload = vec![3]; // pad length
        payload.extend([0, 0, 0, 1, 15]); // priority: depends on stream 1, weight 16
        payload.extend(&block[..4]);
        payload.extend([0, 0, 0]);
        let flags = FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM;
        client.extend(frame(TYPE_HEADERS, flags, 3, &payload));
        client.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &block[4..]));
        // A third request reuses entries the client indexed before.
        let third = request("/run/berth/berth.sock", "/b");
        client.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            5,
            &encode(&mut encoder, &third),
        ));
        client.extend(frame(0x0, 0, 5, b"hello"));

        let frames = frames(&through_fix(client).await);
        let blocks = decode_blocks(&frames);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0], first);
        for fixed in &blocks[1..] {
            assert_eq!(authority(fixed), b"localhost");
            let others = |h: &Headers| -> Headers {
                h.iter()
                    .filter(|(n, _)| n != b":authority")
                    .cloned()
                    .collect()
            };
            assert_eq!(others(fixed), others(&second));
        }
        let headers_3 = frames
            .iter()
            .find(|f| f.0 == TYPE_HEADERS && f.2 == 3)
            .unwrap();
        assert_ne!(headers_3.1 & FLAG_END_STREAM, 0, "END_STREAM is kept");
        assert_ne!(headers_3.1 & FLAG_PRIORITY, 0, "priority is kept");
        assert_eq!(&headers_3.3[..5], &[0, 0, 0, 1, 15]);
        assert_eq!(frames.last().unwrap(), &(0x0, 0, 5, b"hello".to_vec()));
    }

    #[tokio::test]
    async fn large_rewritten_block_is_split_into_continuations() {
        let mut encoder = Encoder::new();
        let mut headers = request("/x.sock", "/big");
        headers.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
        let block = encode(&mut encoder, &headers);
        let mut client = PREFACE.to_vec();
        for (i, piece) in block.chunks(MAX_FRAME).enumerate() {
            let last = (i + 1) * MAX_FRAME >= block.len();
            let kind = if i == 0 {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            client.extend(frame(
                kind,
                if last { FLAG_END_HEADERS } else { 0 },
                1,
                piece,
            ));
        }
        let frames = frames(&through_fix(client).await);
        assert!(frames.iter().all(|f| f.3.len() <= MAX_FRAME));
        assert!(frames.len() >= 3);
        let blocks = decode_blocks(&frames);
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert_eq!(blocks[0].last().unwrap().1.len(), 40_000);
    }

    #[tokio::test]
    async fn non_http2_bytes_pass_untouched() {
        let client = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through_fix(client.clone()).await, client);
    }
}
