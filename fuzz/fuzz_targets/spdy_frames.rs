//! SPDY/3.1 frames as a client sends them to the streaming server, cut at the fuzzer's
//! first byte: the decoder must return frames or an error, never panic or loop.
#![no_main]

use berth::streaming::spdy::frame::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::default();
    let cut = (cut as usize).min(bytes.len());
    for part in [&bytes[..cut], &bytes[cut..]] {
        decoder.push(part);
        while let Ok(Some(_)) = decoder.next_frame() {}
    }
});
