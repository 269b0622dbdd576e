//! The monitor program: built with berth (`monitor/`, by the build script), embedded in
//! the berth binary, and installed under the state directory at start-up ([`install`]),
//! as the pause program is.

use std::path::{Path, PathBuf};

/// The monitor program, as built for this berth.
pub static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-monitor"));

/// Where the daemon installs the monitor: `<state>/bin/berth-monitor`.
pub fn program_path(state: &Path) -> PathBuf {
    state.join("bin").join("berth-monitor")
}

/// Installs the monitor program under `state` unless the same program is there already.
/// A new program replaces the old one by a rename: monitors still running keep theirs.
pub fn install(state: &Path) -> std::io::Result<PathBuf> {
    let target = program_path(state);
    if std::fs::read(&target).is_ok_and(|current| current == PROGRAM) {
        return Ok(target);
    }
    let dir = state.join("bin");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".berth-monitor.tmp");
    std::fs::write(&tmp, PROGRAM)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program types of an ELF64 file's segments.
    fn segment_types(elf: &[u8]) -> Vec<u32> {
        assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF file");
        let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&elf[0x20..0x28]);
        let table = u64::from_le_bytes(offset) as usize;
        let (size, count) = (u16_at(0x36), u16_at(0x38));
        (0..count)
            .map(|i| {
                let at = table + i * size;
                u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]])
            })
            .collect()
    }

    #[test]
    fn the_monitor_is_static_and_small() {
        const PT_DYNAMIC: u32 = 2;
        const PT_INTERP: u32 = 3;
        let segments = segment_types(PROGRAM);
        assert!(!segments.is_empty());
        assert!(
            !segments.contains(&PT_INTERP) && !segments.contains(&PT_DYNAMIC),
            "no dynamic loader, no shared libraries: {segments:?}"
        );
        // Every page of it is resident once per container.
        assert!(PROGRAM.len() < 256 << 10, "{} bytes", PROGRAM.len());
    }

    #[test]
    fn installs_once_and_replaces_by_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = install(dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), PROGRAM);
        assert!(crate::oci::is_executable(&path));
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = inode(&path);
        install(dir.path()).unwrap();
        assert_eq!(inode(&path), first, "the same program is left alone");
        std::fs::write(&path, b"older").unwrap();
        install(dir.path()).unwrap();
        assert_ne!(
            inode(&path),
            first,
            "another program is replaced, not overwritten"
        );
        assert_eq!(std::fs::read(&path).unwrap(), PROGRAM);
    }
}
