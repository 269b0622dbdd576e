//! The attach protocol's frames (see `attach`): the codec both ends use, in code that
//! needs only `core` and `alloc`, so the monitor (which has no standard library)
//! compiles this same file.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The largest payload either side accepts in one frame.
pub const MAX_FRAME: usize = 1 << 20;
const HEADER: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    CloseStdin = 3,
    Resize = 4,
    Exit = 5,
    /// The process could not be started (exec); the payload says why.
    Error = 6,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0 => Kind::Stdin,
            1 => Kind::Stdout,
            2 => Kind::Stderr,
            3 => Kind::CloseStdin,
            4 => Kind::Resize,
            5 => Kind::Exit,
            6 => Kind::Error,
            _ => return None,
        })
    }
}

/// Which of the container's streams a client wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl Streams {
    /// The request line's form: `ioe`, any subset, `-` for none.
    pub fn encode(self) -> String {
        let mut s = String::new();
        for (on, c) in [(self.stdin, 'i'), (self.stdout, 'o'), (self.stderr, 'e')] {
            if on {
                s.push(c);
            }
        }
        if s.is_empty() { "-".to_string() } else { s }
    }

    pub fn parse(text: &str) -> Option<Streams> {
        if text == "-" {
            return Some(Streams::default());
        }
        let mut streams = Streams::default();
        for c in text.chars() {
            let slot = match c {
                'i' => &mut streams.stdin,
                'o' => &mut streams.stdout,
                'e' => &mut streams.stderr,
                _ => return None,
            };
            if *slot {
                return None;
            }
            *slot = true;
        }
        (!text.is_empty()).then_some(streams)
    }
}

/// Appends one frame to `out`.
pub fn encode(kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A terminal size in a [`Kind::Resize`] frame.
pub fn resize_payload(columns: u16, rows: u16) -> [u8; 4] {
    let [c0, c1] = columns.to_be_bytes();
    let [r0, r1] = rows.to_be_bytes();
    [c0, c1, r0, r1]
}

/// `(columns, rows)` from a [`Kind::Resize`] payload.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    let bytes: [u8; 4] = payload.try_into().ok()?;
    Some((
        u16::from_be_bytes([bytes[0], bytes[1]]),
        u16::from_be_bytes([bytes[2], bytes[3]]),
    ))
}

/// A malformed frame: the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Kind(u8),
    TooLarge(usize),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Kind(kind) => write!(f, "unknown frame kind {kind}"),
            FrameError::TooLarge(len) => {
                write!(f, "a frame of {len} bytes is larger than {MAX_FRAME}")
            }
        }
    }
}

/// Reassembles frames from bytes as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<(Kind, Vec<u8>)>, FrameError> {
        if self.buffer.len() < HEADER {
            return Ok(None);
        }
        let kind = Kind::from_byte(self.buffer[0]).ok_or(FrameError::Kind(self.buffer[0]))?;
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buffer.len() < HEADER + len {
            return Ok(None);
        }
        let payload = self.buffer[HEADER..HEADER + len].to_vec();
        self.buffer.drain(..HEADER + len);
        Ok(Some((kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let mut wire = Vec::new();
        encode(Kind::Stdout, b"hello", &mut wire);
        encode(Kind::CloseStdin, b"", &mut wire);
        encode(Kind::Resize, &resize_payload(80, 24), &mut wire);
        for cut in 0..wire.len() {
            let mut decoder = Decoder::default();
            let mut frames = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                decoder.push(part);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(
                frames,
                vec![
                    (Kind::Stdout, b"hello".to_vec()),
                    (Kind::CloseStdin, Vec::new()),
                    (Kind::Resize, vec![0, 80, 0, 24]),
                ],
                "cut at {cut}"
            );
        }
        assert_eq!(parse_resize(&resize_payload(200, 50)), Some((200, 50)));
        assert_eq!(parse_resize(b"abc"), None);
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut decoder = Decoder::default();
        decoder.push(&[9, 0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Kind(9)));
        let mut decoder = Decoder::default();
        decoder.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn stream_sets_round_trip() {
        for bits in 0..8u8 {
            let streams = Streams {
                stdin: bits & 1 != 0,
                stdout: bits & 2 != 0,
                stderr: bits & 4 != 0,
            };
            assert_eq!(Streams::parse(&streams.encode()), Some(streams));
        }
        assert_eq!(Streams::parse("ii"), None);
        assert_eq!(Streams::parse("x"), None);
        assert_eq!(Streams::parse(""), None);
    }
}
