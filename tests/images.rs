//! The ImageService against a real registry (Debian's docker-registry) with images the
//! tests build from busybox-static: pulls through mirrors and from insecure registries,
//! every layer format, indexes, authentication, corruption, concurrency, removal, the
//! image filesystem, import, and crashes mid-pull.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth::proto::image_service_client::ImageServiceClient;
use berth::proto::{
    AuthConfig, FilesystemUsage, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest,
    ImageStatusResponse, ListImagesRequest, PullImageRequest, RemoveImageRequest,
};
use common::images::{
    Compression, ImageConfig, Layer, LayerBuilder, TestImage, TestIndex, oci_layout_dir,
    oci_layout_tar,
};
use common::registry::{Registry, RegistryOptions};
use common::{Daemon, Setup, wait_for};
use tonic::transport::Channel;

/// A busybox image: a base layer, and a second with a whiteout, an opaque directory, a
/// hard link, a setuid file, an owned file and an xattr.
fn busybox_image(compression: Compression, user: &str) -> TestImage {
    let base = LayerBuilder::new()
        .busybox()
        .dir("var/cache/old", 0o755)
        .file("var/cache/old/stale", b"stale", 0o644)
        .file("etc/motd", b"welcome", 0o644)
        .build(compression);
    let top = LayerBuilder::new()
        .whiteout("etc/motd")
        .opaque("var/cache")
        .file("var/cache/fresh", b"fresh", 0o644)
        .file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
        .hardlink("usr/bin/tool-link", "usr/bin/tool")
        .file("usr/bin/su-ish", b"setuid", 0o4755)
        .file_owned("home/app/data", b"mine", 0o640, 1000, 1000)
        .xattr("usr/bin/tool", "user.berth", b"yes")
        .build(compression);
    let config = ImageConfig {
        user: user.to_string(),
        ..ImageConfig::default()
    };
    TestImage::new(vec![base, top], config)
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn pull(
    client: &mut ImageServiceClient<Channel>,
    image: &str,
) -> Result<String, tonic::Status> {
    pull_with(client, image, None).await
}

async fn pull_with(
    client: &mut ImageServiceClient<Channel>,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    client
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(
    client: &mut ImageServiceClient<Channel>,
    image: &str,
    verbose: bool,
) -> ImageStatusResponse {
    client
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
}

/// Where docker.io's own endpoint points in tests: a closed loopback port, so that a
/// pull the mirror cannot serve never leaves this machine.
const NO_UPSTREAM: &str = "http://127.0.0.1:9";

/// A daemon whose docker.io mirror is the registry (plain HTTP).
async fn daemon_mirroring(registry: &Registry) -> Daemon {
    Setup::new()
        .toml(&format!(
            "[registries.\"docker.io\"]\nmirrors = [\"{}\"]\nserver = \"{NO_UPSTREAM}\"",
            registry.url()
        ))
        .start()
        .await
}

/// The unpacked layer directories ImageStatus verbose reports.
fn layer_paths(status: &ImageStatusResponse) -> Vec<PathBuf> {
    let info: serde_json::Value =
        serde_json::from_str(&status.info["info"]).expect("verbose info is JSON");
    info["layerPaths"]
        .as_array()
        .expect("layerPaths")
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

/// Entries under `dir`, recursively.
fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    1 + if e.path().is_dir() {
                        entries(&e.path())
                    } else {
                        0
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A daemon that pulled busybox (`busybox_image(Gzip, "app")`) through its docker.io
/// mirror. Tests bind it whole: a pattern that left its daemon out would drop it at once.
struct Mirrored {
    daemon: Daemon,
    _registry: Registry,
    image: TestImage,
    client: ImageServiceClient<Channel>,
    /// What PullImage answered.
    image_ref: String,
}

async fn pulled_through_a_mirror() -> Mirrored {
    let registry = Registry::start().await;
    let image = busybox_image(Compression::Gzip, "app");
    registry.push("library/busybox", "latest", &image).await;
    let daemon = daemon_mirroring(&registry).await;
    let mut client = daemon.images().await;
    let image_ref = pull(&mut client, "busybox").await.expect("pull busybox");
    Mirrored {
        daemon,
        _registry: registry,
        image,
        client,
        image_ref,
    }
}

#[tokio::test]
async fn a_pull_through_a_mirror_answers_the_config_digest_and_the_status_reports_the_image() {
    let mut m = pulled_through_a_mirror().await;
    let (image, client) = (&m.image, &mut m.client);
    assert_eq!(
        m.image_ref, image.config_digest,
        "image_ref is the config digest"
    );

    let s = status(client, "busybox", true).await;
    let img = s.image.as_ref().expect("the image is present");
    assert_eq!(img.id, image.config_digest);
    assert_eq!(img.repo_tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(
        img.repo_digests,
        [format!(
            "docker.io/library/busybox@{}",
            image.manifest_digest
        )]
    );
    let expected_size: u64 =
        image.layers.iter().map(|l| l.size).sum::<u64>() + image.config.len() as u64;
    assert_eq!(img.size, expected_size);
    assert_eq!((img.uid, img.username.as_str()), (None, "app"));
    assert_eq!(img.spec.as_ref().unwrap().image, image.config_digest);
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["User"], "app");
}

#[tokio::test]
async fn a_pulled_image_is_found_by_every_name_the_kubelet_uses_and_not_by_another_tag() {
    let mut m = pulled_through_a_mirror().await;
    let (image, client) = (&m.image, &mut m.client);
    for name in [
        "docker.io/library/busybox:latest",
        "library/busybox",
        &image.config_digest,
        &image.config_digest["sha256:".len()..],
        &format!("busybox@{}", image.manifest_digest),
    ] {
        let found = status(client, name, false).await.image.map(|i| i.id);
        assert_eq!(
            found.as_deref(),
            Some(image.config_digest.as_str()),
            "{name}"
        );
    }
    assert!(status(client, "busybox:other", false).await.image.is_none());
}

/// The layers as overlayfs needs them: a whiteout is a 0/0 character device, an opaque
/// directory has its xattr; hard links, setuid bits, owners and xattrs are kept.
#[tokio::test]
async fn pulled_layers_are_unpacked_as_overlayfs_needs_them() {
    let mut m = pulled_through_a_mirror().await;
    let layers = layer_paths(&status(&mut m.client, "busybox", true).await);
    assert_eq!(layers.len(), 2);
    let (base, top) = (&layers[0], &layers[1]);
    assert!(base.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(base.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let motd = std::fs::symlink_metadata(top.join("etc/motd")).unwrap();
    assert!(
        motd.file_type().is_char_device() && motd.rdev() == 0,
        "whiteout"
    );
    assert_eq!(
        xattr::get(top.join("var/cache"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    let tool = std::fs::metadata(top.join("usr/bin/tool")).unwrap();
    assert_eq!(
        tool.ino(),
        std::fs::metadata(top.join("usr/bin/tool-link"))
            .unwrap()
            .ino()
    );
    assert_eq!(
        xattr::get(top.join("usr/bin/tool"), "user.berth")
            .unwrap()
            .as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        std::fs::metadata(top.join("usr/bin/su-ish"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
    let data = std::fs::metadata(top.join("home/app/data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o777),
        (1000, 1000, 0o640)
    );
}

#[tokio::test]
async fn list_images_lists_all_or_those_a_filter_names() {
    let mut m = pulled_through_a_mirror().await;
    let client = &mut m.client;
    let all = client
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.images.len(), 1);
    let filtered = client
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec("busybox:latest"),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.images.len(), 1);
    let none = client
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec("nginx"),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.images.is_empty());
}

#[tokio::test]
async fn a_pull_is_logged_with_its_figures() {
    let m = pulled_through_a_mirror().await;
    let log = m.daemon.log();
    assert!(
        log.contains("pulled") && log.contains("bytes_fetched") && log.contains("ms="),
        "{log}"
    );
}

/// A Docker schema 2 image with one gzip layer.
fn docker_image() -> TestImage {
    TestImage::docker(
        vec![
            LayerBuilder::new()
                .busybox()
                .file("docker", b"d", 0o644)
                .build(Compression::Gzip),
        ],
        ImageConfig::default(),
    )
}

/// An image for linux/arm64 only.
fn arm_image() -> TestImage {
    TestImage::new(
        vec![
            LayerBuilder::new()
                .file("arm", b"arm", 0o644)
                .build(Compression::Gzip),
        ],
        ImageConfig {
            architecture: "arm64".into(),
            ..ImageConfig::default()
        },
    )
}

/// A daemon for which `registry` is insecure (plain HTTP).
async fn daemon_trusting(registry: &Registry) -> Daemon {
    Setup::new()
        .toml(&format!(
            "[registries.\"{}\"]\ninsecure = true",
            registry.host()
        ))
        .start()
        .await
}

#[tokio::test]
async fn zstd_uncompressed_and_docker_layers_pull_from_an_insecure_registry() {
    let registry = Registry::start().await;
    let host = registry.host();
    let zstd = busybox_image(Compression::Zstd, "1000:1000");
    let plain = busybox_image(Compression::None, "");
    let docker = docker_image();
    registry.push("t/zstd", "v1", &zstd).await;
    registry.push("t/plain", "v1", &plain).await;
    registry.push("t/docker", "v1", &docker).await;
    let daemon = daemon_trusting(&registry).await;
    let mut client = daemon.images().await;
    assert_eq!(
        pull(&mut client, &format!("{host}/t/zstd:v1"))
            .await
            .unwrap(),
        zstd.config_digest
    );
    assert_eq!(
        pull(&mut client, &format!("{host}/t/plain:v1"))
            .await
            .unwrap(),
        plain.config_digest
    );
    assert_eq!(
        pull(&mut client, &format!("{host}/t/docker:v1"))
            .await
            .unwrap(),
        docker.config_digest
    );
    let user = status(&mut client, &format!("{host}/t/zstd:v1"), false)
        .await
        .image
        .unwrap();
    assert_eq!(
        (user.uid.map(|u| u.value), user.username.as_str()),
        (Some(1000), "")
    );
}

/// An OCI index and a Docker manifest list resolve to linux/amd64; the index's digest is
/// a repo digest of the image, whose tags accumulate.
#[tokio::test]
async fn an_index_or_a_manifest_list_resolves_to_linux_amd64() {
    let registry = Registry::start().await;
    let host = registry.host();
    let zstd = busybox_image(Compression::Zstd, "1000:1000");
    let (docker, arm) = (docker_image(), arm_image());
    registry.push("t/zstd", "v1", &zstd).await;
    let index = TestIndex::new(&[(&arm, "arm64"), (&zstd, "amd64")]);
    registry
        .push_index("t/multi", "v1", &index, &[&arm, &zstd])
        .await;
    let list = TestIndex::docker(&[(&docker, "amd64"), (&arm, "arm64")]);
    registry
        .push_index("t/list", "v1", &list, &[&docker, &arm])
        .await;
    let daemon = daemon_trusting(&registry).await;
    let mut client = daemon.images().await;
    pull(&mut client, &format!("{host}/t/zstd:v1"))
        .await
        .expect("pull t/zstd:v1");

    assert_eq!(
        pull(&mut client, &format!("{host}/t/multi:v1"))
            .await
            .unwrap(),
        zstd.config_digest
    );
    let img = status(&mut client, &format!("{host}/t/multi:v1"), false)
        .await
        .image
        .unwrap();
    assert!(
        img.repo_digests
            .contains(&format!("{host}/t/multi@{}", index.digest)),
        "{:?}",
        img.repo_digests
    );
    assert!(
        img.repo_tags.contains(&format!("{host}/t/zstd:v1")),
        "tags accumulate"
    );
    assert_eq!(
        pull(&mut client, &format!("{host}/t/list:v1"))
            .await
            .unwrap(),
        docker.config_digest
    );
}

#[tokio::test]
async fn an_image_for_another_architecture_only_is_refused_naming_it() {
    let registry = Registry::start().await;
    let host = registry.host();
    registry.push("t/arm-only", "v1", &arm_image()).await;
    let daemon = daemon_trusting(&registry).await;
    let err = pull(&mut daemon.images().await, &format!("{host}/t/arm-only:v1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("arm64"), "{}", err.message());
}

/// By digest, and by tag and digest together: the tag names the image.
#[tokio::test]
async fn a_pull_by_digest_or_by_tag_and_digest_gets_the_manifest_the_digest_names() {
    let registry = Registry::start().await;
    let host = registry.host();
    let plain = busybox_image(Compression::None, "");
    registry.push("t/plain", "v1", &plain).await;
    let daemon = daemon_trusting(&registry).await;
    let mut client = daemon.images().await;
    let by_digest = format!("{host}/t/plain@{}", plain.manifest_digest);
    assert_eq!(
        pull(&mut client, &by_digest).await.unwrap(),
        plain.config_digest
    );
    let both = format!("{host}/t/plain:v2@{}", plain.manifest_digest);
    assert_eq!(pull(&mut client, &both).await.unwrap(), plain.config_digest);
    let img = status(&mut client, &plain.config_digest, false)
        .await
        .image
        .unwrap();
    assert!(
        img.repo_tags.contains(&format!("{host}/t/plain:v2")),
        "{:?}",
        img.repo_tags
    );
}

/// A plain HTTP registry not configured `insecure` is refused over HTTPS, naming the
/// registry.
#[tokio::test]
async fn a_registry_not_configured_insecure_is_refused_over_https() {
    let registry = Registry::start().await;
    let host = registry.host();
    registry
        .push(
            "t/zstd",
            "v1",
            &busybox_image(Compression::Zstd, "1000:1000"),
        )
        .await;
    let strict = Setup::new().start().await;
    let err = pull(&mut strict.images().await, &format!("{host}/t/zstd:v1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&host), "{}", err.message());
}

#[tokio::test]
async fn bad_references_unknown_images_and_unreachable_registries() {
    let registry = Registry::start().await;
    let daemon = daemon_mirroring(&registry).await;
    let mut client = daemon.images().await;
    for bad in ["Busybox", "busybox:", "busybox@sha256:123", "a//b"] {
        let err = pull(&mut client, bad).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains(bad), "{}", err.message());
    }
    let err = pull(&mut client, "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Not on the mirror; docker.io's own endpoint (here a closed port) decides the code,
    // and the message names both.
    let err = pull(&mut client, "not-mirrored").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("mirror") && err.message().contains("registry docker.io"),
        "{}",
        err.message()
    );
    let err = pull(&mut client, "127.0.0.1:1/nothing:v1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("127.0.0.1:1"), "{}", err.message());

    let host = registry.host();
    let insecure = Setup::new()
        .toml(&format!("[registries.\"{host}\"]\ninsecure = true"))
        .start()
        .await;
    let err = pull(&mut insecure.images().await, &format!("{host}/no/such:v1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // ImageStatus of an unknown image is no image, not an error (api.proto).
    assert!(
        status(&mut client, "never/pulled", false)
            .await
            .image
            .is_none()
    );
}

#[tokio::test]
async fn basic_auth_over_tls() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("berth".into(), "s3cret".into())),
        tls: true,
        ..Default::default()
    })
    .await;
    let image = busybox_image(Compression::Gzip, "");
    registry.push("private/app", "v1", &image).await;
    let host = registry.host();
    let daemon = Setup::new()
        .toml(&format!("[registries.\"{host}\"]\ninsecure = true"))
        .start()
        .await;
    let mut client = daemon.images().await;
    let name = format!("{host}/private/app:v1");

    let err = pull(&mut client, &name).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("needs credentials"),
        "{}",
        err.message()
    );

    let wrong = AuthConfig {
        username: "berth".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = pull_with(&mut client, &name, Some(wrong))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("credentials were refused"),
        "{}",
        err.message()
    );
    assert!(status(&mut client, &name, false).await.image.is_none());

    let right = AuthConfig {
        username: "berth".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(
        pull_with(&mut client, &name, Some(right)).await.unwrap(),
        image.config_digest
    );

    // The `auth` field (base64 user:password), as the kubelet sends pull secrets.
    use base64::Engine as _;
    let encoded = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("berth:s3cret"),
        ..Default::default()
    };
    let fresh = Setup::new()
        .toml(&format!("[registries.\"{host}\"]\ninsecure = true"))
        .start()
        .await;
    assert_eq!(
        pull_with(&mut fresh.images().await, &name, Some(encoded))
            .await
            .unwrap(),
        image.config_digest
    );
}

#[tokio::test]
async fn a_corrupt_blob_fails_the_pull_and_stores_nothing() {
    let registry = Registry::start().await;
    let image = busybox_image(Compression::Gzip, "");
    registry.push("library/busybox", "latest", &image).await;
    // Overwrite the top layer's data in the registry's storage: same size, other bytes.
    let top = &image.layers[1];
    let data = registry.blob_path(&top.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let daemon = daemon_mirroring(&registry).await;
    let mut client = daemon.images().await;
    let err = pull(&mut client, "busybox").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(err.message().contains(&top.digest), "{}", err.message());
    assert!(status(&mut client, "busybox", false).await.image.is_none());
    let images = daemon.paths().root.join("images");
    let layers = images.join("layers/sha256");
    assert!(
        !layers.join(&top.diff_id["sha256:".len()..]).exists(),
        "no layer from the bad blob"
    );
    // The other layer's fetch runs on to the end as its own task; then tmp is empty.
    let tmp = images.join("tmp");
    wait_for("no leftovers in tmp", Duration::from_secs(10), || async {
        (entries(&tmp) == 0).then_some(())
    })
    .await;
    assert!(
        layers
            .join(&image.layers[0].diff_id["sha256:".len()..])
            .is_dir()
    );
}

/// A mirror that serves other bytes for a layer (here from the first byte, so that its
/// unpacking fails long before the download ends) does not fail the pull: the bytes do
/// not match their digest, and the next endpoint, the registry itself, serves the layer.
#[tokio::test]
async fn a_mirror_with_wrong_bytes_gives_way_to_the_next_endpoint() {
    let (mirror, upstream) = (Registry::start().await, Registry::start().await);
    let image = busybox_image(Compression::Gzip, "");
    mirror.push("library/busybox", "latest", &image).await;
    upstream.push("library/busybox", "latest", &image).await;
    let top = &image.layers[1];
    let data = mirror.blob_path(&top.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    for byte in bytes.iter_mut().take(64) {
        *byte ^= 0xff;
    }
    std::fs::write(&data, bytes).unwrap();
    let daemon = Setup::new()
        .toml(&format!(
            "[registries.\"docker.io\"]\nmirrors = [\"{}\"]\nserver = \"{}\"",
            mirror.url(),
            upstream.url()
        ))
        .start()
        .await;
    let mut client = daemon.images().await;
    pull(&mut client, "busybox")
        .await
        .expect("the registry serves what the mirror got wrong");
    let layers = daemon.paths().root.join("images/layers/sha256");
    for layer in &image.layers {
        assert!(layers.join(&layer.diff_id["sha256:".len()..]).is_dir());
    }
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("layer fetch failed") && l.contains(&top.digest)),
        "the mirror's failure is logged: {log}"
    );
}

#[tokio::test]
async fn concurrent_pulls_share_one_download() {
    let registry = Registry::start().await;
    let image = busybox_image(Compression::Gzip, "");
    registry.push("library/busybox", "latest", &image).await;
    let daemon = daemon_mirroring(&registry).await;
    let mut pulls = Vec::new();
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox",
        "busybox",
        "library/busybox:latest",
    ] {
        let mut client = daemon.images().await;
        pulls.push(tokio::spawn(async move { pull(&mut client, name).await }));
    }
    for p in pulls {
        assert_eq!(p.await.unwrap().unwrap(), image.config_digest);
    }
    let log = registry.log();
    for layer in &image.layers {
        let fetches = log
            .lines()
            .filter(|l| {
                l.contains(&format!("/blobs/{}", layer.digest))
                    && l.contains("response completed")
                    && l.contains("GET")
            })
            .count();
        assert_eq!(
            fetches, 1,
            "layer {} fetched {fetches} times:\n{log}",
            layer.digest
        );
    }
}

/// A daemon that pulled `one` (also as `one:alias`) and `two`, two images that share
/// their base layer. Tests bind it whole: a pattern that left its daemon out would drop
/// it at once.
struct SharingALayer {
    daemon: Daemon,
    _registry: Registry,
    client: ImageServiceClient<Channel>,
    shared: Layer,
    one: TestImage,
    two: TestImage,
}

async fn pulled_sharing_a_layer() -> SharingALayer {
    let registry = Registry::start().await;
    let shared = LayerBuilder::new().busybox().build(Compression::Gzip);
    let with_top = |name: &str, content: &[u8]| {
        TestImage::new(
            vec![
                shared.clone(),
                LayerBuilder::new()
                    .file(name, content, 0o644)
                    .build(Compression::Gzip),
            ],
            ImageConfig::default(),
        )
    };
    let (one, two) = (with_top("one", b"1"), with_top("two", b"2"));
    registry.push("library/one", "latest", &one).await;
    registry.push("library/one", "alias", &one).await;
    registry.push("library/two", "latest", &two).await;
    let daemon = daemon_mirroring(&registry).await;
    let mut client = daemon.images().await;
    pull(&mut client, "one").await.unwrap();
    pull(&mut client, "one:alias").await.unwrap();
    pull(&mut client, "two").await.unwrap();
    SharingALayer {
        daemon,
        _registry: registry,
        client,
        shared,
        one,
        two,
    }
}

impl SharingALayer {
    /// Where the daemon keeps its unpacked layers.
    fn layers_dir(&self) -> PathBuf {
        self.daemon.paths().root.join("images/layers/sha256")
    }

    /// Where the daemon keeps `layer` unpacked.
    fn layer(&self, layer: &Layer) -> PathBuf {
        self.layers_dir().join(&layer.diff_id["sha256:".len()..])
    }

    /// RemoveImage, which must succeed.
    async fn remove(&mut self, image: &str) {
        self.client
            .remove_image(RemoveImageRequest { image: spec(image) })
            .await
            .unwrap_or_else(|e| panic!("remove {image}: {e:?}"));
    }

    /// What ImageFsInfo says of the images' filesystem.
    async fn images_fs(&mut self) -> FilesystemUsage {
        self.client
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .image_filesystems
            .swap_remove(0)
    }
}

#[tokio::test]
async fn image_fs_info_counts_the_pulled_images_under_the_daemons_root() {
    let mut pulled = pulled_sharing_a_layer().await;
    let usage = pulled.images_fs().await;
    let bytes = usage.used_bytes.as_ref().unwrap().value;
    assert!(bytes > 0 && usage.inodes_used.as_ref().unwrap().value > 0);
    assert!(
        usage
            .fs_id
            .as_ref()
            .unwrap()
            .mountpoint
            .starts_with(pulled.daemon.paths().root.to_str().unwrap())
    );
}

#[tokio::test]
async fn removing_by_one_tag_removes_every_tag_and_keeps_the_layers_another_image_uses() {
    let mut pulled = pulled_sharing_a_layer().await;
    pulled.remove("one:alias").await;
    assert!(
        status(&mut pulled.client, "one", false)
            .await
            .image
            .is_none()
    );
    assert!(
        status(&mut pulled.client, "one:alias", false)
            .await
            .image
            .is_none()
    );
    let unshared = pulled.layer(&pulled.one.layers[1]);
    wait_for(
        "the unshared layer of `one` to go",
        Duration::from_secs(10),
        || async { (!unshared.exists()).then_some(()) },
    )
    .await;
    assert!(
        pulled.layer(&pulled.shared).exists(),
        "a layer `two` uses stays"
    );
    assert!(
        status(&mut pulled.client, "two", false)
            .await
            .image
            .is_some()
    );
}

/// RemoveImage is idempotent: removing an image again, or one never pulled, is not an
/// error.
#[tokio::test]
async fn removing_again_or_what_was_never_pulled_is_not_an_error() {
    let mut pulled = pulled_sharing_a_layer().await;
    pulled.remove("one:alias").await;
    pulled.remove("one").await;
    pulled.remove("never/pulled").await;
}

#[tokio::test]
async fn removing_the_last_image_by_id_frees_every_layer_and_their_bytes() {
    let mut pulled = pulled_sharing_a_layer().await;
    let bytes_before = pulled.images_fs().await.used_bytes.unwrap().value;
    pulled.remove("one").await;
    let two = pulled.two.config_digest.clone();
    pulled.remove(&two).await;
    let layers_dir = pulled.layers_dir();
    wait_for("every layer to go", Duration::from_secs(10), || async {
        (entries(&layers_dir) == 0).then_some(())
    })
    .await;
    let bytes_after = pulled.images_fs().await.used_bytes.unwrap().value;
    assert!(bytes_after < bytes_before, "{bytes_after} < {bytes_before}");
}

#[tokio::test]
async fn remove_image_refuses_a_bad_reference() {
    let daemon = Setup::new().start().await;
    let err = daemon
        .images()
        .await
        .remove_image(RemoveImageRequest {
            image: spec("Bad:"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn images_survive_a_restart() {
    let registry = Registry::start().await;
    let image = busybox_image(Compression::Gzip, "");
    registry.push("library/busybox", "latest", &image).await;
    let mut daemon = daemon_mirroring(&registry).await;
    pull(&mut daemon.images().await, "busybox").await.unwrap();
    assert!(daemon.stop().await.success());
    daemon.restart().await;
    let mut client = daemon.images().await;
    let s = status(&mut client, "busybox", true).await;
    assert_eq!(s.image.as_ref().unwrap().id, image.config_digest);
    for layer in layer_paths(&s) {
        assert!(layer.is_dir());
    }
}

#[tokio::test]
async fn import_oci_archives_and_layouts_through_the_cli() {
    let image = busybox_image(Compression::Gzip, "");
    let daemon = Setup::new().start().await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("busybox.tar");
    std::fs::write(
        &archive,
        oci_layout_tar(&image, "registry.example/tools/busybox:1.0"),
    )
    .unwrap();
    let berth = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--config")
            .arg(&daemon.paths().config)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = berth(&["image", "import", archive.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&image.config_digest)
            && stdout.contains("registry.example/tools/busybox:1.0"),
        "{stdout}"
    );
    let mut client = daemon.images().await;
    let s = status(&mut client, "registry.example/tools/busybox:1.0", true).await;
    assert_eq!(s.image.as_ref().unwrap().id, image.config_digest);
    assert!(layer_paths(&s)[0].join("bin/busybox").is_file());

    // A layout directory whose ref name is a bare tag, named on the command line.
    let layout = work.path().join("layout");
    oci_layout_dir(&image, "v2", &layout);
    let (ok, _, stderr) = berth(&[
        "image",
        "import",
        "--name",
        "local/busybox:v2",
        layout.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        status(&mut client, "local/busybox:v2", false)
            .await
            .image
            .is_some()
    );

    // A corrupt archive is refused, naming the file.
    let bad = work.path().join("bad.tar");
    let mut bytes = oci_layout_tar(&image, "x/y:z");
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&bad, bytes).unwrap();
    let (ok, _, stderr) = berth(&["image", "import", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("bad.tar"), "{stderr}");
    let (ok, _, stderr) = berth(&["image", "import", "/nonexistent/archive.tar"]);
    assert!(
        !ok && stderr.contains("/nonexistent/archive.tar"),
        "{stderr}"
    );
}

/// A TCP relay that passes the registry's answers on slowly, so a pull can be caught in
/// the middle. The registry behind it is the real one.
async fn slow_relay(
    target: String,
    bytes_per_tick: usize,
) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut buf = vec![0u8; bytes_per_tick];
                loop {
                    match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            });
        }
    });
    (addr, handle)
}

#[tokio::test]
async fn a_crash_mid_pull_leaves_no_half_layer() {
    let registry = Registry::start().await;
    // 4 MiB that gzip cannot shrink: about four seconds through the relay.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let big = LayerBuilder::new()
        .file("noise", &noise, 0o644)
        .build(Compression::Gzip);
    let image = TestImage::new(vec![big.clone()], ImageConfig::default());
    registry.push("library/big", "latest", &image).await;
    let (relay, relay_task) = slow_relay(registry.host(), 16 * 1024).await;
    let mut daemon = Setup::new()
        .toml(&format!(
            "[registries.\"docker.io\"]\nmirrors = [\"http://{relay}\"]\nserver = \"{NO_UPSTREAM}\""
        ))
        .start()
        .await;
    let tmp = daemon.paths().root.join("images/tmp");
    let mut client = daemon.images().await;
    let pulling = tokio::spawn(async move { pull(&mut client, "big").await });
    wait_for(
        "the layer download to be under way",
        Duration::from_secs(20),
        || async {
            // The layer is unpacked as it arrives: its one file is begun.
            let partial = std::fs::read_dir(&tmp)
                .ok()?
                .flatten()
                .any(|d| std::fs::metadata(d.path().join("noise")).is_ok_and(|m| m.len() > 0));
            partial.then_some(())
        },
    )
    .await;
    daemon.crash().await;
    assert!(
        pulling.await.unwrap().is_err(),
        "the client saw the pull fail"
    );
    relay_task.abort();

    // After the restart: no temporary files, no layer, no image.
    daemon.restart().await;
    assert_eq!(entries(&tmp), 0);
    let layer_dir = daemon
        .paths()
        .root
        .join("images/layers/sha256")
        .join(&big.diff_id["sha256:".len()..]);
    assert!(!layer_dir.exists());
    let mut client = daemon.images().await;
    assert!(status(&mut client, "big", false).await.image.is_none());
}
