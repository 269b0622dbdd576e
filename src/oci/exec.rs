//! `runc exec` of one process in a running container, its output collected: what
//! ExecSync (probes) runs. runc runs in the foreground as the daemon's child, so the
//! process is reaped by runc and runc by tokio: no zombie either way.
//!
//! - Output is read as it comes and kept up to a cap per stream; the rest is read and
//!   dropped, so a chatty process never blocks on a full pipe.
//! - A timeout, or the caller going away, kills the process (by the pid runc wrote, never
//!   runc itself while it still has a process to wait for), then waits for runc.
//! - Background children that keep the pipes open do not hold the call: once runc has
//!   exited, output is read for a short grace period only.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::runc::Runtime;
use super::runtime::{Kind, OciError};

/// How long output is still read once runc has exited.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How long a killed process's pid file may take to appear (runc writes it once the
/// process is started).
const PID_FILE_WAIT: Duration = Duration::from_secs(2);

/// What an exec'd process produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The process's exit code (128 + the signal when a signal ended it).
    pub exit_code: i32,
    /// The timeout expired and the process was killed.
    pub timed_out: bool,
    /// The caller went away and the process was killed.
    pub cancelled: bool,
}

/// One exec: the process spec file runc reads and the pid file it writes.
#[derive(Debug, Clone)]
pub struct ExecFiles {
    pub process: PathBuf,
    pub pid: PathBuf,
}

/// Runs the process described by `files.process` in container `id`; returns when it has
/// exited (or was killed at `timeout`, or when `cancel` fires or is dropped).
pub async fn exec(
    runtime: &Runtime,
    id: &str,
    files: &ExecFiles,
    timeout: Option<Duration>,
    cap: usize,
    mut cancel: oneshot::Receiver<()>,
) -> Result<ExecOutput, OciError> {
    let exec_error = |source: std::io::Error| OciError::Exec {
        binary: runtime.binary().to_path_buf(),
        source,
    };
    let mut child = exec_command(runtime, id, files)
        .spawn()
        .map_err(exec_error)?;
    let output = Output::read(&mut child, cap);
    let (waited, ending) = wait_or_kill(&mut child, &files.pid, timeout, &mut cancel).await;
    let status = waited.map_err(exec_error)?;
    let (stdout, stderr) = output.drain().await;
    let exit_code = exit_code(status);
    let started = Path::new(&files.pid).exists();
    if ending == Ending::Exited
        && let Some(message) = start_failure(runtime.kind(), exit_code, started, &stderr)
    {
        return Err(OciError::Failed {
            binary: runtime.binary().to_path_buf(),
            command: "exec",
            id: id.to_string(),
            message,
        });
    }
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_code,
        timed_out: ending == Ending::TimedOut,
        cancelled: ending == Ending::Cancelled,
    })
}

/// `runc exec` of the process file, its pid written to the pid file; its output piped,
/// and not killed with its handle (a kill goes to the process first: [`kill_process`]).
fn exec_command(runtime: &Runtime, id: &str, files: &ExecFiles) -> Command {
    let mut command = Command::new(runtime.binary());
    command
        .arg("--root")
        .arg(runtime.root())
        .arg("exec")
        .arg("--process")
        .arg(&files.process)
        .arg("--pid-file")
        .arg(&files.pid)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    runtime.tag(&mut command);
    command
}

/// How the wait for runc ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// runc exited by itself.
    Exited,
    /// The timeout expired; the process was killed.
    TimedOut,
    /// The caller went away; the process was killed.
    Cancelled,
}

/// Waits for runc to exit; at the timeout, or once `cancel` fires or is dropped, kills
/// the process first.
async fn wait_or_kill(
    runc: &mut Child,
    pid_file: &Path,
    timeout: Option<Duration>,
    cancel: &mut oneshot::Receiver<()>,
) -> (std::io::Result<ExitStatus>, Ending) {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = runc.wait() => (status, Ending::Exited),
        _ = deadline => {
            kill_process(pid_file, runc).await;
            (runc.wait().await, Ending::TimedOut)
        }
        _ = cancel => {
            kill_process(pid_file, runc).await;
            (runc.wait().await, Ending::Cancelled)
        }
    }
}

/// The process's exit code, 128 + the signal when a signal ended it.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// runc's stdout and stderr, each read by a task of its own as it comes.
struct Output {
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// Tells the readers to stop; dropped, it stops them too.
    stop: watch::Sender<bool>,
}

impl Output {
    /// Starts reading `child`'s pipes, keeping up to `cap` bytes of each.
    fn read(child: &mut Child, cap: usize) -> Output {
        let (stop, stop_rx) = watch::channel(false);
        let stdout = child
            .stdout
            .take()
            .map(|pipe| tokio::spawn(read_capped(pipe, cap, stop_rx.clone())));
        let stderr = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(read_capped(pipe, cap, stop_rx)));
        Output {
            stdout,
            stderr,
            stop,
        }
    }

    /// What was read: (stdout, stderr). runc is gone; output still in the pipes is read
    /// for a moment, then dropped.
    async fn drain(self) -> (Vec<u8>, Vec<u8>) {
        let Output {
            stdout,
            stderr,
            stop,
        } = self;
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(DRAIN_GRACE).await;
            let _ = stop.send(true);
        });
        let stdout = match stdout {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let stderr = match stderr {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        stopper.abort();
        (stdout, stderr)
    }
}

/// runc's own complaint, from the last line of its stderr.
/// What the runtime said when it failed before the process ran, or `None` when the
/// process ran (and `exit_code` is its own). runc writes the pid file once the process
/// is started, and says why it could not on stderr; youki writes it before, exits 255,
/// and says why in a line of its own (`ERROR youki: …`) on the process's stderr.
fn start_failure(kind: Kind, exit_code: i32, started: bool, stderr: &[u8]) -> Option<String> {
    if exit_code == 0 {
        return None;
    }
    match kind {
        Kind::Runc => (!started).then(|| runc_message(stderr)),
        Kind::Youki => {
            let text = String::from_utf8_lossy(stderr);
            // Its own last word, not a line the process wrote.
            let said = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.strip_prefix("ERROR youki: "))
                .map(|m| m.trim().to_string());
            match said {
                Some(message) if exit_code == 255 => Some(message),
                _ if !started => Some(runc_message(stderr)),
                _ => None,
            }
        }
    }
}

fn runc_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("exec failed");
    match line.find("msg=\"") {
        Some(start) => {
            let rest = &line[start + 5..];
            rest.rfind('"').map_or(rest, |end| &rest[..end]).to_string()
        }
        None => line.trim().to_string(),
    }
}

/// Kills the exec'd process by the pid runc wrote; if runc never wrote one (it is still
/// setting the process up), kills runc, which takes its half-made process with it.
async fn kill_process(pid_file: &Path, runc: &mut Child) {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return;
        }
        if started.elapsed() >= PID_FILE_WAIT {
            let _ = runc.start_kill();
            return;
        }
        if let Ok(Some(_)) = runc.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads a pipe to its end (or until `stop`), keeping the first `cap` bytes.
async fn read_capped(
    mut pipe: impl AsyncRead + Unpin,
    cap: usize,
    mut stop: watch::Receiver<bool>,
) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            read = pipe.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..n.min(room)]);
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    kept
}

#[cfg(test)]
mod start_failure_tests {
    use super::{Kind, start_failure};

    #[test]
    fn a_process_that_never_ran_is_the_runtimes_failure() {
        let runc = b"time=\"t\" level=error msg=\"exec failed: exec: \\\"/no\\\": no such file\"\n";
        assert!(
            start_failure(Kind::Runc, 1, false, runc).is_some_and(|m| m.contains("no such file"))
        );
        assert_eq!(start_failure(Kind::Runc, 1, true, b"its own error\n"), None);
        let youki = b"ERROR libcontainer::workload::default: not found\nERROR youki: error in executing command: executable '/no' not found in $PATH\n";
        assert_eq!(
            start_failure(Kind::Youki, 255, true, youki).as_deref(),
            Some("error in executing command: executable '/no' not found in $PATH")
        );
        assert_eq!(
            start_failure(Kind::Youki, 3, true, b"plain failure\n"),
            None
        );
        assert_eq!(start_failure(Kind::Youki, 0, true, youki), None);
        let own = b"ERROR youki: a line of the process's\nthen its own last words\n";
        assert_eq!(start_failure(Kind::Youki, 255, true, own), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_capped_but_fully_read() {
        let (_tx, rx) = watch::channel(false);
        let data = vec![7u8; 100_000];
        let kept = read_capped(&data[..], 1000, rx).await;
        assert_eq!(kept.len(), 1000);
        assert!(
            runc_message(b"time=\"x\" level=error msg=\"no such container\"\n")
                .contains("no such container")
        );
    }
}
