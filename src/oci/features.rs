//! What an OCI runtime handler can do, probed once at start-up from the real binary
//! (`<runtime> features`, the runtime-spec's features document) and the running kernel:
//! recursive read-only mounts (the `rro` mount option, which needs `mount_setattr`, Linux
//! 5.12) and user namespaces for pods (a `user` namespace; the id-mapped layers that
//! spare the chown are berth's own, [`crate::sandbox::userns`], which the daemon probes
//! apart, so a runtime's `mountExtensions.idmap` is reported but not needed).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long `<runtime> features` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler was found to support.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    pub recursive_read_only: bool,
    pub user_namespaces: bool,
    /// The runtime id-maps mounts itself (`linux.mountExtensions.idmap`): for the log.
    pub idmap_mounts: bool,
}

/// The parts of the runtime-spec features document berth reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    mount_options: Vec<String>,
    #[serde(default)]
    linux: Option<LinuxDocument>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinuxDocument {
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    mount_extensions: Option<MountExtensions>,
}

#[derive(Debug, Default, Deserialize)]
struct MountExtensions {
    #[serde(default)]
    idmap: Option<Enabled>,
}

#[derive(Debug, Default, Deserialize)]
struct Enabled {
    #[serde(default)]
    enabled: Option<bool>,
}

/// A kernel release as `uname -r` gives it: (major, minor).
pub type Kernel = (u32, u32);

/// The running kernel's release, or `None` when it cannot be read.
pub fn running_kernel() -> Option<Kernel> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_kernel(&release)
}

fn parse_kernel(release: &str) -> Option<Kernel> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// What the features document of a runtime says, on this kernel.
pub fn from_document(document: &[u8], kernel: Option<Kernel>) -> Result<Features, String> {
    let doc: Document = serde_json::from_slice(document)
        .map_err(|e| format!("unreadable features document: {e}"))?;
    let at_least = |wanted: Kernel| kernel.is_some_and(|k| k >= wanted);
    let linux = doc.linux.unwrap_or_default();
    let idmap = linux
        .mount_extensions
        .and_then(|m| m.idmap)
        .and_then(|i| i.enabled)
        .unwrap_or(false);
    Ok(Features {
        recursive_read_only: doc.mount_options.iter().any(|o| o == "rro") && at_least((5, 12)),
        user_namespaces: linux.namespaces.iter().any(|n| n == "user") && at_least((5, 19)),
        idmap_mounts: idmap,
    })
}

/// Runs `<binary> features` and reads its answer; a runtime without the command (or one
/// that fails it) supports none of the features.
pub fn probe(binary: &Path) -> Result<Features, String> {
    let mut child = Command::new(binary)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} features gave no answer within {PROBE_TIMEOUT:?}",
                    binary.display()
                ));
            }
            Err(e) => return Err(format!("waiting for {} features: {e}", binary.display())),
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("reading {} features: {e}", binary.display()))?;
    if !output.status.success() {
        return Ok(Features::default());
    }
    from_document(&output.stdout, running_kernel())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNC_1_1: &str = r#"{"ociVersionMin":"1.0.0","mountOptions":["ro","rro","rbind"],
        "linux":{"namespaces":["cgroup","ipc","mount","network","pid","user","uts"]}}"#;
    const WITH_IDMAP: &str = r#"{"mountOptions":["rro"],
        "linux":{"namespaces":["user"],"mountExtensions":{"idmap":{"enabled":true}}}}"#;

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_kernel("6.18.0-1-amd64\n"), Some((6, 18)));
        assert_eq!(parse_kernel("5.4.0+"), Some((5, 4)));
        assert_eq!(parse_kernel("garbage"), None);
    }

    #[test]
    fn features_need_the_runtime_and_the_kernel() {
        let runc = from_document(RUNC_1_1.as_bytes(), Some((6, 18))).unwrap();
        assert_eq!(
            runc,
            Features {
                recursive_read_only: true,
                user_namespaces: true,
                idmap_mounts: false,
            },
            "berth maps the layers: a user namespace is enough"
        );
        let full = from_document(WITH_IDMAP.as_bytes(), Some((6, 18))).unwrap();
        assert!(full.recursive_read_only && full.user_namespaces && full.idmap_mounts);
        let early = from_document(RUNC_1_1.as_bytes(), Some((5, 15))).unwrap();
        assert!(
            early.recursive_read_only && !early.user_namespaces,
            "overlayfs takes id-mapped layers from 5.19"
        );
        let old = from_document(WITH_IDMAP.as_bytes(), Some((5, 10))).unwrap();
        assert!(
            !old.recursive_read_only && !old.user_namespaces,
            "mount_setattr came with 5.12"
        );
        let unknown = from_document(WITH_IDMAP.as_bytes(), None).unwrap();
        assert!(!unknown.recursive_read_only && !unknown.user_namespaces);
        assert!(from_document(b"{}", Some((6, 18))).unwrap() == Features::default());
        assert!(from_document(b"not json", Some((6, 18))).is_err());
    }
}
