//! Unpacking one image layer (a tar stream, gzip, zstd or uncompressed) into a directory
//! that overlayfs can use as a lower layer.
//!
//! - OCI whiteouts become overlayfs whiteouts: `dir/.wh.name` → a 0:0 character device
//!   `dir/name`; `dir/.wh..wh..opq` → the `trusted.overlay.opaque=y` xattr on `dir`.
//! - Regular files, directories, symlinks, hard links, devices and FIFOs are created with
//!   the entry's ownership, mode (setuid, setgid and sticky bits included), mtime and
//!   xattrs (PAX `SCHILY.xattr.*`).
//! - Nothing is ever written outside the destination: an entry path or hard-link target
//!   with a `..` component is refused, leading `/` are stripped, and no path is written
//!   through a symlink (a symlink in a parent position is refused), so a `x -> /etc`
//!   symlink followed by `x/passwd` cannot reach the host's `/etc`. Symlinks themselves
//!   may point anywhere: berth never follows them.
//! - The diff ID (sha256 of the uncompressed tar) is computed as the stream is read, for
//!   the caller to check against the image config.
//!
//! The destination is a fresh directory the caller renames into place only after success,
//! so a failed or interrupted unpack never leaves a layer a container could use.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};

use super::digest::{Digest, HashingReader};

/// How a layer blob is compressed, told by its first bytes (media types are sometimes
/// wrong; magic numbers are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The bytes [`Compression::sniff`] needs (zstd's magic; gzip's is 2).
const MAGIC_LEN: usize = 4;

impl Compression {
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// What unpacking a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    pub compression: Compression,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Files, directories, links and nodes created.
    pub inodes: u64,
}

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("layer entry {entry:?}: {source}")]
    EntryIo { entry: String, source: io::Error },
    #[error("layer stream: {0}")]
    Stream(io::Error),
}

const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// Unpacks the layer read from `blob` into `dest`, an existing empty directory.
pub fn unpack(mut blob: impl Read, dest: &Path) -> Result<UnpackStats, UnpackError> {
    // The magic bytes, however few a read gives at a time (a blob read as it downloads).
    let mut head = Vec::with_capacity(MAGIC_LEN);
    let mut byte = [0u8; MAGIC_LEN];
    while head.len() < MAGIC_LEN {
        let n = blob
            .read(&mut byte[..MAGIC_LEN - head.len()])
            .map_err(UnpackError::Stream)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&byte[..n]);
    }
    let compression = Compression::sniff(&head);
    let buffered = BufReader::with_capacity(128 * 1024, std::io::Cursor::new(head).chain(blob));
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Stream)?,
        ),
    };
    let mut hashing = HashingReader::new(decompressed);
    let mut unpacker = Unpacker {
        dest,
        bytes: 0,
        inodes: 0,
        dir_times: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(UnpackError::Stream)? {
            let entry = entry.map_err(UnpackError::Stream)?;
            unpacker.entry(entry)?;
        }
    }
    unpacker.finish_dirs();
    let (diff_id, _) = hashing.finish().map_err(UnpackError::Stream)?;
    Ok(UnpackStats {
        diff_id,
        compression,
        bytes: unpacker.bytes,
        inodes: unpacker.inodes,
    })
}

struct Unpacker<'a> {
    dest: &'a Path,
    bytes: u64,
    inodes: u64,
    /// Directory mtimes, set last: creating children changes them.
    dir_times: Vec<(PathBuf, u64)>,
}

/// Ownership and times, with PAX records taking precedence over the ustar header.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An entry's path as its errors show it.
struct Named {
    shown: String,
}

impl Named {
    fn fail(&self, reason: &str) -> UnpackError {
        UnpackError::Entry {
            entry: self.shown.clone(),
            reason: reason.to_string(),
        }
    }

    fn io(&self, source: io::Error) -> UnpackError {
        UnpackError::EntryIo {
            entry: self.shown.clone(),
            source,
        }
    }
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path().map_err(UnpackError::Stream)?.into_owned();
        let named = Named {
            shown: raw_path.display().to_string(),
        };
        let rel = confine(&raw_path).map_err(|reason| named.fail(reason))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            // The archive root ("./"): nothing to create.
            return Ok(());
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.make_parents(parent).map_err(|e| match e {
            ParentError::Symlink(p) => named.fail(&format!("parent {} is a symlink", p.display())),
            ParentError::NotDir(p) => {
                named.fail(&format!("parent {} is not a directory", p.display()))
            }
            ParentError::Io(e) => named.io(e),
        })?;

        if name == OPAQUE {
            let dir = self.dest.join(parent);
            xattr::set(&dir, "trusted.overlay.opaque", b"y").map_err(|e| named.io(e))?;
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent, hidden, &named);
        }

        let meta = read_meta(&mut entry).map_err(|e| named.io(e))?;
        let target = self.dest.join(&rel);
        match kind {
            tar::EntryType::Directory => return self.directory(target, &meta, &named),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.regular(&mut entry, &target, &named)?;
            }
            tar::EntryType::Symlink => symlink(&entry, &target, &named)?,
            // Same inode: its metadata came with the first name.
            tar::EntryType::Link => return self.hard_link(&entry, &target, &named),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                node(&entry, kind, &target, &named)?;
            }
            other => {
                tracing::debug!(entry = %named.shown, kind = ?other, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        self.inodes += 1;
        let is_symlink = kind == tar::EntryType::Symlink;
        apply_meta(&target, &meta, is_symlink).map_err(|e| named.io(e))?;
        Ok(())
    }

    /// An OCI whiteout `.wh.<hidden>` in `parent`: overlayfs's 0:0 character device in
    /// the hidden file's place.
    fn whiteout(&mut self, parent: &Path, hidden: &str, named: &Named) -> Result<(), UnpackError> {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(named.fail("whiteout names no file"));
        }
        let target = self.dest.join(parent).join(hidden);
        remove_existing(&target, false).map_err(|e| named.io(e))?;
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| named.io(e.into()))?;
        self.inodes += 1;
        Ok(())
    }

    /// A directory, made unless one is already there (anything else in its place is
    /// removed); its mtime is set at the end, once its children are in.
    fn directory(
        &mut self,
        target: PathBuf,
        meta: &Meta,
        named: &Named,
    ) -> Result<(), UnpackError> {
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_existing(&target, false).map_err(|e| named.io(e))?;
                fs::create_dir(&target).map_err(|e| named.io(e))?;
            }
            Err(_) => fs::create_dir(&target).map_err(|e| named.io(e))?,
        }
        self.inodes += 1;
        apply_meta(&target, meta, false).map_err(|e| named.io(e))?;
        self.dir_times.push((target, meta.mtime));
        Ok(())
    }

    /// A regular file's content, written to a new file (never through a symlink left
    /// at its path).
    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        named: &Named,
    ) -> Result<(), UnpackError> {
        remove_existing(target, true).map_err(|e| named.io(e))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(target)
            .map_err(|e| named.io(e))?;
        self.bytes += io::copy(entry, &mut file).map_err(|e| named.io(e))?;
        drop::<File>(file);
        Ok(())
    }

    /// A hard link to a file of this layer (not a directory), its target confined to
    /// the layer and reached through no symlink.
    fn hard_link<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        target: &Path,
        named: &Named,
    ) -> Result<(), UnpackError> {
        let link = link_target(entry, named, "hard link")?;
        let source_rel =
            confine(&link).map_err(|reason| named.fail(&format!("hard link target: {reason}")))?;
        let source = self.dest.join(&source_rel);
        self.check_no_symlink_parents(&source_rel)
            .map_err(|_| named.fail("hard link target goes through a symlink"))?;
        match fs::symlink_metadata(&source) {
            Ok(m) if !m.is_dir() => {}
            Ok(_) => return Err(named.fail("hard link to a directory")),
            Err(_) => return Err(named.fail("hard link to a file not in this layer")),
        }
        remove_existing(target, true).map_err(|e| named.io(e))?;
        fs::hard_link(&source, target).map_err(|e| named.io(e))?;
        Ok(())
    }

    /// Creates missing parent directories of an entry, refusing to go through a symlink
    /// or a non-directory.
    fn make_parents(&self, parent: &Path) -> Result<(), ParentError> {
        let mut path = self.dest.to_path_buf();
        for component in parent.components() {
            path.push(component);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => return Err(ParentError::Symlink(path)),
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(ParentError::NotDir(path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(ParentError::Io)?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(ParentError::Io)?;
                }
                Err(e) => return Err(ParentError::Io(e)),
            }
        }
        Ok(())
    }

    fn check_no_symlink_parents(&self, rel: &Path) -> Result<(), ()> {
        let mut path = self.dest.to_path_buf();
        if let Some(parent) = rel.parent() {
            for component in parent.components() {
                path.push(component);
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    _ => return Err(()),
                }
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) {
        // Deepest first does not matter for mtimes: setting a directory's own time does
        // not touch its parent's.
        for (dir, mtime) in self.dir_times.drain(..) {
            // A time that cannot be set is cosmetic; the layer is still right.
            let _ = set_mtime(&dir, mtime);
        }
    }
}

enum ParentError {
    Symlink(PathBuf),
    NotDir(PathBuf),
    Io(io::Error),
}

/// The target a link entry (a `what`) names; one without a target is refused.
fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    named: &Named,
    what: &str,
) -> Result<PathBuf, UnpackError> {
    Ok(entry
        .link_name()
        .map_err(|e| named.io(e))?
        .ok_or_else(|| named.fail(&format!("{what} without a target")))?
        .into_owned())
}

/// A symlink, pointing wherever the entry says (berth never follows it).
fn symlink<R: Read>(
    entry: &tar::Entry<'_, R>,
    target: &Path,
    named: &Named,
) -> Result<(), UnpackError> {
    let link = link_target(entry, named, "symlink")?;
    remove_existing(target, true).map_err(|e| named.io(e))?;
    std::os::unix::fs::symlink(&link, target).map_err(|e| named.io(e))
}

/// A character or block device, or a FIFO.
fn node<R: Read>(
    entry: &tar::Entry<'_, R>,
    kind: tar::EntryType,
    target: &Path,
    named: &Named,
) -> Result<(), UnpackError> {
    let (flag, dev) = match kind {
        tar::EntryType::Char => (SFlag::S_IFCHR, device(entry.header())),
        tar::EntryType::Block => (SFlag::S_IFBLK, device(entry.header())),
        _ => (SFlag::S_IFIFO, 0),
    };
    remove_existing(target, true).map_err(|e| named.io(e))?;
    mknod(target, flag, Mode::from_bits_truncate(0o600), dev).map_err(|e| named.io(e.into()))?;
    Ok(())
}

/// Turns an archive path into a relative path inside the layer: leading `/` and `.` are
/// dropped, `..` is refused.
fn confine(path: &Path) -> Result<PathBuf, &'static str> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err("path has a '..' component"),
            Component::Prefix(_) => return Err("path has a prefix"),
        }
    }
    Ok(rel)
}

/// Removes whatever is at `path` so an entry can take its place. A directory is only
/// removed when `dirs_too` (a non-directory entry replacing a directory).
fn remove_existing(path: &Path, dirs_too: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if dirs_too {
                fs::remove_dir_all(path)
            } else {
                Ok(())
            }
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn device(header: &tar::Header) -> u64 {
    let major = header.device_major().ok().flatten().unwrap_or(0);
    let minor = header.device_minor().ok().flatten().unwrap_or(0);
    makedev(major.into(), minor.into())
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        uid: header.uid().unwrap_or(0) as u32,
        gid: header.gid().unwrap_or(0) as u32,
        mode: header.mode().unwrap_or(0o644) & 0o7777,
        mtime: header.mtime().unwrap_or(0),
        xattrs: Vec::new(),
    };
    if let Some(extensions) = entry.pax_extensions()? {
        let mut numbers: HashMap<&'static str, u64> = HashMap::new();
        for extension in extensions {
            let extension = extension?;
            let key = extension.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs
                    .push((name.to_vec(), extension.value_bytes().to_vec()));
                continue;
            }
            let field = match key {
                b"uid" => "uid",
                b"gid" => "gid",
                b"mtime" => "mtime",
                _ => continue,
            };
            // PAX mtime may have a fraction: whole seconds are enough here.
            let text = String::from_utf8_lossy(extension.value_bytes());
            if let Ok(value) = text.split('.').next().unwrap_or("").parse() {
                numbers.insert(field, value);
            }
        }
        if let Some(uid) = numbers.get("uid") {
            meta.uid = *uid as u32;
        }
        if let Some(gid) = numbers.get("gid") {
            meta.gid = *gid as u32;
        }
        if let Some(mtime) = numbers.get("mtime") {
            meta.mtime = *mtime;
        }
    }
    Ok(meta)
}

/// Ownership first (chown clears setuid/setgid), then mode, xattrs and mtime.
fn apply_meta(path: &Path, meta: &Meta, is_symlink: bool) -> io::Result<()> {
    fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if is_symlink {
        return set_mtime(path, meta.mtime);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?;
    for (name, value) in &meta.xattrs {
        xattr::set(path, std::ffi::OsStr::from_bytes(name), value)?;
    }
    set_mtime(path, meta.mtime)
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let time = TimeSpec::new(mtime as i64, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// Builds a tar in memory; entries are (path, kind, data-or-link, mode).
    struct TarBuilder {
        builder: tar::Builder<Vec<u8>>,
    }

    impl TarBuilder {
        fn new() -> Self {
            TarBuilder {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_size(size);
            // Raw names, so tests can write paths the safe setters would refuse.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            h
        }

        fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
            let h = Self::header(path, tar::EntryType::Regular, mode, data.len() as u64);
            self.builder.append(&h, data).unwrap();
            self
        }

        fn owned_file(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
            let mut h = Self::header(path, tar::EntryType::Regular, mode, data.len() as u64);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_cksum();
            self.builder.append(&h, data).unwrap();
            self
        }

        fn dir(mut self, path: &str, mode: u32) -> Self {
            let h = Self::header(path, tar::EntryType::Directory, mode, 0);
            self.builder.append(&h, &[][..]).unwrap();
            self
        }

        fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
            let mut h = Self::header(path, kind, 0o777, 0);
            h.set_link_name_literal(target).unwrap();
            h.set_cksum();
            self.builder.append(&h, &[][..]).unwrap();
            self
        }

        fn xattr_file(mut self, path: &str, name: &str, value: &str) -> Self {
            let record = format!("SCHILY.xattr.{name}={value}\n");
            let line = {
                // PAX length counts itself.
                let mut len = record.len() + 3;
                loop {
                    let candidate = format!("{len} {record}");
                    if candidate.len() == len {
                        break candidate;
                    }
                    len = candidate.len();
                }
            };
            let h = Self::header(
                "PaxHeader",
                tar::EntryType::XHeader,
                0o644,
                line.len() as u64,
            );
            self.builder.append(&h, line.as_bytes()).unwrap();
            self.file(path, b"x", 0o644)
        }

        fn finish(self) -> Vec<u8> {
            self.builder.into_inner().unwrap()
        }
    }

    fn unpack_into(tar: &[u8]) -> (tempfile::TempDir, Result<UnpackStats, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = unpack(tar, dir.path());
        (dir, result)
    }

    #[test]
    fn files_dirs_links_modes_and_owners() {
        let tar = TarBuilder::new()
            .dir("bin/", 0o755)
            .file("bin/busybox", b"#!binary", 0o755)
            .link(tar::EntryType::Symlink, "bin/sh", "busybox")
            .link(tar::EntryType::Symlink, "bin/abs", "/bin/busybox")
            .link(tar::EntryType::Link, "bin/hard", "bin/busybox")
            .file("usr/bin/su", b"su", 0o4755)
            .owned_file("srv/data", b"data", 0o2640, 1000, 2000)
            .dir("tmp/", 0o1777)
            .finish();
        let (dir, result) = unpack_into(&tar);
        let stats = result.unwrap();
        let root = dir.path();
        assert_eq!(stats.diff_id, Digest::of(&tar));
        assert_eq!(stats.compression, Compression::None);
        assert_eq!(stats.bytes, 8 + 2 + 4);
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(root.join("bin/abs")).unwrap(),
            Path::new("/bin/busybox")
        );
        let busybox = fs::metadata(root.join("bin/busybox")).unwrap();
        let hard = fs::metadata(root.join("bin/hard")).unwrap();
        assert_eq!(busybox.ino(), hard.ino(), "hard link shares the inode");
        assert_eq!(busybox.mode() & 0o7777, 0o755);
        assert_eq!(busybox.mtime(), 1_700_000_000);
        assert_eq!(
            fs::metadata(root.join("usr/bin/su")).unwrap().mode() & 0o7777,
            0o4755
        );
        let data = fs::metadata(root.join("srv/data")).unwrap();
        assert_eq!(
            (data.uid(), data.gid(), data.mode() & 0o7777),
            (1000, 2000, 0o2640)
        );
        let tmp = fs::metadata(root.join("tmp")).unwrap();
        assert_eq!(tmp.mode() & 0o7777, 0o1777);
        assert_eq!(
            fs::metadata(root.join("usr")).unwrap().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let tar = TarBuilder::new()
            .dir("etc/", 0o755)
            .file("etc/.wh.motd", b"", 0o644)
            .dir("var/cache/", 0o755)
            .file("var/cache/.wh..wh..opq", b"", 0o644)
            .file("var/cache/new", b"n", 0o644)
            .finish();
        let (dir, result) = unpack_into(&tar);
        result.unwrap();
        let root = dir.path();
        let motd = fs::symlink_metadata(root.join("etc/motd")).unwrap();
        assert!(motd.file_type().is_char_device());
        assert_eq!(motd.rdev(), 0);
        assert!(!root.join("etc/.wh.motd").exists());
        assert_eq!(
            xattr::get(root.join("var/cache"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!root.join("var/cache/.wh..wh..opq").exists());
        assert!(root.join("var/cache/new").exists());
    }

    #[test]
    fn xattrs_from_pax_records() {
        let tar = TarBuilder::new()
            .xattr_file("bin/ping", "user.test", "hello")
            .finish();
        let (dir, result) = unpack_into(&tar);
        result.unwrap();
        assert_eq!(
            xattr::get(dir.path().join("bin/ping"), "user.test").unwrap(),
            Some(b"hello".to_vec())
        );
    }

    #[test]
    fn escapes_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        let cases = [
            TarBuilder::new().file("../escape", b"x", 0o644).finish(),
            TarBuilder::new()
                .file("a/../../escape", b"x", 0o644)
                .finish(),
            // A symlink to an absolute directory, then a file through it.
            TarBuilder::new()
                .link(
                    tar::EntryType::Symlink,
                    "x",
                    outside.path().to_str().unwrap(),
                )
                .file("x/victim", b"owned", 0o644)
                .finish(),
            // A relative symlink climbing out, then a file through it.
            TarBuilder::new()
                .link(tar::EntryType::Symlink, "up", "../../../../../../..")
                .file("up/tmp/victim", b"owned", 0o644)
                .finish(),
            TarBuilder::new()
                .link(tar::EntryType::Link, "h", "../../etc/passwd")
                .finish(),
            TarBuilder::new()
                .link(
                    tar::EntryType::Symlink,
                    "s",
                    outside.path().to_str().unwrap(),
                )
                .link(tar::EntryType::Link, "h", "s/victim")
                .finish(),
        ];
        for (i, tar) in cases.iter().enumerate() {
            let (_dir, result) = unpack_into(tar);
            assert!(
                matches!(result, Err(UnpackError::Entry { .. })),
                "case {i} was not refused: {result:?}"
            );
        }
        assert!(!victim.exists());
        assert!(!outside.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn leading_slash_is_stripped() {
        let tar = TarBuilder::new()
            .file("/etc/hostname", b"h", 0o644)
            .finish();
        let (dir, result) = unpack_into(&tar);
        result.unwrap();
        assert_eq!(fs::read(dir.path().join("etc/hostname")).unwrap(), b"h");
    }

    #[test]
    fn gzip_and_zstd_give_the_diff_id_of_the_tar() {
        let tar = TarBuilder::new().file("a", b"hello", 0o644).finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for (blob, kind) in [(gz, Compression::Gzip), (zst, Compression::Zstd)] {
            let (dir, result) = unpack_into(&blob);
            let stats = result.unwrap();
            assert_eq!(stats.compression, kind);
            assert_eq!(stats.diff_id, Digest::of(&tar));
            assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"hello");
        }
    }

    /// A blob read as it downloads may come a byte at a time: its compression is still
    /// told by its magic bytes.
    #[test]
    fn a_blob_that_comes_a_byte_at_a_time_is_told_by_its_magic() {
        struct Trickle(std::io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let one = buf.len().min(1);
                self.0.read(&mut buf[..one])
            }
        }
        let tar = TarBuilder::new().file("a", b"hello", 0o644).finish();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stats = unpack(Trickle(std::io::Cursor::new(zst)), dir.path()).unwrap();
        assert_eq!(stats.compression, Compression::Zstd);
        assert_eq!(stats.diff_id, Digest::of(&tar));
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"hello");
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let tar = TarBuilder::new()
            .file("f", b"one", 0o644)
            .file("f", b"two", 0o600)
            .link(tar::EntryType::Symlink, "g", "f")
            .file("g", b"real", 0o644)
            .finish();
        let (dir, result) = unpack_into(&tar);
        result.unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"two");
        assert!(
            !fs::symlink_metadata(dir.path().join("g"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn truncated_stream_fails() {
        let tar = TarBuilder::new().file("a", &[7u8; 4096], 0o644).finish();
        let (_dir, result) = unpack_into(&tar[..1000]);
        assert!(result.is_err());
    }
}
