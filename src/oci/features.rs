//! What an OCI runtime handler can do, probed once at start-up from the real binary
//! (`<runtime> features`, the runtime-spec's features document) and the running kernel:
//! recursive read-only mounts (the `rro` mount option, which needs `mount_setattr`, Linux
//! 5.12) and user namespaces for pods (a `user` namespace; the id-mapped layers that
//! spare the chown are berth's own, [`crate::sandbox::userns`], which the daemon probes
//! apart, so a runtime's `mountExtensions.idmap` is reported but not needed); and which
//! runtime the binary is, from its `--version`. What is found is given in
//! [`super::runtime`]'s words ([`Features`], [`Kind`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::runtime::{Features, Kind};

/// How long `<runtime> features` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let output = run_bounded(binary, &["features"])?;
    if !output.status.success() {
        return Ok(Features::default());
    }
    from_document(&output.stdout, running_kernel())
}

/// Whether the running kernel has `mount_setattr` (5.12), which `rro` needs.
pub fn kernel_has_rro() -> bool {
    running_kernel().is_some_and(|k| k >= (5, 12))
}

/// The id of the container the recursive read-only probe makes.
const PROBE_ID: &str = "berth-rro-probe";

/// Whether the runtime makes an `rro` mount read-only all the way down when its features
/// document does not say (youki 0.7 does, and does not say): a container is created
/// (never started) from `dir` with `program` as its process and a read-only `rro` bind
/// of a directory with a tmpfs below it; the tmpfs must be read-only in the container's
/// mount table. Everything it made is removed again, also what an earlier, cut-short
/// probe left.
pub fn probe_recursive_read_only(
    binary: &Path,
    root: &Path,
    dir: &Path,
    program: &Path,
) -> Result<bool, String> {
    let probe = RroProbe { binary, root, dir };
    probe.clean();
    let result = probe
        .make_bundle(program)
        .and_then(|()| probe.create_and_look());
    probe.clean();
    result
}

/// The recursive read-only probe: the runtime binary, its state directory (`--root`) and
/// the bundle's directory.
struct RroProbe<'a> {
    binary: &'a Path,
    root: &'a Path,
    dir: &'a Path,
}

impl RroProbe<'_> {
    /// Runs `<binary> --root <root> <args>`.
    fn runtime(&self, args: &[&str]) -> Result<std::process::Output, String> {
        let mut full = vec!["--root", self.root.to_str().unwrap_or_default()];
        full.extend(args);
        run_bounded(self.binary, &full)
    }

    /// Removes what a probe made (this one, or an earlier one cut short): its
    /// container, the tmpfs and the bundle.
    fn clean(&self) {
        if let Ok(output) = self.runtime(&["delete", "--force", PROBE_ID])
            && !output.status.success()
            && Path::new(self.root).join(PROBE_ID).exists()
        {
            tracing::warn!(
                container = PROBE_ID,
                "the probe's container could not be deleted"
            );
        }
        let _ = nix::mount::umount2(
            &self.dir.join("volume/below"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        let _ = std::fs::remove_dir_all(self.dir);
    }

    /// The bundle: a rootfs holding `program` as `/pause`, a volume with a tmpfs below
    /// it, and the spec.
    fn make_bundle(&self, program: &Path) -> Result<(), String> {
        let rootfs = self.dir.join("rootfs");
        let below = self.dir.join("volume/below");
        for made in [
            rootfs.join("probe"),
            rootfs.join("dev"),
            rootfs.join("proc"),
            below.clone(),
        ] {
            std::fs::create_dir_all(&made).map_err(|e| format!("{}: {e}", made.display()))?;
        }
        std::fs::copy(program, rootfs.join("pause"))
            .map_err(|e| format!("the probe's program: {e}"))?;
        nix::mount::mount(
            Some("tmpfs"),
            &below,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=4k"),
        )
        .map_err(|e| format!("a tmpfs for the probe: {e}"))?;
        let spec = probe_spec(self.dir, &rootfs);
        std::fs::write(self.dir.join("config.json"), spec.to_string())
            .map_err(|e| format!("the probe's bundle: {e}"))
    }

    /// Creates the container (never started) and reads its mount table: whether the
    /// tmpfs is read-only there; `false` when the runtime refuses the container.
    fn create_and_look(&self) -> Result<bool, String> {
        let pid_file = self.dir.join("pid");
        let created = self.runtime(&[
            "create",
            "--bundle",
            self.dir.to_str().unwrap_or_default(),
            "--pid-file",
            pid_file.to_str().unwrap_or_default(),
            PROBE_ID,
        ])?;
        if !created.status.success() {
            tracing::debug!(
                status = %created.status,
                "the probe's container was refused: no recursive read-only mounts"
            );
            return Ok(false);
        }
        let pid =
            std::fs::read_to_string(&pid_file).map_err(|e| format!("the probe's pid: {e}"))?;
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim()))
            .map_err(|e| format!("the probe's mounts: {e}"))?;
        Ok(below_is_read_only(&mounts))
    }
}

/// The probe container's spec: `/pause` from a read-only `rootfs`, and the bundle's
/// volume bound read-only, `rro`, at `/probe`.
fn probe_spec(dir: &Path, rootfs: &Path) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": true},
        "process": {
            "args": ["/pause"], "env": ["PATH=/"], "cwd": "/",
            "user": {"uid": 0, "gid": 0}, "noNewPrivileges": true,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "mode=755", "size=64k"]},
            {"destination": "/probe", "type": "bind", "source": dir.join("volume"),
             "options": ["rbind", "rprivate", "ro", "rro"]},
        ],
        "linux": {
            "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "network"}],
            // Daemons probe at once (tests, a node's several): a cgroup each.
            "cgroupsPath": format!("/{PROBE_ID}-{}", std::process::id()),
        },
    })
}

/// Whether, in a mount table (`/proc/<pid>/mountinfo`), `/probe/below` is read-only.
fn below_is_read_only(mountinfo: &str) -> bool {
    mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields.get(4) == Some(&"/probe/below")
            && fields
                .get(5)
                .is_some_and(|options| options.split(',').any(|o| o == "ro"))
    })
}

/// Which runtime `binary` is, from its `--version` (runc's words when it cannot tell).
pub fn kind(binary: &Path) -> Kind {
    run_bounded(binary, &["--version"])
        .map(|output| Kind::from_version(&String::from_utf8_lossy(&output.stdout)))
        .unwrap_or_default()
}

/// Runs `<binary> <args>`, killed past [`PROBE_TIMEOUT`]; its output read, unless it is a
/// `create` (whose container would hold the pipe open).
fn run_bounded(binary: &Path, args: &[&str]) -> Result<std::process::Output, String> {
    let arg = args.first().copied().unwrap_or_default();
    let stdout = if args.contains(&"create") {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    let mut child = Command::new(binary)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(stdout)
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
                    "{} {arg} gave no answer within {PROBE_TIMEOUT:?}",
                    binary.display()
                ));
            }
            Err(e) => return Err(format!("waiting for {} {arg}: {e}", binary.display())),
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("reading {} {arg}: {e}", binary.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNC_1_1: &str = r#"{"ociVersionMin":"1.0.0","mountOptions":["ro","rro","rbind"],
        "linux":{"namespaces":["cgroup","ipc","mount","network","pid","user","uts"]}}"#;
    const WITH_IDMAP: &str = r#"{"mountOptions":["rro"],
        "linux":{"namespaces":["user"],"mountExtensions":{"idmap":{"enabled":true}}}}"#;

    #[test]
    fn the_probe_reads_the_containers_mount_table() {
        let ro = "36 35 0:33 / /probe rw,nosuid - ext4 /dev/vda rw\n40 36 0:34 / /probe/below ro,relatime - tmpfs tmpfs rw,size=4k\n";
        assert!(below_is_read_only(ro));
        let rw = "36 35 0:33 / /probe ro,nosuid - ext4 /dev/vda rw\n40 36 0:34 / /probe/below rw,relatime - tmpfs tmpfs rw,size=4k\n";
        assert!(!below_is_read_only(rw));
        assert!(!below_is_read_only(""));
    }

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
