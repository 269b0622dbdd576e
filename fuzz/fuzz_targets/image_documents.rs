//! What a registry serves (or an OCI archive holds): manifests and indexes by any of the
//! media types a server may claim (the fuzzer's first byte chooses), image configs,
//! and the digests in them.
#![no_main]

use berth::image::digest::Digest;
use berth::image::manifest::{Document, ImageConfig, parse, select_platform};
use libfuzzer_sys::fuzz_target;

const SERVED: [&str; 6] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/octet-stream",
];

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match parse(SERVED[kind as usize % SERVED.len()], bytes) {
        Ok(Document::Index(index)) => {
            if let Some(chosen) = select_platform(&index) {
                let _ = Digest::parse(&chosen.digest);
            }
        }
        Ok(Document::Manifest(manifest)) => {
            for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
                let _ = Digest::parse(&descriptor.digest);
            }
        }
        Err(_) => {}
    }
    if let Ok(config) = serde_json::from_slice::<ImageConfig>(bytes) {
        for id in &config.rootfs.diff_ids {
            let _ = Digest::parse(id);
        }
    }
});
