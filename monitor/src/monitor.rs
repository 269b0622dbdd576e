//! The monitor's life: set up, run the container (or the exec'd process) through the OCI
//! runtime, tell the daemon, pump its I/O until it exits, record the exit.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::net::RecvFlags;
use rustix::process::{Pid, WaitOptions, WaitStatus};

use crate::argv::Args;
use crate::cgroup;
use crate::files;
use crate::frames::{self, Kind};
use crate::pump::{self, Loop, Stdio};
use crate::record::Stream;
use crate::runc_log;
use crate::sys;

/// How long runc may take to hand over a container's terminal.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an exec waits for its client to attach.
const EXEC_ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// The monitor's files, as `berth::monitor::MonitorPaths` names them.
pub struct Paths<'a> {
    args: &'a Args,
}

impl Paths<'_> {
    fn in_dir(&self, name: &str) -> String {
        format!("{}/{name}", self.args.dir.trim_end_matches('/'))
    }
    fn exit_file(&self) -> String {
        self.in_dir(files::EXIT)
    }
    fn error_file(&self) -> String {
        self.in_dir(files::ERROR)
    }
    fn pid_file(&self) -> String {
        self.in_dir(files::CONTAINER_PID)
    }
    fn monitor_pid_file(&self) -> String {
        self.in_dir(files::MONITOR_PID)
    }
    fn runtime_log(&self) -> String {
        format!("{}/runc.log", self.args.bundle.trim_end_matches('/'))
    }
    /// The control socket's path with the console socket's extension.
    fn console_socket(&self) -> String {
        let socket = &self.args.socket;
        let name_at = socket.rfind('/').map_or(0, |i| i + 1);
        let stem = match socket[name_at..].rfind('.') {
            Some(dot) if dot > 0 => &socket[..name_at + dot],
            _ => socket.as_str(),
        };
        format!("{stem}.{}", files::CONSOLE_EXTENSION)
    }
}

/// Runs the monitor; the process's exit code.
pub fn run(args: &Args) -> i32 {
    let paths = Paths { args };
    match monitor(args, &paths) {
        Ok(()) => 0,
        Err(message) => {
            // Once the daemon has its answer, this file is the only place left to say it.
            let _ = sys::write_file(&paths.error_file(), message.as_bytes());
            let line = format!("berth-monitor: {message}\n");
            let _ = sys::write_all(crate::rt::stderr(), line.as_bytes());
            1
        }
    }
}

fn fail(what: &str) -> impl Fn(Errno) -> String + '_ {
    move |e| format!("{what}: {}", sys::Message(e))
}

fn monitor(args: &Args, paths: &Paths<'_>) -> Result<(), String> {
    let _ = rustix::process::setsid();
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(fail("becoming a subreaper"))?;
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    sys::write_file(&paths.monitor_pid_file(), pid.to_string().as_bytes())
        .map_err(fail("writing the monitor's pid file"))?;
    // SIGCHLD through a signalfd, so the poll loop sees exits.
    let signals = sys::sigchld_fd().map_err(fail("watching for exits"))?;

    if args.exec_process.is_some() {
        return exec_monitor(args, paths, &signals);
    }
    // The control socket and the log come first: once the daemon hears `started`, the
    // container is Running, and attach or a log reader may come at once.
    let ready = sys::listen(&args.socket)
        .and_then(|control| Ok((control, pump::LogFile::open(&args.log_path)?)));
    let (control, mut log) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            answer(&format!(
                "error cannot prepare the container's socket or log: {}",
                sys::Message(e)
            ));
            return Ok(());
        }
    };
    let (pid, stdio) = match create(args, paths) {
        Ok(created) => created,
        Err(message) => {
            let _ = sys::remove(&args.socket);
            answer(&format!("error {}", message.replace('\n', " ")));
            return Ok(());
        }
    };
    answer(&format!("started {}", pid.as_raw_nonzero()));
    release_stdio().map_err(fail("letting go of the daemon's pipe"))?;

    let mut pump = Loop::new(stdio, &control, &mut log, false);
    let status = pump.run(pid, &signals).map_err(fail("monitoring"))?;
    let (exit_code, signal) = exit_code(status);
    let (secs, nanos) = sys::wall_clock();
    let finished_at_ns = secs as i64 * 1_000_000_000 + i64::from(nanos);
    let oom_killed = args.oom_events.as_deref().is_some_and(oom_killed);
    let record = files::exit_record(exit_code, signal, finished_at_ns, oom_killed);
    let tmp = paths.in_dir(&format!(".{}.tmp", files::EXIT));
    sys::write_file(&tmp, record.as_bytes()).map_err(fail("writing the exit file"))?;
    sys::rename(&tmp, &paths.exit_file()).map_err(fail("writing the exit file"))?;
    let _ = sys::remove(&args.socket);
    pump.farewell(exit_code);
    Ok(())
}

/// Tells the daemon `line` on stdout.
fn answer(line: &str) {
    let line = format!("{line}\n");
    let _ = sys::write_all(crate::rt::stdout(), line.as_bytes());
}

/// Lets go of the daemon's pipe: stdout and stderr become /dev/null.
fn release_stdio() -> Result<(), Errno> {
    let null = sys::open("/dev/null", OFlags::RDWR, 0)?;
    sys::dup2(null.as_fd(), 1)?;
    sys::dup2(null.as_fd(), 2)
}

/// Exec mode (`--exec-process`): says `ready` once its socket listens, then serves one
/// client for the life of the process.
fn exec_monitor(args: &Args, paths: &Paths<'_>, signals: &OwnedFd) -> Result<(), String> {
    let control = sys::listen(&args.socket).map_err(fail("listening"))?;
    answer("ready");
    release_stdio().map_err(fail("letting go of the daemon's pipe"))?;
    let result = (|| {
        let (client, streams) = pump::first_client(&control, EXEC_ATTACH_TIMEOUT)?;
        let (pid, stdio) = match create(args, paths) {
            Ok(created) => created,
            Err(message) => {
                let mut frame = Vec::new();
                frames::encode(Kind::Error, message.as_bytes(), &mut frame);
                let _ = sys::write_all(&client, &frame);
                return Ok(());
            }
        };
        let mut log = pump::LogFile::discard();
        let mut pump = Loop::new(stdio, &control, &mut log, true);
        pump.add_client(client, streams)?;
        pump.kill_when_alone(pid);
        let status = pump.run(pid, signals)?;
        pump.farewell(exit_code(status).0);
        Ok(())
    })();
    let _ = sys::remove(&args.socket);
    // The exec's files (process spec, pid files) go with it.
    remove_tree(&args.dir);
    result.map_err(fail("exec"))
}

/// Removes a directory of plain files (an exec's: its process spec and pid files).
fn remove_tree(dir: &str) {
    if let Ok(fd) = sys::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, 0)
        && let Ok(mut entries) = rustix::fs::Dir::read_from(&fd)
    {
        while let Some(Ok(entry)) = entries.next() {
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                let _ = rustix::fs::unlinkat(&fd, entry.file_name(), rustix::fs::AtFlags::empty());
            }
        }
    }
    let _ = rustix::fs::rmdir(dir);
}

/// The exit code (128 + the signal for a killed process) and the signal.
fn exit_code(status: WaitStatus) -> (i32, Option<i32>) {
    if let Some(code) = status.exit_status() {
        return (code, None);
    }
    match status.terminating_signal() {
        Some(signal) => (128 + signal, Some(signal)),
        None => (255, None),
    }
}

/// A pipe whose ends are not inherited by anything the monitor runs.
fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
}

/// `runtime run --detach` (or `exec --detach` in exec mode) with the process's stdio:
/// pipes, or a terminal handed over on a console socket. Returns the pid and the
/// monitor's ends of its stdio.
fn create(args: &Args, paths: &Paths<'_>) -> Result<(Pid, Stdio), String> {
    let runtime_log = paths.runtime_log();
    let pid_file = paths.pid_file();
    let console_path = paths.console_socket();
    let mut command = runtime_args(args, &runtime_log, &pid_file);
    let mut stdio = Stdio {
        outputs: Vec::new(),
        stdin: None,
        terminal: None,
        stdin_once: args.stdin_once,
    };
    let child = ChildStdio::make(args, &console_path, &mut stdio)?;
    if child.console.is_some() {
        command.extend(["--console-socket", &console_path]);
    }
    command.push(&args.id);
    // The runtime appends to its log: emptied first, its last error is this command's.
    drop(sys::open(
        &runtime_log,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        0o600,
    ));
    let runtime = sys::spawn(&sys::Spawn {
        program: &args.runtime,
        args: command,
        stdio: child.fds(args.stdin),
    })
    .map_err(|e| format!("cannot run {}: {}", args.runtime, sys::Message(e)))?;
    // The container's ends of the pipes belong to the runtime now.
    let console = child.console;
    drop(child.ends);
    let mut status = None;
    let mut console_error = None;
    if let Some(listener) = console {
        match receive_terminal(&listener, runtime, &mut status) {
            Ok(master) => use_terminal(master, args.stdin, &mut stdio).map_err(setup_failed)?,
            Err(e) => console_error = Some(e),
        }
        let _ = sys::remove(&console_path);
    }
    let status = match status {
        Some(status) => status,
        None => wait_for(runtime)
            .map_err(|e| format!("waiting for {}: {}", args.runtime, sys::Message(e)))?,
    };
    if status.exit_status() != Some(0) {
        return Err(runtime_failure(args, &runtime_log, status));
    }
    if let Some(e) = console_error {
        return Err(e);
    }
    let pid =
        read_pid(&pid_file).ok_or_else(|| "the runtime wrote no container pid".to_string())?;
    Ok((pid, stdio))
}

fn setup_failed(e: Errno) -> String {
    format!("cannot set up the container's stdio: {}", sys::Message(e))
}

/// The runtime's command line up to its stdio options: its root and log, then `run`
/// of the bundle or `exec` of the process, with the pid file.
fn runtime_args<'a>(args: &'a Args, runtime_log: &'a str, pid_file: &'a str) -> Vec<&'a str> {
    let mut command: Vec<&str> = vec![
        "--root",
        &args.runtime_root,
        "--log",
        runtime_log,
        "--log-format",
        "json",
    ];
    match &args.exec_process {
        Some(process) => command.extend(["exec", "--detach", "--process", process]),
        None => command.extend(["run", "--detach", "--bundle", &args.bundle]),
    }
    command.extend(["--pid-file", pid_file]);
    command
}

/// The runtime's side of the process's stdio until it has started.
struct ChildStdio {
    null: OwnedFd,
    /// The child's ends of the pipes, stdin's first when there is one: they must live
    /// until the runtime has started.
    ends: Vec<OwnedFd>,
    /// With a terminal: the console socket runc hands the terminal's master over on.
    console: Option<OwnedFd>,
}

impl ChildStdio {
    /// A console socket at `console_path` for a terminal, or else pipes for the
    /// process's output (and stdin, when it has one); the monitor's ends go to `stdio`.
    fn make(args: &Args, console_path: &str, stdio: &mut Stdio) -> Result<ChildStdio, String> {
        let null = sys::open("/dev/null", OFlags::RDWR, 0).map_err(setup_failed)?;
        let mut ends: Vec<OwnedFd> = Vec::new();
        if args.tty {
            if let Some(parent) = sys::parent(console_path) {
                sys::create_dir_all(parent).map_err(setup_failed)?;
            }
            let listener = sys::listen(console_path).map_err(setup_failed)?;
            return Ok(ChildStdio {
                null,
                ends,
                console: Some(listener),
            });
        }
        let (out_read, out_write) = pipe().map_err(setup_failed)?;
        let (err_read, err_write) = pipe().map_err(setup_failed)?;
        stdio.outputs = vec![(out_read, Stream::Stdout), (err_read, Stream::Stderr)];
        ends.push(out_write);
        ends.push(err_write);
        if args.stdin {
            let (in_read, in_write) = pipe().map_err(setup_failed)?;
            stdio.stdin = Some(in_write);
            ends.insert(0, in_read);
        }
        Ok(ChildStdio {
            null,
            ends,
            console: None,
        })
    }

    /// The runtime's stdin, stdout and stderr: /dev/null with a terminal (the process
    /// gets the terminal), else the pipes (/dev/null for stdin when it has none).
    fn fds(&self, stdin: bool) -> [BorrowedFd<'_>; 3] {
        let null = self.null.as_fd();
        match (self.console.is_some(), stdin) {
            (true, _) => [null, null, null],
            (false, true) => [
                self.ends[0].as_fd(),
                self.ends[1].as_fd(),
                self.ends[2].as_fd(),
            ],
            (false, false) => [null, self.ends[0].as_fd(), self.ends[1].as_fd()],
        }
    }
}

/// The terminal's master as the process's stdio: output read from it, input (when the
/// process has stdin) written to it, resizes applied to it.
fn use_terminal(master: OwnedFd, stdin: bool, stdio: &mut Stdio) -> Result<(), Errno> {
    let input = rustix::io::fcntl_dupfd_cloexec(&master, 0)?;
    let output = rustix::io::fcntl_dupfd_cloexec(&master, 0)?;
    stdio.outputs = vec![(output, Stream::Stdout)];
    stdio.stdin = stdin.then_some(input);
    stdio.terminal = Some(master);
    Ok(())
}

/// Why the runtime failed: its last error in its log, or its exit status.
fn runtime_failure(args: &Args, runtime_log: &str, status: WaitStatus) -> String {
    let logged = sys::read_file(runtime_log).unwrap_or_default();
    let message = core::str::from_utf8(&logged)
        .ok()
        .and_then(runc_log::last_error);
    message.unwrap_or_else(|| format!("{} failed ({})", args.runtime, describe_status(status)))
}

/// The pid the runtime wrote to `pid_file`.
fn read_pid(pid_file: &str) -> Option<Pid> {
    sys::read_file(pid_file)
        .ok()
        .and_then(|bytes| {
            core::str::from_utf8(&bytes)
                .ok()?
                .trim()
                .parse::<i32>()
                .ok()
        })
        .and_then(Pid::from_raw)
}

fn describe_status(status: WaitStatus) -> String {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => format!("exit status: {code}"),
        (None, Some(signal)) => format!("signal: {signal}"),
        _ => "stopped".to_string(),
    }
}

/// Waits for one child; SIGCHLD is blocked, so a plain blocking wait.
fn wait_for(pid: Pid) -> Result<WaitStatus, Errno> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(status),
            Ok(None) => {}
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits for runc to send the terminal's master over the console socket (as an
/// SCM_RIGHTS message), or to exit without doing so (its status then goes to `status`).
fn receive_terminal(
    listener: &OwnedFd,
    runtime: Pid,
    status: &mut Option<WaitStatus>,
) -> Result<OwnedFd, String> {
    let deadline = sys::now() + CONSOLE_TIMEOUT;
    let connection = loop {
        match sys::accept(listener) {
            Ok(connection) => break connection,
            Err(Errno::AGAIN) | Err(Errno::INTR) => {}
            Err(e) => return Err(format!("console socket: {}", sys::Message(e))),
        }
        if let Ok(Some((_, exited))) = rustix::process::waitpid(Some(runtime), WaitOptions::NOHANG)
        {
            *status = Some(exited);
            return Err(format!(
                "runc exited ({}) without a terminal",
                describe_status(exited)
            ));
        }
        if sys::now() >= deadline {
            return Err("runc sent no terminal in time".to_string());
        }
        let mut fds = [rustix::event::PollFd::new(
            listener,
            rustix::event::PollFlags::IN,
        )];
        let _ = sys::poll(&mut fds, Some(Duration::from_millis(100)));
    };
    let mut name = [0u8; 4096];
    let mut space = [core::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        &connection,
        &mut [rustix::io::IoSliceMut::new(&mut name)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the terminal: {}", sys::Message(e)))?;
    for message in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(master) = fds.next()
        {
            return Ok(master);
        }
    }
    Err("runc sent no terminal descriptor".to_string())
}

/// Whether the container's memory cgroup recorded an OOM kill (see
/// [`cgroup::oom_killed`]); `false` when its events file cannot be read.
fn oom_killed(events: &str) -> bool {
    let Ok(text) = sys::read_file(events) else {
        return false;
    };
    core::str::from_utf8(&text)
        .ok()
        .is_some_and(cgroup::oom_killed)
}
