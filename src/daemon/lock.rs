//! Exclusive locks that keep two daemons from sharing a root, a state directory or a
//! socket. They are `flock`s, so the kernel releases them when a daemon dies, however it
//! dies: a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::DaemonError;

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct LockFile {
    _lock: Flock<File>,
}

impl LockFile {
    /// Takes the lock at `path` without waiting, recording our PID in it. `what` names
    /// the resource in the error ("root", "state", "socket").
    pub fn acquire(what: &'static str, path: &Path) -> Result<LockFile, DaemonError> {
        let io_err = |source| DaemonError::Lock {
            what,
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                // The PID is only for the message; an unreadable one is left out.
                let _ = file.read_to_string(&mut holder);
                return Err(DaemonError::Locked {
                    what,
                    path: PathBuf::from(path),
                    holder: holder.trim().to_string(),
                });
            }
            Err((_, errno)) => return Err(io_err(errno.into())),
        };
        lock.set_len(0).map_err(io_err)?;
        lock.rewind().map_err(io_err)?;
        writeln!(lock, "{}", std::process::id()).map_err(io_err)?;
        Ok(LockFile { _lock: lock })
    }
}
