//! The daemon's side of the per-container monitor. The monitor itself is `berth-monitor`,
//! a small program of its own: the `monitor/` crate, built with berth, embedded in the
//! berth binary and installed under the state directory at start-up. It owns one
//! container from its creation to its exit. This module holds what the daemon needs of
//! it: installing and starting it, its files, its command line, the attach protocol's
//! client, the exit record.
//!
//! It runs in its own session as a child subreaper, so it outlives the daemon (a crash or
//! restart of berth never touches a running container) and becomes the parent of the
//! container's init once `runc run --detach` returns. It:
//! 1. runs the container through the OCI runtime (`run --detach`, at StartContainer:
//!    the daemon starts the monitor then), with pipes as its stdout, stderr and (when it
//!    has one) stdin, or with a terminal whose master runc hands over on a console
//!    socket; tells the daemon `started <pid>` (or `error <message>`) on its own stdout,
//!    which it then closes;
//! 2. copies the container's output into the log file in the CRI format, line by line as
//!    it comes (nothing is buffered beyond an unfinished line), and to attached clients;
//! 3. answers `reopen` (the kubelet rotated the log) and `attach` (see [`attach`]) on its
//!    control socket; attached clients write to the container's stdin and resize its
//!    terminal;
//! 4. when the container's init exits, drains its output, writes the exit code and time
//!    to the exit file (atomically), tells attached clients, and exits.
//!
//! One thread, a `poll` loop, no async runtime, and no standard or C library: it is
//! linked statically and maps under 100 KB, where a program on glibc maps 2 MB (its
//! memory counts once per container). Exec mode (`exec_process`) serves a streaming exec
//! the same way, for one client.
//!
//! [`install`] puts the program under the state directory; [`launch`] starts a monitor
//! and reads its handshake (for StartContainer and Exec); [`attach`] is the client of
//! its control socket.
//!
//! The code both sides need is in files that use only `core` and `alloc`, which the
//! monitor crate compiles too (and unit-tests, `cd monitor && cargo test`): [`argv`] (its command line), [`files`] (the files it writes and
//! the exit record), [`frames`] (the attach frames) and the log format's writer
//! (`logs/record.rs`), and the reader of runc's error messages (`oci/runc_log.rs`).

pub mod argv;
pub mod attach;
pub mod files;
pub mod frames;
pub mod install;
pub mod launch;

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a container's monitor keeps its files, under `<state>/containers/<id>/`.
#[derive(Debug, Clone)]
pub struct MonitorPaths {
    pub dir: PathBuf,
    /// The control socket; kept short (`<state>/m/<id prefix>.sock`), as a unix socket
    /// path cannot exceed 107 bytes.
    pub socket: PathBuf,
}

impl MonitorPaths {
    /// The paths of container `id`'s monitor under the daemon's `state` directory.
    pub fn of(state: &Path, id: &str) -> MonitorPaths {
        let short = &id[..id.len().min(24)];
        MonitorPaths {
            dir: state.join("containers").join(id),
            socket: state.join("m").join(format!("{short}.sock")),
        }
    }

    pub fn exit_file(&self) -> PathBuf {
        self.dir.join(files::EXIT)
    }
    pub fn control_socket(&self) -> PathBuf {
        self.socket.clone()
    }
    pub fn monitor_pid_file(&self) -> PathBuf {
        self.dir.join(files::MONITOR_PID)
    }

    pub fn container_pid_file(&self) -> PathBuf {
        self.dir.join(files::CONTAINER_PID)
    }

    /// The pid the monitor wrote when it started, if one ever did (the process may be
    /// gone, or the pid another's by now: see [`crate::oci::is_monitor_of`]).
    pub fn monitor_pid(&self) -> Option<i32> {
        read_pid(&self.monitor_pid_file())
    }

    /// The container's pid, once the runtime has written it.
    pub fn container_pid(&self) -> Option<i32> {
        read_pid(&self.container_pid_file())
    }
}

fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid: &i32| pid > 0)
}

/// How a container ended, as the monitor records it ([`files::exit_record`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, or 128 + the signal number when a signal killed it.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub finished_at_ns: i64,
    /// The container's memory cgroup recorded an OOM kill.
    pub oom_killed: bool,
}

impl ExitRecord {
    pub fn read(paths: &MonitorPaths) -> Option<ExitRecord> {
        let bytes = std::fs::read(paths.exit_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Asks a running container's monitor to reopen its log; synchronous.
pub fn request_reopen(paths: &MonitorPaths) -> io::Result<()> {
    let mut stream = UnixStream::connect(paths.control_socket())?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"reopen\n")?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    match answer.trim() {
        "ok" => Ok(()),
        other => Err(io::Error::other(
            other.trim_start_matches("error ").to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monitors_exit_record_reads_back() {
        let record = |signal| {
            serde_json::from_str::<ExitRecord>(&files::exit_record(
                137,
                signal,
                1_779_593_400,
                true,
            ))
            .expect("an ExitRecord")
        };
        assert_eq!(
            record(Some(9)),
            ExitRecord {
                exit_code: 137,
                signal: Some(9),
                finished_at_ns: 1_779_593_400,
                oom_killed: true,
            }
        );
        assert_eq!(record(None).signal, None);
    }
}
