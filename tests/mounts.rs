//! Mounts as the conformance suite and the kubelet use them: propagation between the host
//! and a container both ways under a Bidirectional volume, one way under a HostToContainer
//! one, and a group without a user refused before anything is made.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use berth::proto::{
    ContainerConfig, ExecSyncRequest, Int64Value, LinuxContainerConfig,
    LinuxContainerSecurityContext, ListContainersRequest, Mount, MountPropagation,
};
use common::world::{World, container, world};

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

async fn exec(w: &mut World, id: &str, script: &str) -> String {
    let r = w
        .client
        .exec_sync(ExecSyncRequest {
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

/// Mounts `source` on `target` on the host, and checks the container sees it at the same
/// path.
async fn host_mount_is_seen(w: &mut World, id: &str, source: &Path, target: &Path) {
    std::fs::create_dir_all(target).unwrap();
    sh(&format!(
        "mount --bind {} {}",
        source.display(),
        target.display()
    ));
    let listed = exec(w, id, &format!("ls -A {}", target.display())).await;
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
    exec(
        &mut w,
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
    exec(
        &mut w,
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
            config: Some(config.clone()),
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
