//! The attach protocol between the daemon and a container's monitor: frames cut at the
//! fuzzer's first byte, the stream request line, resize payloads; and the runtime's
//! JSON error log, which both read.
#![no_main]

use berth::monitor::frames::{Decoder, Kind, Streams, parse_resize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::default();
    let cut = (cut as usize).min(bytes.len());
    for part in [&bytes[..cut], &bytes[cut..]] {
        decoder.push(part);
        while let Ok(Some((kind, payload))) = decoder.next_frame() {
            if kind == Kind::Resize {
                let _ = parse_resize(&payload);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = Streams::parse(text);
        let _ = berth::oci::runc_log::last_error(text);
    }
});
