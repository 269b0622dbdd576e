//! The command-line driver of runc-like runtimes (runc, crun, youki): one binary per
//! handler, each with its own state directory (`--root`), so several daemons and several
//! handlers never see each other's containers. Where the binaries differ (their error
//! words, their logs), the [`Kind`] told from `--version` decides, and failures that
//! callers act on come back typed ([`OciError::NotFound`], [`OciError::NotRunning`]).
//! It implements [`super::runtime`]'s [`OciRuntime`] on that module's types.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::runc_log::last_error;
use super::runtime::{Failure, Features, Kind, OciError, OciRuntime, State};

/// How long a runtime command may take unless the daemon says otherwise
/// (`[runtime] start_timeout_seconds`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

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
    features: Features,
    /// Which runtime the binary is.
    kind: Kind,
}

impl Runtime {
    pub fn new(binary: PathBuf, root: PathBuf) -> Runtime {
        Runtime {
            binary,
            root,
            helper_tag: None,
            timeout: COMMAND_TIMEOUT,
            features: Features::default(),
            kind: Kind::default(),
        }
    }

    /// The same runtime, known to be a `kind` binary.
    pub fn with_kind(mut self, kind: Kind) -> Runtime {
        self.kind = kind;
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// A failure with what the runtime said: typed when the words say the container is
    /// unknown or not running.
    fn failure(&self, command: &'static str, id: &str, message: String) -> OciError {
        let (binary, id) = (self.binary.clone(), id.to_string());
        match self.kind.classify(&message) {
            Some(Failure::NotFound) => OciError::NotFound {
                binary,
                command,
                id,
            },
            Some(Failure::NotRunning) => OciError::NotRunning {
                binary,
                command,
                id,
            },
            None => OciError::Failed {
                binary,
                command,
                id,
                message,
            },
        }
    }

    /// The same runtime, known to support `features`.
    pub fn with_features(mut self, features: Features) -> Runtime {
        self.features = features;
        self
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

    /// Tags `command`, a command of this runtime, as the daemon's helper; a runtime
    /// written in Rust (youki) prints no backtrace after its error, whatever the daemon's
    /// environment says.
    pub fn tag(&self, command: &mut Command) {
        if let Some(tag) = &self.helper_tag {
            command.env(crate::helpers::ENV, tag);
        }
        command.env("RUST_BACKTRACE", "0");
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The runtime's state directory (`--root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A create cut short (the runtime killed before it saved the container's state)
    /// leaves the container's directory under the runtime's root, and the runtime then
    /// says it does not know the container: runc's delete removes that directory, youki's
    /// does not. For a container the runtime has just said it does not know.
    fn remove_leftover(&self, id: &str) {
        let plain = !id.is_empty() && id != "." && id != ".." && !id.contains('/');
        let dir = self.root.join(id);
        if !plain || !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(container = %id, dir = %dir.display(), "removed what a create cut short left")
            }
            Err(err) => {
                tracing::warn!(container = %id, dir = %dir.display(), %err, "cannot remove what a create cut short left")
            }
        }
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
        let started = std::time::Instant::now();
        let finished = self.finish_unmeasured(command, id, child).await;
        // "Not found" or "not running" are answers the callers expect (an idempotent
        // delete, a kill that lost a race), not failures.
        let ok = finished.as_ref().is_ok_and(|o| {
            o.status.success()
                || self
                    .kind
                    .classify(&String::from_utf8_lossy(&o.stderr))
                    .is_some()
        });
        crate::metrics::runtime_command(command, ok, started.elapsed());
        finished
    }

    /// [`Runtime::finish`], not counted in the metrics.
    async fn finish_unmeasured(
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

    /// Runs `cmd`, a runtime command on container `id`, to its end (bounded by the
    /// timeout): its stdout, or the runtime's error.
    async fn output_of(
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
        let message = runtime_message(&stderr, output.status);
        Err(self.failure(command, id, message))
    }

    /// A bundle's `config.json` for this runtime. youki 0.7 loads a seccomp filter only
    /// after dropping the capabilities when `noNewPrivileges` is given as false (and the
    /// kernel then refuses it for want of CAP_SYS_ADMIN), but not when it is left out,
    /// which the runtime-spec says is the same: for youki it is left out.
    /// youki 0.7 also takes `rootfsPropagation` only in the runtime-spec's words
    /// (`shared`, `slave`: recursive to it), where runc reads those as not recursive and
    /// is given `rshared`, `rslave`.
    pub fn bundle_config(&self, spec: &oci_spec::runtime::Spec) -> serde_json::Result<Vec<u8>> {
        let mut value = serde_json::to_value(spec)?;
        if self.kind == Kind::Youki
            && let Some(linux) = value.get_mut("linux").and_then(|l| l.as_object_mut())
            && let Some(propagation) = linux.get("rootfsPropagation").and_then(|p| p.as_str())
        {
            let plain = propagation.trim_start_matches('r').to_string();
            linux.insert("rootfsPropagation".into(), plain.into());
        }
        if self.kind == Kind::Youki
            && let Some(process) = value.get_mut("process").and_then(|p| p.as_object_mut())
            && process.get("noNewPrivileges") == Some(&serde_json::Value::Bool(false))
        {
            process.remove("noNewPrivileges");
        }
        serde_json::to_vec(&value)
    }

    /// Empties the runtime's log file in a bundle before a command writes it (runc and
    /// youki append to it), so that its last error is this command's.
    pub fn fresh_log(bundle: &Path) -> PathBuf {
        let log = bundle.join("runc.log");
        let _ = std::fs::write(&log, b"");
        log
    }
}

impl OciRuntime for Runtime {
    /// `run --detach`: sets the container up and starts its process. Its stdio is
    /// /dev/null (the pause program has nothing to say). The runtime's own messages go
    /// to a log file in the bundle: the container inherits its stdio, so a pipe there
    /// would stay open as long as the container lives.
    async fn run(&self, id: &str, bundle: &Path, pid_file: &Path) -> Result<(), OciError> {
        let log = Runtime::fresh_log(bundle);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--detach")
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
        let status = self.finish("run", id, child).await?.status;
        if status.success() {
            return Ok(());
        }
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let message = last_error(&logged).unwrap_or_else(|| format!("failed ({status})"));
        Err(OciError::Failed {
            binary: self.binary.clone(),
            command: "run",
            id: id.to_string(),
            message,
        })
    }

    /// Sends a signal to the container's init process.
    async fn kill(&self, id: &str, signal: &str) -> Result<(), OciError> {
        let mut cmd = self.command();
        cmd.arg("kill").arg(id).arg(signal);
        self.output_of("kill", id, cmd).await.map(drop)
    }

    /// Removes a stopped container's runtime state. Without `--force`: `runc delete
    /// --force` waits 100 ms after its SIGKILL, so callers kill, wait and delete instead.
    async fn delete(&self, id: &str) -> Result<(), OciError> {
        let mut cmd = self.command();
        cmd.arg("delete").arg(id);
        let deleted = self.output_of("delete", id, cmd).await.map(drop);
        if let Err(OciError::NotFound { .. }) = &deleted {
            self.remove_leftover(id);
        }
        deleted
    }

    /// `update -r -`: the OCI `LinuxResources` as JSON on stdin.
    async fn update(&self, id: &str, resources: &[u8]) -> Result<(), OciError> {
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
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = runtime_message(&stderr, output.status);
        Err(self.failure("update", id, message))
    }

    async fn state(&self, id: &str) -> Result<Option<State>, OciError> {
        let mut cmd = self.command();
        cmd.arg("state").arg(id);
        match self.output_of("state", id, cmd).await {
            Ok(stdout) => serde_json::from_slice(&stdout)
                .map(Some)
                .map_err(|e| OciError::Failed {
                    binary: self.binary.clone(),
                    command: "state",
                    id: id.to_string(),
                    message: format!("unreadable state: {e}"),
                }),
            Err(OciError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn features(&self) -> Features {
        self.features
    }
}

/// The runtime's own message: youki's last `Error: …` line (a backtrace may follow it),
/// the `msg="…"` of runc's last log line, or the last line of its stderr.
fn runtime_message(stderr: &str, status: std::process::ExitStatus) -> String {
    if let Some(said) = stderr.lines().rev().find_map(|l| l.strip_prefix("Error: ")) {
        return said.trim().to_string();
    }
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
    use super::{Kind, Runtime, runtime_message};

    #[test]
    fn youki_gets_no_false_no_new_privileges() {
        let mut spec = oci_spec::runtime::Spec::default();
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_no_new_privileges(Some(false));
        spec.set_process(Some(process));
        let runc = Runtime::new("runc".into(), "/r".into());
        let youki = runc.clone().with_kind(Kind::Youki);
        let read = |r: &Runtime, spec: &oci_spec::runtime::Spec| -> serde_json::Value {
            serde_json::from_slice(&r.bundle_config(spec).unwrap()).unwrap()
        };
        assert_eq!(read(&runc, &spec)["process"]["noNewPrivileges"], false);
        assert!(
            read(&youki, &spec)["process"]
                .get("noNewPrivileges")
                .is_none()
        );
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_no_new_privileges(Some(true));
        spec.set_process(Some(process));
        assert_eq!(read(&youki, &spec)["process"]["noNewPrivileges"], true);
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_rootfs_propagation(Some("rshared".into()));
        spec.set_linux(Some(linux));
        assert_eq!(read(&runc, &spec)["linux"]["rootfsPropagation"], "rshared");
        assert_eq!(read(&youki, &spec)["linux"]["rootfsPropagation"], "shared");
    }
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
        let youki = "ERROR youki: error in executing command: container x does not exist.\n\nStack backtrace:\n   0: <unknown>\nError: container x does not exist.\n\nStack backtrace:\n   0: <unknown>\n      at ./csu/libc-start.c:360:3\n";
        assert_eq!(
            runtime_message(youki, status),
            "container x does not exist."
        );
    }
}

/// What a delete leaves of a container the runtime does not know, against a runtime that
/// says so as youki does and leaves its directory: a script, as no real runtime can be
/// made to leave one on cue.
#[cfg(test)]
mod leftover_tests {
    use super::{Kind, Runtime};
    use crate::oci::runtime::OciError;
    use crate::oci::runtime::OciRuntime;

    #[tokio::test]
    async fn a_delete_of_an_unknown_container_removes_its_leftover_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("says-unknown");
        std::fs::write(
            &binary,
            "#!/bin/sh\nfor id; do :; done\necho \"Error: container $id does not exist.\" >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        for id in ["cut", "other"] {
            std::fs::create_dir_all(root.join(id)).unwrap();
            std::fs::write(root.join(id).join("notify.sock"), "").unwrap();
        }
        let runtime = Runtime::new(binary, root.clone()).with_kind(Kind::Youki);
        let err = runtime.delete("cut").await.unwrap_err();
        assert!(matches!(err, OciError::NotFound { .. }), "{err}");
        assert!(!root.join("cut").exists(), "the leftover is removed");
        assert!(root.join("other").exists(), "another container's stays");
        for id in ["..", ".", "other/.."] {
            let _ = runtime.delete(id).await;
        }
        assert!(
            root.join("other").exists(),
            "no path beyond one id's directory"
        );
    }
}
