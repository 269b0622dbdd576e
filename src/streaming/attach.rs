//! Exec and attach sessions on the streaming server's side: the client's remotecommand
//! streams, once it has opened them, bridged to a container monitor's attach socket
//! (`monitor::attach`): output the container writes from then on, the client's stdin,
//! terminal resizes, and the exit. The two directions run apart, so neither can hold
//! the other up.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::monitor::attach::{self, Kind as Frame};
use crate::streaming::connection::{Connection, Options};
use crate::streaming::remotecommand::{self, Outcome, ResizeDecoder, Streams};
use crate::streaming::spdy::session::Incoming;

/// Attaches to the monitor whose files are `paths`, for the streams the client asked
/// for (a terminal merges stderr into stdout).
pub async fn attach_monitor(
    paths: crate::monitor::MonitorPaths,
    options: Options,
) -> std::io::Result<tokio::net::UnixStream> {
    let wanted = attach::Streams {
        stdin: options.stdin,
        stdout: options.stdout,
        stderr: options.stderr && !options.tty,
    };
    tokio::task::spawn_blocking(move || {
        let socket = attach::attach(&paths, wanted)?;
        socket.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(socket)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Waits for the streams of an exec or attach; `None` (the connection ended) when the
/// client does not open them.
pub async fn open_streams(
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

/// Copies between the client's streams and a monitor's attach socket until the process
/// exits (`Some(Exited)`), the monitor fails (`Some(Failed)`), or the client goes away
/// (`None`). The two directions run apart, so neither can hold the other up.
pub async fn bridge(
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

async fn next(stream: &mut Option<Incoming>) -> Option<Vec<u8>> {
    match stream {
        Some(stream) => stream.recv().await,
        None => std::future::pending().await,
    }
}
