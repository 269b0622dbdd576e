//! The floor: what any runtime must pay on this machine for a pod, done by hand, one step
//! after another, with nothing around it. A network namespace created and pinned; the
//! same CNI chain's ADD and DEL (loopback, bridge, portmap) run directly; `runc create`
//! and `runc start` of a pause bundle, then of a busybox `sleep` bundle joining its
//! namespaces; `runc exec … true`; and kill, wait and `runc delete` for both.
//!
//! Bundles come from `runc spec`, edited only where a pod needs it (args, read-only
//! rootfs, namespace paths, cgroup path). Their rootfs are plain directories: berth's
//! pause program, and the host's static busybox.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::network::cni::{Cni, PodNetwork};
use serde_json::{Value, json};
use tempfile::TempDir;

/// One floor pod's timings, in milliseconds.
pub struct FloorCycle {
    pub netns: f64,
    pub cni_add: f64,
    pub pause: f64,
    /// netns + CNI ADD + pause, one after another.
    pub run_pod: f64,
    /// The container's `runc create`, then its `runc start`.
    pub create: f64,
    pub start: f64,
    pub exec: f64,
    pub cni_del: f64,
    /// Kill, wait and delete of both containers, CNI DEL, netns removal.
    pub teardown: f64,
}

pub struct Floor {
    dir: TempDir,
    cni: Cni,
    cgroup_parent: String,
    pub bridge: String,
}

impl Floor {
    /// `pause` is the pause program to run; `cgroup_parent` the cgroup every container
    /// goes under.
    pub fn new(pause: &Path, bridge: &str, subnet: &str, cgroup_parent: &str) -> Floor {
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-floor-")
            .tempdir()
            .expect("create the floor's directory");
        let d = dir.path();
        for sub in [
            "netns",
            "runc",
            "bundles",
            "net.d",
            "pause-rootfs",
            "busybox-rootfs/bin",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("create the floor's directories");
        }
        std::fs::copy(pause, d.join("pause-rootfs/pause")).expect("copy the pause program");
        std::fs::copy("/bin/busybox", d.join("busybox-rootfs/bin/busybox"))
            .expect("copy /bin/busybox (make test installs busybox-static)");
        let conflist = berth::network::cni::default_conflist(bridge, subnet, &d.join("leases"));
        std::fs::write(
            d.join("net.d/10-bench.conflist"),
            serde_json::to_vec_pretty(&conflist).expect("conflist JSON"),
        )
        .expect("write the floor's conflist");
        let cni = Cni::new(
            d.join("net.d"),
            vec![PathBuf::from("/usr/lib/cni")],
            d.join("cni-cache"),
        );
        Floor {
            dir,
            cni,
            cgroup_parent: cgroup_parent.to_string(),
            bridge: bridge.to_string(),
        }
    }

    /// Runs runc with `args`. Its stderr goes to a file, not a pipe: a container's init
    /// inherits runc's stdio and would hold a pipe open.
    fn run(&self, args: &[&str]) {
        let errors = self.dir.path().join("runc.stderr");
        let status = Command::new("runc")
            .arg("--root")
            .arg(self.dir.path().join("runc"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors).expect("create runc's stderr file"))
            .status()
            .expect("run runc");
        assert!(
            status.success(),
            "runc {args:?} failed: {}",
            std::fs::read_to_string(&errors).unwrap_or_default()
        );
    }

    /// Writes a bundle from `runc spec`, edited by `edit`.
    fn bundle(&self, id: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let bundle = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(&bundle).expect("create a bundle");
        let output = Command::new("runc")
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle)
            .output()
            .expect("run runc spec");
        assert!(output.status.success(), "runc spec failed");
        let path = bundle.join("config.json");
        let mut spec: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read config.json"))
                .expect("runc spec wrote JSON");
        spec["process"]["terminal"] = json!(false);
        spec["linux"]["cgroupsPath"] = json!(format!("{}/{id}", self.cgroup_parent));
        edit(&mut spec);
        std::fs::write(&path, serde_json::to_vec(&spec).expect("spec JSON"))
            .expect("write config.json");
        bundle
    }

    /// Runs one pod through its whole life, as a runtime would at the least.
    pub async fn cycle(&self, n: usize) -> FloorCycle {
        let d = self.dir.path();
        let pod = format!("floor-pod-{n}");
        let ctr = format!("floor-ctr-{n}");
        let pin = d.join("netns").join(&pod);
        let pause_rootfs = d.join("pause-rootfs");
        let pin_for_spec = pin.clone();
        let pause_bundle = self.bundle(&pod, move |spec| {
            spec["process"]["args"] = json!(["/pause"]);
            spec["root"] = json!({"path": pause_rootfs, "readonly": true});
            set_namespace(spec, "network", Some(&pin_for_spec));
        });
        let name = format!("floor-{n}");
        let network = PodNetwork {
            id: &pod,
            netns: &pin,
            name: &name,
            namespace: "berth-bench",
            uid: &name,
            port_mappings: &[],
        };

        let start = Instant::now();
        berth::sandbox::netns::create(&pin).expect("create a netns");
        let netns = ms(start.elapsed());
        let step = Instant::now();
        self.cni.attach(&network).await.expect("CNI ADD");
        let cni_add = ms(step.elapsed());
        let step = Instant::now();
        let (pause_pid, _, _) = self.create_start(&pod, &pause_bundle);
        let pause = ms(step.elapsed());
        let run_pod = ms(start.elapsed());

        let busybox_rootfs = d.join("busybox-rootfs");
        let ctr_bundle = self.bundle(&ctr, move |spec| {
            spec["process"]["args"] = json!(["/bin/busybox", "sleep", "3600"]);
            spec["root"] = json!({"path": busybox_rootfs, "readonly": true});
            spec.as_object_mut().map(|s| s.remove("hostname"));
            for kind in ["network", "ipc", "uts"] {
                let path = PathBuf::from(format!("/proc/{pause_pid}/ns/{}", ns_file(kind)));
                set_namespace(spec, kind, Some(&path));
            }
        });
        let (ctr_pid, create, start_ctr) = self.create_start(&ctr, &ctr_bundle);

        let step = Instant::now();
        self.run(&["exec", &ctr, "/bin/busybox", "true"]);
        let exec = ms(step.elapsed());

        let start = Instant::now();
        self.kill_wait_delete(&ctr, ctr_pid);
        self.kill_wait_delete(&pod, pause_pid);
        let step = Instant::now();
        self.cni.detach(&network).await.expect("CNI DEL");
        let cni_del = ms(step.elapsed());
        berth::sandbox::netns::remove(&pin).expect("remove the netns");
        let teardown = ms(start.elapsed());
        let _ = std::fs::remove_dir_all(d.join("bundles").join(&pod));
        let _ = std::fs::remove_dir_all(d.join("bundles").join(&ctr));
        FloorCycle {
            netns,
            cni_add,
            pause,
            run_pod,
            create,
            start: start_ctr,
            exec,
            cni_del,
            teardown,
        }
    }

    /// `runc create` then `runc start`; returns the container's pid and how long each
    /// took.
    fn create_start(&self, id: &str, bundle: &Path) -> (u32, f64, f64) {
        let pid_file = bundle.join("pid");
        let step = Instant::now();
        self.run(&[
            "create",
            "--bundle",
            &bundle.display().to_string(),
            "--pid-file",
            &pid_file.display().to_string(),
            id,
        ]);
        let create = ms(step.elapsed());
        let step = Instant::now();
        self.run(&["start", id]);
        let start = ms(step.elapsed());
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("runc wrote the pid file");
        (pid, create, start)
    }

    /// SIGKILL, wait until the process is gone (or a zombie of its new parent), delete.
    fn kill_wait_delete(&self, id: &str, pid: u32) {
        self.run(&["kill", id, "KILL"]);
        let start = Instant::now();
        while berth::oci::process_running(pid as i32) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{id} did not die"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        self.run(&["delete", id]);
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        crate::common::delete_runc_containers(&self.dir.path().join("runc"));
        crate::common::unmount_under(self.dir.path());
        crate::common::delete_link(&self.bridge);
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn ns_file(kind: &str) -> &str {
    match kind {
        "network" => "net",
        other => other,
    }
}

/// Sets namespace `kind` of the spec to a new one, or to the one at `path`.
fn set_namespace(spec: &mut Value, kind: &str, path: Option<&Path>) {
    let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() else {
        return;
    };
    namespaces.retain(|ns| ns["type"] != kind);
    let mut ns = json!({"type": kind});
    if let Some(path) = path {
        ns["path"] = json!(path);
    }
    namespaces.push(ns);
}
