//! The runc (or crun) command-line driver. Each handler has its own state directory
//! (`--root`), so several daemons and several handlers never see each other's containers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

use super::runc_log::last_error;

/// How long a runtime command may take unless the daemon says otherwise
/// (`[runtime] start_timeout_seconds`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed runtime command, with what the runtime said.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot run {binary}: {source}")]
    Exec {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{binary} {command} {id}: {message}")]
    Failed {
        binary: PathBuf,
        command: &'static str,
        id: String,
        message: String,
    },
    /// It did not answer in time, and was killed with what it had started.
    #[error("{binary} {command} {id}: no answer within {after:?}")]
    TimedOut {
        binary: PathBuf,
        command: &'static str,
        id: String,
        after: Duration,
    },
}

/// What `runc state` reports.
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeState {
    pub status: String,
    #[serde(default)]
    pub pid: i32,
}

/// One OCI runtime binary with its state directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    binary: PathBuf,
    root: PathBuf,
    /// What its commands are tagged with ([`crate::helpers`]), when a daemon runs them.
    helper_tag: Option<std::ffi::OsString>,
    /// How long one command may take before it (and what it started) is killed.
    timeout: Duration,
    /// What it was found to support at start-up.
    features: super::features::Features,
}

impl Runtime {
    pub fn new(binary: PathBuf, root: PathBuf) -> Runtime {
        Runtime {
            binary,
            root,
            helper_tag: None,
            timeout: COMMAND_TIMEOUT,
            features: super::features::Features::default(),
        }
    }

    /// The same runtime, known to support `features`.
    pub fn with_features(mut self, features: super::features::Features) -> Runtime {
        self.features = features;
        self
    }

    /// What the runtime and the kernel were found to support.
    pub fn features(&self) -> super::features::Features {
        self.features
    }

    /// The same runtime, a command that takes longer than `timeout` killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Runtime {
        self.timeout = timeout;
        self
    }

    /// The same runtime, its commands tagged as the daemon's helpers.
    pub fn with_helper_tag(mut self, tag: &std::ffi::OsStr) -> Runtime {
        self.helper_tag = Some(tag.to_owned());
        self
    }

    /// Tags `command`, a command of this runtime, as the daemon's helper.
    pub fn tag(&self, command: &mut Command) {
        if let Some(tag) = &self.helper_tag {
            command.env(crate::helpers::ENV, tag);
        }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The runtime's state directory (`--root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--root")
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.bounded(&mut command);
        command
    }

    /// Tags a command of this runtime as the daemon's helper, and puts it in a process
    /// group of its own that [`Runtime::finish`] can end whole.
    fn bounded(&self, command: &mut Command) {
        command.process_group(0).kill_on_drop(true);
        self.tag(command);
    }

    /// Waits for a command started with [`Runtime::bounded`]; past the timeout, kills
    /// its process group (the runtime and what it started that has no session of its
    /// own yet) and fails.
    async fn finish(
        &self,
        command: &'static str,
        id: &str,
        child: tokio::process::Child,
    ) -> Result<std::process::Output, OciError> {
        let group = child
            .id()
            .map(|pid| nix::unistd::Pid::from_raw(-(pid as i32)));
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(output) => output.map_err(|source| OciError::Exec {
                binary: self.binary.clone(),
                source,
            }),
            Err(_) => {
                // Our command's group, by the pid we started it with.
                if let Some(group) = group {
                    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
                }
                Err(OciError::TimedOut {
                    binary: self.binary.clone(),
                    command,
                    id: id.to_string(),
                    after: self.timeout,
                })
            }
        }
    }

    async fn run(
        &self,
        command: &'static str,
        id: &str,
        mut cmd: Command,
    ) -> Result<Vec<u8>, OciError> {
        cmd.stdout(Stdio::piped());
        let child = cmd.spawn().map_err(|source| OciError::Exec {
            binary: self.binary.clone(),
            source,
        })?;
        let output = self.finish(command, id, child).await?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(OciError::Failed {
            binary: self.binary.clone(),
            command,
            id: id.to_string(),
            message: runtime_message(&stderr, output.status),
        })
    }

    /// `create`: sets the container up, its process waiting for `start`. Its stdio is
    /// /dev/null (the pause program has nothing to say). runc's own messages go to a log
    /// file in the bundle: the container inherits runc's stdio, so a pipe there would
    /// stay open as long as the container lives.
    pub async fn create(&self, id: &str, bundle: &Path, pid_file: &Path) -> Result<(), OciError> {
        let log = bundle.join("runc.log");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.bounded(&mut cmd);
        let child = cmd.spawn().map_err(|source| OciError::Exec {
            binary: self.binary.clone(),
            source,
        })?;
        let status = self.finish("create", id, child).await?.status;
        if status.success() {
            return Ok(());
        }
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        Err(OciError::Failed {
            binary: self.binary.clone(),
            command: "create",
            id: id.to_string(),
            message: last_error(&logged).unwrap_or_else(|| format!("failed ({status})")),
        })
    }

    pub async fn start(&self, id: &str) -> Result<(), OciError> {
        let mut cmd = self.command();
        cmd.arg("start").arg(id);
        self.run("start", id, cmd).await.map(drop)
    }

    /// Sends a signal to the container's init process.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), OciError> {
        let mut cmd = self.command();
        cmd.arg("kill").arg(id).arg(signal);
        self.run("kill", id, cmd).await.map(drop)
    }

    /// Removes a stopped container's runtime state. Without `--force`: `runc delete
    /// --force` waits 100 ms after its SIGKILL, so callers kill, wait and delete instead.
    pub async fn delete(&self, id: &str) -> Result<(), OciError> {
        let mut cmd = self.command();
        cmd.arg("delete").arg(id);
        self.run("delete", id, cmd).await.map(drop)
    }

    /// Applies new resource limits to a running container (`runc update -r -`, the
    /// OCI `LinuxResources` as JSON on stdin).
    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<(), OciError> {
        use tokio::io::AsyncWriteExt;
        let exec_error = |source| OciError::Exec {
            binary: self.binary.clone(),
            source,
        };
        let mut child = self
            .command()
            .arg("update")
            .arg("--resources")
            .arg("-")
            .arg(id)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(exec_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(resources).await.map_err(exec_error)?;
        }
        let output = self.finish("update", id, child).await?;
        if output.status.success() {
            return Ok(());
        }
        Err(OciError::Failed {
            binary: self.binary.clone(),
            command: "update",
            id: id.to_string(),
            message: runtime_message(&String::from_utf8_lossy(&output.stderr), output.status),
        })
    }

    /// The container's state, or `None` when the runtime does not know it.
    pub async fn state(&self, id: &str) -> Result<Option<RuntimeState>, OciError> {
        let mut cmd = self.command();
        cmd.arg("state").arg(id);
        match self.run("state", id, cmd).await {
            Ok(stdout) => serde_json::from_slice(&stdout)
                .map(Some)
                .map_err(|e| OciError::Failed {
                    binary: self.binary.clone(),
                    command: "state",
                    id: id.to_string(),
                    message: format!("unreadable state: {e}"),
                }),
            Err(OciError::Failed { message, .. }) if message.contains("does not exist") => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// The runtime's own message: the `msg="…"` of its last log line, or its whole stderr.
fn runtime_message(stderr: &str, status: std::process::ExitStatus) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let message = match line.find("msg=\"") {
        Some(start) => {
            let rest = &line[start + 5..];
            rest.rfind('"')
                .map_or(rest, |end| &rest[..end])
                .replace("\\\"", "\"")
        }
        None => line.trim().to_string(),
    };
    if message.is_empty() {
        format!("failed ({status})")
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::runtime_message;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn messages_are_taken_from_runc_logs() {
        let status = std::process::ExitStatus::from_raw(256);
        let stderr = "time=\"2026-01-01T00:00:00Z\" level=error msg=\"container \\\"x\\\" does not exist\"\n";
        assert_eq!(
            runtime_message(stderr, status),
            "container \"x\" does not exist"
        );
        assert_eq!(runtime_message("plain failure\n", status), "plain failure");
        assert!(runtime_message("", status).contains("failed"));
    }
}
