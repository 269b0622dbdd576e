//! The monitor's one-thread `poll` loop: the container's output into the log and to the
//! attached clients, the clients' input into the container's stdin, terminal resizes,
//! control requests, and the wait for the container's init to exit.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use crate::frames::{self, Decoder, Kind, Streams};
use crate::record::{LineSplitter, MAX_PIECE, Stream, Tag, Time, write_record};
use crate::sys;

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
/// The size of one read of output or client input.
const CHUNK: usize = 32 * 1024;

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

/// The log file, reopened on request (the kubelet rotates it).
pub struct LogFile {
    path: Option<String>,
    file: Option<OwnedFd>,
    buffer: Vec<u8>,
}

impl LogFile {
    pub fn open(path: &str) -> Result<LogFile, Errno> {
        Ok(LogFile {
            path: Some(path.into()),
            file: Some(open_log(path)?),
            buffer: Vec::with_capacity(4096),
        })
    }

    /// A log that keeps nothing (an exec's output goes to its client only).
    pub fn discard() -> LogFile {
        LogFile {
            path: None,
            file: None,
            buffer: Vec::new(),
        }
    }

    fn reopen(&mut self) -> Result<(), Errno> {
        if let Some(path) = &self.path {
            self.file = Some(open_log(path)?);
        }
        Ok(())
    }

    fn record(&mut self, stream: Stream, tag: Tag, content: &[u8]) {
        let Some(file) = &self.file else {
            return;
        };
        let (secs, nanos) = sys::wall_clock();
        self.buffer.clear();
        write_record(&mut self.buffer, Time { secs, nanos }, stream, tag, content);
        // A full disk loses log lines, not the container.
        let _ = sys::write_all(file, &self.buffer);
    }
}

fn open_log(path: &str) -> Result<OwnedFd, Errno> {
    if let Some(parent) = sys::parent(path) {
        sys::create_dir_all(parent)?;
    }
    sys::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND,
        0o640,
    )
}

struct Output {
    fd: OwnedFd,
    stream: Stream,
    splitter: LineSplitter,
}

struct Input {
    sink: Option<OwnedFd>,
    pending: Vec<u8>,
    once: bool,
    tty: bool,
    /// Close the sink once `pending` is written.
    closing: bool,
}

struct Client {
    socket: OwnedFd,
    streams: Streams,
    decoder: Decoder,
    out: Vec<u8>,
    /// This client has let go of stdin (closed it or left).
    stdin_done: bool,
}

/// What one poll found: the events of every descriptor polled, in the order
/// [`Loop::poll`] lists them.
struct Polled {
    events: Vec<PollFlags>,
    /// The outputs polled (their indexes in `Loop::outputs`), from [`Polled::OUTPUTS_AT`].
    outputs: Vec<usize>,
    /// The stdin sink's place, when it was polled.
    sink: Option<usize>,
    /// The first client's place.
    clients_at: usize,
}

impl Polled {
    const SIGNALS: usize = 0;
    const CONTROL: usize = 1;
    const OUTPUTS_AT: usize = 2;

    fn ready(&self, at: usize) -> bool {
        !self.events[at].is_empty()
    }
}

/// The monitor's whole I/O state.
pub struct Loop<'a> {
    outputs: Vec<Option<Output>>,
    input: Input,
    terminal: Option<OwnedFd>,
    clients: Vec<Client>,
    control: &'a OwnedFd,
    log: &'a mut LogFile,
    /// Exec mode: kill the process when its last client goes.
    kill_when_alone: Option<Pid>,
    exec: bool,
}

/// Whether an error only means "not now".
fn would_block(e: Errno) -> bool {
    e == Errno::AGAIN || e == Errno::INTR
}

impl<'a> Loop<'a> {
    pub fn new(stdio: Stdio, control: &'a OwnedFd, log: &'a mut LogFile, exec: bool) -> Loop<'a> {
        let outputs = stdio
            .outputs
            .into_iter()
            .map(|(fd, stream)| {
                let _ = sys::set_nonblocking(&fd, true);
                Some(Output {
                    fd,
                    stream,
                    splitter: LineSplitter::new(MAX_PIECE),
                })
            })
            .collect();
        let sink = stdio.stdin.inspect(|fd| {
            let _ = sys::set_nonblocking(fd, true);
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
            exec,
        }
    }

    /// A client that has already attached (an exec's).
    pub fn add_client(&mut self, socket: OwnedFd, streams: Streams) -> Result<(), Errno> {
        sys::set_nonblocking(&socket, true)?;
        self.clients.push(Client {
            socket,
            streams,
            decoder: Decoder::default(),
            out: Vec::new(),
            stdin_done: false,
        });
        Ok(())
    }

    /// Exec mode: the process dies when its last client goes.
    pub fn kill_when_alone(&mut self, pid: Pid) {
        self.kill_when_alone = Some(pid);
    }

    /// Pumps until `pid` has exited and its output is drained; returns how it exited.
    /// Every other child (orphans the monitor inherits as a subreaper) is reaped too.
    pub fn run(&mut self, pid: Pid, signals: &OwnedFd) -> Result<WaitStatus, Errno> {
        let mut exited: Option<(WaitStatus, Duration)> = None;
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let hold_output = self.exec && self.clients.iter().any(|c| c.out.len() > EXEC_BACKLOG);
            if let Some((status, at)) = exited
                && (self.outputs.iter().all(Option::is_none)
                    || (sys::now() >= at + DRAIN_AFTER_EXIT && !hold_output))
            {
                self.finish_outputs();
                return Ok(status);
            }
            let timeout = exited.map(|_| Duration::from_millis(50));
            let polled = match self.poll(signals, hold_output, timeout) {
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e),
                Ok(polled) => polled,
            };
            for (k, i) in polled.outputs.iter().enumerate() {
                if polled.ready(Polled::OUTPUTS_AT + k) {
                    self.read_output(*i, &mut chunk);
                }
            }
            if polled.sink.is_some_and(|at| polled.ready(at)) {
                self.write_stdin();
            }
            self.serve_clients(&polled, &mut chunk);
            if polled.ready(Polled::SIGNALS) {
                self.reap(pid, signals, &mut exited);
            }
            if polled.ready(Polled::CONTROL) {
                self.accept_control();
            }
        }
    }

    /// Waits for something to do: exits (the signalfd), control connections, output
    /// (unless `hold_output`), room in the container's stdin for pending input, client
    /// input while stdin has room for it, and room for what a client has waiting.
    fn poll(
        &self,
        signals: &OwnedFd,
        hold_output: bool,
        timeout: Option<Duration>,
    ) -> Result<Polled, Errno> {
        let mut fds = vec![
            PollFd::new(signals, PollFlags::IN),
            PollFd::new(self.control, PollFlags::IN),
        ];
        let outputs: Vec<usize> = (0..self.outputs.len())
            .filter(|i| self.outputs[*i].is_some() && !hold_output)
            .collect();
        for i in &outputs {
            if let Some(output) = &self.outputs[*i] {
                fds.push(PollFd::new(&output.fd, PollFlags::IN));
            }
        }
        let sink = match &self.input.sink {
            Some(sink) if !self.input.pending.is_empty() => {
                fds.push(PollFd::new(sink, PollFlags::OUT));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let clients_at = fds.len();
        let read_clients = self.input.pending.len() < STDIN_BACKLOG;
        for client in &self.clients {
            let mut flags = PollFlags::empty();
            if read_clients {
                flags |= PollFlags::IN;
            }
            if !client.out.is_empty() {
                flags |= PollFlags::OUT;
            }
            fds.push(PollFd::new(&client.socket, flags));
        }
        sys::poll(&mut fds, timeout)?;
        Ok(Polled {
            events: fds.iter().map(PollFd::revents).collect(),
            outputs,
            sink,
            clients_at,
        })
    }

    /// Serves the clients with events, last first (a client dropped is swapped with
    /// the last).
    fn serve_clients(&mut self, polled: &Polled, chunk: &mut [u8]) {
        for index in (0..self.clients.len()).rev() {
            let Some(&flags) = polled.events.get(polled.clients_at + index) else {
                continue;
            };
            if flags.is_empty() {
                continue;
            }
            if !self.serve_client(index, flags, chunk) {
                self.drop_client(index);
            }
        }
    }

    /// Reaps every child that has exited; `exited` is set when `pid` first is one.
    fn reap(&mut self, pid: Pid, signals: &OwnedFd, exited: &mut Option<(WaitStatus, Duration)>) {
        sys::drain_signals(signals);
        while let Ok(Some((child, status))) = rustix::process::wait(WaitOptions::NOHANG) {
            if child == pid && exited.is_none() {
                *exited = Some((status, sys::now()));
                self.kill_when_alone = None;
            }
        }
    }

    /// Sends every client its last output and the exit frame, then closes them.
    pub fn farewell(&mut self, exit_code: i32) {
        let patience = if self.exec { EXEC_FAREWELL } else { FAREWELL };
        for client in &mut self.clients {
            frames::encode(Kind::Exit, &exit_code.to_be_bytes(), &mut client.out);
            let _ = sys::set_nonblocking(&client.socket, false);
            let _ = sys::set_timeouts(&client.socket, None, Some(patience));
            let _ = sys::write_all(&client.socket, &client.out);
            let _ = rustix::net::shutdown(&client.socket, rustix::net::Shutdown::Both);
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
        match rustix::io::read(&output.fd, &mut *chunk) {
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
                        frames::encode(kind, &chunk[..n], &mut client.out);
                    }
                }
            }
            Err(e) if would_block(e) => {}
            // EIO: a terminal whose other side is closed.
            Err(_) => {
                output
                    .splitter
                    .finish(|piece, tag| log.record(stream, tag, piece));
                self.outputs[index] = None;
            }
        }
    }

    fn write_stdin(&mut self) {
        let Some(sink) = &self.input.sink else {
            self.input.pending.clear();
            return;
        };
        match rustix::io::write(sink, &self.input.pending) {
            Ok(n) => {
                self.input.pending.drain(..n);
            }
            Err(e) if would_block(e) => {}
            Err(_) => {
                // The container closed its stdin: what is pending is lost.
                self.input.pending.clear();
                self.input.sink = None;
            }
        }
        if self.input.closing && self.input.pending.is_empty() {
            self.input.sink = None;
        }
    }

    /// Serves a client's events; false when it is to be dropped.
    fn serve_client(&mut self, index: usize, flags: PollFlags, chunk: &mut [u8]) -> bool {
        if flags.contains(PollFlags::OUT) {
            let client = &mut self.clients[index];
            match rustix::io::write(&client.socket, &client.out) {
                Ok(n) => {
                    client.out.drain(..n);
                }
                Err(e) if would_block(e) => {}
                Err(_) => return false,
            }
        }
        // A client that cannot keep up is dropped; an exec's output waits for its one
        // client instead (see EXEC_BACKLOG).
        if !self.exec && self.clients[index].out.len() > CLIENT_BACKLOG {
            return false;
        }
        if !flags.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            return true;
        }
        match rustix::io::read(&self.clients[index].socket, &mut *chunk) {
            Ok(0) => return false,
            Ok(n) => self.clients[index].decoder.push(&chunk[..n]),
            Err(e) if would_block(e) => return true,
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
                    (&self.terminal, frames::parse_resize(&payload))
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
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }

    /// A client let go of stdin: with stdin_once, the container's stdin closes (after
    /// what is pending; a terminal gets an end-of-file character instead).
    fn stdin_released(&mut self) {
        if !self.input.once || self.input.sink.is_none() || self.input.closing {
            return;
        }
        if self.input.tty {
            self.input.pending.push(EOT);
        }
        self.input.closing = true;
        if self.input.pending.is_empty() {
            self.input.sink = None;
        }
    }

    /// Answers every waiting control connection: `reopen`, or `attach <streams>`.
    fn accept_control(&mut self) {
        while let Ok(socket) = sys::accept(self.control) {
            let _ = sys::set_timeouts(&socket, Some(REQUEST_LINE_WAIT), Some(REQUEST_LINE_WAIT));
            let Ok(line) = read_request(&socket) else {
                continue;
            };
            let mut words = line.split_whitespace();
            let answer = match (words.next(), words.next()) {
                (Some("reopen"), None) => match self.log.reopen() {
                    Ok(()) => String::from("ok"),
                    Err(e) => format!("error {}", sys::Message(e)),
                },
                (Some("attach"), Some(wanted)) => match Streams::parse(wanted) {
                    Some(streams) if streams.stdin && self.input.sink.is_none() => {
                        String::from("error the container's stdin is closed")
                    }
                    Some(streams) => {
                        if sys::write_all(&socket, b"ok\n").is_ok() {
                            let _ = sys::set_timeouts(&socket, None, None);
                            let _ = self.add_client(socket, streams);
                        }
                        continue;
                    }
                    None => format!("error bad streams {wanted:?}"),
                },
                _ => format!("error unknown request {line:?}"),
            };
            let _ = sys::write_all(&socket, format!("{answer}\n").as_bytes());
        }
    }
}

/// Reads the request line of a new control connection, byte by byte: frames may follow
/// it at once and belong to the pump.
fn read_request(socket: &OwnedFd) -> Result<String, Errno> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(socket, &mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= 4096 => return Err(Errno::MSGSIZE),
            Ok(_) => line.push(byte[0]),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Waits for the one client of an exec (see `monitor::exec_monitor`).
pub fn first_client(control: &OwnedFd, timeout: Duration) -> Result<(OwnedFd, Streams), Errno> {
    let deadline = sys::now() + timeout;
    loop {
        match sys::accept(control) {
            Ok(socket) => {
                sys::set_timeouts(&socket, Some(Duration::from_secs(1)), None)?;
                let line = read_request(&socket)?;
                let streams = line
                    .strip_prefix("attach ")
                    .and_then(|wanted| Streams::parse(wanted.trim()));
                match streams {
                    Some(streams) => {
                        sys::write_all(&socket, b"ok\n")?;
                        sys::set_timeouts(&socket, None, None)?;
                        return Ok((socket, streams));
                    }
                    None => {
                        let _ =
                            sys::write_all(&socket, b"error an exec takes one attach request\n");
                    }
                }
            }
            Err(e) if would_block(e) => {
                let now = sys::now();
                if now >= deadline {
                    return Err(Errno::TIMEDOUT);
                }
                let mut fds = [PollFd::new(control, PollFlags::IN)];
                let _ = sys::poll(
                    &mut fds,
                    Some((deadline - now).min(Duration::from_millis(500))),
                );
            }
            Err(e) => return Err(e),
        }
    }
}
