//! Exec, Attach and PortForward: the RPCs validate and leave the request under a token
//! of the streaming server, whose URL they return; the server then calls back here with
//! the client's upgraded connection.
//!
//! Attach is served through the container's monitor (`monitor::attach`): output the
//! container writes from then on, the client's stdin, terminal resizes, and the exit.
//! Detaching (the client going away) never stops the container.
//!
//! Exec starts a monitor in exec mode (`berth-monitor --exec-process`), attaches to it
//! the same way, and only then has it run the process (`runc exec --detach`, pipes or a
//! terminal): no output is lost, the process is the monitor's child (reaped by it), and
//! it is killed when the client goes away.
//!
//! PortForward pairs the client's error and data streams by `requestid`; each pair is one
//! TCP connection to 127.0.0.1:PORT made inside the pod's network namespace, ended when
//! the pod's side ends; a failure is written on the error stream.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::CriService;
use crate::error::{Error, Result};
use crate::monitor::attach::{self, Kind as Frame};
use crate::proto::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::store::SandboxState;
use crate::streaming::StreamRequest;
use crate::streaming::remotecommand::{self, Options, Outcome, ResizeDecoder, Streams};
use crate::streaming::server::Connection;
use crate::streaming::spdy::session::Incoming;

impl CriService {
    /// The streaming server's base URL, once it listens.
    pub fn set_streaming_base(&self, base: String) {
        let _ = self.streaming_base.set(base);
    }

    fn stream_url(&self, request: StreamRequest) -> Result<String> {
        let kind = request.kind();
        let target = request.target();
        let base = self.streaming_base.get().ok_or_else(|| {
            Error::Unavailable(format!(
                "{} of {target}: the streaming server is not running",
                kind.path()
            ))
        })?;
        let token = self
            .stream_tokens
            .insert(request)
            .map_err(|e| Error::Unavailable(format!("{} of {target}: {e}", kind.path())))?;
        Ok(format!("{base}/{}/{token}", kind.path()))
    }

    /// Attach: the URL where the client attaches to the container's stdio.
    pub fn attach(&self, request: AttachRequest) -> Result<String> {
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        let record = self.running_container(&request.container_id)?;
        let mut request = request;
        request.container_id = record.id;
        self.stream_url(StreamRequest::Attach(request))
    }

    /// Exec: the URL where the client runs `cmd` in the container.
    pub fn exec(&self, request: ExecRequest) -> Result<String> {
        if request.cmd.is_empty() {
            return Err(Error::invalid("cmd", "must name a command"));
        }
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        let record = self.running_container(&request.container_id)?;
        let mut request = request;
        request.container_id = record.id;
        self.stream_url(StreamRequest::Exec(request))
    }

    /// PortForward: the URL where the client forwards connections to the pod's ports.
    pub fn port_forward(&self, request: PortForwardRequest) -> Result<String> {
        let sandbox = self.ready_sandbox(&request.pod_sandbox_id)?;
        // Over WebSocket each port takes two one-byte channel numbers.
        if request.port.len() > 127 {
            return Err(Error::invalid(
                "port",
                format!("at most 127 ports per request, not {}", request.port.len()),
            ));
        }
        if let Some(bad) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::invalid("port", format!("{bad} is not a TCP port")));
        }
        let mut request = request;
        request.pod_sandbox_id = sandbox.id;
        self.stream_url(StreamRequest::PortForward(request))
    }

    /// Serves one upgraded streaming connection.
    pub async fn serve_stream(self: Arc<Self>, request: StreamRequest, connection: Connection) {
        let options = request.options().unwrap_or_default();
        match request {
            StreamRequest::Attach(request) => self.serve_attach(request, options, connection).await,
            StreamRequest::Exec(request) => self.serve_exec(request, options, connection).await,
            StreamRequest::PortForward(request) => {
                self.serve_port_forward(request, connection).await
            }
        }
    }

    async fn serve_exec(&self, request: ExecRequest, options: Options, mut connection: Connection) {
        let Some(mut streams) =
            open_streams("exec", &request.container_id, options, &mut connection).await
        else {
            return;
        };
        let token = crate::ids::random_id()[..16].to_string();
        let paths = self.containers.exec_paths(&request.container_id, &token);
        let socket = self.start_exec(&request, &paths).await;
        let outcome = match socket {
            Ok(socket) => bridge(socket, &mut streams, &connection).await,
            Err(why) => Some(Outcome::Failed(why)),
        };
        if let Some(outcome) = &outcome {
            let subject = format!("container {}", request.container_id);
            remotecommand::finish(&streams, &connection, outcome, &subject).await;
        }
        // A running monitor removes its own directory when it ends; one that never
        // started leaves it to us.
        if !paths.monitor_pid_file().exists() {
            let _ = std::fs::remove_dir_all(&paths.dir);
        }
    }

    /// Starts the exec monitor and attaches to it; the process runs from then on.
    async fn start_exec(
        &self,
        request: &ExecRequest,
        paths: &crate::monitor::MonitorPaths,
    ) -> std::result::Result<tokio::net::UnixStream, String> {
        let record = self
            .running_container(&request.container_id)
            .map_err(|e| e.to_string())?;
        let runtime = self.runtime_of(&record).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&paths.dir).map_err(|e| e.to_string())?;
        let process = paths.dir.join("process.json");
        super::container_exec::write_process(
            &self.containers.state_dir(&record.id).join("config.json"),
            &process,
            request.cmd.clone(),
            request.tty,
        )
        .map_err(|e| e.to_string())?;
        let program = self.containers.monitor_program().to_path_buf();
        // The client's end of stdin is the process's (stdin_once, as for `kubectl exec`).
        let path = |p: &std::path::Path| p.display().to_string();
        let args = crate::monitor::argv::Args {
            id: record.id.clone(),
            bundle: path(&paths.dir),
            runtime: path(runtime.binary()),
            runtime_root: path(runtime.root()),
            log_path: "/dev/null".into(),
            dir: path(&paths.dir),
            socket: path(&paths.socket),
            oom_events: None,
            tty: request.tty,
            stdin: request.stdin,
            stdin_once: request.stdin,
            exec_process: Some(path(&process)),
        };
        let mut child = tokio::process::Command::new(program)
            .args(args.to_args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .env_remove(crate::helpers::ENV)
            .env("RUST_BACKTRACE", "0")
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("starting the exec monitor: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the exec monitor has no stdout")?;
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "the exec monitor did not start in time".to_string())?
            .map_err(|e| e.to_string())?;
        // The monitor lives on in its own session; tokio reaps it when it exits.
        drop(child);
        if ready.as_deref() != Some("ready") {
            return Err(format!("the exec monitor said {ready:?}"));
        }
        let wanted = attach::Streams {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr && !request.tty,
        };
        let paths = paths.clone();
        tokio::task::spawn_blocking(move || {
            let socket = attach::attach(&paths, wanted)?;
            socket.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(socket)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot attach to the exec: {e}"))
    }

    async fn serve_attach(
        &self,
        request: AttachRequest,
        options: Options,
        mut connection: Connection,
    ) {
        let Some(mut streams) =
            open_streams("attach", &request.container_id, options, &mut connection).await
        else {
            return;
        };
        let paths = self.containers.monitor_paths(&request.container_id);
        let wanted = attach::Streams {
            stdin: options.stdin,
            stdout: options.stdout,
            stderr: options.stderr && !options.tty,
        };
        let socket = tokio::task::spawn_blocking(move || {
            let socket = attach::attach(&paths, wanted)?;
            socket.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(socket)
        })
        .await;
        let outcome = match socket {
            Ok(Ok(socket)) => match bridge(socket, &mut streams, &connection).await {
                // Attach reports success however the container ended.
                Some(Outcome::Exited(_)) => Outcome::Exited(0),
                Some(failed) => failed,
                // The client went away: nothing to tell it.
                None => return,
            },
            Ok(Err(e)) => Outcome::Failed(format!("cannot attach to the container: {e}")),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let subject = format!("container {}", request.container_id);
        remotecommand::finish(&streams, &connection, &outcome, &subject).await;
    }
}

/// Waits for the streams of an exec or attach; `None` (the connection ended) when the
/// client does not open them.
async fn open_streams(
    what: &str,
    container: &str,
    options: Options,
    connection: &mut Connection,
) -> Option<Streams> {
    match remotecommand::accept(connection, options).await {
        Ok(streams) => Some(streams),
        Err(why) => {
            tracing::debug!(%container, %why, "{what} abandoned");
            connection.session.go_away().await;
            None
        }
    }
}

/// At least one stream, and no stderr with a terminal (it is merged into stdout).
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<()> {
    if !(stdin || stdout || stderr) {
        return Err(Error::invalid(
            "stdin, stdout, stderr",
            "one of them must be set",
        ));
    }
    if tty && stderr {
        return Err(Error::invalid(
            "tty, stderr",
            "tty and stderr cannot both be true",
        ));
    }
    Ok(())
}

async fn next(stream: &mut Option<Incoming>) -> Option<Vec<u8>> {
    match stream {
        Some(stream) => stream.recv().await,
        None => std::future::pending().await,
    }
}

/// Copies between the client's streams and a monitor's attach socket until the process
/// exits (`Some(Exited)`), the monitor fails (`Some(Failed)`), or the client goes away
/// (`None`). The two directions run apart, so neither can hold the other up.
async fn bridge(
    socket: tokio::net::UnixStream,
    streams: &mut Streams,
    connection: &Connection,
) -> Option<Outcome> {
    let (from_monitor, to_monitor) = socket.into_split();
    let input = tokio::spawn(feed_monitor(
        to_monitor,
        streams.stdin.take(),
        streams.resize.take(),
    ));
    let outcome = tokio::select! {
        outcome = relay_output(from_monitor, streams) => outcome,
        () = connection.session.closed() => None,
    };
    input.abort();
    outcome
}

/// The monitor's output to the client's stdout and stderr, until the exit frame.
async fn relay_output(
    mut from_monitor: tokio::net::unix::OwnedReadHalf,
    streams: &Streams,
) -> Option<Outcome> {
    let mut decoder = attach::Decoder::default();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match from_monitor.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                return Some(Outcome::Failed("the container's monitor went away".into()));
            }
            Ok(n) => n,
        };
        decoder.push(&chunk[..n]);
        loop {
            let (kind, payload) = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Some(Outcome::Failed(e.to_string())),
            };
            let writer = match kind {
                Frame::Stdout => &streams.stdout,
                Frame::Stderr => &streams.stderr,
                Frame::Exit => {
                    let code = payload
                        .as_slice()
                        .try_into()
                        .map(i32::from_be_bytes)
                        .unwrap_or(255);
                    return Some(Outcome::Exited(code));
                }
                Frame::Error => {
                    return Some(Outcome::Failed(
                        String::from_utf8_lossy(&payload).into_owned(),
                    ));
                }
                _ => continue,
            };
            if let Some(writer) = writer
                && !writer.send(payload).await
            {
                return None;
            }
        }
    }
}

/// The client's stdin and terminal sizes to the monitor, in frames it accepts. Holds
/// the socket's write half until aborted: dropping it would tell the monitor the client
/// left.
async fn feed_monitor(
    mut to_monitor: tokio::net::unix::OwnedWriteHalf,
    mut stdin: Option<Incoming>,
    mut resize: Option<Incoming>,
) {
    let mut resizes = ResizeDecoder::default();
    let mut frame = Vec::new();
    while stdin.is_some() || resize.is_some() {
        frame.clear();
        tokio::select! {
            data = next(&mut stdin) => match data {
                Some(data) => {
                    for piece in data.chunks(attach::MAX_FRAME) {
                        attach::encode(Frame::Stdin, piece, &mut frame);
                    }
                }
                None => {
                    attach::encode(Frame::CloseStdin, &[], &mut frame);
                    stdin = None;
                }
            },
            data = next(&mut resize) => match data {
                Some(data) => {
                    for size in resizes.push(&data) {
                        attach::encode(
                            Frame::Resize,
                            &attach::resize_payload(size.width, size.height),
                            &mut frame,
                        );
                    }
                }
                None => resize = None,
            },
        }
        if !frame.is_empty() && to_monitor.write_all(&frame).await.is_err() {
            break;
        }
    }
    std::future::pending::<()>().await;
}

/// One port-forward request's streams, as they arrive.
struct Pair {
    error: Option<crate::streaming::spdy::session::Stream>,
    data: Option<crate::streaming::spdy::session::Stream>,
    /// When its first stream came: the other must follow within the creation timeout.
    since: tokio::time::Instant,
}

impl Pair {
    /// Gives up on a pair whose other stream never came, telling the client why.
    async fn expire(self, key: &str) {
        if let Some(error) = &self.error {
            let message = format!("(request={key}) timed out waiting for streams");
            error.writer().send(message.into_bytes()).await;
            error.writer().close().await;
        }
        if let Some(data) = &self.data {
            data.writer().close().await;
        }
    }
}

impl CriService {
    /// `portforward.k8s.io`: every pair of error and data streams (keyed by `requestid`)
    /// is one TCP connection to `127.0.0.1:port` inside the pod's network namespace.
    async fn serve_port_forward(&self, request: PortForwardRequest, mut connection: Connection) {
        // The pod may have stopped since the RPC: its namespace is checked again now,
        // and only a host-network pod is reached on the host's loopback.
        let sandbox = self
            .sandboxes
            .find(&request.pod_sandbox_id)
            .and_then(|s| self.sandboxes.refresh(s).ok())
            .filter(|s| s.state == SandboxState::Ready);
        let netns = match sandbox {
            Some(s) if host_network(&s) => None,
            Some(s) if s.netns.is_some() => s.netns.map(std::path::PathBuf::from),
            _ => {
                tracing::debug!(sandbox = %request.pod_sandbox_id, "port-forward to a pod that is gone");
                connection.session.go_away().await;
                return;
            }
        };
        let pod = request.pod_sandbox_id.clone();
        let mut pairs: std::collections::HashMap<String, Pair> = std::collections::HashMap::new();
        let mut forwards = tokio::task::JoinSet::new();
        loop {
            // Pairs still waiting for their second stream expire after the timeout.
            let oldest = pairs.values().map(|p| p.since).min();
            let next = match oldest {
                Some(since) => {
                    let deadline = since + remotecommand::STREAM_CREATION_TIMEOUT;
                    match tokio::time::timeout_at(deadline, connection.streams.recv()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let now = tokio::time::Instant::now();
                            let stale: Vec<String> = pairs
                                .iter()
                                .filter(|(_, p)| {
                                    now >= p.since + remotecommand::STREAM_CREATION_TIMEOUT
                                })
                                .map(|(k, _)| k.clone())
                                .collect();
                            for key in stale {
                                if let Some(pair) = pairs.remove(&key) {
                                    pair.expire(&key).await;
                                }
                            }
                            continue;
                        }
                    }
                }
                None => connection.streams.recv().await,
            };
            let Some(stream) = next else { break };
            let port = stream
                .header("port")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0);
            let kind = stream.header("streamtype").unwrap_or("").to_string();
            let (Some(port), "error" | "data") = (port, kind.as_str()) else {
                tracing::debug!(
                    stream = stream.id,
                    "port-forward stream without a port or type"
                );
                stream.writer().close().await;
                continue;
            };
            // Old clients send no request id: the pair's error stream is the data's - 2.
            let key = match stream.header("requestid") {
                Some(id) => id.to_string(),
                None if kind == "error" => stream.id.to_string(),
                None => stream.id.saturating_sub(2).to_string(),
            };
            let pair = pairs.entry(key.clone()).or_insert_with(|| Pair {
                error: None,
                data: None,
                since: tokio::time::Instant::now(),
            });
            let slot = if kind == "error" {
                &mut pair.error
            } else {
                &mut pair.data
            };
            if slot.is_some() {
                if let Some(error) = &pair.error {
                    let message =
                        format!("error processing stream for request {key}: two {kind} streams");
                    error.writer().send(message.into_bytes()).await;
                }
                continue;
            }
            *slot = Some(stream);
            if pair.error.is_some()
                && pair.data.is_some()
                && let Some(Pair {
                    error: Some(error),
                    data: Some(data),
                    ..
                }) = pairs.remove(&key)
            {
                let session = connection.session.clone();
                let one = forward(netns.clone(), pod.clone(), port, error, data);
                // A client that goes away takes its connections with it.
                forwards.spawn(async move {
                    tokio::select! {
                        () = one => {}
                        () = session.closed() => {}
                    }
                });
            }
        }
        // No more streams (a WebSocket carries them all up front): end the connection
        // once every forwarded connection has.
        while forwards.join_next().await.is_some() {}
        connection.session.go_away().await;
    }
}

/// One forwarded connection: the client's data stream to and from the pod's port. A
/// failure is written on the error stream; both streams are closed at the end.
async fn forward(
    netns: Option<std::path::PathBuf>,
    pod: String,
    port: u16,
    error: crate::streaming::spdy::session::Stream,
    data: crate::streaming::spdy::session::Stream,
) {
    let error_writer = error.writer();
    let (mut from_client, to_client) = data.split();
    let dialled = tokio::task::spawn_blocking(move || {
        let socket = crate::sandbox::netns::connect_inside(netns.as_deref(), port)?;
        socket.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(socket)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    let socket = match dialled {
        Ok(socket) => socket,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod}: {e}");
            error_writer.send(message.into_bytes()).await;
            error_writer.close().await;
            to_client.close().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = socket.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // The client's side reached end-of-file: so does the pod's socket.
        let _ = to_pod.shutdown().await;
    });
    // The connection is over when the pod's side is (as the kubelet's runtimes do): the
    // client may never half-close its data stream.
    let downstream = async {
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !to_client.send(chunk[..n].to_vec()).await {
                        break;
                    }
                }
            }
        }
        to_client.close().await;
    };
    downstream.await;
    upstream.abort();
    error_writer.close().await;
}

/// Whether the pod shares the node's network namespace.
fn host_network(sandbox: &crate::store::SandboxRecord) -> bool {
    sandbox
        .pod_config()
        .map_err(|err| tracing::warn!(%err, "taken for a pod with its own network"))
        .unwrap_or_default()
        .linux
        .and_then(|l| l.security_context)
        .and_then(|c| c.namespace_options)
        .is_some_and(|o| o.network == crate::proto::NamespaceMode::Node as i32)
}
