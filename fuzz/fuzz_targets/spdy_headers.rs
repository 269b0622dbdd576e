//! Header blocks: any bytes, compressed as a SPDY client compresses them (zlib with the
//! SPDY dictionary), in a SYN_STREAM frame, so the decompressor and the header block
//! parser behind it see every shape of block.
#![no_main]

use berth::streaming::spdy::frame::{Decoder, dictionary};
use flate2::{Compress, Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|block: &[u8]| {
    let mut zlib = Compress::new(Compression::default(), true);
    if zlib.set_dictionary(&dictionary()).is_err() {
        return;
    }
    let mut compressed = Vec::with_capacity(block.len() + 64);
    if zlib
        .compress_vec(block, &mut compressed, FlushCompress::Sync)
        .is_err()
    {
        return;
    }
    // SYN_STREAM: stream 1, no associated stream, priority 0, then the block.
    let mut payload = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    payload.extend_from_slice(&compressed);
    let Ok(len) = u32::try_from(payload.len()) else {
        return;
    };
    if len >= 1 << 24 {
        return;
    }
    let mut frame = vec![0x80, 3, 0, 1, 0];
    frame.extend_from_slice(&len.to_be_bytes()[1..]);
    frame.extend_from_slice(&payload);
    let mut decoder = Decoder::default();
    decoder.push(&frame);
    while let Ok(Some(_)) = decoder.next_frame() {}
});
