//! Network namespaces pinned at a path: a new namespace is made by a short-lived thread
//! that unshares its network namespace and bind-mounts it onto a file, so CNI plugins and
//! the pod's containers join it by path and it lives as long as the pin.

use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// Creates a new network namespace pinned at `pin` (a file that must not exist yet).
pub fn create(pin: &Path) -> io::Result<()> {
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(pin)?;
    let target = pin.to_path_buf();
    let made = std::thread::spawn(move || -> io::Result<()> {
        // Only this thread moves; it ends right after, so nothing else ever runs in it.
        unshare(CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?;
    if let Err(err) = made {
        let _ = std::fs::remove_file(pin);
        return Err(err);
    }
    Ok(())
}

/// Unpins and removes a namespace pin; nothing at `pin` is not an error.
pub fn remove(pin: &Path) -> io::Result<()> {
    match umount2(pin, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(err) => return Err(err.into()),
    }
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn pin_is_a_distinct_namespace_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("ns");
        create(&pin).unwrap();
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let pinned = std::fs::metadata(&pin).unwrap().ino();
        assert_ne!(ours, pinned, "a new namespace, not ours");
        assert!(create(&pin).is_err(), "an existing pin is not replaced");
        remove(&pin).unwrap();
        assert!(!pin.exists());
        remove(&pin).unwrap();
    }
}
