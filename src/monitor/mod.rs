//! The per-container monitor: `berth monitor …`, a re-exec of the berth binary that owns
//! one container from its creation to its exit.
//!
//! It runs in its own session as a child subreaper, so it outlives the daemon (a crash or
//! restart of berth never touches a running container) and becomes the parent of the
//! container's init once `runc create` returns. It:
//! 1. creates the container through the OCI runtime with pipes as its stdout and stderr,
//!    and tells the daemon `created <pid>` (or `error <message>`) on its own stdout, which
//!    it then closes;
//! 2. copies the container's output into the log file in the CRI format, line by line as
//!    it comes (nothing is buffered beyond an unfinished line);
//! 3. answers `reopen` on its control socket by reopening the log (the kubelet rotates it);
//! 4. when the container's init exits, drains its output, writes the exit code and time
//!    to the exit file (atomically) and exits.
//!
//! One thread, a `poll` loop, no async runtime: it costs a few hundred kilobytes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::logs::{LineSplitter, MAX_PIECE, Stream, Tag, write_record};

/// How long output is still drained after the container's init has exited (its children
/// may keep the pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Where a container's monitor keeps its files, under `<state>/containers/<id>/`.
#[derive(Debug, Clone)]
pub struct MonitorPaths {
    pub dir: PathBuf,
    /// The control socket; kept short (`<state>/m/<id prefix>.sock`), as a unix socket
    /// path cannot exceed 107 bytes.
    pub socket: PathBuf,
}

impl MonitorPaths {
    pub fn exit_file(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.socket.clone()
    }
    /// Where the monitor reports a failure once it no longer talks to the daemon.
    pub fn error_file(&self) -> PathBuf {
        self.dir.join("monitor.error")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("container.pid")
    }
    pub fn monitor_pid_file(&self) -> PathBuf {
        self.dir.join("monitor.pid")
    }
}

/// How a container ended, as the monitor records it.
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

/// The monitor's command line (the daemon builds it; see `main.rs`).
#[derive(Debug, Clone)]
pub struct MonitorArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub log_path: PathBuf,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// `/sys/fs/cgroup/memory/<cgroups path>` for the OOM check, when cgroup v1.
    pub memory_cgroup: Option<PathBuf>,
}

/// Runs the monitor; returns when the container has exited and its exit is recorded.
pub fn run(args: MonitorArgs) -> io::Result<()> {
    let paths = MonitorPaths {
        dir: args.dir.clone(),
        socket: args.socket.clone(),
    };
    let result = monitor(&args, &paths);
    if let Err(err) = &result {
        // Once the daemon has its answer, this file is the only place left to say it.
        let _ = std::fs::write(paths.error_file(), err.to_string());
    }
    result
}

fn monitor(args: &MonitorArgs, paths: &MonitorPaths) -> io::Result<()> {
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true)?;
    std::fs::write(paths.monitor_pid_file(), std::process::id().to_string())?;

    // SIGCHLD through a signalfd, so the poll loop sees container exits.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let (out_read, out_write) = nix::unistd::pipe()?;
    let (err_read, err_write) = nix::unistd::pipe()?;
    let created = create(args, paths, out_write, err_write);
    let mut to_daemon = io::stdout();
    let pid = match created {
        Ok(pid) => pid,
        Err(message) => {
            let _ = writeln!(to_daemon, "error {}", message.replace('\n', " "));
            return Ok(());
        }
    };
    writeln!(to_daemon, "created {pid}")?;
    to_daemon.flush()?;
    // The daemon has its answer: let go of its pipe.
    let null = File::open("/dev/null")?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;

    if let Some(parent) = paths.socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(&paths.socket);
    let control = UnixListener::bind(&paths.socket)?;
    control.set_nonblocking(true)?;
    let mut log = LogFile::open(&args.log_path)?;
    let status = copy_until_exit(pid, &signals, [out_read, err_read], &control, &mut log)?;
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    };
    let record = ExitRecord {
        exit_code,
        signal,
        finished_at_ns: crate::image::now_ns(),
        oom_killed: args.memory_cgroup.as_deref().is_some_and(oom_killed),
    };
    let tmp = paths.dir.join(".exit.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&record).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, paths.exit_file())?;
    let _ = std::fs::remove_file(paths.control_socket());
    Ok(())
}

/// `runtime create`, with the pipes' write ends as the container's stdout and stderr.
fn create(
    args: &MonitorArgs,
    paths: &MonitorPaths,
    out: OwnedFd,
    err: OwnedFd,
) -> Result<Pid, String> {
    let runc_log = args.bundle.join("runc.log");
    let status = Command::new(&args.runtime)
        .arg("--root")
        .arg(&args.runtime_root)
        .arg("--log")
        .arg(&runc_log)
        .arg("--log-format")
        .arg("json")
        .arg("create")
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(paths.pid_file())
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .status()
        .map_err(|e| format!("cannot run {}: {e}", args.runtime.display()))?;
    if !status.success() {
        let logged = std::fs::read_to_string(&runc_log).unwrap_or_default();
        return Err(crate::oci::runc::last_error(&logged)
            .unwrap_or_else(|| format!("runc create failed ({status})")));
    }
    std::fs::read_to_string(paths.pid_file())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(Pid::from_raw)
        .ok_or_else(|| "runc wrote no container pid".to_string())
}

/// The log file, reopened on request.
struct LogFile {
    path: PathBuf,
    file: File,
    buffer: Vec<u8>,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: open_log(path)?,
            buffer: Vec::with_capacity(4096),
        })
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = open_log(&self.path)?;
        Ok(())
    }

    fn record(&mut self, stream: Stream, tag: Tag, content: &[u8]) {
        self.buffer.clear();
        write_record(&mut self.buffer, SystemTime::now(), stream, tag, content);
        // A full disk loses log lines, not the container.
        let _ = self.file.write_all(&self.buffer);
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Copies output into the log until the container's init has exited and its output is
/// drained; answers control requests meanwhile. Returns the init's wait status.
fn copy_until_exit(
    pid: Pid,
    signals: &SignalFd,
    pipes: [OwnedFd; 2],
    control: &UnixListener,
    log: &mut LogFile,
) -> io::Result<WaitStatus> {
    let mut readers: Vec<Option<(File, Stream, LineSplitter)>> = pipes
        .into_iter()
        .zip([Stream::Stdout, Stream::Stderr])
        .map(|(fd, stream)| {
            let _ = nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            Some((File::from(fd), stream, LineSplitter::new(MAX_PIECE)))
        })
        .collect();
    let mut exited: Option<(WaitStatus, Instant)> = None;
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        if let Some((status, at)) = exited
            && (readers.iter().all(Option::is_none) || at.elapsed() >= DRAIN_AFTER_EXIT)
        {
            for (_, stream, splitter) in readers.iter_mut().flatten() {
                let stream = *stream;
                splitter.finish(|piece, tag| log.record(stream, tag, piece));
            }
            return Ok(status);
        }
        let mut fds: Vec<PollFd> = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
        ];
        let open: Vec<usize> = (0..readers.len())
            .filter(|i| readers[*i].is_some())
            .collect();
        for i in &open {
            if let Some((file, _, _)) = &readers[*i] {
                fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            }
        }
        let timeout = if exited.is_some() {
            PollTimeout::from(50u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (signal_ready, control_ready) = (ready(&fds[0]), ready(&fds[1]));
        let pipe_ready: Vec<usize> = open
            .iter()
            .enumerate()
            .filter(|(k, _)| ready(&fds[2 + k]))
            .map(|(_, i)| *i)
            .collect();
        drop(fds);
        for i in pipe_ready {
            let Some((file, stream, splitter)) = readers[i].as_mut() else {
                continue;
            };
            match file.read(&mut chunk) {
                Ok(0) => {
                    let stream = *stream;
                    splitter.finish(|piece, tag| log.record(stream, tag, piece));
                    readers[i] = None;
                }
                Ok(n) => {
                    let stream = *stream;
                    splitter.feed(&chunk[..n], |piece, tag| log.record(stream, tag, piece));
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => readers[i] = None,
            }
        }
        if signal_ready {
            while let Ok(Some(_)) = signals.read_signal() {}
            // Reap every child that has exited: the init, and orphans we adopted.
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(status) => {
                        if status.pid() == Some(pid) && exited.is_none() {
                            exited = Some((status, Instant::now()));
                        }
                    }
                }
            }
        }
        if control_ready {
            serve_control(control, log);
        }
    }
}

/// One control request: `reopen` (the log file). Answers `ok` or `error <why>`.
fn serve_control(control: &UnixListener, log: &mut LogFile) {
    while let Ok((stream, _)) = control.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let answer = match line.trim() {
            "reopen" => match log.reopen() {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error {e}"),
            },
            other => format!("error unknown request {other:?}"),
        };
        let mut stream = stream;
        let _ = writeln!(stream, "{answer}");
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

/// Whether the memory cgroup (v1) recorded an OOM kill.
fn oom_killed(memory_cgroup: &Path) -> bool {
    std::fs::read_to_string(memory_cgroup.join("memory.oom_control"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        })
        .is_some_and(|kills| kills > 0)
}
