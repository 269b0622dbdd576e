//! Image layers: whatever a registry serves as one is unpacked into a directory, and
//! nothing may be written outside it, whatever the archive holds (`..`, absolute
//! paths, symlinks and hard links out, whiteouts of what is outside).
//!
//! Half the inputs are raw bytes (any compression, any tar); the other half are
//! archives built from the fuzzer's choice of entries, so that the tricky shapes come
//! often. Each is unpacked into `<scratch>/rootfs` beside an empty `<scratch>/beside`:
//! afterwards the scratch directory must hold just those two, `beside` still empty.
//! `make fuzz` runs this target with the host's root read-only (a private mount
//! namespace), so an escape that this check cannot see cannot do harm either.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use berth::image::unpack::unpack;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Segment {
    Name(u8),
    Dot,
    DotDot,
    Empty,
    Whiteout(u8),
    Opaque,
    Beside,
}

#[derive(Debug, Arbitrary)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<Segment>, bool),
    Hardlink(Vec<Segment>),
    Fifo,
}

#[derive(Debug, Arbitrary)]
struct Entry {
    absolute: bool,
    path: Vec<Segment>,
    kind: Kind,
    mode: u16,
}

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(Vec<u8>),
    Built(Vec<Entry>),
}

fn path(segments: &[Segment], absolute: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if absolute {
        out.push(b'/');
    }
    for (i, segment) in segments.iter().take(8).enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        match segment {
            Segment::Name(n) => out.push(b'a' + n % 4),
            Segment::Dot => out.push(b'.'),
            Segment::DotDot => out.extend_from_slice(b".."),
            Segment::Empty => {}
            Segment::Whiteout(n) => {
                out.extend_from_slice(b".wh.");
                out.push(b'a' + n % 4);
            }
            Segment::Opaque => out.extend_from_slice(b".wh..wh..opq"),
            Segment::Beside => out.extend_from_slice(b"../beside"),
        }
    }
    out.truncate(99);
    out
}

fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries.iter().take(32) {
        let mut header = tar::Header::new_ustar();
        let (kind, link, data): (tar::EntryType, Vec<u8>, &[u8]) = match &entry.kind {
            Kind::File(data) => (tar::EntryType::Regular, Vec::new(), data),
            Kind::Dir => (tar::EntryType::Directory, Vec::new(), &[]),
            Kind::Symlink(target, absolute) => {
                (tar::EntryType::Symlink, path(target, *absolute), &[])
            }
            Kind::Hardlink(target) => (tar::EntryType::Link, path(target, false), &[]),
            Kind::Fifo => (tar::EntryType::Fifo, Vec::new(), &[]),
        };
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(u32::from(entry.mode) & 0o7777);
        header.set_mtime(1_704_067_200);
        {
            let ustar = header.as_ustar_mut().expect("a ustar header");
            let name = path(&entry.path, entry.absolute);
            ustar.name[..name.len()].copy_from_slice(&name);
            ustar.linkname[..link.len()].copy_from_slice(&link);
        }
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fuzz_target!(|input: Input| {
    let blob = match &input {
        Input::Raw(bytes) => bytes.clone(),
        Input::Built(entries) => archive(entries),
    };
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let dest = scratch.path().join("rootfs");
    let beside = scratch.path().join("beside");
    std::fs::create_dir(&dest).expect("rootfs");
    std::fs::create_dir(&beside).expect("beside");
    let _ = unpack(Cursor::new(blob), &dest);
    assert_eq!(
        names(scratch.path()),
        ["beside", "rootfs"],
        "written beside the rootfs: {input:?}"
    );
    assert!(
        names(&beside).is_empty(),
        "written into a sibling: {input:?}"
    );
});
