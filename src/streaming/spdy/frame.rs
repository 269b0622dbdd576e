//! SPDY/3.1 frames (the subset the Kubernetes streaming protocols use) and their header
//! blocks, from bytes and to bytes.
//!
//! ```text
//! control frame: 1 | version (15) = 3 | type (16) | flags (8) | length (24) | payload
//! data frame:    0 | stream id (31)               | flags (8) | length (24) | payload
//! ```
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a count of name/value pairs, each
//! with a 32-bit length, zlib-compressed with the SPDY/3 dictionary. Each direction of a
//! connection keeps one zlib stream for all its header blocks, each block ending with a
//! sync flush: a [`HeaderCompressor`] and a [`HeaderDecompressor`] live as long as the
//! connection.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY version these frames carry.
pub const VERSION: u16 = 3;
/// FIN: the sender's last frame on this stream.
pub const FLAG_FIN: u8 = 0x01;
/// On SYN_STREAM: the receiver will not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// A frame's payload can be at most 2^24 - 1 bytes.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Header blocks larger than this (decompressed) are refused.
const MAX_HEADER_BLOCK: usize = 1 << 20;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_CANCEL: u32 = 5;

/// Header name/value pairs, names lowercase as SPDY requires.
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

/// A connection-level protocol error: the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY version {0} is not 3")]
    Version(u16),
    #[error("a {kind} frame of {len} bytes is malformed")]
    Malformed { kind: &'static str, len: usize },
    #[error("a header block cannot be decompressed: {0}")]
    Compression(String),
    #[error("a header block is malformed")]
    HeaderBlock,
}

/// The SPDY/3 header dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1): these header
/// names and values, each after its 32-bit big-endian length, then [`DICTIONARY_TAIL`].
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The dictionary's bytes.
pub fn dictionary() -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        bytes.extend_from_slice(&(word.len() as u32).to_be_bytes());
        bytes.extend_from_slice(word.as_bytes());
    }
    bytes.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    bytes
}

/// Compresses the header blocks one side sends.
pub struct HeaderCompressor {
    zlib: Compress,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        // Only fails for a stream already started, which this one is not.
        let _ = zlib.set_dictionary(&dictionary());
        HeaderCompressor { zlib }
    }
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderCompressor")
    }
}

impl HeaderCompressor {
    fn compress(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before_in = self.zlib.total_in();
            let _ = self.zlib.compress_vec(input, &mut out, FlushCompress::Sync);
            let used = (self.zlib.total_in() - before_in) as usize;
            input = &input[used..];
            // Done once all input is in and the flush did not fill the buffer.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// Decompresses the header blocks the other side sends.
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        HeaderDecompressor {
            zlib: Decompress::new(true),
        }
    }
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderDecompressor")
    }
}

impl HeaderDecompressor {
    fn decompress(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let mut raw: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if raw.len() == raw.capacity() {
                raw.reserve(raw.len().max(256));
            }
            if raw.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlock);
            }
            let before_in = self.zlib.total_in();
            let before_out = raw.len();
            match self
                .zlib
                .decompress_vec(input, &mut raw, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(&dictionary())
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
            let used = (self.zlib.total_in() - before_in) as usize;
            input = &input[used..];
            let produced = raw.len() - before_out;
            if input.is_empty() && raw.len() < raw.capacity() {
                break;
            }
            if used == 0 && produced == 0 && input.is_empty() {
                break;
            }
        }
        parse_header_block(&raw)
    }
}

fn parse_header_block(raw: &[u8]) -> Result<Headers, FrameError> {
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Result<usize, FrameError> {
        let bytes: [u8; 4] = raw
            .get(*at..*at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or(FrameError::HeaderBlock)?;
        *at += 4;
        Ok(u32::from_be_bytes(bytes) as usize)
    };
    let count = u32_at(&mut at)?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = u32_at(&mut at)?;
        let name = raw.get(at..at + len).ok_or(FrameError::HeaderBlock)?;
        at += len;
        let len = u32_at(&mut at)?;
        let value = raw.get(at..at + len).ok_or(FrameError::HeaderBlock)?;
        at += len;
        headers.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Ok(headers)
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
}

/// A stream id as the frames carry it: 31 bits, big-endian.
fn stream_id(stream: u32) -> [u8; 4] {
    (stream & 0x7fff_ffff).to_be_bytes()
}

/// Appends `frame`'s bytes to `out`, compressing its headers with `compressor`. Data
/// longer than a frame can carry is split into several frames (FIN on the last).
pub fn encode(frame: &Frame, compressor: &mut HeaderCompressor, out: &mut Vec<u8>) {
    match frame {
        Frame::SynStream {
            stream,
            associated,
            priority,
            flags,
            headers,
        } => {
            let mut payload = Vec::new();
            payload.extend_from_slice(&stream_id(*stream));
            payload.extend_from_slice(&stream_id(*associated));
            payload.push((priority & 0x7) << 5);
            payload.push(0);
            payload.extend(compressor.compress(headers));
            control(out, SYN_STREAM, *flags, &payload);
        }
        Frame::SynReply {
            stream,
            flags,
            headers,
        } => {
            let payload = header_payload(*stream, headers, compressor);
            control(out, SYN_REPLY, *flags, &payload);
        }
        Frame::Headers {
            stream,
            flags,
            headers,
        } => {
            let payload = header_payload(*stream, headers, compressor);
            control(out, HEADERS, *flags, &payload);
        }
        Frame::RstStream { stream, status } => {
            control(out, RST_STREAM, 0, &id_and_word(*stream, *status));
        }
        Frame::Settings { flags, entries } => {
            control(out, SETTINGS, *flags, &settings_payload(entries));
        }
        Frame::Ping { id: ping } => control(out, PING, 0, &ping.to_be_bytes()),
        Frame::GoAway {
            last_stream,
            status,
        } => control(out, GOAWAY, 0, &id_and_word(*last_stream, *status)),
        Frame::WindowUpdate { stream, delta } => {
            control(
                out,
                WINDOW_UPDATE,
                0,
                &id_and_word(*stream, delta & 0x7fff_ffff),
            );
        }
        Frame::Data {
            stream,
            flags,
            data,
        } => encode_data(*stream, *flags, data, out),
    }
}

/// A SYN_REPLY's or HEADERS' payload: the stream id, then the compressed headers.
fn header_payload(stream: u32, headers: &Headers, compressor: &mut HeaderCompressor) -> Vec<u8> {
    let mut payload = stream_id(stream).to_vec();
    payload.extend(compressor.compress(headers));
    payload
}

/// A stream id and a 32-bit word (RST_STREAM, GOAWAY, WINDOW_UPDATE).
fn id_and_word(stream: u32, word: u32) -> Vec<u8> {
    let mut payload = stream_id(stream).to_vec();
    payload.extend_from_slice(&word.to_be_bytes());
    payload
}

/// SETTINGS: the count, then each entry's flags, 24-bit key and value.
fn settings_payload(entries: &[(u8, u32, u32)]) -> Vec<u8> {
    let mut payload = (entries.len() as u32).to_be_bytes().to_vec();
    for (entry_flags, key, value) in entries {
        payload.push(*entry_flags);
        payload.extend_from_slice(&key.to_be_bytes()[1..]);
        payload.extend_from_slice(&value.to_be_bytes());
    }
    payload
}

/// DATA frames for `data`, as many as its length needs (one, empty, for no data).
fn encode_data(stream: u32, flags: u8, data: &[u8], out: &mut Vec<u8>) {
    let mut chunks = data.chunks(MAX_PAYLOAD).peekable();
    if data.is_empty() {
        out.extend_from_slice(&stream_id(stream));
        out.push(flags);
        out.extend_from_slice(&[0, 0, 0]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.extend_from_slice(&stream_id(stream));
        out.push(if last { flags } else { flags & !FLAG_FIN });
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(chunk);
    }
}

/// Reassembles frames from a byte stream, decompressing header blocks in order.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
    headers: HeaderDecompressor,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived. Unknown control frame types are
    /// skipped, as SPDY requires.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.buffer.len() < 8 {
                return Ok(None);
            }
            let len =
                u32::from_be_bytes([0, self.buffer[5], self.buffer[6], self.buffer[7]]) as usize;
            if self.buffer.len() < 8 + len {
                return Ok(None);
            }
            let head: [u8; 8] = [
                self.buffer[0],
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
                self.buffer[4],
                self.buffer[5],
                self.buffer[6],
                self.buffer[7],
            ];
            let payload: Vec<u8> = self.buffer[8..8 + len].to_vec();
            self.buffer.drain(..8 + len);
            let flags = head[4];
            if head[0] & 0x80 == 0 {
                let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                return Ok(Some(Frame::Data {
                    stream,
                    flags,
                    data: payload,
                }));
            }
            let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
            if version != VERSION {
                return Err(FrameError::Version(version));
            }
            let kind = u16::from_be_bytes([head[2], head[3]]);
            if let Some(frame) = self.control(kind, flags, &payload)? {
                return Ok(Some(frame));
            }
        }
    }

    /// The control frame of type `kind` with payload `p`; `None` for a type SPDY/3.1
    /// does not define.
    fn control(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Option<Frame>, FrameError> {
        let malformed = |kind: &'static str| FrameError::Malformed { kind, len: p.len() };
        Ok(Some(match kind {
            SYN_STREAM => self.syn_stream(flags, p)?,
            SYN_REPLY | HEADERS => self.header_frame(kind, flags, p)?,
            RST_STREAM => Frame::RstStream {
                stream: stream_at(p, 0).ok_or(malformed("RST_STREAM"))?,
                status: word(p, 4).ok_or(malformed("RST_STREAM"))?,
            },
            SETTINGS => settings(flags, p)?,
            PING => Frame::Ping {
                id: word(p, 0).ok_or(malformed("PING"))?,
            },
            GOAWAY => Frame::GoAway {
                last_stream: stream_at(p, 0).ok_or(malformed("GOAWAY"))?,
                status: word(p, 4).unwrap_or(0),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream: stream_at(p, 0).ok_or(malformed("WINDOW_UPDATE"))?,
                delta: word(p, 4).ok_or(malformed("WINDOW_UPDATE"))? & 0x7fff_ffff,
            },
            _ => return Ok(None),
        }))
    }

    fn syn_stream(&mut self, flags: u8, p: &[u8]) -> Result<Frame, FrameError> {
        let (Some(stream), Some(associated), Some(priority)) =
            (stream_at(p, 0), stream_at(p, 4), p.get(8))
        else {
            return Err(FrameError::Malformed {
                kind: "SYN_STREAM",
                len: p.len(),
            });
        };
        let headers = self.headers.decompress(p.get(10..).unwrap_or_default())?;
        Ok(Frame::SynStream {
            stream,
            associated,
            priority: priority >> 5,
            flags,
            headers,
        })
    }

    /// A SYN_REPLY or a HEADERS frame: a stream id and a header block.
    fn header_frame(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Frame, FrameError> {
        let name = if kind == SYN_REPLY {
            "SYN_REPLY"
        } else {
            "HEADERS"
        };
        let stream = stream_at(p, 0).ok_or(FrameError::Malformed {
            kind: name,
            len: p.len(),
        })?;
        let headers = self.headers.decompress(&p[4..])?;
        Ok(if kind == SYN_REPLY {
            Frame::SynReply {
                stream,
                flags,
                headers,
            }
        } else {
            Frame::Headers {
                stream,
                flags,
                headers,
            }
        })
    }
}

/// The big-endian word at `at` of a payload, if it is that long.
fn word(p: &[u8], at: usize) -> Option<u32> {
    p.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

/// The stream id at `at` of a payload (the word without its top bit).
fn stream_at(p: &[u8], at: usize) -> Option<u32> {
    word(p, at).map(|w| w & 0x7fff_ffff)
}

/// SETTINGS: a count, then 8 bytes an entry (flags, 24-bit key, value).
fn settings(flags: u8, p: &[u8]) -> Result<Frame, FrameError> {
    let malformed = FrameError::Malformed {
        kind: "SETTINGS",
        len: p.len(),
    };
    let count = word(p, 0).ok_or(malformed.clone())? as usize;
    if p.len() < 4 + count * 8 {
        return Err(malformed);
    }
    let entries = (0..count)
        .map(|i| {
            let at = 4 + i * 8;
            (
                p[at],
                u32::from_be_bytes([0, p[at + 1], p[at + 2], p[at + 3]]),
                u32::from_be_bytes([p[at + 4], p[at + 5], p[at + 6], p[at + 7]]),
            )
        })
        .collect();
    Ok(Frame::Settings { flags, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert_eq!(&dict[..11], b"\0\0\0\x07options");
        // Its Adler-32, which a zlib stream compressed with it announces (FDICT).
        let (mut a, mut b) = (1u32, 0u32);
        for byte in &dict {
            a = (a + *byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_with_one_zlib_stream_per_direction() {
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 2,
                flags: FLAG_FIN,
                headers: headers(&[("streamtype", "stdin"), ("port", "8080")]),
            },
            Frame::SynReply {
                stream: 1,
                flags: 0,
                headers: Vec::new(),
            },
            Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream: 5,
                flags: FLAG_FIN,
                data: Vec::new(),
            },
            Frame::RstStream {
                stream: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping { id: 9 },
            Frame::WindowUpdate {
                stream: 1,
                delta: 4096,
            },
            Frame::Headers {
                stream: 1,
                flags: 0,
                headers: headers(&[("x", "y")]),
            },
            Frame::GoAway {
                last_stream: 3,
                status: 0,
            },
        ];
        let mut compressor = HeaderCompressor::default();
        let mut wire = Vec::new();
        for frame in &frames {
            encode(frame, &mut compressor, &mut wire);
        }
        // Fed a byte at a time, every frame comes back whole and in order.
        let mut decoder = Decoder::default();
        let mut back = Vec::new();
        for byte in &wire {
            decoder.push(&[*byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                back.push(frame);
            }
        }
        assert_eq!(back, frames);
    }

    #[test]
    fn bad_frames_are_refused_and_unknown_ones_skipped() {
        let mut decoder = Decoder::default();
        decoder.push(&[0x80, 0x02, 0, 1, 0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Version(2)));
        let mut decoder = Decoder::default();
        // An unknown control type (10), then a PING.
        decoder.push(&[0x80, 0x03, 0, 10, 0, 0, 0, 2, 1, 2]);
        decoder.push(&[0x80, 0x03, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        assert_eq!(decoder.next_frame(), Ok(Some(Frame::Ping { id: 7 })));
        let mut decoder = Decoder::default();
        decoder.push(&[0x80, 0x03, 0, 3, 0, 0, 0, 2, 0, 0]);
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::Malformed { .. })
        ));
        let mut decoder = Decoder::default();
        decoder.push(&[0x80, 0x03, 0, 2, 0, 0, 0, 6, 0, 0, 0, 1, 0xde, 0xad]);
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::Compression(_))
        ));
    }
}
