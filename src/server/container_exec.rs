//! ExecSync and Exec: a command run in a running container. The process is the
//! container's own (its user, environment, working directory, capabilities and
//! confinement from the bundle's spec) with the requested arguments.
//!
//! ExecSync runs it to completion (the kubelet's exec probes) and returns its output and
//! exit code. Exec leaves the request under a token of the streaming server and returns
//! its URL; when the client comes, a monitor in exec mode (`berth-monitor
//! --exec-process`) is started and attached to first, and only then runs the process
//! (`runc exec --detach`, pipes or a terminal): no output is lost, the process is the
//! monitor's child (reaped by it), and it is killed when the client goes away.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::CriService;
use crate::error::{Error, Result};
use crate::monitor::launch::{Answer, LaunchError, launch};
use crate::oci::exec::{ExecFiles, ExecOutput, exec};
use crate::oci::runc::Runtime;
use crate::oci::runtime::OciError;
use crate::proto::{ExecRequest, ExecSyncRequest, ExecSyncResponse};
use crate::streaming::StreamRequest;
use crate::streaming::attach;
use crate::streaming::connection::{Connection, Options};
use crate::streaming::remotecommand::{self, Outcome};

/// The most output an ExecSync returns, stdout and stderr together: the kubelet accepts
/// gRPC messages up to 16 MiB, and the response must fit in one (less room for its
/// framing).
pub const MAX_EXEC_OUTPUT: usize = (16 << 20) - 4096;

impl CriService {
    pub async fn exec_sync(self: &Arc<Self>, request: ExecSyncRequest) -> Result<ExecSyncResponse> {
        if request.cmd.is_empty() {
            return Err(Error::invalid("cmd", "must name a command"));
        }
        let timeout = exec_timeout(request.timeout)?;
        let output = self
            .exec_in(&request.container_id, request.cmd.clone(), timeout)
            .await?;
        if output.timed_out {
            return Err(Error::TimedOut {
                what: format!(
                    "command {:?} in container {}",
                    request.cmd, request.container_id
                ),
                after: timeout.unwrap_or_default(),
            });
        }
        let mut stderr = output.stderr;
        stderr.truncate(MAX_EXEC_OUTPUT.saturating_sub(output.stdout.len()));
        Ok(ExecSyncResponse {
            stdout: output.stdout,
            stderr,
            exit_code: output.exit_code,
        })
    }

    /// Runs `args` in the running container `id` as its own process would run.
    async fn exec_in(
        self: &Arc<Self>,
        id: &str,
        args: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let record = self.running_container(id)?;
        let runtime = self.runtime_of(&record)?;
        let dir = self.containers.state_dir(&record.id);
        let mut retried = false;
        loop {
            let files = exec_files(&dir)?;
            write_process(
                &dir.join("config.json"),
                &files.process,
                args.clone(),
                false,
            )?;
            // The exec runs as its own task: a caller that goes away drops `cancel`, and
            // the task kills the process and cleans up.
            let (_cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
            let id = record.id.clone();
            let ran = runtime.clone();
            let task = tokio::spawn(async move {
                let result = exec(&ran, &id, &files, timeout, MAX_EXEC_OUTPUT, cancelled).await;
                let _ = std::fs::remove_file(&files.process);
                let _ = std::fs::remove_file(&files.pid);
                result
            });
            match task.await? {
                Err(err) if !retried && busy_before_it_ran(&runtime, &err) => {
                    tracing::info!(container = %record.id, %err, "the runtime was busy setting up an exec; once more");
                    retried = true;
                }
                result => return Ok(result?),
            }
        }
    }

    /// Exec: the URL where the client runs `cmd` in the container.
    pub fn exec(&self, request: ExecRequest) -> Result<String> {
        if request.cmd.is_empty() {
            return Err(Error::invalid("cmd", "must name a command"));
        }
        super::check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        let record = self.running_container(&request.container_id)?;
        let mut request = request;
        request.container_id = record.id;
        self.stream_url(StreamRequest::Exec(request))
    }

    pub(super) async fn serve_exec(
        &self,
        request: ExecRequest,
        options: Options,
        mut connection: Connection,
    ) {
        let Some(mut streams) =
            attach::open_streams("exec", &request.container_id, options, &mut connection).await
        else {
            return;
        };
        let token = crate::ids::random_id()[..16].to_string();
        let paths = self.containers.exec_paths(&request.container_id, &token);
        let socket = self.start_exec(&request, options, &paths).await;
        let outcome = match socket {
            Ok(socket) => attach::bridge(socket, &mut streams, &connection).await,
            Err(why) => Some(Outcome::Failed(why.to_string())),
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
        options: Options,
        paths: &crate::monitor::MonitorPaths,
    ) -> Result<tokio::net::UnixStream> {
        let record = self.running_container(&request.container_id)?;
        let runtime = self.runtime_of(&record)?;
        std::fs::create_dir_all(&paths.dir).map_err(Error::io("making", &paths.dir))?;
        let process = paths.dir.join("process.json");
        write_process(
            &self.containers.state_dir(&record.id).join("config.json"),
            &process,
            request.cmd.clone(),
            request.tty,
        )?;
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
        let program = self.containers.monitor_program();
        let timeout = std::time::Duration::from_secs(30);
        match launch(program, &args, timeout, "exec monitor").await? {
            (Answer::Ready, _) => {}
            (Answer::Error(message), _) => {
                return Err(Error::Runtime(OciError::Failed {
                    binary: runtime.binary().to_path_buf(),
                    command: "exec",
                    id: record.id,
                    message,
                }));
            }
            (answer @ (Answer::Started(_) | Answer::Other(_)), _) => {
                return Err(LaunchError::Unexpected {
                    role: "exec monitor",
                    id: record.id,
                    said: format!("{answer:?}"),
                }
                .into());
            }
        }
        attach::attach_monitor(paths.clone(), options)
            .await
            .map_err(Error::io("attaching to the exec monitor at", &paths.socket))
    }
}

/// youki 0.7 now and then fails to set up an exec with EBUSY (seen once in some 2 000
/// ExecSync calls under load), before the command runs: one retry is safe.
fn busy_before_it_ran(runtime: &Runtime, err: &OciError) -> bool {
    runtime.kind() == crate::oci::runtime::Kind::Youki
        && matches!(err, OciError::Failed { message, .. } if message.contains("Device or resource busy"))
}

/// Fresh file names for one exec in the container's state directory.
fn exec_files(dir: &Path) -> Result<ExecFiles> {
    let token = &crate::ids::random_id()[..16];
    Ok(ExecFiles {
        process: dir.join(format!("exec-{token}.json")),
        pid: dir.join(format!("exec-{token}.pid")),
    })
}

/// The container's process from its bundle spec, with `args`, with or without a
/// terminal.
fn write_process(spec: &Path, target: &Path, args: Vec<String>, terminal: bool) -> Result<()> {
    let bytes = std::fs::read(spec).map_err(Error::io("reading the spec", spec))?;
    let mut parsed: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: format!("the spec {}", spec.display()),
            source,
        })?;
    let mut process = parsed["process"].take();
    let Some(object) = process.as_object_mut() else {
        return Err(Error::BadBundle {
            path: spec.to_path_buf(),
            missing: "process",
        });
    };
    object.insert("args".into(), args.into());
    object.insert("terminal".into(), terminal.into());
    object.remove("consoleSize");
    let json = serde_json::to_vec(&process).map_err(|source| Error::Json {
        what: format!("encoding the exec process {}", target.display()),
        source,
    })?;
    std::fs::write(target, json).map_err(Error::io("writing the exec process", target))
}

/// An ExecSync's `timeout` in seconds: 0 waits as long as the command runs (api.proto).
fn exec_timeout(seconds: i64) -> Result<Option<Duration>> {
    match u64::try_from(seconds) {
        Ok(0) => Ok(None),
        Ok(seconds) => Ok(Some(Duration::from_secs(seconds))),
        Err(_) => Err(Error::invalid("timeout", "must not be negative")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_timeout_waits_and_a_negative_one_is_refused() {
        assert_eq!(exec_timeout(0).unwrap(), None);
        assert_eq!(exec_timeout(5).unwrap(), Some(Duration::from_secs(5)));
        let err = exec_timeout(-1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "timeout",
                    ..
                }
            ),
            "{err}"
        );
    }
}
