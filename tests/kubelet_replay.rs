//! The 1 043 CRI calls a real kubelet 1.35 made while running the seed's kubectl scenario
//! and a richer pod (`tests/data/kube-1.35-smoke-and-rich-pod.jsonl.gz`, from the shared
//! `kubelet-requests/`; its README says what the cluster did), replayed against berth:
//! every call with its recorded request, and the gRPC code it got then expected now.
//!
//! What differs from the recorded run is mapped: the pod, container and image ids berth
//! answers; `@ROOT@` (the kubelet's root and pod log directories) is a temporary
//! directory where the test does what the kubelet does before it calls (log
//! directories, `etc-hosts`, the termination-log file, the emptyDir / configMap /
//! downward-API volumes); the pods' `/kubepods/…` cgroups go under a cgroup of the
//! test's own. The image `docker.io/library/busybox:1.35` is a busybox the test builds,
//! served by a local registry as berth's docker.io mirror.
//!
//! Between the calls, the containers are checked against what the kubelet asked:
//! - every Exec is run through its URL with a client-go-like SPDY client
//!   (`tests/go/streamclient`, moby/spdystream), and its output is what `kubectl exec`
//!   shows there: the uid, gid and groups, the read-only rootfs, the capability set, the
//!   seccomp mode, no_new_privs, the sysctl, the CPU quota before and after the in-place
//!   resize, the volumes, `kubectl cp`'s tar;
//! - the PortForward URL reaches the pod's web server (`tests/go/pfclient`);
//! - ExecSync (the probes) answers the recorded exit code and output;
//! - a ContainerStatus or PodSandboxStatus the kubelet saw as exited / not ready is
//!   asked again until berth says so too (the kubelet waits the same way), and exit
//!   codes and reasons are the recorded ones;
//! - the log files the kubelet reads (`kubectl logs`) hold what each container printed.
//!
//! Afterwards, as the recording removed every pod, nothing is left: no pod, container,
//! mount, netns pin, veth, IP lease, hostPort rule or CNI cache entry.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::leaks::{mounts_under, nat_rules};
use common::registry::Registry;
use common::replay::{DynamicCri, Recorded, Rewrites, dependencies, load};
use common::{CgroupTree, Daemon};
use serde_json::Value;
use tokio::sync::watch;

/// How long the whole replay may take (it needs about 35 s: two 30 s graceful stops of
/// containers that ignore SIGTERM, run side by side).
const REPLAY_DEADLINE: Duration = Duration::from_secs(100);
/// How long a status the kubelet saw may take to come true here.
const STATE_DEADLINE: Duration = Duration::from_secs(45);
/// What the configMap `rich-cfg` holds under `key`.
const CONFIG_VALUE: &str = "value-from-configmap";
/// What `kubectl cp` copies into the logger pod.
const COPIED: &str = "copied-by-kubectl-cp\n";
/// What `kubectl exec -i … cat` is given.
const PIPED: &str = "piped-into-cat\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kubelet_session_replays_with_the_recorded_codes() {
    let calls = load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/kube-1.35-smoke-and-rich-pod.jsonl.gz"),
    );
    assert_eq!(calls.len(), 1043, "the whole recording");
    let replay = Arc::new(Replay::start(calls).await);
    let started = Instant::now();
    let failures = tokio::time::timeout(REPLAY_DEADLINE, replay.clone().run())
        .await
        .unwrap_or_else(|_| panic!("the replay did not end within {REPLAY_DEADLINE:?}"));
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of 1043 calls did not go as recorded:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("replayed 1043 calls in {took:?}");
    assert!(
        replay.measured.load(Ordering::SeqCst) > 0,
        "ListContainerStats never measured a running container"
    );
    replay.assert_nothing_left().await;
}

/// The world the calls are replayed in.
struct Replay {
    calls: Vec<Recorded>,
    daemon: Daemon,
    _registry: Registry,
    /// `@ROOT@`.
    root: tempfile::TempDir,
    /// The cgroup the pods' `/kubepods` goes under.
    cgroups: CgroupTree,
    cri: DynamicCri,
    rewrites: Rewrites,
    /// The tar `kubectl cp` sends.
    tar: PathBuf,
    /// UpdateContainerResources has resized the rich pod's app.
    resized: AtomicBool,
    /// Containers ListContainerStats gave CPU and memory figures for, over the replay.
    measured: AtomicUsize,
}

impl Replay {
    async fn start(calls: Vec<Recorded>) -> Replay {
        let (registry, daemon) = common::world::busybox_mirror("1.35", "").await;
        let root = tempfile::Builder::new()
            .prefix("berth-replay-root-")
            .tempdir()
            .expect("a temporary @ROOT@");
        let tar = root.path().join("kubectl-cp.tar");
        std::fs::write(&tar, cp_archive()).expect("write the tar kubectl cp sends");
        let channel = common::connect(&daemon.paths().socket)
            .await
            .expect("connect to berth");
        Replay {
            calls,
            cgroups: CgroupTree(format!("berth-replay-{}", std::process::id())),
            cri: DynamicCri::new(channel),
            daemon,
            _registry: registry,
            root,
            rewrites: Rewrites::default(),
            tar,
            resized: AtomicBool::new(false),
            measured: AtomicUsize::new(0),
        }
    }

    /// Replays every call, each once the calls it depends on are done; returns what
    /// did not go as recorded.
    async fn run(self: Arc<Self>) -> Vec<String> {
        let deps = dependencies(&self.calls);
        let (done, seen): (Vec<_>, Vec<_>) =
            (0..self.calls.len()).map(|_| watch::channel(false)).unzip();
        let mut order: Vec<usize> = (0..self.calls.len()).collect();
        order.sort_by(|a, b| self.calls[*a].t.total_cmp(&self.calls[*b].t));
        let mut tasks = Vec::new();
        let done: Vec<Arc<watch::Sender<bool>>> = done.into_iter().map(Arc::new).collect();
        for i in order {
            let waits: Vec<watch::Receiver<bool>> =
                deps[i].iter().map(|&j| seen[j].clone()).collect();
            let finished = done[i].clone();
            let replay = self.clone();
            tasks.push(tokio::spawn(async move {
                for mut wait in waits {
                    let _ = wait.wait_for(|d| *d).await;
                }
                let result = replay.replay_one(&replay.calls[i]).await;
                finished.send_replace(true);
                result.err().map(|why| {
                    let call = &replay.calls[i];
                    format!(
                        "line {} ({} at {:.3}s): {why}",
                        call.line + 1,
                        call.name(),
                        call.t
                    )
                })
            }));
        }
        let mut failures = Vec::new();
        for task in tasks {
            failures.extend(task.await.expect("a replay task"));
        }
        failures
    }

    /// One call: what the kubelet does before it, the call, and the checks after it.
    async fn replay_one(&self, call: &Recorded) -> Result<(), String> {
        let request = self.rewrites.apply(&call.request, &|s| self.host_path(s));
        self.before(call, &request).await?;
        let answer = self.send(call, &request).await;
        let got = match &answer {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        if got != call.code {
            return Err(format!(
                "recorded {:?}, got {got:?}: {}",
                call.code,
                answer
                    .err()
                    .map(|s| s.message().to_string())
                    .unwrap_or_default()
            ));
        }
        let (Ok(answer), Some(recorded)) = (answer, &call.response) else {
            return Ok(());
        };
        self.rewrites.learn(
            recorded,
            &answer,
            &["pod_sandbox_id", "container_id", "image_ref"],
        );
        self.after(call, &request, recorded, &answer).await
    }

    /// Sends the call; a status the kubelet saw as further along is asked again until
    /// it is that far here too.
    async fn send(&self, call: &Recorded, request: &Value) -> Result<Value, tonic::Status> {
        let start = Instant::now();
        loop {
            let answer = self.cri.call(&call.method, request).await;
            let (Ok(ours), Some(recorded)) = (&answer, &call.response) else {
                return answer;
            };
            if !behind(call.name(), recorded, ours) || start.elapsed() > STATE_DEADLINE {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `@ROOT@` paths under the temporary root, the pods' cgroups under the test's own.
    fn host_path(&self, s: &str) -> String {
        if let Some(rest) = s.strip_prefix("@ROOT@") {
            return format!("{}{rest}", self.root.path().display());
        }
        if s.starts_with("/kubepods") {
            return format!("/{}{s}", self.cgroups.0);
        }
        s.to_string()
    }

    /// What the kubelet does before this call, and the checks due before it.
    async fn before(&self, call: &Recorded, request: &Value) -> Result<(), String> {
        match call.name() {
            "RunPodSandbox" => {
                let dir = request["config"]["log_directory"].as_str().unwrap_or("");
                std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
            }
            "CreateContainer" => self.make_container_files(request)?,
            "StopContainer" => {
                let recorded = call.request["container_id"].as_str().unwrap_or("");
                self.check_log(recorded).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The container's log directory and the files and directories its mounts name, as
    /// the kubelet makes them.
    fn make_container_files(&self, request: &Value) -> Result<(), String> {
        let log_dir = request["sandbox_config"]["log_directory"]
            .as_str()
            .unwrap_or("");
        let log_path = request["config"]["log_path"].as_str().unwrap_or("");
        if let Some(parent) = Path::new(log_dir).join(log_path).parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mounts = request["config"]["mounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for mount in mounts {
            let host = PathBuf::from(mount["host_path"].as_str().unwrap_or(""));
            let inside = mount["container_path"].as_str().unwrap_or("");
            let io = |e: std::io::Error| format!("{}: {e}", host.display());
            if matches!(inside, "/etc/hosts" | "/dev/termination-log") {
                std::fs::create_dir_all(host.parent().unwrap_or(Path::new("/"))).map_err(io)?;
                if !host.exists() {
                    let text = if inside == "/etc/hosts" {
                        "127.0.0.1\tlocalhost\n"
                    } else {
                        ""
                    };
                    std::fs::write(&host, text).map_err(io)?;
                }
                continue;
            }
            std::fs::create_dir_all(&host).map_err(io)?;
            let volume = host.to_string_lossy();
            let file = if volume.contains("kubernetes.io~configmap") {
                Some(("key", CONFIG_VALUE.to_string()))
            } else if volume.contains("kubernetes.io~downward-api") {
                Some(("labels", "app=\"rich\"\n".to_string()))
            } else if volume.contains("kubernetes.io~empty-dir") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777))
                    .map_err(io)?;
                None
            } else {
                None
            };
            if let Some((name, text)) = file {
                std::fs::write(host.join(name), text).map_err(io)?;
            }
        }
        Ok(())
    }

    /// The checks due once a call has answered as recorded.
    async fn after(
        &self,
        call: &Recorded,
        request: &Value,
        recorded: &Value,
        answer: &Value,
    ) -> Result<(), String> {
        match call.name() {
            "ContainerStatus" => same_end(recorded, answer),
            "PodSandboxStatus" => {
                let ip = |v: &Value| {
                    v["status"]["network"]["ip"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                };
                if !ip(recorded).is_empty() && ip(answer).is_empty() {
                    return Err(format!("the pod has no IP: {answer}"));
                }
                Ok(())
            }
            "ExecSync" => {
                let fields = ["exit_code", "stdout", "stderr"];
                if fields.iter().any(|f| recorded[f] != answer[f]) {
                    return Err(format!("recorded {recorded}, got {answer}"));
                }
                Ok(())
            }
            "Exec" => self.exec(request, answer).await,
            "ImageFsInfo" => image_fs_as_the_kubelet_reads_it(answer),
            "ListContainerStats" => {
                let measured = container_stats_as_the_kubelet_reads_them(answer)?;
                self.measured.fetch_add(measured, Ordering::SeqCst);
                Ok(())
            }
            "RuntimeConfig" if recorded != answer => Err(format!(
                "the kubelet read the cgroup driver from {recorded}, got {answer}"
            )),
            "PortForward" => self.port_forward(&call.method, request, answer).await,
            "UpdateContainerResources" => {
                self.resized.store(true, Ordering::SeqCst);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Runs an Exec as `kubectl exec` through the kubelet would, and checks its output.
    async fn exec(&self, request: &Value, answer: &Value) -> Result<(), String> {
        let url = answer["url"].as_str().ok_or("no URL")?;
        let cmd: Vec<&str> = request["cmd"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let flag = |name: &str| request[name].as_bool().unwrap_or(false);
        let mut args = vec!["-url".to_string(), url.to_string()];
        for name in ["stdin", "stdout", "stderr", "tty"] {
            args.push(format!("-{name}={}", flag(name)));
        }
        let expected = expectation(&cmd, self.resized.load(Ordering::SeqCst));
        if let Some(input) = expected.stdin {
            args.extend(["-input".to_string(), input.to_string()]);
        }
        if cmd.first() == Some(&"tar") {
            args.extend(["-input-file".to_string(), self.tar.display().to_string()]);
        }
        if flag("stdin") {
            // kubectl closes stdin at the end of its input.
            args.extend(["-close-after".to_string(), "300ms".to_string()]);
        }
        if cmd.starts_with(&["grep", "CapEff"]) {
            self.capability_sets(&request["container_id"]).await?;
        }
        let seen = stream_client(&args).await?;
        let exit = exit_code(&seen)?;
        let stdout = seen["stdout"].as_str().unwrap_or("");
        let stderr = seen["stderr"].as_str().unwrap_or("");
        let wanted_out = expected.stdout.iter().all(|s| stdout.contains(s));
        let wanted_err = expected.stderr.is_none_or(|s| stderr.contains(s));
        if exit != expected.exit || !wanted_out || !wanted_err {
            return Err(format!(
                "exec {cmd:?}: wanted exit {} with {:?} (stderr {:?}), got exit {exit}, \
                 stdout {stdout:?}, stderr {stderr:?}",
                expected.exit, expected.stdout, expected.stderr
            ));
        }
        Ok(())
    }

    /// Forwards port 8080 of the web pod (`forward_8080`), asking for another URL while
    /// the server is not listening yet.
    async fn port_forward(
        &self,
        method: &str,
        request: &Value,
        answer: &Value,
    ) -> Result<(), String> {
        let start = Instant::now();
        let mut url = answer["url"].as_str().ok_or("no URL")?.to_string();
        loop {
            match forward_8080(&url).await? {
                Ok(()) => return Ok(()),
                Err(why) if start.elapsed() > Duration::from_secs(20) => return Err(why),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let again = self
                .cri
                .call(method, request)
                .await
                .map_err(|s| format!("PortForward again: {s}"))?;
            url = again["url"].as_str().ok_or("no URL")?.to_string();
        }
    }

    /// The capability sets of the rich pod's app, beyond what its recorded exec shows:
    /// every capability dropped but NET_BIND_SERVICE (bit 10) from the bounding set.
    async fn capability_sets(&self, container: &Value) -> Result<(), String> {
        let request = serde_json::json!({
            "container_id": container,
            "cmd": ["grep", "^Cap", "/proc/self/status"],
            "timeout": "5",
        });
        let answer = self
            .cri
            .call("/runtime.v1.RuntimeService/ExecSync", &request)
            .await
            .map_err(|s| format!("ExecSync for the capability sets: {s}"))?;
        let stdout = answer["stdout"].as_str().unwrap_or("");
        let decoded = base64_decode(stdout);
        let wanted = [
            "CapInh:\t0000000000000000",
            "CapPrm:\t0000000000000000",
            "CapEff:\t0000000000000000",
            "CapBnd:\t0000000000000400",
            "CapAmb:\t0000000000000000",
        ];
        if !wanted.iter().all(|w| decoded.lines().any(|l| l == *w)) {
            return Err(format!("capability sets {decoded:?}, wanted {wanted:?}"));
        }
        Ok(())
    }

    /// What `kubectl logs` would show of a container before the kubelet stops it.
    async fn check_log(&self, recorded: &str) -> Result<(), String> {
        let Some(create) = self.calls.iter().find(|c| {
            c.name() == "CreateContainer"
                && c.response.as_ref().and_then(|r| r["container_id"].as_str()) == Some(recorded)
        }) else {
            return Ok(());
        };
        let request = self.rewrites.apply(&create.request, &|s| self.host_path(s));
        let name = request["config"]["metadata"]["name"].as_str().unwrap_or("");
        let wanted: &[&str] = match name {
            "sleeper" => &["hello-from-static-pod"],
            "st-logger" => &["tick 0", "tick 1"],
            "st-crash" => &["crash-"],
            "app" => &["init-done"],
            _ => return Ok(()),
        };
        let log = Path::new(
            request["sandbox_config"]["log_directory"]
                .as_str()
                .unwrap_or(""),
        )
        .join(request["config"]["log_path"].as_str().unwrap_or(""));
        let start = Instant::now();
        loop {
            let lines: Vec<String> = common::world::records(&log)
                .into_iter()
                .filter(|(stream, tag, _)| stream == "stdout" && tag == "F")
                .map(|(_, _, text)| text)
                .collect();
            if wanted
                .iter()
                .all(|w| lines.iter().any(|l| l.starts_with(w)))
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "{name}'s log {} holds {lines:?}, not {wanted:?}",
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Nothing of the replayed pods is left on the node: no pod or container listed,
    /// and none of what `leaks::assert_nothing_left` looks for, nor a mount under
    /// `@ROOT@` or a rule of the rich pod's hostPort.
    async fn assert_nothing_left(&self) {
        let empty = serde_json::json!({});
        for (method, field) in [
            ("/runtime.v1.RuntimeService/ListPodSandbox", "items"),
            ("/runtime.v1.RuntimeService/ListContainers", "containers"),
        ] {
            let answer = self.cri.call(method, &empty).await.expect("list");
            assert_eq!(
                answer.get(field),
                None,
                "{method} after the replay: {answer}"
            );
        }
        common::leaks::assert_nothing_left(&self.daemon, &self.cgroups.0);
        assert_eq!(
            mounts_under(self.root.path()),
            Vec::<String>::new(),
            "mounts under @ROOT@"
        );
        assert_eq!(nat_rules("18099"), Vec::<String>::new(), "hostPort rules");
    }
}

/// Whether our answer is not yet where the kubelet's was: a container not yet exited,
/// a pod not yet not-ready.
fn behind(method: &str, recorded: &Value, ours: &Value) -> bool {
    let rank = |v: &Value, field: &str, order: &[&str]| {
        let state = v["status"][field].as_str().unwrap_or(order[0]);
        order.iter().position(|s| *s == state).unwrap_or(0)
    };
    let order: &[&str] = match method {
        "ContainerStatus" => &["CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED"],
        "PodSandboxStatus" => &["SANDBOX_READY", "SANDBOX_NOTREADY"],
        _ => return false,
    };
    rank(ours, "state", order) < rank(recorded, "state", order)
}

/// What the kubelet's stats provider needs of ImageFsInfo: `used_bytes` always set (it
/// reads it without a check), mountpoints that exist (cadvisor stats them), and the
/// containers' filesystem named as the images' when they are one (not split).
fn image_fs_as_the_kubelet_reads_it(answer: &Value) -> Result<(), String> {
    let images = &answer["image_filesystems"][0];
    let containers = &answer["container_filesystems"][0];
    for fs in [images, containers] {
        let mountpoint = fs["fs_id"]["mountpoint"].as_str().unwrap_or("");
        if fs.get("used_bytes").is_none() || !Path::new(mountpoint).is_dir() {
            return Err(format!("ImageFsInfo the kubelet cannot use: {answer}"));
        }
    }
    if images["fs_id"] != containers["fs_id"] {
        return Err(format!("one filesystem named twice: {answer}"));
    }
    Ok(())
}

/// What the kubelet's CRI stats provider reads of each container: its id and name,
/// cumulative CPU and memory with its working set (berth gives them for running
/// containers only), the writable layer on a filesystem it can stat. Returns how many
/// containers had CPU and memory figures.
fn container_stats_as_the_kubelet_reads_them(answer: &Value) -> Result<usize, String> {
    let mut measured = 0;
    for stats in answer["stats"].as_array().into_iter().flatten() {
        let attributes = &stats["attributes"];
        let named = attributes["id"].is_string() && attributes["metadata"]["name"].is_string();
        let cpu = stats["cpu"].get("usage_core_nano_seconds").is_some();
        let memory = stats["memory"].get("working_set_bytes").is_some();
        let layer = stats["writable_layer"]["fs_id"]["mountpoint"]
            .as_str()
            .unwrap_or("");
        if !named || cpu != memory || !Path::new(layer).is_dir() {
            return Err(format!("stats the kubelet cannot use: {stats}"));
        }
        measured += usize::from(cpu);
    }
    Ok(measured)
}

/// An exited container ended as it did under the kubelet: the same exit code and
/// reason.
fn same_end(recorded: &Value, ours: &Value) -> Result<(), String> {
    let status = |v: &Value| {
        let s = &v["status"];
        (
            s["state"].clone(),
            s["exit_code"].clone(),
            s["reason"].clone(),
        )
    };
    let r = status(recorded);
    if r.0 == "CONTAINER_EXITED" && r != status(ours) {
        return Err(format!("recorded {:?}, got {:?}", r, status(ours)));
    }
    Ok(())
}

/// What an exec shows under the kubelet: its exit code, what stdout must hold, and
/// what it is given on stdin.
struct Expected {
    exit: i64,
    stdout: Vec<&'static str>,
    stderr: Option<&'static str>,
    stdin: Option<&'static str>,
}

fn expectation(cmd: &[&str], resized: bool) -> Expected {
    let out = |exit, stdout: &[&'static str]| Expected {
        exit,
        stdout: stdout.to_vec(),
        stderr: None,
        stdin: None,
    };
    match cmd {
        ["sh", "-c", "echo exec-ok"] => out(0, &["exec-ok\n"]),
        ["cat"] => Expected {
            stdin: Some(PIPED),
            ..out(0, &[PIPED])
        },
        ["sh", "-c", "exit 7"] => out(7, &[]),
        ["tty"] => out(0, &["/dev/pts/"]),
        // kubectl cp asks whether the target is a directory first.
        ["test", "-d", "/tmp/x.txt"] => out(1, &[]),
        ["tar", ..] => out(0, &[]),
        ["cat", "/tmp/x.txt"] => out(0, &[COPIED]),
        // runAsUser 1000, runAsGroup 3000, fsGroup 2000, supplementalGroups 4000.
        ["id"] => out(0, &["uid=1000", "gid=3000", "2000", "4000"]),
        ["id", "-G"] => out(0, &["3000", "2000", "4000"]),
        ["touch", "/rootfs-write"] => Expected {
            stderr: Some("Read-only file system"),
            ..out(1, &[])
        },
        ["cat", "/etc/cfg/key"] => out(0, &[CONFIG_VALUE]),
        ["cat", "/etc/podinfo/labels"] => out(0, &["app=\"rich\""]),
        ["env"] => out(0, &["POD_NAME=rich\n", "MEM_LIMIT=67108864\n"]),
        ["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"] => out(0, &["0\n"]),
        ["cat", "/data/init.txt"] => out(0, &["init-done\n"]),
        ["grep", "NoNewPrivs", _] => out(0, &["NoNewPrivs:\t1\n"]),
        // All capabilities dropped but NET_BIND_SERVICE; a process of a user other than
        // root keeps none in effect (no ambient set, as in containerd and CRI-O). Its
        // bounding set is checked apart (`capability_sets`).
        ["grep", "CapEff", _] => out(0, &["CapEff:\t0000000000000000\n"]),
        // RuntimeDefault: a seccomp filter.
        ["grep", "^Seccomp:", _] => out(0, &["Seccomp:\t2\n"]),
        // 200m, then 300m after the in-place resize: `cpu.cfs_quota_us` on v1, the
        // quota before the period in `cpu.max` on v2.
        ["sh", "-c", quota] if quota.contains("cpu.cfs_quota_us") => {
            out(0, &[if resized { "30000" } else { "20000" }])
        }
        other => panic!("the recording has an exec this test does not know: {other:?}"),
    }
}

/// ExecSync's output, which protobuf JSON carries in base64.
fn base64_decode(text: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The archive `kubectl cp` streams into `tar -xmf - -C /tmp`.
fn cp_archive() -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(COPIED.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "x.txt", COPIED.as_bytes())
        .expect("a tar in memory");
    archive.into_inner().expect("a tar in memory")
}

async fn stream_client(args: &[String]) -> Result<Value, String> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(common::go_program("streamclient"))
            .args(args)
            .output(),
    )
    .await
    .map_err(|_| "the stream client did not finish within 30 s".to_string())?
    .map_err(|e| format!("running the stream client: {e}"))?;
    let seen: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    if seen["status"] != 101 || seen.get("failure").is_some_and(|f| !f.is_null()) {
        return Err(format!("the stream failed: {seen}"));
    }
    Ok(seen)
}

/// The exit code the error stream's status gives (v4/v5 JSON).
fn exit_code(seen: &Value) -> Result<i64, String> {
    let text = seen["error"].as_str().unwrap_or("");
    let status: Value =
        serde_json::from_str(text).map_err(|e| format!("error stream {text:?}: {e}"))?;
    if status["status"] == "Success" {
        return Ok(0);
    }
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str()?.parse().ok())
        .ok_or_else(|| format!("no exit code in {status}"))
}

/// Forwards the pod's port 8080 as `kubectl port-forward` does and fetches the page.
/// The replay reaches this call sooner after the web server's start than the user did;
/// while nothing listens yet, the user would run port-forward again (a new URL).
async fn forward_8080(url: &str) -> Result<Result<(), String>, String> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(common::go_program("pfclient"))
            .args(["-url", url, "-port", "8080"])
            .output(),
    )
    .await
    .map_err(|_| "the port-forward client did not finish within 30 s".to_string())?
    .map_err(|e| format!("running the port-forward client: {e}"))?;
    let seen: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&output.stdout)))?;
    let reply = &seen["replies"][0];
    if reply["data"]
        .as_str()
        .unwrap_or("")
        .contains("hello-from-httpd")
    {
        return Ok(Ok(()));
    }
    let refused = reply["error"]
        .as_str()
        .unwrap_or("")
        .contains("Connection refused");
    let why = format!("port 8080 answered {seen}");
    if refused { Ok(Err(why)) } else { Err(why) }
}
