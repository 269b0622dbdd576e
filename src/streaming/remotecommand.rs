//! The `channel.k8s.io` protocols (v1–v5) over SPDY, for exec and attach: the client
//! opens an error stream, then stdin, stdout, stderr and resize streams as asked; the
//! server serves them, then writes the outcome on the error stream (a JSON `Status` from
//! v4 on, plain text before) and closes (docs/streaming-protocol.md §3). WebSocket
//! channels come as the same streams, so this serves them too. Which streams a request
//! asks for ([`Options`]) and the protocol's version are [`super::connection`]'s.

use std::time::Duration;

use super::connection::{Connection, Options, version};
use super::spdy::session::{Incoming, StreamWriter};

/// How long the client may take to open its streams.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The streams of one exec or attach.
#[derive(Debug)]
pub struct Streams {
    pub version: u8,
    pub error: StreamWriter,
    pub stdin: Option<Incoming>,
    pub stdout: Option<StreamWriter>,
    pub stderr: Option<StreamWriter>,
    pub resize: Option<Incoming>,
}

/// Waits for the streams `options` call for; `Err` says what is missing.
pub async fn accept(connection: &mut Connection, options: Options) -> Result<Streams, String> {
    let version = version(&connection.protocol);
    let stderr = options.stderr && !options.tty;
    let resize = options.tty && version >= 3;
    let expected = 1 + [options.stdin, options.stdout, stderr, resize]
        .iter()
        .filter(|on| **on)
        .count();
    let mut error = None;
    let mut stdin = None;
    let mut stdout = None;
    let mut stderr_writer = None;
    let mut resize_stream = None;
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while received < expected {
        let stream = tokio::time::timeout_at(deadline, connection.streams.recv())
            .await
            .map_err(|_| "timed out waiting for client to create streams".to_string())?
            .ok_or_else(|| "the client went away before opening its streams".to_string())?;
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        let slot_taken = match kind.as_str() {
            "error" => error.replace(stream.writer()).is_some(),
            "stdin" => stdin.replace(stream.split().0).is_some(),
            "stdout" => stdout.replace(stream.writer()).is_some(),
            "stderr" => stderr_writer.replace(stream.writer()).is_some(),
            "resize" => resize_stream.replace(stream.split().0).is_some(),
            other => {
                tracing::debug!(stream = other, "ignoring a stream of unknown type");
                continue;
            }
        };
        if slot_taken {
            return Err(format!("the client opened two {kind} streams"));
        }
        received += 1;
    }
    // Streams opened after these are refused (dropped unread), so that they cannot fill
    // the connection's queue and stall its reader.
    let (_, none) = tokio::sync::mpsc::channel(1);
    let mut rest = std::mem::replace(&mut connection.streams, none);
    tokio::spawn(async move { while rest.recv().await.is_some() {} });
    Ok(Streams {
        version,
        error: error.ok_or("the client opened no error stream")?,
        stdin,
        stdout,
        stderr: stderr_writer,
        resize: resize_stream,
    })
}

/// How an exec or attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code.
    Exited(i32),
    /// It could not be run or followed.
    Failed(String),
}

/// What the error stream carries for `outcome` in protocol `version` (nothing for
/// success before v4).
pub fn status_message(version: u8, outcome: &Outcome) -> Option<String> {
    if version >= 4 {
        let status = match outcome {
            Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": (code & 0xff).to_string()}]},
            }),
            Outcome::Failed(why) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {why}"),
                "reason": "InternalError",
                "code": 500,
            }),
        };
        return Some(status.to_string());
    }
    match outcome {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => Some(format!(
            "command terminated with non-zero exit code: {code}"
        )),
        Outcome::Failed(why) => Some(why.clone()),
    }
}

/// Ends the session: output streams half-closed, the outcome on the error stream (a
/// failure named after `subject`, e.g. `container <id>`), then GOAWAY once everything
/// queued before it is written.
pub async fn finish(streams: &Streams, connection: &Connection, outcome: &Outcome, subject: &str) {
    let named;
    let outcome = match outcome {
        Outcome::Failed(why) => {
            named = Outcome::Failed(format!("{subject}: {why}"));
            &named
        }
        exited => exited,
    };
    for writer in [&streams.stdout, &streams.stderr].into_iter().flatten() {
        writer.close().await;
    }
    if let Some(message) = status_message(streams.version, outcome) {
        streams.error.send(message.into_bytes()).await;
    }
    streams.error.close().await;
    connection.session.go_away().await;
}

/// A terminal size from the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The longest unfinished resize message kept.
const MAX_RESIZE_MESSAGE: usize = 4096;

/// Cuts the resize stream (JSON objects one after another) into sizes.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    buffer: Vec<u8>,
}

impl ResizeDecoder {
    /// Adds bytes; returns every complete size they finish. A malformed object is
    /// skipped.
    pub fn push(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.buffer.extend_from_slice(data);
        // A size is a few dozen bytes: anything this long is not one.
        if self.buffer.len() > MAX_RESIZE_MESSAGE {
            self.buffer.clear();
            return Vec::new();
        }
        let mut sizes = Vec::new();
        let mut consumed = 0;
        {
            let mut objects =
                serde_json::Deserializer::from_slice(&self.buffer).into_iter::<serde_json::Value>();
            loop {
                match objects.next() {
                    Some(Ok(value)) => {
                        consumed = objects.byte_offset();
                        if let Ok(size) = serde_json::from_value::<TerminalSize>(value) {
                            sizes.push(size);
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => {
                        // Garbage: drop what was buffered and start again.
                        consumed = self.buffer.len();
                        break;
                    }
                    None => break,
                }
            }
        }
        self.buffer.drain(..consumed);
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_statuses() {
        assert_eq!(version("v5.channel.k8s.io"), 5);
        assert_eq!(version("v4.channel.k8s.io"), 4);
        assert_eq!(version("channel.k8s.io"), 1);
        let success = status_message(4, &Outcome::Exited(0)).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&success).unwrap(),
            serde_json::json!({"metadata": {}, "status": "Success"})
        );
        let failure: serde_json::Value =
            serde_json::from_str(&status_message(5, &Outcome::Exited(3)).unwrap()).unwrap();
        assert_eq!(failure["reason"], "NonZeroExitCode");
        assert_eq!(failure["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failure["details"]["causes"][0]["message"], "3");
        let internal: serde_json::Value =
            serde_json::from_str(&status_message(4, &Outcome::Failed("boom".into())).unwrap())
                .unwrap();
        assert_eq!(internal["reason"], "InternalError");
        assert_eq!(status_message(2, &Outcome::Exited(0)), None);
        assert!(
            status_message(2, &Outcome::Exited(1))
                .unwrap()
                .contains("exit code: 1")
        );
    }

    #[test]
    fn resize_objects_across_chunks() {
        let mut decoder = ResizeDecoder::default();
        assert!(decoder.push(br#"{"Width":80,"#).is_empty());
        assert_eq!(
            decoder.push(b"\"Height\":24}\n{\"Width\":100,\"Height\":40}\n"),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 40
                }
            ]
        );
        assert!(decoder.push(b"not json").is_empty());
        assert!(
            decoder.push(&[b'{'; 5000]).is_empty(),
            "an endless object is dropped"
        );
        assert_eq!(
            decoder.push(br#"{"Width":1,"Height":2}"#),
            vec![TerminalSize {
                width: 1,
                height: 2
            }]
        );
    }
}
