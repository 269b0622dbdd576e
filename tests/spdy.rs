//! berth's SPDY/3.1 frames against moby/spdystream's framer, the one the Kubernetes
//! clients use: `tests/go/spdyecho` decodes what berth encodes and encodes it again for
//! berth to decode, across one zlib header stream per direction.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use berth::streaming::spdy::frame::{
    Decoder, FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, HeaderCompressor, RST_CANCEL, encode,
};

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn spdystream_reads_and_writes_our_frames() {
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
            priority: 0,
            flags: FLAG_UNIDIRECTIONAL,
            headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
        },
        Frame::SynReply {
            stream: 1,
            flags: 0,
            headers: headers(&[("x-stream-protocol-version", "v4.channel.k8s.io")]),
        },
        Frame::Data {
            stream: 3,
            flags: 0,
            data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        },
        Frame::Data {
            stream: 3,
            flags: FLAG_FIN,
            data: vec![7u8; 100_000],
        },
        Frame::Headers {
            stream: 1,
            flags: 0,
            headers: headers(&[("streamtype", "resize")]),
        },
        Frame::Ping { id: 42 },
        Frame::RstStream {
            stream: 3,
            status: RST_CANCEL,
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
    let mut echo = Command::new(common::go_program("spdyecho"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start spdyecho");
    let mut stdin = echo.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&wire));
    let output = echo.wait_with_output().expect("spdyecho");
    writer.join().unwrap().expect("feed spdyecho");
    assert!(
        output.status.success(),
        "spdyecho refused our frames: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut decoder = Decoder::default();
    decoder.push(&output.stdout);
    let mut back = Vec::new();
    while let Some(frame) = decoder.next_frame().expect("a frame spdystream wrote") {
        back.push(frame);
    }
    // Go keeps headers in a map: their order is not kept, their set is.
    let normalize = |frames: Vec<Frame>| -> Vec<Frame> {
        frames
            .into_iter()
            .map(|mut frame| {
                if let Frame::SynStream { headers, .. }
                | Frame::SynReply { headers, .. }
                | Frame::Headers { headers, .. } = &mut frame
                {
                    headers.sort();
                }
                frame
            })
            .collect()
    };
    let (back, frames) = (normalize(back), normalize(frames));
    assert_eq!(back.len(), frames.len(), "frame count");
    for (i, (got, sent)) in back.iter().zip(&frames).enumerate() {
        // Frames carry up to 100 kB of data: say which one differs, not all of it.
        assert!(got == sent, "frame {i} came back different");
    }
}
