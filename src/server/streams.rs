//! Exec, Attach and PortForward: the RPCs validate and leave the request under a token
//! of the streaming server, whose URL they return; the server then calls back here with
//! the client's upgraded connection.
//!
//! Attach is served through the container's monitor (`monitor::attach`): output the
//! container writes from then on, the client's stdin, terminal resizes, and the exit.
//! Detaching (the client going away) never stops the container.
//!
//! Exec starts a monitor in exec mode (`berth monitor --exec-process`), attaches to it
//! the same way, and only then has it run the process (`runc exec --detach`, pipes or a
//! terminal): no output is lost, the process is the monitor's child (reaped by it), and
//! it is killed when the client goes away.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::CriService;
use crate::error::{Error, Result};
use crate::monitor::attach::{self, Kind as Frame};
use crate::proto::{AttachRequest, ExecRequest};
use crate::store::ContainerState;
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
        let base = self
            .streaming_base
            .get()
            .ok_or_else(|| Error::Unavailable("the streaming server is not running".into()))?;
        let token = self
            .stream_tokens
            .insert(request)
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(format!("{base}/{}/{token}", kind.path()))
    }

    fn running_container(&self, id: &str) -> Result<crate::store::ContainerRecord> {
        let record = self.container(id)?;
        if record.state != ContainerState::Running {
            return Err(Error::WrongState {
                kind: "container",
                id: record.id,
                reason: "it is not running".to_string(),
            });
        }
        Ok(record)
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

    /// Serves one upgraded streaming connection.
    pub async fn serve_stream(self: Arc<Self>, request: StreamRequest, connection: Connection) {
        match request {
            StreamRequest::Attach(request) => self.serve_attach(request, connection).await,
            StreamRequest::Exec(request) => self.serve_exec(request, connection).await,
            StreamRequest::PortForward(_) => {
                connection.session.go_away().await;
            }
        }
    }

    async fn serve_exec(&self, request: ExecRequest, mut connection: Connection) {
        let options = Options {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            tty: request.tty,
        };
        let mut streams = match remotecommand::accept(&mut connection, options).await {
            Ok(streams) => streams,
            Err(why) => {
                tracing::debug!(container = %request.container_id, %why, "exec abandoned");
                connection.session.go_away().await;
                return;
            }
        };
        let token = crate::ids::random_id()[..16].to_string();
        let paths = self.containers.exec_paths(&request.container_id, &token);
        let socket = self.start_exec(&request, &paths).await;
        let outcome = match socket {
            Ok(socket) => bridge(socket, &mut streams, &connection).await,
            Err(why) => Some(Outcome::Failed(why)),
        };
        if let Some(outcome) = &outcome {
            remotecommand::finish(&streams, &connection, outcome).await;
        }
        let _ = std::fs::remove_dir_all(&paths.dir);
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
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = tokio::process::Command::new(exe);
        command.arg("monitor");
        // The client's end of stdin is the process's (stdin_once, as for `kubectl exec`).
        for (flag, on) in [
            ("--tty", request.tty),
            ("--stdin", request.stdin),
            ("--stdin-once", request.stdin),
        ] {
            if on {
                command.arg(flag);
            }
        }
        let mut child = command
            .arg("--id")
            .arg(&record.id)
            .arg("--bundle")
            .arg(&paths.dir)
            .arg("--runtime")
            .arg(runtime.binary())
            .arg("--runtime-root")
            .arg(runtime.root())
            .arg("--log")
            .arg("/dev/null")
            .arg("--dir")
            .arg(&paths.dir)
            .arg("--control-socket")
            .arg(&paths.socket)
            .arg("--exec-process")
            .arg(&process)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
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

    async fn serve_attach(&self, request: AttachRequest, mut connection: Connection) {
        let options = Options {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            tty: request.tty,
        };
        let mut streams = match remotecommand::accept(&mut connection, options).await {
            Ok(streams) => streams,
            Err(why) => {
                tracing::debug!(container = %request.container_id, %why, "attach abandoned");
                connection.session.go_away().await;
                return;
            }
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
        remotecommand::finish(&streams, &connection, &outcome).await;
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
/// (`None`).
async fn bridge(
    socket: tokio::net::UnixStream,
    streams: &mut Streams,
    connection: &Connection,
) -> Option<Outcome> {
    let (mut from_monitor, mut to_monitor) = socket.into_split();
    let mut decoder = attach::Decoder::default();
    let mut resizes = ResizeDecoder::default();
    let mut stdin = streams.stdin.take();
    let mut resize = streams.resize.take();
    let mut chunk = vec![0u8; 32 * 1024];
    let mut frame = Vec::new();
    loop {
        frame.clear();
        tokio::select! {
            read = from_monitor.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        return Some(Outcome::Failed("the container's monitor went away".into()))
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
            data = next(&mut stdin) => {
                match data {
                    Some(data) => attach::encode(Frame::Stdin, &data, &mut frame),
                    None => {
                        attach::encode(Frame::CloseStdin, &[], &mut frame);
                        stdin = None;
                    }
                }
                if to_monitor.write_all(&frame).await.is_err() {
                    return Some(Outcome::Failed("the container's monitor went away".into()));
                }
            }
            data = next(&mut resize) => {
                let Some(data) = data else {
                    resize = None;
                    continue;
                };
                for size in resizes.push(&data) {
                    attach::encode(
                        Frame::Resize,
                        &attach::resize_payload(size.width, size.height),
                        &mut frame,
                    );
                }
                if !frame.is_empty() && to_monitor.write_all(&frame).await.is_err() {
                    return Some(Outcome::Failed("the container's monitor went away".into()));
                }
            }
            () = connection.session.closed() => return None,
        }
    }
}
