//! Mounting and unmounting what containers are made of: image layers as a writable
//! overlay (a container's rootfs) or read-only (an image volume), the mount table's
//! view of a path, and removals that take "already gone" as done.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Mounts image layers (bottom first) as an overlay on `target`, with a private upper
/// layer in `scratch` (`scratch/upper`, `scratch/work`) where the runtime can make its
/// mount points; the container itself gets the root read-only from its spec.
pub fn mount_overlay(
    layers: &[std::path::PathBuf],
    scratch: &Path,
    target: &Path,
) -> io::Result<()> {
    if layers.is_empty() {
        return Err(io::Error::other("an image without layers has no rootfs"));
    }
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    mount_overlay_of(layers, &upper, &work, target)
}

/// Mounts image layers (bottom first) read-only on `target`: an overlay of them without an
/// upper layer, or the one layer of a one-layer image bound read-only (overlayfs wants
/// two layers then).
pub fn mount_read_only_layers(layers: &[std::path::PathBuf], target: &Path) -> io::Result<()> {
    match layers {
        [] => Err(io::Error::other(
            "an image without layers has no filesystem",
        )),
        [only] => {
            mount(
                Some(only.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            let read_only = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
            if let Err(err) = mount(None::<&str>, target, None::<&str>, read_only, None::<&str>) {
                let _ = unmount(target);
                return Err(err.into());
            }
            Ok(())
        }
        many => {
            let lower: Vec<String> = many.iter().rev().map(|l| l.display().to_string()).collect();
            let options = format!("lowerdir={}", lower.join(":"));
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(options.as_str()),
            )?;
            Ok(())
        }
    }
}

/// Mounts `lower` (bottom first) under `upper`, with `work`, as an overlay on `target`.
pub fn mount_overlay_of(
    lower: &[std::path::PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    let lower: Vec<String> = lower
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )?;
    Ok(())
}

/// Removes a directory tree; one that is not there is no error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a file; one that is not there is no error.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Unmounts whatever is mounted on `path`; nothing mounted there is not an error.
pub fn unmount(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Unmounts each entry of `dir` (until nothing is mounted there) and removes it, then
/// `dir`; none of it there is no error.
pub fn unmount_all(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        // Mounts may be stacked there (a start cut short, then retried).
        while is_mount_point(&path)? {
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)?;
        }
        // Empty now: remove_dir (or remove_file) never follows into anything.
        std::fs::remove_dir(&path).or_else(|_| std::fs::remove_file(&path))?;
    }
    std::fs::remove_dir(dir)
}

/// Whether something is mounted on `path` (it is the root of a mount in this namespace).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    // The mount table names real paths: a symlink on the way (`/var/run`) would not
    // match. The last component is never followed.
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(path == Path::new("/"));
    };
    let real = match std::fs::canonicalize(parent) {
        Ok(real) => real.join(name),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let wanted = real.as_os_str().as_bytes();
    let table = std::fs::read("/proc/self/mountinfo")?;
    Ok(table.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|point| unescape_octal(point) == wanted)
    }))
}

/// A mountinfo field with its `\NNN` escapes (space, tab, newline, backslash) undone.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push(
                digits
                    .iter()
                    .fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_their_escapes() {
        assert_eq!(unescape_octal(b"/a\\040b\\134c"), b"/a b\\c");
        assert_eq!(unescape_octal(b"/plain\\9"), b"/plain\\9");
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        assert!(!is_mount_point(Path::new("/proc/self")).unwrap());
    }
}
