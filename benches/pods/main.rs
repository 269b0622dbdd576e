//! The pod-path benchmark: berth, Debian's containerd 1.6 (CRI plugin) and the floor,
//! side by side in one run on one machine.
//!
//! `cargo bench --bench pods` runs it in full (30 rounds; 500 containers for the list
//! figures; 30 pulls; 5 pulls of a 24-layer image of some 260 MiB, `big_pull.rs`; 32 pods
//! started 8 and 32 at a time; a minute of a kubelet's polling with 50 running pods,
//! `polling.rs`; 200 running pods for memory, lists and stats, `scale.rs`; 3 daemon
//! restarts with those 200, `restart.rs`); `BERTH_BENCH_ROUNDS`, `BERTH_BENCH_LIST`,
//! `BERTH_BENCH_PULLS`, `BERTH_BENCH_PARALLEL`, `BERTH_BENCH_PODS`,
//! `BERTH_BENCH_POLLING_PODS`, `BERTH_BENCH_POLLING_SECONDS`, `BERTH_BENCH_RESTARTS` and
//! `BERTH_BENCH_BIG_PULLS` change those counts, `BERTH_BENCH_ONLY` picks figures (see
//! [`Selection`]), and `BERTH_BENCH_LOG_LEVEL=debug` makes berth log every RPC with its
//! duration. Under
//! `cargo test` (no `--bench` argument) it runs as a smoke test with tiny counts: every
//! step must work, no timing is judged. Needs root and what `make test` installs
//! (containerd, runc, the CNI plugins, docker-registry, busybox-static).
//!
//! Everything comes from one local registry: a busybox image, a pause image made of
//! berth's own pause program (containerd's `sandbox_image`; berth runs the same program
//! from its own rootfs), and a multi-layer image for the pull figure. Each runtime gets
//! its own socket, directories, bridge, subnet and cgroup parent; the floor
//! (`floor.rs`) gets its own too. Rounds interleave the three: berth, containerd, floor,
//! then containerd, berth, floor, and so on.
//!
//! The summary goes to stdout, and as Markdown and JSON next to the build
//! (`target/tmp/bench-pods.{md,json}`); `bench/RESULTS.md` is refreshed by hand from a
//! full run worth keeping.

mod big_pull;
#[path = "../../tests/common/mod.rs"]
mod common;
mod containerd;
mod floor;
mod polling;
mod report;
mod restart;
mod scale;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth::proto::image_service_client::ImageServiceClient;
use berth::proto::runtime_service_client::RuntimeServiceClient;
use berth::proto::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemoveImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use common::Setup;
use common::images::{Compression, ImageConfig, LayerBuilder, TestImage};
use common::registry::Registry;
use futures_util::StreamExt as _;
use serde_json::json;
use tonic::transport::Channel;

use containerd::Containerd;
use floor::Floor;
use report::Figure;

/// The figures one run makes: all of them, or those `BERTH_BENCH_ONLY` names (a comma
/// list of `cycles`, `lists`, `pulls`, `big-pull`, `parallel`, `node`; `node` is the
/// kubelet's polling, the dense node and the restarts, which share their pods).
struct Selection(Option<Vec<String>>);

impl Selection {
    fn from_env() -> Selection {
        Selection(
            std::env::var("BERTH_BENCH_ONLY")
                .ok()
                .map(|list| list.split(',').map(|s| s.trim().to_string()).collect()),
        )
    }

    fn wants(&self, group: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|list| list.iter().any(|g| g == group))
    }
}

/// How much of everything one run does.
struct Counts {
    rounds: usize,
    list_containers: usize,
    list_samples: usize,
    pulls: usize,
    /// Pods of the parallel-start figure, and how many are under way at once.
    parallel_pods: usize,
    in_flight: &'static [usize],
    /// Running pods of the dense-node figure (memory, lists and stats).
    dense_pods: usize,
    /// Running pods and seconds of the kubelet-polling figure.
    polling_pods: usize,
    polling_seconds: usize,
    /// Restarts of each daemon with the dense node's pods.
    restarts: usize,
    /// Pulls of the big image, and its shape.
    big_pulls: usize,
    big_image: big_pull::Shape,
}

impl Counts {
    fn full() -> Counts {
        Counts {
            rounds: 30,
            list_containers: 500,
            list_samples: 30,
            pulls: 30,
            parallel_pods: 32,
            in_flight: &[8, 32],
            dense_pods: 200,
            polling_pods: 50,
            polling_seconds: 60,
            restarts: 3,
            big_pulls: 5,
            big_image: big_pull::Shape::full(),
        }
    }

    fn smoke() -> Counts {
        Counts {
            rounds: 2,
            list_containers: 3,
            list_samples: 2,
            pulls: 1,
            parallel_pods: 2,
            in_flight: &[2],
            dense_pods: 2,
            polling_pods: 1,
            polling_seconds: 2,
            restarts: 1,
            big_pulls: 1,
            big_image: big_pull::Shape::smoke(),
        }
    }
}

/// Layers of the pull figure's image besides busybox, and the bytes of each.
const PULL_LAYERS: usize = 5;
const PULL_LAYER_BYTES: usize = 2 << 20;

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let counts = Counts::from_env(full);
    let only = Selection::from_env();
    let tag = format!("{:x}", std::process::id() & 0xffff);
    let cgroups = common::CgroupTree(format!("berth-bench-{tag}"));
    let third = (std::process::id() % 200) as u8;

    let registry = Registry::start().await;
    let busybox = TestImage::new(
        vec![LayerBuilder::new().busybox().build(Compression::Gzip)],
        ImageConfig::default(),
    );
    registry.push("bench/busybox", "1", &busybox).await;
    let big_image = only
        .wants("big-pull")
        .then(|| big_pull::image(&counts.big_image));
    if let Some(image) = &big_image {
        registry.push("bench/big", "1", image).await;
    }
    let mut berth = start_berth(&registry.host()).await;
    let pause_program = berth.paths().state.join("pause/rootfs/pause");
    registry
        .push("bench/pause", "1", &pause_image(&pause_program))
        .await;
    registry.push("bench/layers", "1", &layered_image()).await;
    let mut containerd = Containerd::start(
        &registry.host(),
        &format!("{}/bench/pause:1", registry.host()),
        &format!("bc{tag}"),
        &format!("10.232.{third}.0/24"),
    )
    .await;
    let floor = Floor::new(
        &pause_program,
        &format!("bf{tag}"),
        &format!("10.233.{third}.0/24"),
        &format!("/{}/floor", cgroups.0),
    );

    let logs = tempfile::tempdir().expect("create the log directory");
    let busybox_ref = format!("{}/bench/busybox:1", registry.host());
    let mut targets = make_targets(&berth, &containerd, &cgroups, logs.path(), &busybox_ref).await;
    for target in &mut targets[..2] {
        target.pull(&busybox_ref).await;
    }
    targets[1]
        .pull(&format!("{}/bench/pause:1", registry.host()))
        .await;

    let mut idle = Figure::new("daemon RSS, idle", "MB");
    idle.berth.push(kb_to_mb(rss_kb(targets[0].pid)));
    idle.containerd.push(kb_to_mb(rss_kb(targets[1].pid)));
    let run = Run {
        counts: &counts,
        only: &only,
        registry: &registry.host(),
        big_image: big_image.as_ref(),
    };
    let mut daemons = [
        restart::RuntimeDaemon::Berth(&mut berth),
        restart::RuntimeDaemon::Containerd(&mut containerd),
    ];
    let mut figures = run.figures(&mut targets, &floor, &mut daemons).await;
    figures.push(idle);
    write_report(&figures, full, &counts, &berth, &containerd);

    drop(targets);
    drop(floor);
    drop(containerd);
    drop(berth);
    drop(cgroups);
}

impl Counts {
    /// The full or smoke counts, with the `BERTH_BENCH_*` variables' changes.
    fn from_env(full: bool) -> Counts {
        let mut counts = if full {
            Counts::full()
        } else {
            Counts::smoke()
        };
        for (variable, count) in [
            ("BERTH_BENCH_ROUNDS", &mut counts.rounds),
            ("BERTH_BENCH_LIST", &mut counts.list_containers),
            ("BERTH_BENCH_PULLS", &mut counts.pulls),
            ("BERTH_BENCH_PODS", &mut counts.dense_pods),
            ("BERTH_BENCH_PARALLEL", &mut counts.parallel_pods),
            ("BERTH_BENCH_POLLING_PODS", &mut counts.polling_pods),
            ("BERTH_BENCH_POLLING_SECONDS", &mut counts.polling_seconds),
            ("BERTH_BENCH_RESTARTS", &mut counts.restarts),
            ("BERTH_BENCH_BIG_PULLS", &mut counts.big_pulls),
        ] {
            if let Some(n) = std::env::var(variable).ok().and_then(|n| n.parse().ok()) {
                *count = n;
            }
        }
        counts
    }
}

/// berth on a private root and socket, its registry the local one (plain HTTP), youki as
/// a second handler, metrics served; at its default log level (as containerd is), unless
/// `BERTH_BENCH_LOG_LEVEL` says otherwise.
async fn start_berth(registry: &str) -> common::Daemon {
    let log_level = std::env::var("BERTH_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    Setup::new()
        .arg("--log-level")
        .arg(&log_level)
        .toml(&format!(
            "[runtime.handlers.youki]\npath = \"youki\"\n[metrics]\naddress = \"127.0.0.1:0\"\n[registries.\"{registry}\"]\ninsecure = true\nserver = \"http://{registry}\""
        ))
        .start()
        .await
}

/// containerd's `sandbox_image`: berth's own pause program, as an image.
fn pause_image(pause_program: &Path) -> TestImage {
    TestImage::new(
        vec![
            LayerBuilder::new()
                .file(
                    "pause",
                    &std::fs::read(pause_program).expect("berth installed its pause program"),
                    0o755,
                )
                .build(Compression::Gzip),
        ],
        ImageConfig {
            entrypoint: vec!["/pause".into()],
            cmd: Vec::new(),
            ..ImageConfig::default()
        },
    )
}

/// berth, containerd, and berth again with its pods on the youki handler (a
/// RuntimeClass's way); berth's metrics endpoint is known to the first.
async fn make_targets(
    berth: &common::Daemon,
    containerd: &Containerd,
    cgroups: &common::CgroupTree,
    logs: &Path,
    busybox: &str,
) -> [Target; 3] {
    let mut targets = [
        Target::new(
            "berth",
            &berth.paths().socket,
            berth.setup.dir(),
            berth.pid(),
            cgroups,
            logs,
            busybox,
        )
        .await,
        Target::new(
            "containerd",
            &containerd.socket(),
            containerd.dir(),
            containerd.pid(),
            cgroups,
            logs,
            busybox,
        )
        .await,
        Target::new(
            "berth-youki",
            &berth.paths().socket,
            berth.setup.dir(),
            berth.pid(),
            cgroups,
            logs,
            busybox,
        )
        .await
        .with_handler("youki"),
    ];
    // berth's timings, for the parallel figure's account of where the time goes.
    targets[0].metrics = Some(berth.metrics_address().await);
    targets
}

/// What one run measures, and from where.
struct Run<'a> {
    counts: &'a Counts,
    only: &'a Selection,
    registry: &'a str,
    big_image: Option<&'a TestImage>,
}

impl Run<'_> {
    /// Every figure [`Selection`] wants, in order: the pod cycle on all three targets,
    /// the rest on berth and containerd (their default handlers).
    async fn figures(
        &self,
        targets: &mut [Target; 3],
        floor: &Floor,
        daemons: &mut [restart::RuntimeDaemon<'_>],
    ) -> Vec<Figure> {
        let (counts, only) = (self.counts, self.only);
        let mut figures = Vec::new();
        if only.wants("cycles") {
            figures.extend(cycles(targets, floor, counts.rounds).await);
        }
        let pair = &mut targets[..2];
        if only.wants("lists") {
            figures.extend(lists(pair, counts.list_containers, counts.list_samples).await);
        }
        if only.wants("pulls") {
            let layers = format!("{}/bench/layers:1", self.registry);
            figures.push(pulls(pair, &layers, counts.pulls).await);
        }
        if let Some(image) = self.big_image {
            let pulled = big_pull::pulls(pair, image, self.registry, "bench/big", counts.big_pulls);
            figures.extend(pulled.await);
        }
        if only.wants("parallel") {
            for &in_flight in counts.in_flight {
                figures.extend(scale::parallel(pair, counts.parallel_pods, in_flight).await);
            }
        }
        if only.wants("node") {
            let node = scale::NodeCounts {
                polling_pods: counts.polling_pods,
                polling_seconds: counts.polling_seconds,
                dense_pods: counts.dense_pods,
                samples: counts.list_samples,
                restarts: counts.restarts,
            };
            figures.extend(scale::node(pair, daemons, &node).await);
        }
        figures
    }
}

/// The summary on stdout, as Markdown and JSON next to the build, with both daemons'
/// logs (for profiling a run after the fact).
fn write_report(
    figures: &[Figure],
    full: bool,
    counts: &Counts,
    berth: &common::Daemon,
    containerd: &Containerd,
) {
    let meta = machine(full, counts);
    let header = format!(
        "## {} ({}; {})",
        meta["date"].as_str().unwrap_or_default(),
        meta["machine"].as_str().unwrap_or_default(),
        if full { "full run" } else { "smoke run" }
    );
    let markdown = report::markdown(figures, &header);
    println!("{markdown}");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(out.join("bench-pods.md"), &markdown).expect("write the Markdown");
    std::fs::write(
        out.join("bench-pods.json"),
        serde_json::to_vec_pretty(&report::json(figures, meta)).expect("JSON"),
    )
    .expect("write the JSON");
    let _ = std::fs::copy(&berth.paths().log, out.join("bench-berth.log"));
    let _ = std::fs::write(out.join("bench-containerd.log"), containerd.log());
    eprintln!(
        "written: {}/bench-pods.{{md,json}}, bench-{{berth,containerd}}.log",
        out.display()
    );
}

/// Pod cycles, round by round: berth and containerd take turns, then the floor.
async fn cycles(targets: &mut [Target; 3], floor: &Floor, rounds: usize) -> Vec<Figure> {
    eprintln!("pod cycles: {} rounds", rounds);
    let mut run_pod = Figure::new("RunPodSandbox", "ms");
    let mut create_start = Figure::new("CreateContainer + StartContainer", "ms");
    let mut create = Figure::new("CreateContainer (floor: runc create)", "ms");
    let mut start = Figure::new("StartContainer (floor: runc start)", "ms");
    let mut exec = Figure::new("ExecSync (`true`)", "ms");
    let mut teardown = Figure::new("StopPodSandbox + RemovePodSandbox", "ms");
    let mut floor_parts = [
        Figure::new("floor: netns create + pin", "ms"),
        Figure::new("floor: CNI ADD", "ms"),
        Figure::new("floor: pause runc create + start", "ms"),
        Figure::new("floor: CNI DEL", "ms"),
    ];
    for round in 0..rounds {
        for i in turns(round, targets.len()) {
            settle().await;
            let cycle = targets[i].cycle(round).await;
            for (figure, value) in [
                (&mut run_pod, cycle.run_pod),
                (&mut create_start, cycle.create + cycle.start),
                (&mut create, cycle.create),
                (&mut start, cycle.start),
                (&mut exec, cycle.exec),
                (&mut teardown, cycle.teardown),
            ] {
                figure.runtime(i).push(value);
            }
        }
        settle().await;
        let f = floor.cycle(round).await;
        run_pod.floor.push(f.run_pod);
        create_start.floor.push(f.create + f.start);
        create.floor.push(f.create);
        start.floor.push(f.start);
        exec.floor.push(f.exec);
        teardown.floor.push(f.teardown);
        for (figure, value) in floor_parts
            .iter_mut()
            .zip([f.netns, f.cni_add, f.pause, f.cni_del])
        {
            figure.floor.push(value);
        }
    }
    let mut figures = vec![run_pod, create_start, create, start, exec, teardown];
    figures.extend(floor_parts);
    figures
}

/// ListContainers and ListPodSandbox with `containers` containers in one pod.
async fn lists(targets: &mut [Target], containers: usize, samples: usize) -> Vec<Figure> {
    eprintln!("lists: {} containers", containers);
    let mut list_containers =
        Figure::new(&format!("ListContainers, {} containers", containers), "ms");
    let mut list_pods = Figure::new(&format!("ListPodSandbox, {} containers", containers), "ms");
    let mut crowded = Vec::new();
    for target in targets.iter_mut() {
        crowded.push(target.populate(containers).await);
    }
    for sample in 0..samples {
        for i in turns(sample, targets.len()) {
            let (containers, pods) = targets[i].list(containers).await;
            list_containers.runtime(i).push(containers);
            list_pods.runtime(i).push(pods);
        }
    }
    for (target, pod) in targets.iter_mut().zip(&crowded) {
        target.teardown(pod).await;
    }
    vec![list_containers, list_pods]
}

/// PullImage of `layers_ref`, removed again after each sample.
async fn pulls(targets: &mut [Target], layers_ref: &str, samples: usize) -> Figure {
    eprintln!("pulls: {}", samples);
    let mut pull = Figure::new(
        &format!(
            "PullImage, {} layers ({} MiB)",
            PULL_LAYERS + 1,
            (PULL_LAYERS * PULL_LAYER_BYTES) >> 20
        ),
        "ms",
    );
    for sample in 0..samples {
        for i in turns(sample, targets.len()) {
            let start = Instant::now();
            targets[i].pull(layers_ref).await;
            pull.runtime(i).push(ms(start.elapsed()));
            targets[i].remove_image(layers_ref).await;
        }
    }
    pull
}

impl Figure {
    /// The samples of target `i` (0 berth, 1 containerd, 2 berth on youki).
    fn runtime(&mut self, i: usize) -> &mut Vec<f64> {
        match i {
            0 => &mut self.berth,
            1 => &mut self.containerd,
            _ => &mut self.youki,
        }
    }
}

/// One CRI endpoint under test.
struct Target {
    name: &'static str,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// The private directory that every process of this runtime names.
    dir: PathBuf,
    pid: u32,
    socket: PathBuf,
    /// Where its Prometheus metrics are served (berth's only).
    metrics: Option<String>,
    cgroup_parent: String,
    logs: PathBuf,
    busybox: String,
    /// The runtime handler its pods ask for ("" for the default).
    handler: &'static str,
}

/// One pod's timings, in milliseconds.
struct Cycle {
    run_pod: f64,
    create: f64,
    start: f64,
    exec: f64,
    teardown: f64,
}

impl Target {
    async fn new(
        name: &'static str,
        socket: &Path,
        dir: &Path,
        pid: Option<u32>,
        cgroups: &common::CgroupTree,
        logs: &Path,
        busybox: &str,
    ) -> Target {
        let channel = berth::daemon::client::connect(socket)
            .await
            .expect("connect to the runtime");
        Target {
            name,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            dir: dir.to_path_buf(),
            pid: pid.expect("the runtime is running"),
            socket: socket.to_path_buf(),
            metrics: None,
            cgroup_parent: format!("/{}/{name}", cgroups.0),
            logs: logs.join(name),
            busybox: busybox.to_string(),
            handler: "",
        }
    }

    /// The same target, its pods on `handler`.
    fn with_handler(mut self, handler: &'static str) -> Target {
        self.handler = handler;
        self
    }

    async fn pull(&mut self, image: &str) {
        self.images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{}: pull {image}: {e}", self.name));
    }

    async fn remove_image(&mut self, image: &str) {
        self.images
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: remove {image}: {e}", self.name));
    }

    /// A pod as the kubelet sends one: its own PID namespace per container.
    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let logs = self.logs.join(name);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-uid"),
                namespace: "berth-bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(container_pid_namespace()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn run_pod(&mut self, name: &str) -> (String, PodSandboxConfig) {
        let config = self.pod_config(name);
        std::fs::create_dir_all(&config.log_directory).expect("create the pod's log directory");
        let id = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: self.handler.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: RunPodSandbox: {e}", self.name))
            .into_inner()
            .pod_sandbox_id;
        (id, config)
    }

    /// CreateContainer then StartContainer of busybox running `args`; returns the id and
    /// how long each call took.
    async fn create_start(
        runtime: &mut RuntimeServiceClient<Channel>,
        image: &str,
        pod: &(String, PodSandboxConfig),
        name: &str,
        args: &[&str],
    ) -> (String, f64, f64) {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: args.iter().map(|a| a.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(container_pid_namespace()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let start = Instant::now();
        let id = runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
            .into_inner()
            .container_id;
        let created = ms(start.elapsed());
        let start = Instant::now();
        runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        (id, created, ms(start.elapsed()))
    }

    async fn teardown(&mut self, pod: &(String, PodSandboxConfig)) {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: StopPodSandbox: {e}", self.name));
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: RemovePodSandbox: {e}", self.name));
    }

    /// One pod through its whole life: run, a `sleep` container, an exec, teardown.
    async fn cycle(&mut self, n: usize) -> Cycle {
        let start = Instant::now();
        let pod = self.run_pod(&format!("cycle-{n}")).await;
        let run_pod = ms(start.elapsed());
        let (id, create, start_container) = Target::create_start(
            &mut self.runtime,
            &self.busybox,
            &pod,
            "sleeper",
            &["sleep", "3600"],
        )
        .await;
        let start = Instant::now();
        let response = self
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id,
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .unwrap_or_else(|e| panic!("{}: ExecSync: {e}", self.name))
            .into_inner();
        let exec = ms(start.elapsed());
        assert_eq!(response.exit_code, 0, "{}: `true` failed", self.name);
        let start = Instant::now();
        self.teardown(&pod).await;
        let teardown = ms(start.elapsed());
        Cycle {
            run_pod,
            create,
            start: start_container,
            exec,
            teardown,
        }
    }

    /// A pod holding `containers` containers that ran `true` (four created at a time).
    async fn populate(&mut self, containers: usize) -> (String, PodSandboxConfig) {
        let pod = self.run_pod("crowded").await;
        let runtime = self.runtime.clone();
        let image = self.busybox.clone();
        futures_util::stream::iter(0..containers)
            .map(|i| {
                let mut runtime = runtime.clone();
                let (image, pod) = (image.clone(), pod.clone());
                async move {
                    Target::create_start(&mut runtime, &image, &pod, &format!("c{i}"), &["true"])
                        .await
                }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        pod
    }

    /// Times ListContainers and ListPodSandbox (all of them, no filter).
    async fn list(&mut self, containers: usize) -> (f64, f64) {
        let start = Instant::now();
        let listed = self
            .runtime
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap_or_else(|e| panic!("{}: ListContainers: {e}", self.name))
            .into_inner()
            .containers
            .len();
        let list_containers = ms(start.elapsed());
        assert_eq!(listed, containers, "{}: containers listed", self.name);
        let start = Instant::now();
        let pods = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .unwrap_or_else(|e| panic!("{}: ListPodSandbox: {e}", self.name))
            .into_inner()
            .items
            .len();
        let list_pods = ms(start.elapsed());
        assert_eq!(pods, 1, "{}: pods listed", self.name);
        (list_containers, list_pods)
    }
}

fn container_pid_namespace() -> NamespaceOption {
    NamespaceOption {
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    }
}

/// busybox plus [`PULL_LAYERS`] layers of incompressible bytes.
fn layered_image() -> TestImage {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut layers = vec![LayerBuilder::new().busybox().build(Compression::Gzip)];
    for layer in 0..PULL_LAYERS {
        let data: Vec<u8> = (0..PULL_LAYER_BYTES / 8)
            .flat_map(|_| {
                // xorshift64: cheap bytes gzip cannot shrink.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()
            })
            .collect();
        layers.push(
            LayerBuilder::new()
                .file(&format!("data-{layer}"), &data, 0o644)
                .build(Compression::Gzip),
        );
    }
    TestImage::new(layers, ImageConfig::default())
}

/// The order of the `count` targets in round `n`: each goes first in turn.
fn turns(n: usize, count: usize) -> Vec<usize> {
    (0..count).map(|i| (n + i) % count).collect()
}

/// An idle gap before each measured cycle, so that what one runtime does in the
/// background after a teardown (a shim exiting, garbage collection) is not counted in the
/// next one's figures.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The date, the machine, and the counts, for the report.
fn machine(full: bool, counts: &Counts) -> serde_json::Value {
    let text = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        })
        .unwrap_or(0);
    let machine = format!(
        "{cpus} CPUs, {} GiB, Linux {}, {}, {}, containerd {}",
        memory >> 20,
        text("uname", &["-r"]),
        text("runc", &["--version"])
            .lines()
            .next()
            .unwrap_or_default(),
        text("youki", &["--version"])
            .lines()
            .next()
            .unwrap_or_default(),
        text("containerd", &["--version"])
            .split_whitespace()
            .nth(2)
            .unwrap_or_default(),
    );
    json!({
        "date": text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "machine": machine,
        "mode": if full { "full" } else { "smoke" },
        "rounds": counts.rounds,
        "list_containers": counts.list_containers,
        "pulls": counts.pulls,
        "parallel_pods": counts.parallel_pods,
        "in_flight": counts.in_flight,
        "dense_pods": counts.dense_pods,
        "polling_pods": counts.polling_pods,
        "polling_seconds": counts.polling_seconds,
        "restarts": counts.restarts,
        "big_pulls": counts.big_pulls,
        "only": std::env::var("BERTH_BENCH_ONLY").ok(),
    })
}

/// VmRSS of a process, in kB (0 once it is gone).
fn rss_kb(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Pss of a process, in kB (0 once it is gone).
fn pss_kb(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn proc_field(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The processes (other than this one) whose command line names `dir`.
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own && berth::oci::process_running(pid as i32))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}
