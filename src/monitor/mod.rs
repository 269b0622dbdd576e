//! The per-container monitor: `berth-monitor`, a small program of its own (installed next
//! to `berth`, see [`args`]) that owns one container from its creation to its exit.
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
//! One thread, a `poll` loop (`pump`), no async runtime: it costs a few hundred kilobytes.

pub mod args;
pub mod attach;
mod pump;

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::logs::{Stream, Tag, write_record};

/// How long runc may take to hand over a container's terminal.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Where runc hands over the container's terminal (next to the control socket, for
    /// the same length limit).
    pub fn console_socket(&self) -> PathBuf {
        self.socket.with_extension("tty")
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

/// The monitor's command line (the daemon builds it, `berth-monitor` reads it: see
/// [`args`]).
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
    /// The container has a terminal (its spec says `terminal: true`).
    pub tty: bool,
    /// The container's stdin stays open for attached clients (else it is /dev/null).
    pub stdin: bool,
    /// Close stdin when the first client attached to it lets go.
    pub stdin_once: bool,
    /// Exec mode: run this process spec in the (running) container `id` with `runc exec`
    /// once the first client has attached, relay its stdio to that client, kill it when
    /// the client goes away, and exit with it. No log, no exit file.
    pub exec_process: Option<PathBuf>,
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

    if args.exec_process.is_some() {
        return exec_monitor(args, paths, &signals);
    }
    // The control socket and the log come first: once the daemon hears `started`, the
    // container is Running, and attach or a log reader may come at once.
    let mut to_daemon = std::io::stdout();
    let ready = listen(paths).and_then(|control| Ok((control, LogFile::open(&args.log_path)?)));
    let (control, mut log) = match ready {
        Ok(ready) => ready,
        Err(err) => {
            let _ = writeln!(
                to_daemon,
                "error cannot prepare the container's socket or log: {err}"
            );
            return Ok(());
        }
    };
    let created = create(args, paths);
    let (pid, stdio) = match created {
        Ok(created) => created,
        Err(message) => {
            let _ = std::fs::remove_file(&paths.socket);
            let _ = writeln!(to_daemon, "error {}", message.replace('\n', " "));
            return Ok(());
        }
    };
    answer_daemon(&format!("started {pid}"))?;

    let mut pump = pump::Loop::new(stdio, &control, &mut log);
    let status = pump.run(pid, &signals)?;
    let (exit_code, signal) = exit_code(&status);
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
    pump.farewell(exit_code);
    Ok(())
}

/// Listens on the control socket, non-blocking (a stale socket file is replaced).
fn listen(paths: &MonitorPaths) -> io::Result<UnixListener> {
    if let Some(parent) = paths.socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(&paths.socket);
    let control = UnixListener::bind(&paths.socket)?;
    control.set_nonblocking(true)?;
    Ok(control)
}

/// Tells the daemon `line` on stdout, then lets go of its pipe: stdout and stderr become
/// /dev/null.
fn answer_daemon(line: &str) -> io::Result<()> {
    let mut to_daemon = std::io::stdout();
    writeln!(to_daemon, "{line}")?;
    to_daemon.flush()?;
    let null = File::open("/dev/null")?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

/// How long an exec waits for its client to attach.
const EXEC_ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// Exec mode (see [`MonitorArgs::exec_process`]): says `ready` once its socket listens,
/// then serves one client for the life of the process.
fn exec_monitor(args: &MonitorArgs, paths: &MonitorPaths, signals: &SignalFd) -> io::Result<()> {
    let control = listen(paths)?;
    answer_daemon("ready")?;
    let result = (|| {
        let (client, streams) = pump::first_client(&control, EXEC_ATTACH_TIMEOUT)?;
        let (pid, stdio) = match create(args, paths) {
            Ok(created) => created,
            Err(message) => {
                let mut frame = Vec::new();
                attach::encode(attach::Kind::Error, message.as_bytes(), &mut frame);
                let mut client = client;
                let _ = client.write_all(&frame);
                return Ok(());
            }
        };
        let mut log = LogFile::open(Path::new("/dev/null"))?;
        let mut pump = pump::Loop::new(stdio, &control, &mut log);
        pump.add_client(client, streams)?;
        pump.kill_when_alone(pid);
        let status = pump.run(pid, signals)?;
        pump.farewell(exit_code(&status).0);
        Ok(())
    })();
    let _ = std::fs::remove_file(&paths.socket);
    // The exec's files (process spec, pid files) go with it.
    let _ = std::fs::remove_dir_all(&paths.dir);
    result
}

/// The exit code (128 + the signal for a killed process) and the signal of a status.
fn exit_code(status: &WaitStatus) -> (i32, Option<i32>) {
    match status {
        WaitStatus::Exited(_, code) => (*code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + *sig as i32, Some(*sig as i32)),
        _ => (255, None),
    }
}

/// A pipe whose ends are not inherited by anything the monitor runs.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// `runtime run --detach` (or `exec --detach` in exec mode) with the process's stdio:
/// pipes, or a terminal handed over on a console socket. Returns the pid and the
/// monitor's ends of its stdio.
fn create(args: &MonitorArgs, paths: &MonitorPaths) -> Result<(Pid, pump::Stdio), String> {
    let failed = |e: std::io::Error| format!("cannot set up the container's stdio: {e}");
    let mut command = Command::new(&args.runtime);
    let runc_log = args.bundle.join("runc.log");
    command
        .arg("--root")
        .arg(&args.runtime_root)
        .arg("--log")
        .arg(&runc_log)
        .arg("--log-format")
        .arg("json");
    match &args.exec_process {
        Some(process) => command
            .arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(process),
        None => command
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(&args.bundle),
    };
    command.arg("--pid-file").arg(paths.pid_file());
    let mut stdio = pump::Stdio {
        outputs: Vec::new(),
        stdin: None,
        terminal: None,
        stdin_once: args.stdin_once,
    };
    let console = if args.tty {
        let path = paths.console_socket();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(failed)?;
        command.arg("--console-socket").arg(&path);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Some((listener, path))
    } else {
        let (out_read, out_write) = pipe().map_err(failed)?;
        let (err_read, err_write) = pipe().map_err(failed)?;
        stdio.outputs = vec![(out_read, Stream::Stdout), (err_read, Stream::Stderr)];
        command
            .stdout(Stdio::from(out_write))
            .stderr(Stdio::from(err_write));
        if args.stdin {
            let (in_read, in_write) = pipe().map_err(failed)?;
            stdio.stdin = Some(in_write);
            command.stdin(Stdio::from(in_read));
        } else {
            command.stdin(Stdio::null());
        }
        None
    };
    command.arg(&args.id);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", args.runtime.display()))?;
    // The container's ends of the pipes belong to runc now.
    drop(command);
    let mut console_error = None;
    if let Some((listener, path)) = console {
        match receive_terminal(&listener, &mut child) {
            Ok(master) => {
                let input = master.try_clone().map_err(failed)?;
                stdio.outputs = vec![(master.try_clone().map_err(failed)?, Stream::Stdout)];
                stdio.stdin = args.stdin.then_some(input);
                stdio.terminal = Some(master);
            }
            Err(e) => console_error = Some(e),
        }
        let _ = std::fs::remove_file(path);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", args.runtime.display()))?;
    if !status.success() {
        let logged = std::fs::read_to_string(&runc_log).unwrap_or_default();
        return Err(crate::oci::runc::last_error(&logged)
            .unwrap_or_else(|| format!("{} failed ({status})", args.runtime.display())));
    }
    if let Some(e) = console_error {
        return Err(e);
    }
    let pid = std::fs::read_to_string(paths.pid_file())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(Pid::from_raw)
        .ok_or_else(|| "runc wrote no container pid".to_string())?;
    Ok((pid, stdio))
}

/// Waits for runc to send the terminal's master over the console socket (as an
/// SCM_RIGHTS message), or to exit without doing so.
fn receive_terminal(
    listener: &UnixListener,
    child: &mut std::process::Child,
) -> Result<OwnedFd, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("console socket: {e}"))?;
    let deadline = Instant::now() + CONSOLE_TIMEOUT;
    let connection = loop {
        match listener.accept() {
            Ok((connection, _)) => break connection,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("console socket: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("runc exited ({status}) without a terminal"));
        }
        if Instant::now() >= deadline {
            return Err("runc sent no terminal in time".to_string());
        }
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(listener),
            PollFlags::POLLIN,
        )];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
    };
    connection
        .set_nonblocking(false)
        .map_err(|e| format!("console socket: {e}"))?;
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(
        connection.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the terminal: {e}"))?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in message
        .cmsgs()
        .map_err(|e| format!("receiving the terminal: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this process for
            // us (SCM_RIGHTS); nothing else owns them.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let mut received = received.into_iter();
    let master = received
        .next()
        .ok_or_else(|| "runc sent no terminal descriptor".to_string())?;
    Ok(master)
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
