//! ExecSync: a command run to completion in a running container (the kubelet's exec
//! probes), with its output and exit code. The process is the container's own (its user,
//! environment, working directory, capabilities and confinement from the bundle's spec)
//! with the requested arguments.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::CriService;
use crate::error::{Error, Result};
use crate::oci::exec::{ExecFiles, ExecOutput, exec};
use crate::oci::runc::{OciError, Runtime};
use crate::proto::{ExecSyncRequest, ExecSyncResponse};

/// The most output an ExecSync returns, stdout and stderr together: the kubelet accepts
/// gRPC messages up to 16 MiB, and the response must fit in one (less room for its
/// framing).
pub const MAX_EXEC_OUTPUT: usize = (16 << 20) - 4096;

impl CriService {
    pub async fn exec_sync(self: &Arc<Self>, request: ExecSyncRequest) -> Result<ExecSyncResponse> {
        if request.cmd.is_empty() {
            return Err(Error::invalid("cmd", "must name a command"));
        }
        let timeout = match request.timeout {
            0 => None,
            t if t < 0 => return Err(Error::invalid("timeout", "must not be negative")),
            t => Some(Duration::from_secs(t as u64)),
        };
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
            match task.await.map_err(|e| Error::Task(e.to_string()))? {
                Err(err) if !retried && busy_before_it_ran(&runtime, &err) => {
                    tracing::info!(container = %record.id, %err, "the runtime was busy setting up an exec; once more");
                    retried = true;
                }
                result => return Ok(result?),
            }
        }
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
pub(super) fn write_process(
    spec: &Path,
    target: &Path,
    args: Vec<String>,
    terminal: bool,
) -> Result<()> {
    let bytes = std::fs::read(spec).map_err(Error::io("reading the spec", spec))?;
    let mut parsed: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Task(format!("the spec {} is unreadable: {e}", spec.display())))?;
    let mut process = parsed["process"].take();
    let Some(object) = process.as_object_mut() else {
        return Err(Error::Task(format!(
            "the spec {} has no process",
            spec.display()
        )));
    };
    object.insert("args".into(), args.into());
    object.insert("terminal".into(), terminal.into());
    object.remove("consoleSize");
    let json = serde_json::to_vec(&process)
        .map_err(|e| Error::Task(format!("encoding the exec process: {e}")))?;
    std::fs::write(target, json).map_err(Error::io("writing the exec process", target))
}
