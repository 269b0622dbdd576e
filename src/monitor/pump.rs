//! The monitor's one-thread `poll` loop: the container's output into the log and to the
//! attached clients, the clients' input into the container's stdin, terminal resizes,
//! control requests, and the wait for the container's init to exit.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::LogFile;
use super::attach::{self, Decoder, Kind, Streams};
use crate::logs::{LineSplitter, MAX_PIECE, Stream};

/// How long output is still drained after the container's init has exited (its children
/// may keep the pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);
/// A client whose unsent output grows past this is dropped.
const CLIENT_BACKLOG: usize = 4 << 20;
/// Client input is not read while this much is waiting for the container's stdin.
const STDIN_BACKLOG: usize = 256 << 10;
/// How long attached clients get to receive their last output and the exit frame.
const FAREWELL: Duration = Duration::from_secs(1);
/// An exec's client gets longer: all of the output is its.
const EXEC_FAREWELL: Duration = Duration::from_secs(30);
/// An exec's output is not read while its client has this much unsent.
const EXEC_BACKLOG: usize = 1 << 20;
/// How long a new control connection may take to send its request line.
const REQUEST_LINE_WAIT: Duration = Duration::from_millis(200);
/// The end-of-file character a terminal's line discipline turns into EOF.
const EOT: u8 = 0x04;

/// The container's stdio as the monitor holds it.
pub struct Stdio {
    /// Where output comes from: stdout and stderr pipes, or the terminal's master.
    pub outputs: Vec<(OwnedFd, Stream)>,
    /// Where input goes: the stdin pipe or the terminal's master, when the container
    /// has stdin.
    pub stdin: Option<OwnedFd>,
    /// The terminal's master, when the container has one.
    pub terminal: Option<OwnedFd>,
    /// Close stdin when the first client that attached to it lets go.
    pub stdin_once: bool,
}

struct Output {
    file: File,
    stream: Stream,
    splitter: LineSplitter,
}

struct Input {
    sink: Option<File>,
    pending: Vec<u8>,
    once: bool,
    tty: bool,
    /// Close the sink once `pending` is written.
    closing: bool,
}

struct Client {
    stream: UnixStream,
    streams: Streams,
    decoder: Decoder,
    out: Vec<u8>,
    /// This client has let go of stdin (closed it or left).
    stdin_done: bool,
}

/// The monitor's whole I/O state.
pub struct Loop<'a> {
    outputs: Vec<Option<Output>>,
    input: Input,
    terminal: Option<OwnedFd>,
    clients: Vec<Client>,
    control: &'a UnixListener,
    log: &'a mut LogFile,
    /// An exec'd process, killed when its last client goes away.
    kill_when_alone: Option<Pid>,
    /// Exec mode: the client gets all the output, at its own pace (the process waits on
    /// a full pipe), rather than being dropped when it falls behind.
    exec: bool,
}

fn nonblocking(fd: &impl AsFd) {
    let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl<'a> Loop<'a> {
    pub fn new(stdio: Stdio, control: &'a UnixListener, log: &'a mut LogFile) -> Loop<'a> {
        let outputs = stdio
            .outputs
            .into_iter()
            .map(|(fd, stream)| {
                nonblocking(&fd);
                Some(Output {
                    file: File::from(fd),
                    stream,
                    splitter: LineSplitter::new(MAX_PIECE),
                })
            })
            .collect();
        let sink = stdio.stdin.map(|fd| {
            nonblocking(&fd);
            File::from(fd)
        });
        Loop {
            outputs,
            input: Input {
                sink,
                pending: Vec::new(),
                once: stdio.stdin_once,
                tty: stdio.terminal.is_some(),
                closing: false,
            },
            terminal: stdio.terminal,
            clients: Vec::new(),
            control,
            log,
            kill_when_alone: None,
            exec: false,
        }
    }

    /// Adds a client that attached before the process started (exec).
    pub fn add_client(&mut self, stream: UnixStream, streams: Streams) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        self.clients.push(Client {
            stream,
            streams,
            decoder: Decoder::default(),
            out: Vec::new(),
            stdin_done: false,
        });
        Ok(())
    }

    /// Kills `pid` once no client is left (an exec whose caller went away).
    pub fn kill_when_alone(&mut self, pid: Pid) {
        self.kill_when_alone = Some(pid);
        self.exec = true;
    }

    /// Runs until the container's init (`pid`) has exited and its output is drained;
    /// returns its wait status.
    pub fn run(&mut self, pid: Pid, signals: &SignalFd) -> io::Result<WaitStatus> {
        let mut exited: Option<(WaitStatus, Instant)> = None;
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            // An exec whose client is behind: leave the output in the pipes for now.
            let hold_output = self.exec && self.clients.iter().any(|c| c.out.len() > EXEC_BACKLOG);
            if let Some((status, at)) = exited
                && (self.outputs.iter().all(Option::is_none)
                    || (at.elapsed() >= DRAIN_AFTER_EXIT && !hold_output))
            {
                self.finish_outputs();
                return Ok(status);
            }
            // Poll set: signals, control, outputs, stdin sink, clients (in that order).
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.control.as_fd(), PollFlags::POLLIN),
            ];
            let open: Vec<usize> = (0..self.outputs.len())
                .filter(|i| self.outputs[*i].is_some() && !hold_output)
                .collect();
            for i in &open {
                if let Some(output) = &self.outputs[*i] {
                    fds.push(PollFd::new(output.file.as_fd(), PollFlags::POLLIN));
                }
            }
            let sink_at = fds.len();
            let sink_polled = match &self.input.sink {
                Some(sink) if !self.input.pending.is_empty() => {
                    fds.push(PollFd::new(sink.as_fd(), PollFlags::POLLOUT));
                    true
                }
                _ => false,
            };
            let clients_at = fds.len();
            let read_clients = self.input.pending.len() < STDIN_BACKLOG;
            for client in &self.clients {
                let mut flags = PollFlags::empty();
                if read_clients {
                    flags |= PollFlags::POLLIN;
                }
                if !client.out.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(client.stream.as_fd(), flags));
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
            let events: Vec<PollFlags> = fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            let ready = |i: usize| !events[i].is_empty();

            for (k, i) in open.iter().enumerate() {
                if ready(2 + k) {
                    self.read_output(*i, &mut chunk);
                }
            }
            if sink_polled && ready(sink_at) {
                self.write_stdin();
            }
            // Clients, newest first so removal keeps the indexes of the others valid.
            for index in (0..self.clients.len()).rev() {
                let flags = events.get(clients_at + index).copied();
                let Some(flags) = flags else { continue };
                if flags.is_empty() {
                    continue;
                }
                let keep = self.serve_client(index, flags, &mut chunk);
                if !keep {
                    self.drop_client(index);
                }
            }
            if ready(0) {
                while let Ok(Some(_)) = signals.read_signal() {}
                // Reap every child that has exited: the init, and orphans we adopted.
                loop {
                    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) | Err(_) => break,
                        Ok(status) => {
                            if status.pid() == Some(pid) && exited.is_none() {
                                exited = Some((status, Instant::now()));
                                // Its pid may be reused from now on: never kill it.
                                self.kill_when_alone = None;
                            }
                        }
                    }
                }
            }
            if ready(1) {
                self.accept_control();
            }
        }
    }

    /// Tells every attached client the exit code, gives them a moment to read their last
    /// output, and lets them go.
    pub fn farewell(&mut self, exit_code: i32) {
        for client in &mut self.clients {
            attach::encode(Kind::Exit, &exit_code.to_be_bytes(), &mut client.out);
            let _ = client.stream.set_nonblocking(false);
            let patience = if self.exec { EXEC_FAREWELL } else { FAREWELL };
            let _ = client.stream.set_write_timeout(Some(patience));
            let _ = client.stream.write_all(&client.out);
            let _ = client.stream.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
    }

    fn finish_outputs(&mut self) {
        for output in self.outputs.iter_mut().flatten() {
            let stream = output.stream;
            let log = &mut *self.log;
            output
                .splitter
                .finish(|piece, tag| log.record(stream, tag, piece));
        }
    }

    fn read_output(&mut self, index: usize, chunk: &mut [u8]) {
        let Some(output) = self.outputs[index].as_mut() else {
            return;
        };
        let stream = output.stream;
        let log = &mut *self.log;
        match output.file.read(chunk) {
            Ok(0) => {
                output
                    .splitter
                    .finish(|piece, tag| log.record(stream, tag, piece));
                self.outputs[index] = None;
            }
            Ok(n) => {
                output
                    .splitter
                    .feed(&chunk[..n], |piece, tag| log.record(stream, tag, piece));
                let kind = match stream {
                    Stream::Stdout => Kind::Stdout,
                    Stream::Stderr => Kind::Stderr,
                };
                for client in &mut self.clients {
                    let wanted = match stream {
                        Stream::Stdout => client.streams.stdout,
                        Stream::Stderr => client.streams.stderr,
                    };
                    if wanted {
                        attach::encode(kind, &chunk[..n], &mut client.out);
                    }
                }
            }
            Err(e) if would_block(&e) => {}
            // EIO: a terminal whose other side is gone; any other error ends it too.
            Err(_) => {
                output
                    .splitter
                    .finish(|piece, tag| log.record(stream, tag, piece));
                self.outputs[index] = None;
            }
        }
    }

    fn write_stdin(&mut self) {
        let Some(sink) = self.input.sink.as_mut() else {
            self.input.pending.clear();
            return;
        };
        match sink.write(&self.input.pending) {
            Ok(n) => {
                self.input.pending.drain(..n);
            }
            Err(e) if would_block(&e) => {}
            // The container closed its stdin: what it did not read is lost.
            Err(_) => {
                self.input.pending.clear();
                self.input.sink = None;
            }
        }
        if self.input.closing && self.input.pending.is_empty() {
            self.input.sink = None;
        }
    }

    /// Handles a client's readiness; `false` when it should be dropped.
    fn serve_client(&mut self, index: usize, flags: PollFlags, chunk: &mut [u8]) -> bool {
        if flags.contains(PollFlags::POLLOUT) {
            let client = &mut self.clients[index];
            match client.stream.write(&client.out) {
                Ok(n) => {
                    client.out.drain(..n);
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return false,
            }
        }
        if !self.exec && self.clients[index].out.len() > CLIENT_BACKLOG {
            return false;
        }
        if !flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            return true;
        }
        match self.clients[index].stream.read(chunk) {
            Ok(0) => return false,
            Ok(n) => self.clients[index].decoder.push(&chunk[..n]),
            Err(e) if would_block(&e) => return true,
            Err(_) => return false,
        }
        loop {
            let frame = self.clients[index].decoder.next_frame();
            match frame {
                Ok(None) => return true,
                Err(_) => return false,
                Ok(Some((kind, payload))) => self.client_frame(index, kind, payload),
            }
        }
    }

    fn client_frame(&mut self, index: usize, kind: Kind, payload: Vec<u8>) {
        let has_stdin = self.clients[index].streams.stdin && !self.clients[index].stdin_done;
        match kind {
            Kind::Stdin if has_stdin && self.input.sink.is_some() && !self.input.closing => {
                self.input.pending.extend_from_slice(&payload);
            }
            Kind::CloseStdin if has_stdin => {
                self.clients[index].stdin_done = true;
                self.stdin_released();
            }
            Kind::Resize => {
                if let (Some(terminal), Some((columns, rows))) =
                    (&self.terminal, attach::parse_resize(&payload))
                {
                    let size = rustix::termios::Winsize {
                        ws_row: rows,
                        ws_col: columns,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(terminal, size);
                }
            }
            // Output kinds from a client, or stdin it did not ask for: ignored.
            _ => {}
        }
    }

    fn drop_client(&mut self, index: usize) {
        let client = self.clients.swap_remove(index);
        if client.streams.stdin && !client.stdin_done {
            self.stdin_released();
        }
        if self.clients.is_empty()
            && let Some(pid) = self.kill_when_alone.take()
        {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// A client let go of stdin: with `stdin_once`, the container's stdin ends.
    fn stdin_released(&mut self) {
        if !self.input.once || self.input.sink.is_none() || self.input.closing {
            return;
        }
        if self.input.tty {
            // A terminal stays open for output; its line discipline turns EOT into EOF.
            self.input.pending.push(EOT);
        }
        self.input.closing = true;
        if self.input.pending.is_empty() {
            self.input.sink = None;
        }
    }

    fn accept_control(&mut self) {
        while let Ok((stream, _)) = self.control.accept() {
            let _ = stream.set_nonblocking(false);
            // The daemon sends its request line at once; a silent connection must not
            // hold the container's output up for long.
            let _ = stream.set_read_timeout(Some(REQUEST_LINE_WAIT));
            let Ok(line) = attach::read_request(&stream) else {
                continue;
            };
            let mut words = line.split_whitespace();
            let answer = match (words.next(), words.next()) {
                (Some("reopen"), None) => match self.log.reopen() {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("error {e}"),
                },
                (Some("attach"), Some(wanted)) => match Streams::parse(wanted) {
                    Some(streams) if streams.stdin && self.input.sink.is_none() => {
                        "error the container's stdin is closed".to_string()
                    }
                    Some(streams) => {
                        let mut stream = stream;
                        if writeln!(stream, "ok").is_ok() {
                            let _ = self.add_client(stream, streams);
                        }
                        continue;
                    }
                    None => format!("error bad streams {wanted:?}"),
                },
                _ => format!("error unknown request {line:?}"),
            };
            let mut stream = stream;
            let _ = writeln!(stream, "{answer}");
        }
    }
}

/// Waits for the first attach client of an exec (until `timeout`), and answers it.
pub fn first_client(
    control: &UnixListener,
    timeout: Duration,
) -> io::Result<(UnixStream, Streams)> {
    let deadline = Instant::now() + timeout;
    loop {
        match control.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                let line = attach::read_request(&stream)?;
                let streams = line
                    .strip_prefix("attach ")
                    .and_then(|wanted| Streams::parse(wanted.trim()));
                let mut stream = stream;
                match streams {
                    Some(streams) => {
                        writeln!(stream, "ok")?;
                        return Ok((stream, streams));
                    }
                    None => {
                        let _ = writeln!(stream, "error an exec takes one attach request");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no client attached to the exec",
                    ));
                }
                let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
                let wait = PollTimeout::try_from(left.min(Duration::from_millis(500)))
                    .unwrap_or(PollTimeout::from(500u16));
                let _ = poll(&mut fds, wait);
            }
            Err(e) => return Err(e),
        }
    }
}
