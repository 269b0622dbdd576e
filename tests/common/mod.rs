//! The integration test harness: a real `berth` daemon on a private root, state
//! directory, socket and CNI config directory, and CRI clients generated from the same
//! proto. The daemon is killed and every file removed when the [`Daemon`] is dropped,
//! even when the test fails.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth::proto::VersionRequest;
use berth::proto::image_service_client::ImageServiceClient;
use berth::proto::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tonic::transport::Channel;

/// How long a daemon may take to start serving or to stop.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns `Some`, or panics naming `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The files of one test daemon; all under one temporary directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub cni_conf: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    fn under(dir: &Path) -> Paths {
        Paths {
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("run/berth.sock"),
            cni_conf: dir.join("net.d"),
            config: dir.join("berth.toml"),
            log: dir.join("berth.log"),
        }
    }
}

/// A test daemon's setup: its directories, its own bridge and subnet for the default CNI
/// network, and any extra TOML for its config file.
pub struct Setup {
    dir: TempDir,
    pub paths: Paths,
    /// The bridge of this daemon's default network (unique per test daemon).
    pub bridge: String,
    /// `10.231.N.0/24`, unique per test daemon of this test binary.
    pub subnet: String,
    top_toml: String,
    extra_toml: String,
    args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
}

/// Test daemons of one test binary so far (test binaries run one after another).
static DAEMONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("create a temporary directory");
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(&paths.cni_conf).expect("create the CNI config directory");
        let n = DAEMONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(n < 250, "too many test daemons for the 10.231.N.0/24 plan");
        Setup {
            dir,
            paths,
            bridge: format!("bt{:04x}{:02x}", std::process::id() & 0xffff, n),
            subnet: format!("10.231.{n}.0/24"),
            top_toml: String::new(),
            extra_toml: String::new(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Appends TOML to the generated config file (after the paths and `[network]`).
    pub fn toml(mut self, text: &str) -> Setup {
        self.extra_toml.push_str(text);
        self.extra_toml.push('\n');
        self
    }

    /// Adds top-level keys (they must come before any table of the config file).
    pub fn top(mut self, text: &str) -> Setup {
        self.top_toml.push_str(text);
        self.top_toml.push('\n');
        self
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, key: &str, value: impl Into<std::ffi::OsString>) -> Setup {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Adds command-line arguments after `serve`.
    pub fn arg(mut self, arg: &str) -> Setup {
        self.args.push(arg.to_string());
        self
    }

    /// The config file every test daemon reads: private paths, never the host's. With
    /// `BERTH_TEST_RUNTIME=youki` (`make test` runs the fast suites so a second time), the
    /// default handler is youki.
    fn write_config(&self) {
        let p = &self.paths;
        let runtime = match std::env::var("BERTH_TEST_RUNTIME").as_deref() {
            Ok("youki") => {
                "[runtime]\ndefault_handler = \"youki\"\n[runtime.handlers.youki]\npath = \"youki\"\n"
            }
            Ok("") | Ok("runc") | Err(_) => "",
            Ok(other) => panic!("BERTH_TEST_RUNTIME={other}: runc or youki"),
        };
        let text = format!(
            "root = {:?}\nstate = {:?}\nsocket = {:?}\nlog_level = \"debug\"\n{}\n[network]\nconf_dir = {:?}\ndefault_bridge = {:?}\ndefault_subnet = {:?}\n\n{runtime}{}",
            p.root,
            p.state,
            p.socket,
            self.top_toml,
            p.cni_conf,
            self.bridge,
            self.subnet,
            self.extra_toml
        );
        std::fs::write(&p.config, text).expect("write the test config");
    }

    /// Starts the daemon and waits until it answers `Version`.
    pub async fn start(self) -> Daemon {
        self.write_config();
        let mut daemon = Daemon {
            child: None,
            setup: self,
        };
        daemon.restart().await;
        daemon
    }

    /// Runs `berth serve` with this setup and returns how it exited and what it printed,
    /// for daemons that are expected to refuse to start.
    pub fn run_expecting_failure(&self) -> (ExitStatus, String) {
        self.write_config();
        let output = berth_command(&self.paths, &self.args, &self.env)
            .stdout(Stdio::null())
            .output()
            .expect("run berth");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn berth_command(paths: &Paths, args: &[String], env: &[(String, std::ffi::OsString)]) -> Command {
    // BERTH_TEST_BINARY runs the suite against another build (e.g. target/release/berth).
    let binary =
        std::env::var_os("BERTH_TEST_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_berth").into());
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--config")
        .arg(&paths.config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// A running test daemon.
pub struct Daemon {
    child: Option<Child>,
    pub setup: Setup,
}

impl Daemon {
    pub fn paths(&self) -> &Paths {
        &self.setup.paths
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// (Re)starts the daemon with the same setup, appending to the same log, and waits
    /// until it serves.
    pub async fn restart(&mut self) {
        self.spawn();
        let (log_path, socket) = (self.paths().log.clone(), self.paths().socket.clone());
        let child = self.child.as_mut().expect("spawned just now");
        wait_serving(child, &socket, "berth", START_DEADLINE, || {
            std::fs::read_to_string(&log_path).unwrap_or_default()
        })
        .await;
    }

    /// Runs `berth serve` with the same setup, appending to the same log, and returns at
    /// once (the benchmark times the start-up itself).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths().log)
            .expect("open the daemon log");
        let child = berth_command(self.paths(), &self.setup.args, &self.setup.env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth");
        self.child = Some(child);
    }

    /// A runtime service client on a new connection.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// An image service client on a new connection.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    async fn channel(&self) -> Channel {
        connect(&self.paths().socket)
            .await
            .expect("connect to the daemon's socket")
    }

    /// Sends SIGTERM and waits for the daemon to exit. Async, so that the test's own
    /// client connections keep running and can answer the daemon's GOAWAY.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal_and_wait(Signal::SIGTERM).await
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub async fn crash(&mut self) -> ExitStatus {
        self.signal_and_wait(Signal::SIGKILL).await
    }

    /// Sends `signal` to the daemon and waits for it to exit.
    pub async fn signal_and_wait(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon is running");
        let pid = Pid::from_raw(child.id() as i32);
        kill(pid, signal).expect("signal our own daemon");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for the daemon") {
                return status;
            }
            if start.elapsed() > STOP_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("berth did not exit within {STOP_DEADLINE:?} of {signal}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The address the daemon says it serves its metrics on (`[metrics] address`).
    pub async fn metrics_address(&self) -> String {
        wait_for("the metrics server", Duration::from_secs(10), || {
            let address = self
                .log()
                .lines()
                .find(|l| l.contains("metrics served at /metrics"))
                .and_then(|l| l.split("address=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(String::from);
            async move { address }
        })
        .await
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.paths().log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only our own child, by its PID.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- berth log ---\n{}", self.log());
        }
        self.setup.clean_host_state();
    }
}

impl Setup {
    /// Removes what pods of this daemon may have left on the host when a test failed
    /// before removing them: their containers (in this daemon's own runc root), mounts
    /// under this daemon's directory, and this daemon's bridge. Touches nothing else.
    pub fn clean_host_state(&self) {
        let handlers = std::fs::read_dir(self.paths.state.join("runtime"))
            .into_iter()
            .flatten();
        // Each handler's root is named for it, and only its own runtime reads it: youki's
        // containers are not runc's to list.
        for runtime_root in handlers.flatten().map(|e| e.path()) {
            let binary = match runtime_root.file_name().and_then(|n| n.to_str()) {
                Some("youki") => "youki",
                _ => "runc",
            };
            delete_containers(binary, &runtime_root);
        }
        self.detach_networks();
        self.delete_nat_rules();
        unmount_under(self.dir.path());
        delete_link(&self.bridge);
    }

    /// Deletes the NAT rules (and the chains they jump to) that name this daemon's
    /// subnet: the bridge plugin's masquerading and portmap's DNAT of pods a failed test
    /// left without a CNI cache to DEL them with. Subnets are unique per test daemon, and
    /// test binaries run one after another.
    fn delete_nat_rules(&self) {
        let Ok(saved) = Command::new("iptables-save").args(["-t", "nat"]).output() else {
            return;
        };
        let prefix = format!("{}.", self.subnet.trim_end_matches(".0/24"));
        let mut chains = std::collections::BTreeSet::new();
        for rule in String::from_utf8_lossy(&saved.stdout).lines() {
            let Some(spec) = rule.strip_prefix("-A ") else {
                continue;
            };
            if !rule.contains(&prefix) || !rule.contains("name: \\\"berth\\\"") {
                continue;
            }
            let Some(words) = shell_words(spec) else {
                continue;
            };
            if let Some(at) = words.iter().position(|w| w == "-j") {
                chains.extend(words.get(at + 1).filter(|c| c.starts_with("CNI-")).cloned());
            }
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-D"])
                .args(&words)
                .output();
        }
        for chain in chains {
            for op in ["-F", "-X"] {
                let _ = Command::new("iptables")
                    .args(["-t", "nat", op, &chain])
                    .output();
            }
        }
    }

    /// CNI DEL for every pod the daemon left attached (its cached ADD results), while
    /// their namespaces are still pinned: the bridge plugin's masquerading rules live in
    /// the host's iptables, outside this daemon's directory.
    fn detach_networks(&self) {
        let results = self.paths.state.join("cni/results");
        let ids: Vec<String> = std::fs::read_dir(&results)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some(e.path().file_stem()?.to_str()?.to_string()))
            .collect();
        if ids.is_empty() {
            return;
        }
        let cni = berth::network::cni::Cni::new(
            self.paths.cni_conf.clone(),
            berth::config::Config::default().network.bin_dirs,
            results,
        );
        let netns = self.paths.state.join("netns");
        // Drop may run on a runtime's thread: this gets a thread and a runtime of its own.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async {
                    for id in &ids {
                        let pin = netns.join(id);
                        let pod = berth::network::cni::PodNetwork {
                            id,
                            netns: &pin,
                            name: "",
                            namespace: "",
                            uid: "",
                            port_mappings: &[],
                        };
                        if let Err(err) = cni.detach(&pod).await {
                            eprintln!("CNI DEL of test pod {id} failed: {err}");
                        }
                    }
                });
            });
        });
    }
}

/// An iptables-save rule split into words as the shell would (double quotes, `\"`
/// inside them).
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', _) => quoted = !quoted,
            ('\\', true) => word.push(chars.next()?),
            (' ', false) => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (c, _) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    (!quoted).then_some(words)
}

/// Force-deletes every container in the runc root `root` (what a failed test left).
pub fn delete_runc_containers(root: &Path) {
    delete_containers("runc", root);
}

/// Force-deletes every container in runtime root `root` with `binary` (runc or youki):
/// each container is a directory there, in both.
pub fn delete_containers(binary: &str, root: &Path) {
    let ids = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name());
    for id in ids {
        let _ = Command::new(binary)
            .arg("--root")
            .arg(root)
            .arg("delete")
            .arg("--force")
            .arg(&id)
            .output();
    }
}

/// Unmounts everything mounted under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let ours = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&ours))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Deletes one of our own network links (a test daemon's bridge).
pub fn delete_link(name: &str) {
    if Path::new("/sys/class/net").join(name).exists() {
        let _ = Command::new("ip").args(["link", "del", name]).output();
    }
}

/// Waits until the CRI runtime `what`, run as `child`, answers `Version` on `socket`;
/// panics with its `log` if it exits first or `deadline` passes.
pub async fn wait_serving(
    child: &mut Child,
    socket: &Path,
    what: &str,
    deadline: Duration,
    log: impl Fn() -> String,
) {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited during start-up with {status}; log:\n{}",
                log()
            );
        }
        if let Ok(channel) = connect(socket).await
            && RuntimeServiceClient::new(channel)
                .version(VersionRequest::default())
                .await
                .is_ok()
        {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{what} did not serve within {deadline:?}; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gRPC channel over the unix socket at `path`, as tonic's own client makes it.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    berth::daemon::client::connect(path).await
}

/// The Go gRPC probe (`tests/go/criprobe`), built once per test binary with Debian's Go
/// and grpc-go in GOPATH mode.
pub fn criprobe() -> PathBuf {
    go_program("criprobe")
}

/// Builds the Go program `tests/go/<name>` once per test binary (GOPATH mode, with the
/// Debian Go packages `make test` installs) and returns its path.
pub fn go_program(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/go")
        .join(name);
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&source)
        .env("GOPATH", "/usr/share/gocode")
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .output()
        .expect("run `go build` (make test installs golang-go)");
    assert!(
        output.status.success(),
        "building {name} failed (make test installs golang-go, golang-google-grpc-dev and \
         golang-github-docker-spdystream-dev):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    built.insert(name.to_string(), out.clone());
    out
}

pub mod images;
pub mod leaks;
pub mod registry;
pub mod replay;
pub mod token;
pub mod world;

/// A cgroup directory (relative to each hierarchy's root) that a test's or the
/// benchmark's pods go under; removed from every hierarchy when dropped, deepest first,
/// even when the test fails.
pub struct CgroupTree(pub String);

impl Drop for CgroupTree {
    fn drop(&mut self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        // Each v1 hierarchy (and a hybrid host's `unified`), or the root itself on v2.
        let roots = hierarchies
            .flatten()
            .map(|h| h.path())
            .chain([PathBuf::from("/sys/fs/cgroup")]);
        for hierarchy in roots {
            let top = hierarchy.join(&self.0);
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_path_buf());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}
