//! The OCI runtimes (runc, youki, crun) that run sandboxes and containers, one per CRI runtime
//! handler. berth drives an external, proven runtime binary; it never re-implements it.
//!
//! [`runtime`] is the trait ([`runtime::OciRuntime`]) with its errors and features;
//! [`runc`] drives the runc-compatible CLIs behind it; [`features`] probes what a
//! handler supports; [`exec`] runs ExecSync's processes; [`teardown`] takes a container
//! down through any runtime (kill, wait, delete) and is unit-tested against a fake one.

pub mod exec;
pub mod features;
pub mod runc;
pub mod runc_log;
pub mod runtime;
pub mod teardown;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Resolves a handler's configured path: an absolute path is used as is, a bare name is
/// looked up in `PATH`. Returns the executable file, or `None` when there is none.
pub fn resolve_binary(path: &Path) -> Option<PathBuf> {
    if path.is_absolute() {
        return is_executable(path).then(|| path.to_path_buf());
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(path))
        .find(|candidate| is_executable(candidate))
}

/// Why criu (which a checkpoint needs) cannot serve here: not on PATH, or `criu check`
/// failing with its last words (Debian 12's criu 3.17 fails it on recent kernels).
pub async fn criu_unusable() -> String {
    let Some(criu) = resolve_binary(Path::new("criu")) else {
        return "criu is not installed (no criu on PATH)".to_string();
    };
    let check = tokio::process::Command::new(&criu)
        .arg("check")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(std::time::Duration::from_secs(10), check).await {
        Ok(Ok(out)) if out.status.success() => {
            format!(
                "{} passes `criu check`, but berth does not drive it yet",
                criu.display()
            )
        }
        Ok(Ok(out)) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let last = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            format!(
                "`{} check` fails on this host ({}): {}",
                criu.display(),
                out.status,
                last.trim()
            )
        }
        Ok(Err(e)) => format!("{} cannot be run: {e}", criu.display()),
        Err(_) => format!("`{} check` gave no answer within 10 s", criu.display()),
    }
}

/// Whether a process runs: it exists and is not a zombie waiting for its reaper.
/// Whether `pid` is the running monitor of container `id`: alive, and given that id on
/// its command line. A pid file outlives its process, and the pid may be another's by
/// now; only then may the daemon signal it.
pub fn is_monitor_of(pid: i32, id: &str) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.split(|&b| b == 0).any(|arg| arg == id.as_bytes()) && process_running(pid)
}

/// Whether `pid` runs in the cgroup of container `id` (its own, `<parent>/<id>`): a
/// container's process, not one that took its pid after it ended.
pub fn in_cgroup_of(pid: i32, id: &str) -> bool {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let leaf = format!("/{id}");
    cgroups.lines().any(|line| {
        line.rsplit(':')
            .next()
            .is_some_and(|path| path.ends_with(&leaf))
    })
}

pub fn process_running(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The OCI spec in a bundle directory, for verbose statuses (null when unreadable).
pub fn bundle_spec(bundle: &Path) -> serde_json::Value {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_bare_names_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("fake-runtime");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        assert_eq!(resolve_binary(&tool), None, "not executable yet");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_binary(&tool), Some(tool.clone()));
        assert_eq!(
            resolve_binary(Path::new("sh")).map(|p| p.is_absolute()),
            Some(true)
        );
        assert_eq!(resolve_binary(Path::new("no-such-runtime-xyz")), None);
        assert_eq!(
            resolve_binary(dir.path()),
            None,
            "a directory is not a runtime"
        );
    }
}
