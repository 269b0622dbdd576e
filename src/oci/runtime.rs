//! What berth asks of an OCI runtime handler, whichever binary it is: the operations of
//! the runtime-spec's command line (create, start, kill, delete, state, update) as the
//! [`OciRuntime`] trait, the [`OciError`] they fail with (typed where callers act on the
//! failure), the container states as an enum, which runtime a binary is ([`Kind`], with
//! its error words) and what it supports ([`Features`]). The teardown of a container
//! ([`super::teardown`]) is written against [`OciRuntime`], so it is tested without
//! root against a fake.
//!
//! This module names no other: the driver ([`super::runc::Runtime`], for runc and youki)
//! and the start-up probes ([`super::features`]) are written on its types.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A container's state as the runtime reports it (runtime-spec `state.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created: the runtime's `create` has not finished.
    Creating,
    /// Created, its process waiting for `start`.
    Created,
    Running,
    Paused,
    /// Its process has exited; only `delete` is left.
    Stopped,
}

impl Status {
    /// Whether the container may still have a process.
    pub fn has_process(self) -> bool {
        !matches!(self, Status::Stopped)
    }
}

/// What `state` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct State {
    pub status: Status,
    #[serde(default)]
    pub pid: i32,
}

/// Which runtime a handler's binary is, told from its `--version`: where their command
/// lines or messages differ, the driver does what each needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// runc, and runtimes that speak as it does (crun).
    #[default]
    Runc,
    Youki,
}

impl Kind {
    /// The kind a `--version` output names.
    pub fn from_version(output: &str) -> Kind {
        let first = output.lines().next().unwrap_or("").to_ascii_lowercase();
        if first.starts_with("youki") {
            Kind::Youki
        } else {
            Kind::Runc
        }
    }

    /// Whether a container can join an existing PID namespace (the pod's, a target's):
    /// youki 0.7's init then looks itself up in the host's /proc by the pid it has in
    /// the namespace, and fails where the host has no such process.
    pub fn joins_pid_namespaces(self) -> bool {
        self != Kind::Youki
    }

    /// Whether pods on it may have user namespaces of their own: youki 0.7 runs a
    /// container told to join one by path in the host's (its root would be the host's).
    pub fn joins_user_namespaces(self) -> bool {
        self != Kind::Youki
    }

    /// What a failed command's messages (its whole stderr, or its log) mean, when they
    /// say the container is unknown or has no process.
    pub fn classify(self, message: &str) -> Option<Failure> {
        let text = message.to_ascii_lowercase();
        // runc: `container "x" does not exist`, `container not running`, `process already
        // finished`; youki: `container x does not exist.`, `incompatible container status`.
        if (text.contains("container") && text.contains("does not exist"))
            || text.contains("no such container")
        {
            return Some(Failure::NotFound);
        }
        let not_running = [
            "not running",
            "process already finished",
            "container is stopped",
            "cannot kill container in stopped state",
            "incorrect container status",
            "incompatible container status",
        ];
        not_running
            .iter()
            .any(|phrase| text.contains(phrase))
            .then_some(Failure::NotRunning)
    }
}

/// A failure the caller acts on rather than reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The runtime does not know the container.
    NotFound,
    /// The container has no process (to signal).
    NotRunning,
}

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
    /// The runtime does not know the container.
    #[error("{binary} {command} {id}: no such container")]
    NotFound {
        binary: PathBuf,
        command: &'static str,
        id: String,
    },
    /// The container has no process (any more).
    #[error("{binary} {command} {id}: the container is not running")]
    NotRunning {
        binary: PathBuf,
        command: &'static str,
        id: String,
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

/// What a handler was found to support.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    pub recursive_read_only: bool,
    pub user_namespaces: bool,
    /// The runtime id-maps mounts itself (`linux.mountExtensions.idmap`): for the log.
    pub idmap_mounts: bool,
}

/// An OCI runtime handler.
pub trait OciRuntime: Send + Sync {
    /// Creates a container from the bundle and starts its process, detached, in one
    /// command (`run --detach`: one runtime process where `create` and `start` take
    /// two); writes its pid to `pid_file`.
    fn run(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
    ) -> impl Future<Output = Result<(), OciError>> + Send;
    /// Signals the container's init (`KILL`, `TERM`, `SIGQUIT`, a number).
    /// [`OciError::NotRunning`] or [`OciError::NotFound`] when there is none.
    fn kill(&self, id: &str, signal: &str) -> impl Future<Output = Result<(), OciError>> + Send;
    /// Removes a stopped container's state; [`OciError::NotFound`] when there is none.
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), OciError>> + Send;
    /// The container's state, `None` when the runtime does not know it.
    fn state(&self, id: &str) -> impl Future<Output = Result<Option<State>, OciError>> + Send;
    /// Applies new limits (the OCI `LinuxResources` as JSON) to a running container.
    fn update(
        &self,
        id: &str,
        resources: &[u8],
    ) -> impl Future<Output = Result<(), OciError>> + Send;
    /// What the handler was found to support at start-up.
    fn features(&self) -> Features;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_read_as_the_runtime_spec_names_them() {
        let state: State = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","id":"x","status":"running","pid":42,"bundle":"/b"}"#,
        )
        .unwrap();
        assert_eq!(
            state,
            State {
                status: Status::Running,
                pid: 42
            }
        );
        let stopped: State = serde_json::from_str(r#"{"status":"stopped"}"#).unwrap();
        assert!(!stopped.status.has_process());
        assert!(serde_json::from_str::<State>(r#"{"status":"sleeping"}"#).is_err());
    }

    #[test]
    fn kinds_and_their_words() {
        assert_eq!(
            Kind::from_version("youki version 0.7.0\ncommit: 0.7.0-0\n"),
            Kind::Youki
        );
        assert_eq!(
            Kind::from_version("runc version 1.1.5+ds1\ncommit: x\n"),
            Kind::Runc
        );
        let runc = Kind::Runc;
        assert_eq!(
            runc.classify("container \"abc\" does not exist"),
            Some(Failure::NotFound)
        );
        assert_eq!(
            runc.classify("container not running"),
            Some(Failure::NotRunning)
        );
        assert_eq!(
            runc.classify("process already finished"),
            Some(Failure::NotRunning)
        );
        assert_eq!(runc.classify("permission denied"), None);
        assert_eq!(
            runc.classify("open /sys/fs/cgroup/x: file does not exist"),
            None,
            "a missing file is a real failure"
        );
        let youki = Kind::Youki;
        assert_eq!(
            youki.classify("error in executing command: container x does not exist."),
            Some(Failure::NotFound)
        );
        assert_eq!(
            youki.classify("failed operation due to incompatible container status: `Stopped`"),
            Some(Failure::NotRunning)
        );
    }
}
