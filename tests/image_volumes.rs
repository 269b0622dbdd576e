//! Image volumes (KEP-4639: `Mount.image`, `image_sub_path`) as the kubelet sends them: an
//! image's filesystem mounted read-only and `noexec` in a container, whole or a directory
//! of it, mounted once per pod for all its containers that name it; what cannot be
//! mounted refused naming the field; the image not removable while a container mounts
//! it, and named by id in the container's status; nothing left once the pod is gone.

mod common;

use berth::proto::{
    ContainerConfig, ContainerStatusRequest, CreateContainerRequest, ImageSpec, ImageStatusRequest,
    ListContainersRequest, Mount, PullImageRequest, RemoveImageRequest,
};
use common::images::{Compression, ImageConfig, LayerBuilder, TestImage};
use common::world::{World, container, remove_pod, world};

/// An image of two layers (an overlay) with a directory, a file and an executable.
async fn data_image(w: &World) {
    let image = TestImage::new(
        vec![
            LayerBuilder::new()
                .dir("share", 0o755)
                .file("share/hello.txt", b"hello from the image\n", 0o644)
                .build(Compression::Gzip),
            LayerBuilder::new()
                .file("top.txt", b"top layer\n", 0o644)
                .file("share/tool", b"#!/bin/sh\necho ran\n", 0o755)
                .build(Compression::Gzip),
        ],
        ImageConfig::default(),
    );
    w.registry.push("library/data", "1", &image).await;
    let mut images = w.daemon.images().await;
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "data:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull data:1");
}

fn image_mount(at: &str, image: &str, sub_path: &str) -> Mount {
    Mount {
        container_path: at.into(),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

fn with_mounts(name: &str, mounts: Vec<Mount>) -> ContainerConfig {
    ContainerConfig {
        mounts,
        ..container(name, "sleep 3600")
    }
}

/// What image volumes could leave: a mount under the daemon's directories, a container
/// directory with its mounted images.
fn no_volume_left(w: &World) {
    let mounts = common::leaks::mounts_under(w.daemon.setup.dir());
    assert!(mounts.is_empty(), "{mounts:?}");
    let dirs = common::leaks::entries(&w.daemon.paths().root.join("containers"));
    assert!(dirs.is_empty(), "{dirs:?}");
}

#[tokio::test]
async fn an_image_volume_is_read_only_noexec_whole_or_a_sub_path() {
    let mut w = world().await;
    data_image(&w).await;
    let id = w
        .create(with_mounts(
            "reader",
            vec![
                image_mount("/data", "data:1", ""),
                image_mount("/share", "data:1", "share"),
                // A one-layer image (busybox), a directory of it.
                image_mount("/tools", "busybox", "bin"),
            ],
        ))
        .await;
    w.start(&id).await;

    let seen = w
        .sh(
            &id,
            "cat /data/top.txt /data/share/hello.txt /share/hello.txt",
        )
        .await;
    assert_eq!(
        seen,
        "top layer\nhello from the image\nhello from the image\n"
    );
    assert!(w.sh(&id, "ls /tools").await.contains("busybox"));
    for path in ["/data/new", "/share/new", "/tools/new"] {
        let (code, stderr) = w.sh_exit(&id, &format!("touch {path}")).await;
        assert_ne!(code, 0, "{path} is read-only");
        assert!(stderr.contains("Read-only file system"), "{path}: {stderr}");
    }
    let (code, stderr) = w.sh_exit(&id, "/share/tool").await;
    assert_ne!(code, 0, "nothing runs from an image volume");
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // The status names the images mounted by id, as ListImages does (the kubelet's image
    // GC keeps the images it finds there), and keeps the name they were asked by.
    let status = w
        .client
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let data_id = image_id(&w, "data:1").await;
    let named: Vec<(String, String)> = status
        .mounts
        .iter()
        .filter_map(|m| m.image.as_ref())
        .map(|i| (i.image.clone(), i.user_specified_image.clone()))
        .collect();
    assert_eq!(named.len(), 3, "{named:?}");
    assert_eq!(named[0], (data_id.clone(), "data:1".to_string()));
    assert_eq!(named[2].1, "busybox");
    assert!(named[2].0.starts_with("sha256:"), "{named:?}");

    // Mounted, the image cannot go.
    let err = remove_data(&w).await.expect_err("data:1 is mounted");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&id) && err.message().contains("image volume"),
        "names the container: {}",
        err.message()
    );
    assert_eq!(
        w.sh(&id, "cat /share/hello.txt").await,
        "hello from the image\n"
    );

    // Another container of the pod naming the same image shares the pod's mount of it;
    // the mount stays while one of them is there.
    let pod_images = pod_images(&w);
    let second = w
        .create(with_mounts(
            "second",
            vec![image_mount("/again", "data:1", "share")],
        ))
        .await;
    w.start(&second).await;
    let mounted = || common::leaks::mounts_under(&pod_images);
    assert_eq!(
        mounted().len(),
        2,
        "data:1 and busybox, once each: {:?}",
        mounted()
    );
    remove_container(&mut w, &id).await;
    assert_eq!(
        mounted().len(),
        1,
        "busybox went with its one user: {:?}",
        mounted()
    );
    assert_eq!(
        w.sh(&second, "cat /again/hello.txt").await,
        "hello from the image\n"
    );
    let err = remove_data(&w).await.expect_err("data:1 is still mounted");
    assert!(err.message().contains(&second), "{}", err.message());

    let pod = w.sandbox.clone();
    remove_pod(&mut w.client, &pod).await;
    no_volume_left(&w);
    // Once nothing mounts it, it goes.
    remove_data(&w).await.expect("remove data:1");
    assert!(image_status(&w, "data:1").await.is_none());
}

/// Where the test pod mounts its image volumes.
fn pod_images(w: &World) -> std::path::PathBuf {
    w.daemon
        .paths()
        .state
        .join("sandboxes")
        .join(&w.sandbox)
        .join("images")
}

async fn remove_container(w: &mut World, id: &str) {
    w.client
        .stop_container(berth::proto::StopContainerRequest {
            container_id: id.into(),
            timeout: 0,
        })
        .await
        .unwrap();
    w.client
        .remove_container(berth::proto::RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap();
}

async fn remove_data(
    w: &World,
) -> Result<tonic::Response<berth::proto::RemoveImageResponse>, tonic::Status> {
    w.daemon
        .images()
        .await
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: "data:1".into(),
                ..Default::default()
            }),
        })
        .await
}

async fn image_status(w: &World, name: &str) -> Option<berth::proto::Image> {
    w.daemon
        .images()
        .await
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
}

async fn image_id(w: &World, name: &str) -> String {
    image_status(w, name).await.expect("the image is here").id
}

#[tokio::test]
async fn image_volumes_that_cannot_be_are_refused_by_field() {
    let mut w = world().await;
    data_image(&w).await;
    let cases = [
        (
            image_mount("/v", "data:1", "../etc"),
            tonic::Code::InvalidArgument,
            "config.mounts.image_sub_path",
        ),
        (
            image_mount("/v", "data:1", "/share"),
            tonic::Code::InvalidArgument,
            "config.mounts.image_sub_path",
        ),
        (
            image_mount("/v", "data:1", "not-there"),
            tonic::Code::InvalidArgument,
            "config.mounts.image_sub_path",
        ),
        (
            image_mount("/v", "data:1", "top.txt"),
            tonic::Code::InvalidArgument,
            "config.mounts.image_sub_path",
        ),
        (
            image_mount("/v", "never-pulled:1", ""),
            tonic::Code::NotFound,
            "never-pulled",
        ),
        (
            Mount {
                host_path: "/tmp".into(),
                ..image_mount("/v", "data:1", "")
            },
            tonic::Code::InvalidArgument,
            "config.mounts.host_path",
        ),
    ];
    for (mount, code, named) in cases {
        let what = format!("{mount:?}");
        let err = w
            .client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: w.sandbox.clone(),
                config: Some(common::world::for_the_runtime(with_mounts(
                    "refused",
                    vec![mount],
                ))),
                sandbox_config: None,
            })
            .await
            .expect_err(&what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(named), "{what}: {err:?}");
    }
    let listed = w
        .client
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "nothing was made: {listed:?}");
    let pod = w.sandbox.clone();
    remove_pod(&mut w.client, &pod).await;
    no_volume_left(&w);
}

/// A daemon killed in a CreateContainer after it mounted the pod's image volume but
/// before the container's record: the next daemon finds a mount no record names, and
/// unmounts it before it serves; the one a container names stays. (The leftover is made
/// by hand: a tmpfs where an image volume would be.)
#[tokio::test]
async fn an_image_volume_no_container_names_is_unmounted_at_start_up() {
    let mut w = world().await;
    data_image(&w).await;
    let pod_images = pod_images(&w);
    let id = w
        .create(with_mounts(
            "kept",
            vec![image_mount("/share", "data:1", "share")],
        ))
        .await;
    let named = common::leaks::mounts_under(&pod_images);
    assert_eq!(named.len(), 1, "{named:?}");
    w.daemon.crash().await;
    let leftover = pod_images.join(format!("sha256-{}", "0".repeat(64)));
    std::fs::create_dir_all(&leftover).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "leftover"])
        .arg(&leftover)
        .status()
        .unwrap();
    assert!(mounted.success());
    assert_eq!(common::leaks::mounts_under(&pod_images).len(), 2);
    w.daemon.restart().await;
    let left = common::leaks::mounts_under(&pod_images);
    if left.len() != 1 {
        // Not ours to leave behind, whatever the test says.
        let _ = std::process::Command::new("umount").arg(&leftover).status();
    }
    assert_eq!(left, named, "only the one a container names stays");
    assert!(!leftover.exists());
    w.client = w.daemon.runtime().await;
    w.start(&id).await;
    assert_eq!(
        w.sh(&id, "cat /share/hello.txt").await,
        "hello from the image\n"
    );
    let pod = w.sandbox.clone();
    remove_pod(&mut w.client, &pod).await;
    no_volume_left(&w);
}
