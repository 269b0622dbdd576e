//! Starting a monitor and reading its handshake: the one line it writes on its stdout
//! before it closes it — `started <pid>` (a container's init runs), `ready` (an exec
//! monitor waits for its client) or `error <message>` (the runtime refused). The monitor
//! then lives on in its own session; it never carries the helper tag, so the next daemon
//! never ends it (`crate::helpers`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::argv::Args;

/// What a monitor said when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The container's init runs with this pid.
    Started(i32),
    /// An exec monitor waits for its client.
    Ready,
    /// The runtime failed; its message.
    Error(String),
    /// Anything else, as it came: nothing at all when the monitor ended (crashed)
    /// before it answered.
    Other(String),
}

impl Answer {
    /// Reads a handshake line (its line end is not part of it).
    pub fn parse(line: &str) -> Answer {
        let line = line.trim_end_matches(['\n', '\r']);
        if line == "ready" {
            return Answer::Ready;
        }
        if line == "error" {
            return Answer::Error(String::new());
        }
        if let Some(message) = line.strip_prefix("error ") {
            return Answer::Error(message.to_string());
        }
        line.strip_prefix("started ")
            .and_then(|pid| pid.trim().parse().ok())
            .map_or_else(|| Answer::Other(line.to_string()), Answer::Started)
    }
}

/// Why a monitor (its `role`: "monitor", "exec monitor") could not be started or did
/// not answer.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("starting the {role} of {id} ({program}): {source}", program = program.display())]
    Spawn {
        role: &'static str,
        id: String,
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("the {role} of {id} did not start within {after:?}")]
    TimedOut {
        role: &'static str,
        id: String,
        after: Duration,
    },
    #[error("reading the answer of the {role} of {id}: {source}")]
    Read {
        role: &'static str,
        id: String,
        source: std::io::Error,
    },
    /// An answer the caller did not expect of this monitor.
    #[error("the {role} of {id} said {said:?}")]
    Unexpected {
        role: &'static str,
        id: String,
        said: String,
    },
}

/// Starts `program` with `args` and waits up to `timeout` for its answer; returns it with
/// the monitor's pid. `role` names the monitor in errors.
pub async fn launch(
    program: &Path,
    args: &Args,
    timeout: Duration,
    role: &'static str,
) -> Result<(Answer, i32), LaunchError> {
    let id = || args.id.clone();
    let mut child = tokio::process::Command::new(program)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // It outlives the daemon: never a helper the next daemon would end.
        .env_remove(crate::helpers::ENV)
        // What it runs (youki) says its error without a backtrace.
        .env("RUST_BACKTRACE", "0")
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| LaunchError::Spawn {
            role,
            id: id(),
            program: program.to_path_buf(),
            source,
        })?;
    let monitor_pid = child.id().map_or(0, |pid| pid as i32);
    let stdout = child.stdout.take().ok_or_else(|| LaunchError::Read {
        role,
        id: id(),
        source: std::io::Error::other("no stdout"),
    })?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(timeout, lines.next_line())
        .await
        .map_err(|_| LaunchError::TimedOut {
            role,
            id: id(),
            after: timeout,
        })?
        .map_err(|source| LaunchError::Read {
            role,
            id: id(),
            source,
        })?
        .unwrap_or_default();
    // The monitor lives on in its own session; tokio reaps it when it exits.
    drop(child);
    let answer = Answer::parse(&line);
    Ok((answer, monitor_pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_read_and_anything_else_is_kept_as_it_came() {
        assert_eq!(Answer::parse("started 4242\n"), Answer::Started(4242));
        assert_eq!(Answer::parse("ready"), Answer::Ready);
        assert_eq!(
            Answer::parse("error container_linux.go: no such file"),
            Answer::Error("container_linux.go: no such file".into())
        );
        assert_eq!(Answer::parse("error \n"), Answer::Error(String::new()));
        assert_eq!(Answer::parse("error"), Answer::Error(String::new()));
        for odd in ["", "started", "started x", "Ready", "hello"] {
            assert_eq!(Answer::parse(odd), Answer::Other(odd.into()), "{odd:?}");
        }
    }

    #[tokio::test]
    async fn a_program_that_says_nothing_answers_nothing_and_a_missing_one_fails() {
        let args = Args {
            id: "c1".into(),
            ..Default::default()
        };
        // `true` ignores its arguments and closes stdout without a word.
        let (answer, pid) = launch(
            Path::new("/bin/true"),
            &args,
            Duration::from_secs(10),
            "monitor",
        )
        .await
        .unwrap();
        assert_eq!(answer, Answer::Other(String::new()));
        assert!(pid > 0);
        let missing = launch(
            Path::new("/nonexistent/monitor"),
            &args,
            Duration::from_secs(1),
            "exec monitor",
        )
        .await
        .unwrap_err();
        assert!(matches!(missing, LaunchError::Spawn { .. }), "{missing}");
        assert!(
            missing
                .to_string()
                .starts_with("starting the exec monitor of c1"),
            "{missing}"
        );
    }
}
