//! The attach protocol, spoken on a container monitor's control socket.
//!
//! A client (the daemon's streaming server) connects and sends one request line:
//!
//! ```text
//! attach <streams>\n        streams: any of i (stdin), o (stdout), e (stderr), or -
//! ```
//!
//! The monitor answers `ok\n` (or `error <why>\n` and closes). From then on both sides
//! send frames: one kind byte, a big-endian `u32` payload length, the payload.
//!
//! - client → monitor: [`Kind::Stdin`] data, [`Kind::CloseStdin`] (no payload),
//!   [`Kind::Resize`] (`u16` columns, `u16` rows, big-endian);
//! - monitor → client: [`Kind::Stdout`] / [`Kind::Stderr`] data, then [`Kind::Exit`]
//!   (`i32` exit code, big-endian) when the container's init has exited, after which the
//!   monitor closes the connection; or [`Kind::Error`] (a message) when an exec'd
//!   process could not be started.
//!
//! A client only receives output written after it attached; a client that cannot keep
//! up is dropped rather than slowing the container down. Any number of clients may be
//! attached at once; detaching never stops the container. Pure framing code here, plus
//! the client side; the codec is in `frames.rs`, which the monitor compiles too.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::MonitorPaths;

pub use super::frames::{
    Decoder, FrameError, Kind, MAX_FRAME, Streams, encode, parse_resize, resize_payload,
};

impl std::error::Error for FrameError {}

/// Connects to a running container's monitor and attaches to the given streams; the
/// returned socket speaks frames. An error when the container no longer runs.
pub fn attach(paths: &MonitorPaths, streams: Streams) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(paths.control_socket())?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    (&stream).write_all(format!("attach {}\n", streams.encode()).as_bytes())?;
    // Read the answer byte by byte: frames may follow it at once.
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match (&stream).read(&mut byte)? {
            0 => return Err(io::Error::other("the monitor closed the connection")),
            _ if byte[0] == b'\n' => break,
            _ if answer.len() > 4096 => return Err(io::Error::other("answer too long")),
            _ => answer.push(byte[0]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    if answer != "ok" {
        return Err(io::Error::other(
            answer.trim_start_matches("error ").to_string(),
        ));
    }
    stream.set_read_timeout(None)?;
    Ok(stream)
}
