//! Debian's containerd 1.6 with its CRI plugin, set up as close to berth as it goes:
//! cgroupfs, overlayfs, runc, the same bridge conflist (its own bridge, subnet and lease
//! directory), images from the same local registry. Everything it keeps is under one
//! private directory: root, state, sockets, runc root, pinned netns, CNI config. (The
//! shims' sockets go to `/run/containerd/s`, which containerd 1.6 does not let one move;
//! they are removed as the shims exit.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Where containerd 1.6's shims put their sockets, whatever its config says.
const SHIM_SOCKETS: &str = "/run/containerd/s";

pub struct Containerd {
    child: Option<Child>,
    /// Whether `/run/containerd` was there before (else it is removed once empty).
    had_run_dir: bool,
    pub bridge: String,
    dir: TempDir,
}

impl Containerd {
    /// Starts `containerd` on a private socket and waits until its CRI plugin answers.
    /// `registry` is `127.0.0.1:PORT` of a plain-HTTP registry.
    pub async fn start(
        registry: &str,
        sandbox_image: &str,
        bridge: &str,
        subnet: &str,
    ) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-containerd-")
            .tempdir()
            .expect("create containerd's directory");
        let d = dir.path();
        let conf_dir = d.join("net.d");
        std::fs::create_dir_all(&conf_dir).expect("create containerd's CNI config directory");
        let conflist = berth::network::cni::default_conflist(bridge, subnet, &d.join("leases"));
        std::fs::write(
            conf_dir.join("10-bench.conflist"),
            serde_json::to_vec_pretty(&conflist).expect("conflist JSON"),
        )
        .expect("write containerd's conflist");
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[{cri}]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "runc"
        Root = "{d}/runc"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
  [{cri}.registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = d.join("containerd.sock").display(),
            d = d.display(),
            conf_dir = conf_dir.display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("write containerd's config");
        let had_run_dir = Path::new(SHIM_SOCKETS).parent().is_some_and(Path::exists);
        let mut containerd = Containerd {
            child: None,
            had_run_dir,
            bridge: bridge.to_string(),
            dir,
        };
        containerd.spawn();
        containerd.wait_serving().await;
        containerd
    }

    /// Runs containerd on its config, its log appended to, and returns at once.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "containerd runs already");
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))
            .expect("open containerd's log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run containerd (make test installs Debian's containerd)");
        self.child = Some(child);
    }

    async fn wait_serving(&mut self) {
        let socket = self.socket();
        let log_path = self.dir.path().join("containerd.log");
        if let Some(child) = self.child.as_mut() {
            crate::common::wait_serving(
                child,
                &socket,
                "containerd",
                Duration::from_secs(30),
                || std::fs::read_to_string(&log_path).unwrap_or_default(),
            )
            .await;
        }
    }

    /// SIGTERM, and waits until containerd has exited (its shims and pods run on).
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = tokio::task::spawn_blocking(move || terminate(child)).await;
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The directory every containerd process (daemon and shims) names on its command
    /// line.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
        // What a failed run may have left: shims and containers of this containerd only.
        for pid in crate::processes_mentioning(self.dir.path()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        crate::common::delete_runc_containers(&self.dir.path().join("runc/k8s.io"));
        crate::common::unmount_under(self.dir.path());
        crate::common::delete_link(&self.bridge);
        if !self.had_run_dir {
            let _ = std::fs::remove_dir(SHIM_SOCKETS);
            let _ = Path::new(SHIM_SOCKETS).parent().map(std::fs::remove_dir);
        }
    }
}

/// SIGTERM to our containerd, by the pid we started it with, and waits until it has
/// exited (SIGKILL after 10 s).
fn terminate(mut child: Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let start = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
