//! A daemon with a busybox image (built from busybox-static, served by a real registry)
//! pulled and one ready pod whose logs go to a temporary directory: the world the
//! container tests run in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::proto::runtime_service_client::RuntimeServiceClient;
use berth::proto::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    ContainerStatusResponse, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

use super::images::{Compression, ImageConfig, LayerBuilder, TestImage};
use super::registry::Registry;
use super::{Daemon, Setup, wait_for};

pub struct World {
    pub registry: Registry,
    pub daemon: Daemon,
    pub client: RuntimeServiceClient<Channel>,
    pub logs: tempfile::TempDir,
    pub sandbox: String,
}

pub async fn world() -> World {
    world_with("").await
}

/// A registry serving the test busybox as `docker.io/library/busybox:<tag>`, and a
/// daemon (with `extra` TOML in its config, before the registries) whose docker.io
/// mirror it is.
pub async fn busybox_mirror(tag: &str, extra: &str) -> (Registry, Daemon) {
    let registry = Registry::start().await;
    let image = TestImage::new(
        vec![LayerBuilder::new().busybox().build(Compression::Gzip)],
        ImageConfig {
            cmd: vec!["sh".into()],
            ..ImageConfig::default()
        },
    );
    registry.push("library/busybox", tag, &image).await;
    let daemon = Setup::new()
        .toml(&format!(
            "{extra}\n[registries.\"docker.io\"]\nmirrors = [\"{}\"]\nserver = \"http://127.0.0.1:9\"",
            registry.url()
        ))
        .start()
        .await;
    (registry, daemon)
}

/// Pulls busybox (from the test registry `busybox_mirror` set up) into `daemon`.
pub async fn pull_busybox(daemon: &Daemon) {
    daemon
        .images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull busybox");
}

/// The same world, with `extra` TOML in the daemon's config (before the registries).
pub async fn world_with(extra: &str) -> World {
    let (registry, daemon) = busybox_mirror("latest", extra).await;
    pull_busybox(&daemon).await;
    let logs = tempfile::tempdir().unwrap();
    let mut client = daemon.runtime().await;
    let mut config = pod_config("ctr-pod", "/berth-test");
    config.hostname = "ctr-pod".into();
    config.log_directory = logs.path().display().to_string();
    let sandbox = run_pod(&mut client, config).await;
    World {
        registry,
        daemon,
        client,
        logs,
        sandbox,
    }
}

/// A test pod `name` in namespace berth-test, under `cgroup_parent` when not empty.
pub fn pod_config(name: &str, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "berth-test".into(),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A test pod under `cgroup_parent` with these namespace options, its logs under `logs`.
pub fn pod_with_namespaces(
    logs: &Path,
    name: &str,
    cgroup_parent: &str,
    namespaces: berth::proto::NamespaceOption,
) -> PodSandboxConfig {
    let mut config = pod_config(name, cgroup_parent);
    config.log_directory = logs.display().to_string();
    config.linux = Some(LinuxPodSandboxConfig {
        cgroup_parent: cgroup_parent.into(),
        security_context: Some(berth::proto::LinuxSandboxSecurityContext {
            namespace_options: Some(namespaces),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// Runs a pod; returns its id.
pub async fn run_pod(
    client: &mut RuntimeServiceClient<Channel>,
    config: PodSandboxConfig,
) -> String {
    client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id
}

/// Stops and removes a pod.
pub async fn remove_pod(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("stop pod");
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("remove pod");
}

pub fn container(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// An interactive busybox `/bin/sh` reading its stdin: on a terminal with `tty`; its
/// stdin closed when the first attached client lets go with `stdin_once`.
pub fn shell(name: &str, tty: bool, stdin_once: bool) -> ContainerConfig {
    ContainerConfig {
        command: vec!["/bin/sh".into()],
        tty,
        stdin: true,
        stdin_once,
        ..container(name, "")
    }
}

/// Under youki (`BERTH_TEST_RUNTIME=youki`), which cannot join a PID namespace, a
/// container that names none gets one of its own, as the kubelet asks for every container
/// of a pod that does not share its processes.
pub fn for_the_runtime(mut config: ContainerConfig) -> ContainerConfig {
    if std::env::var("BERTH_TEST_RUNTIME").as_deref() == Ok("youki") {
        let security = config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default();
        security
            .namespace_options
            .get_or_insert_with(|| berth::proto::NamespaceOption {
                pid: berth::proto::NamespaceMode::Container as i32,
                ..Default::default()
            });
    }
    config
}

impl World {
    pub async fn create(&mut self, config: ContainerConfig) -> String {
        let config = for_the_runtime(config);
        self.client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.sandbox.clone(),
                config: Some(config),
                sandbox_config: None,
            })
            .await
            .expect("create container")
            .into_inner()
            .container_id
    }

    pub async fn start(&mut self, id: &str) {
        self.try_start(id).await.expect("start container");
    }

    /// StartContainer, for starts that may fail.
    pub async fn try_start(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.client
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(drop)
    }

    pub async fn status(&mut self, id: &str) -> ContainerStatusResponse {
        self.client
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("container status")
            .into_inner()
    }

    pub async fn wait_exited(&mut self, id: &str) -> ContainerStatusResponse {
        let client = self.client.clone();
        wait_for("the container to exit", Duration::from_secs(20), || {
            let mut client = client.clone();
            let id = id.to_string();
            async move {
                let s = client
                    .container_status(ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .ok()?
                    .into_inner();
                (s.status.as_ref()?.state == ContainerState::ContainerExited as i32).then_some(s)
            }
        })
        .await
    }

    /// The exit code and stderr of `sh -c script` run in container `id` (ExecSync).
    pub async fn sh_exit(&mut self, id: &str, script: &str) -> (i32, String) {
        let r = self
            .client
            .exec_sync(berth::proto::ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                timeout: 10,
            })
            .await
            .expect("exec")
            .into_inner();
        (r.exit_code, String::from_utf8_lossy(&r.stderr).into_owned())
    }

    /// The stdout of `sh -c script` run in container `id`, which must succeed.
    pub async fn sh(&mut self, id: &str, script: &str) -> String {
        let r = self
            .client
            .exec_sync(berth::proto::ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                timeout: 10,
            })
            .await
            .expect("exec")
            .into_inner();
        assert_eq!(
            r.exit_code,
            0,
            "{script}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.path().join(name).join("0.log")
    }
}

/// (stream, tag, text) of each record of a CRI log file.
pub fn records(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let record = berth::logs::parse_record(line.as_bytes())
                .unwrap_or_else(|| panic!("not a CRI log line: {line:?}"));
            (
                record.stream.as_str().to_string(),
                record.tag.as_str().to_string(),
                String::from_utf8_lossy(record.content).into_owned(),
            )
        })
        .collect()
}
