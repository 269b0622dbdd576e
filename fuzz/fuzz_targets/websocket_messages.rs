//! A WebSocket client's bytes, as the streaming server reads them: tungstenite's frame
//! parser in the server role (as berth runs it), then berth's reading of each message
//! on the remotecommand and port-forward channels, and of the terminal size messages
//! on the resize channel.
#![no_main]

use std::io::{Cursor, Read, Write};

use berth::streaming::remotecommand::ResizeDecoder;
use berth::streaming::websocket::{Incoming, incoming};
use libfuzzer_sys::fuzz_target;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

/// The client's bytes in; what the server writes goes nowhere.
struct Wire(Cursor<Vec<u8>>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(1 << 20);
    config.max_frame_size = Some(1 << 20);
    let mut socket =
        WebSocket::from_raw_socket(Wire(Cursor::new(data.to_vec())), Role::Server, Some(config));
    let mut resize = ResizeDecoder::default();
    for _ in 0..256 {
        let Ok(message) = socket.read() else {
            break;
        };
        if let Incoming::Data(4, bytes) = incoming(&message) {
            let _ = resize.push(&bytes);
        }
    }
});
