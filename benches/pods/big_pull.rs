//! A big image pull (issue 18, figure 4): an image the benchmark builds itself, of many
//! gzip layers with a mix of large and small files, pulled from the local registry by
//! each runtime in turn and by the floor: each layer's blob fetched with one `curl` and
//! unpacked with one `tar`, all layers at once, nothing verified, nothing recorded. Each
//! pull starts after a `sync`, so that none pays for the writeback of the one before.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::common::images::{Compression, ImageConfig, LayerBuilder, TestImage};
use super::report::Figure;
use super::{Target, ms, turns};

/// The shape of the image: `layers` layers, of which every sixth holds one file of
/// `big_file` bytes and the others `small_files` files of 1 to 64 KiB under a few
/// directories, half of them random bytes and half text.
pub struct Shape {
    pub layers: usize,
    pub big_file: usize,
    pub small_files: usize,
}

impl Shape {
    pub fn full() -> Shape {
        Shape {
            layers: 24,
            big_file: 40 << 20,
            small_files: 250,
        }
    }

    pub fn smoke() -> Shape {
        Shape {
            layers: 3,
            big_file: 256 << 10,
            small_files: 10,
        }
    }
}

/// Bytes gzip cannot shrink (xorshift64 from `seed`).
fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text as logs and sources are: words and numbers, which gzip shrinks some 4×.
fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "container",
        "runtime",
        "the",
        "pod",
        "image",
        "layer",
        "kubelet",
        "of",
        "node",
        "=",
        "return",
        "{",
    ];
    let mut out = Vec::with_capacity(len + 32);
    let mut n = seed;
    while out.len() < len {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let word = WORDS[(n >> 33) as usize % WORDS.len()];
        out.extend_from_slice(word.as_bytes());
        out.extend_from_slice(if (n >> 40).is_multiple_of(9) {
            b"\n"
        } else {
            b" "
        });
        if (n >> 50).is_multiple_of(7) {
            out.extend_from_slice(format!("{} ", n >> 44).as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Layer `k` of the image.
fn layer(shape: &Shape, k: usize) -> super::common::images::Layer {
    let seed = 0x5eed_0000 + k as u64;
    let mut builder = LayerBuilder::new();
    if k.is_multiple_of(6) {
        builder = builder.file(
            &format!("big/blob-{k}"),
            &random(seed, shape.big_file),
            0o644,
        );
    } else {
        for f in 0..shape.small_files {
            let len = 1024 + (seed as usize * 7919 + f * 104_729) % (63 * 1024);
            let data = if f % 2 == 0 {
                random(seed * 1000 + f as u64, len)
            } else {
                text(seed * 1000 + f as u64, len)
            };
            let path = format!("layer-{k}/d{}/s{}/file-{f}", f % 5, f % 3);
            builder = builder.file(&path, &data, 0o644);
        }
    }
    builder.build(Compression::Gzip)
}

/// The image, its layers built on every CPU.
pub fn image(shape: &Shape) -> TestImage {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut layers: Vec<Option<super::common::images::Layer>> =
        (0..shape.layers).map(|_| None).collect();
    std::thread::scope(|scope| {
        for (part, slots) in layers.chunks_mut(shape.layers.div_ceil(cpus)).enumerate() {
            let first = part * shape.layers.div_ceil(cpus);
            scope.spawn(move || {
                for (n, slot) in slots.iter_mut().enumerate() {
                    *slot = Some(layer(shape, first + n));
                }
            });
        }
    });
    TestImage::new(
        layers.into_iter().flatten().collect(),
        ImageConfig::default(),
    )
}

/// `samples` pulls of `image` (pushed to `host` as `repository:1`) by each target and by
/// the floor, in turn; removed again after each.
pub async fn pulls(
    targets: &mut [Target],
    image: &TestImage,
    host: &str,
    repository: &str,
    samples: usize,
) -> Vec<Figure> {
    let reference = format!("{host}/{repository}:1");
    let blob_mib = image.layers.iter().map(|l| l.size).sum::<u64>() as f64 / f64::from(1 << 20);
    eprintln!(
        "big pulls: {} layers, {blob_mib:.0} MiB, {samples} samples",
        image.layers.len()
    );
    let label = format!(
        "PullImage, {} layers ({blob_mib:.0} MiB gzip)",
        image.layers.len()
    );
    let mut took = Figure::new(&label, "ms");
    let mut rate = Figure::new(&format!("{label}: throughput"), "MiB/s");
    for sample in 0..samples {
        for i in turns(sample, targets.len()) {
            clean_slate().await;
            let start = Instant::now();
            targets[i].pull(&reference).await;
            let elapsed = ms(start.elapsed());
            took.runtime(i).push(elapsed);
            rate.runtime(i).push(blob_mib / (elapsed / 1e3));
            targets[i].remove_image(&reference).await;
        }
        clean_slate().await;
        let elapsed = floor_pull(image, host, repository);
        took.floor.push(elapsed);
        rate.floor.push(blob_mib / (elapsed / 1e3));
    }
    vec![took, rate]
}

/// Before each pull: what the one before wrote is on disk (no pull pays for another's
/// writeback), then the usual idle gap.
async fn clean_slate() {
    nix::unistd::sync();
    super::settle().await;
}

/// The floor's pull: every layer at once, `curl | tar -xz` each, into a directory
/// removed afterwards (untimed). Returns the milliseconds until the last one ended.
fn floor_pull(image: &TestImage, host: &str, repository: &str) -> f64 {
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-floor-pull-")
        .tempdir()
        .expect("create the floor's unpack directory");
    let start = Instant::now();
    let children: Vec<_> = image
        .layers
        .iter()
        .enumerate()
        .map(|(n, layer)| {
            let target = dir.path().join(n.to_string());
            std::fs::create_dir(&target).expect("create a layer's directory");
            spawn_fetch(
                &format!("http://{host}/v2/{repository}/blobs/{}", layer.digest),
                &target,
            )
        })
        .collect();
    for mut child in children {
        let status = child.wait().expect("wait for curl | tar");
        assert!(status.success(), "floor: curl | tar exited with {status}");
    }
    ms(start.elapsed())
}

fn spawn_fetch(url: &str, target: &Path) -> std::process::Child {
    Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; curl -sfL "$1" | tar -xzf - -C "$2""#)
        .arg("floor-pull")
        .arg(url)
        .arg(target)
        .stdin(Stdio::null())
        .spawn()
        .expect("run sh (curl and tar)")
}
