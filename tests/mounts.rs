//! Mounts as the conformance suite and the kubelet use them: propagation between the host
//! and a container both ways under a Bidirectional volume, one way under a HostToContainer
//! one, recursive read-only mounts (KEP-3857) and the combinations refused with them, and a
//! group without a user refused before anything is made.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use berth::proto::{
    ContainerConfig, CreateContainerRequest, Int64Value, LinuxContainerConfig,
    LinuxContainerSecurityContext, ListContainersRequest, Mount, MountPropagation,
    RunPodSandboxRequest, StatusRequest,
};
use common::world::{World, container, pod_config, world, world_with};

/// A host directory bind-mounted on itself and made rshared, as the conformance suite
/// prepares one (a host whose `/` is private, like this one, has no shared mount
/// otherwise); unmounted, with what was mounted under it, when dropped.
struct SharedDir {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SharedDir {
    fn new() -> SharedDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        std::fs::create_dir(&path).unwrap();
        sh(&format!(
            "mount --bind {0} {0} && mount --make-rshared {0}",
            path.display()
        ));
        SharedDir { _dir: dir, path }
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.path).status();
    }
}

fn sh(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}: {status}");
}

fn privileged_with(name: &str, mount: Mount) -> ContainerConfig {
    ContainerConfig {
        mounts: vec![mount],
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..container(name, "sleep 3600")
    }
}

/// Mounts `source` on `target` on the host, and checks the container sees it at the same
/// path.
async fn host_mount_is_seen(w: &mut World, id: &str, source: &Path, target: &Path) {
    std::fs::create_dir_all(target).unwrap();
    sh(&format!(
        "mount --bind {} {}",
        source.display(),
        target.display()
    ));
    let listed = w.sh(id, &format!("ls -A {}", target.display())).await;
    assert!(
        listed.contains("flag"),
        "the host's mount at {} reaches the container: {listed:?}",
        target.display()
    );
}

#[tokio::test]
async fn a_bidirectional_volume_propagates_mounts_both_ways() {
    let mut w = world().await;
    let shared = SharedDir::new();
    let flags = tempfile::tempdir().unwrap();
    std::fs::write(flags.path().join("flag"), "from the host").unwrap();
    let volume = shared.path.display().to_string();
    let id = w
        .create(privileged_with(
            "bidirectional",
            Mount {
                container_path: volume.clone(),
                host_path: volume.clone(),
                propagation: MountPropagation::PropagationBidirectional as i32,
                ..Default::default()
            },
        ))
        .await;
    w.start(&id).await;

    host_mount_is_seen(&mut w, &id, flags.path(), &shared.path.join("from-host")).await;

    // What the container mounts under the volume is on the host.
    let inside = shared.path.join("from-container");
    w.sh(
        &id,
        &format!(
            "mkdir -p {0} && busybox mount --bind /etc {0}",
            inside.display()
        ),
    )
    .await;
    let seen: Vec<_> = std::fs::read_dir(&inside)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        seen.iter().any(|name| name == "passwd"),
        "the container's mount of its /etc reaches the host at {}: {seen:?}",
        inside.display()
    );
}

#[tokio::test]
async fn a_host_to_container_volume_propagates_one_way() {
    let mut w = world().await;
    let shared = SharedDir::new();
    let flags = tempfile::tempdir().unwrap();
    std::fs::write(flags.path().join("flag"), "from the host").unwrap();
    let volume = shared.path.display().to_string();
    let id = w
        .create(privileged_with(
            "host-to-container",
            Mount {
                container_path: volume.clone(),
                host_path: volume.clone(),
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
        ))
        .await;
    w.start(&id).await;

    host_mount_is_seen(&mut w, &id, flags.path(), &shared.path.join("from-host")).await;

    let inside = shared.path.join("from-container");
    w.sh(
        &id,
        &format!(
            "mkdir -p {0} && busybox mount --bind /etc {0} && ls {0}/passwd",
            inside.display()
        ),
    )
    .await;
    let seen = std::fs::read_dir(&inside).unwrap().count();
    assert_eq!(
        seen, 0,
        "the container's own mount stays inside it under a HostToContainer volume"
    );
}

#[tokio::test]
async fn a_group_without_a_user_is_refused_before_anything_is_made() {
    let mut w = world().await;
    let mut config = container("group-only", "id");
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 3000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = w
        .client
        .create_container(berth::proto::CreateContainerRequest {
            pod_sandbox_id: w.sandbox.clone(),
            config: Some(common::world::for_the_runtime(config.clone())),
            sandbox_config: None,
        })
        .await
        .expect_err("a group without a user");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("config.linux.security_context.run_as_group"),
        "the error names the field: {err:?}"
    );
    let listed = w
        .client
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "nothing was made: {listed:?}");

    // With a user, or a user name, the same group is taken.
    for (user, name) in [(Some(Int64Value { value: 1000 }), ""), (None, "app")] {
        let security = config
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .unwrap();
        security.run_as_user = user;
        security.run_as_username = name.into();
        let id = w.create(config.clone()).await;
        w.start(&id).await;
        let status = w.wait_exited(&id).await;
        assert_eq!(status.status.map(|s| s.exit_code), Some(0));
        let log = std::fs::read_to_string(w.log_path("group-only")).unwrap_or_default();
        assert!(log.contains("gid=3000"), "runs with the group: {log}");
        w.client
            .remove_container(berth::proto::RemoveContainerRequest { container_id: id })
            .await
            .unwrap();
    }
}

/// A host directory with a writable tmpfs mounted at `sub/` inside it: what a recursive
/// read-only mount must make read-only too. Unmounted when dropped.
struct VolumeWithSubmount {
    dir: tempfile::TempDir,
}

impl VolumeWithSubmount {
    fn new() -> VolumeWithSubmount {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size=1m berth-rro {}",
            sub.display()
        ));
        VolumeWithSubmount { dir }
    }

    fn mount(&self, readonly: bool, recursive: bool) -> Mount {
        Mount {
            container_path: "/vol".into(),
            host_path: self.dir.path().display().to_string(),
            readonly,
            recursive_read_only: recursive,
            ..Default::default()
        }
    }
}

impl Drop for VolumeWithSubmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(self.dir.path().join("sub"))
            .status();
    }
}

fn with_mount(name: &str, mount: Mount) -> ContainerConfig {
    ContainerConfig {
        mounts: vec![mount],
        ..container(name, "sleep 3600")
    }
}

#[tokio::test]
async fn the_runtime_announces_recursive_read_only_mounts_from_its_probe() {
    let mut w = world().await;
    let status = w
        .client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let handlers: Vec<_> = status
        .runtime_handlers
        .iter()
        .map(|h| (h.name.as_str(), h.features.unwrap_or_default()))
        .collect();
    assert_eq!(handlers.first().map(|h| h.0), Some(""), "{handlers:?}");
    // runc lists rro among its mount options (`runc features`) and the kernel has
    // mount_setattr: every handler here is runc.
    for (name, features) in &handlers {
        assert!(
            features.recursive_read_only_mounts,
            "handler {name:?}: {handlers:?}"
        );
    }
}

#[tokio::test]
async fn a_recursive_read_only_mount_is_read_only_all_the_way_down() {
    let mut w = world().await;
    let volume = VolumeWithSubmount::new();

    let id = w.create(with_mount("rro", volume.mount(true, true))).await;
    w.start(&id).await;
    for path in ["/vol/top", "/vol/sub/below"] {
        let (code, stderr) = w.sh_exit(&id, &format!("touch {path}")).await;
        assert_ne!(
            code, 0,
            "{path} is read-only under a recursive read-only mount"
        );
        assert!(stderr.contains("Read-only file system"), "{path}: {stderr}");
    }

    // Read-only alone makes only the top read-only, as it always has.
    let id = w.create(with_mount("ro", volume.mount(true, false))).await;
    w.start(&id).await;
    let (code, _) = w.sh_exit(&id, "touch /vol/top").await;
    assert_ne!(code, 0, "the top of a read-only mount is read-only");
    let (code, stderr) = w.sh_exit(&id, "touch /vol/sub/below").await;
    assert_eq!(code, 0, "what is mounted below stays writable: {stderr}");
    assert!(volume.dir.path().join("sub/below").exists());
}

#[tokio::test]
async fn recursive_read_only_mounts_that_cannot_be_are_refused_by_field() {
    let mut w = world().await;
    let volume = VolumeWithSubmount::new();
    let writable = volume.mount(false, true);
    let bidirectional = Mount {
        propagation: MountPropagation::PropagationBidirectional as i32,
        ..volume.mount(true, true)
    };
    let host_to_container = Mount {
        propagation: MountPropagation::PropagationHostToContainer as i32,
        ..volume.mount(true, true)
    };
    for (what, mount) in [
        ("not read-only", writable),
        ("bidirectional", bidirectional),
        ("host-to-container", host_to_container),
    ] {
        let err = w
            .client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: w.sandbox.clone(),
                config: Some(common::world::for_the_runtime(with_mount("refused", mount))),
                sandbox_config: None,
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains("config.mounts.recursive_read_only"),
            "{what}: {err:?}"
        );
    }
    let listed = w
        .client
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "nothing was made: {listed:?}");
}

#[tokio::test]
async fn a_handler_without_recursive_read_only_mounts_refuses_them() {
    // runc behind a wrapper whose features document lists no rro, and that fails the
    // daemon's test mount: a runtime that would mount the volume with what is below it
    // writable.
    let bin = tempfile::tempdir().unwrap();
    let wrapper = bin.path().join("plain-runc");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ncase \"$*\" in *berth-rro-probe*) [ \"$3\" = create ] && exit 1;; esac\nif [ \"$1\" = features ]; then\n  echo '{\"ociVersionMin\":\"1.0.0\",\"ociVersionMax\":\"1.0.2\",\"mountOptions\":[\"ro\",\"rbind\"]}'\n  exit 0\nfi\nexec runc \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut w = world_with(&format!(
        "[runtime.handlers.plain]\npath = {:?}",
        wrapper.display().to_string()
    ))
    .await;
    let status = w
        .client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let plain = status
        .runtime_handlers
        .iter()
        .find(|h| h.name == "plain")
        .and_then(|h| h.features)
        .expect("the plain handler is announced");
    assert!(!plain.recursive_read_only_mounts, "{plain:?}");

    let mut config = pod_config("plain-pod", "/berth-test");
    config.log_directory = w.logs.path().display().to_string();
    let pod = w
        .client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: "plain".into(),
        })
        .await
        .expect("a pod on the plain handler")
        .into_inner()
        .pod_sandbox_id;
    let volume = VolumeWithSubmount::new();
    let err = w
        .client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(with_mount("rro", volume.mount(true, true))),
            sandbox_config: None,
        })
        .await
        .expect_err("no rro on this handler");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("config.mounts.recursive_read_only")
            && err.message().contains("plain"),
        "names the field and the handler: {err:?}"
    );
    // A plain read-only mount is still taken there.
    let id = w
        .client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(with_mount("ro", volume.mount(true, false))),
            sandbox_config: None,
        })
        .await
        .expect("a read-only mount")
        .into_inner()
        .container_id;
    w.client
        .remove_container(berth::proto::RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    common::world::remove_pod(&mut w.client, &pod).await;
}
