//! Tests of the image harness itself (`common::images`, `common::registry`): the images it
//! builds are what they claim to be, a real registry accepts and serves them unchanged,
//! and skopeo reads its OCI layouts. The image-pull tests rely on all of this.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::images::{
    Compression, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    HOST_BUSYBOX, ImageConfig, Layer, LayerBuilder, MTIME, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
    OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST, REF_NAME_ANNOTATION, TestImage, TestIndex,
    digest_hex, oci_layout_dir, oci_layout_tar, sha256_digest,
};
use common::registry::{Registry, RegistryOptions};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// One tar entry, as the `tar` crate reads it back.
#[derive(Debug)]
struct Listed {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
    data: Vec<u8>,
}

fn list_tar(tar: &[u8]) -> Vec<Listed> {
    let mut archive = tar::Archive::new(tar);
    let mut listed = Vec::new();
    for entry in archive.entries().expect("read the tar") {
        let mut entry = entry.expect("read a tar entry");
        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = entry.pax_extensions().expect("read PAX records") {
            for extension in extensions {
                let extension = extension.expect("read a PAX record");
                let key = extension.key().expect("a UTF-8 PAX key");
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), extension.value_bytes().to_vec());
                }
            }
        }
        let header = entry.header();
        let mut item = Listed {
            path: String::from_utf8(entry.path_bytes().into_owned()).expect("a UTF-8 path"),
            kind: header.entry_type(),
            mode: header.mode().expect("a mode"),
            uid: header.uid().expect("a uid"),
            gid: header.gid().expect("a gid"),
            mtime: header.mtime().expect("an mtime"),
            link: entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).expect("a UTF-8 link")),
            xattrs,
            data: Vec::new(),
        };
        entry.read_to_end(&mut item.data).expect("read entry data");
        listed.push(item);
    }
    listed
}

/// Decompresses a layer blob as its media type says, checks the diff ID and lists it.
fn list_layer(layer: &Layer) -> Vec<Listed> {
    let tar = match layer.media_type.as_str() {
        OCI_LAYER => layer.blob.clone(),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(layer.blob.as_slice())
                .read_to_end(&mut tar)
                .expect("gunzip the layer");
            tar
        }
        OCI_LAYER_ZSTD => zstd::decode_all(layer.blob.as_slice()).expect("unzstd the layer"),
        other => panic!("unexpected layer media type {other}"),
    };
    assert_eq!(
        sha256_digest(&tar),
        layer.diff_id,
        "diff ID of {}",
        layer.digest
    );
    assert_eq!(sha256_digest(&layer.blob), layer.digest);
    assert_eq!(layer.blob.len() as u64, layer.size);
    let listed = list_tar(&tar);
    for entry in &listed {
        assert!(!entry.path.starts_with('/'), "{} is absolute", entry.path);
        assert_eq!(entry.mtime, MTIME, "mtime of {}", entry.path);
    }
    listed
}

fn find<'a>(listed: &'a [Listed], path: &str) -> &'a Listed {
    listed
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} is not in the layer: {:?}", paths(listed)))
}

fn paths(listed: &[Listed]) -> Vec<&str> {
    listed.iter().map(|e| e.path.as_str()).collect()
}

/// An HTTP client independent of the harness's pusher, to read back what it pushed.
fn reader() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .expect("build the HTTP client")
}

async fn get(registry: &Registry, path: &str, accept: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = reader()
        .get(format!("{}{path}", registry.url()))
        .header("accept", accept);
    if let Some((user, password)) = registry.credentials() {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.expect("GET from the registry");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("read the body").to_vec();
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// GETs a manifest and checks its bytes, digest header and content type.
async fn check_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let (status, headers, got) = get(
        registry,
        &format!("/v2/{repo}/manifests/{reference}"),
        media_type,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "GET manifest {repo}:{reference}");
    assert_eq!(got, body, "manifest {repo}:{reference} came back changed");
    assert_eq!(
        header(&headers, "docker-content-digest"),
        sha256_digest(body)
    );
    assert_eq!(header(&headers, "content-type"), media_type);
}

/// Reads an image back by tag and by digest, and every blob it refers to.
async fn check_image(registry: &Registry, repo: &str, tag: &str, image: &TestImage) {
    let media_type = &image.manifest_media_type;
    check_manifest(registry, repo, tag, media_type, &image.manifest).await;
    check_manifest(
        registry,
        repo,
        &image.manifest_digest,
        media_type,
        &image.manifest,
    )
    .await;
    for (digest, data) in image.blobs() {
        let (status, headers, got) =
            get(registry, &format!("/v2/{repo}/blobs/{digest}"), "*/*").await;
        assert_eq!(status, StatusCode::OK, "GET blob {digest}");
        assert_eq!(sha256_digest(&got), digest);
        assert_eq!(got, data);
        assert_eq!(header(&headers, "docker-content-digest"), digest);
    }
    let manifest: Value = serde_json::from_slice(&image.manifest).expect("manifest JSON");
    let config: Value = serde_json::from_slice(&image.config).expect("config JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["history"].as_array().expect("history").len(),
        image.layers.len()
    );
    assert_eq!(layers.len(), image.layers.len());
    for ((descriptor, diff_id), layer) in layers.iter().zip(diff_ids).zip(&image.layers) {
        assert_eq!(descriptor["digest"], layer.digest.as_str());
        assert_eq!(descriptor["mediaType"], layer.media_type.as_str());
        assert_eq!(descriptor["size"], layer.size);
        assert_eq!(diff_id, layer.diff_id.as_str());
    }
    assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
}

/// The two-layer busybox image: the base, then a layer with a whiteout, an opaque
/// directory, a hard link, a setuid file and an xattr.
fn busybox_layers(compression: Compression) -> Vec<Layer> {
    let base = LayerBuilder::new().busybox().build(compression);
    let top = LayerBuilder::new()
        .whiteout("bin/rm")
        .opaque("home/app")
        .file_owned("home/app/notes", b"hello\n", 0o640, 1000, 1000)
        .xattr("usr/bin/tool", "user.berth", b"yes")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
        .hardlink("usr/bin/tool-again", "usr/bin/tool")
        .file("usr/bin/su-tool", b"#!/bin/sh\nid -u\n", 0o4755)
        .build(compression);
    vec![base, top]
}

fn check_busybox_base(layer: &Layer) {
    let listed = list_layer(layer);
    let busybox = find(&listed, "bin/busybox");
    assert_eq!(busybox.kind, tar::EntryType::Regular);
    assert_eq!(busybox.mode, 0o755);
    assert_eq!(
        busybox.data,
        std::fs::read(HOST_BUSYBOX).expect("read the host busybox")
    );
    for applet in [
        "sh", "ls", "cat", "echo", "sleep", "true", "id", "touch", "mkdir", "rm", "httpd", "wget",
    ] {
        let link = find(&listed, &format!("bin/{applet}"));
        assert_eq!(link.kind, tar::EntryType::Symlink);
        assert_eq!(link.link.as_deref(), Some("busybox"));
    }
    let tmp = find(&listed, "tmp/");
    assert_eq!((tmp.kind, tmp.mode), (tar::EntryType::Directory, 0o1777));
    let home = find(&listed, "home/app/");
    assert_eq!((home.uid, home.gid), (1000, 1000));
    let passwd = String::from_utf8(find(&listed, "etc/passwd").data.clone()).expect("passwd");
    assert!(passwd.contains("root:x:0:0:"), "{passwd}");
    assert!(
        passwd.contains("app:x:1000:1000::/home/app:/bin/sh"),
        "{passwd}"
    );
    find(&listed, "etc/group");
}

fn check_busybox_top(layer: &Layer) {
    let listed = list_layer(layer);
    assert_eq!(find(&listed, "bin/.wh.rm").kind, tar::EntryType::Regular);
    assert_eq!(
        find(&listed, "home/app/.wh..wh..opq").kind,
        tar::EntryType::Regular
    );
    let notes = find(&listed, "home/app/notes");
    assert_eq!((notes.mode, notes.uid, notes.gid), (0o640, 1000, 1000));
    let tool = find(&listed, "usr/bin/tool");
    assert_eq!(
        tool.xattrs.get("user.berth").map(Vec::as_slice),
        Some(&b"yes"[..])
    );
    let again = find(&listed, "usr/bin/tool-again");
    assert_eq!(again.kind, tar::EntryType::Link);
    assert_eq!(again.link.as_deref(), Some("usr/bin/tool"));
    assert_eq!(find(&listed, "usr/bin/su-tool").mode, 0o4755);
    // The whiteout comes before anything it could be confused with, in archive order.
    let order = paths(&listed);
    assert_eq!(&order[..2], &["bin/.wh.rm", "home/app/.wh..wh..opq"]);
}

#[tokio::test]
async fn busybox_gzip_image_round_trips_through_the_registry() {
    let registry = Registry::start().await;
    let config = ImageConfig {
        user: "app".to_string(),
        working_dir: "/home/app".to_string(),
        labels: BTreeMap::from([("berth.test".to_string(), "yes".to_string())]),
        ..ImageConfig::default()
    };
    let image = TestImage::new(busybox_layers(Compression::Gzip), config);
    registry.push("test/busybox", "v1", &image).await;

    check_image(&registry, "test/busybox", "v1", &image).await;
    check_busybox_base(&image.layers[0]);
    check_busybox_top(&image.layers[1]);
    let config: Value = serde_json::from_slice(&image.config).expect("config JSON");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["User"], "app");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["config"]["WorkingDir"], "/home/app");
    assert_eq!(config["config"]["Labels"]["berth.test"], "yes");
    assert!(
        config["config"]["Env"][0]
            .as_str()
            .expect("Env")
            .starts_with("PATH=/usr/local/sbin:")
    );

    // A standard client agrees with our reading of the registry.
    let inspected = skopeo_inspect(&[
        "--tls-verify=false",
        &format!("docker://{}/test/busybox:v1", registry.host()),
    ]);
    assert_eq!(inspected["Digest"], image.manifest_digest.as_str());
}

#[tokio::test]
async fn zstd_and_uncompressed_layers_round_trip() {
    let registry = Registry::start().await;
    for (compression, media_type, tag) in [
        (Compression::Zstd, OCI_LAYER_ZSTD, "zstd"),
        (Compression::None, OCI_LAYER, "plain"),
    ] {
        let image = TestImage::new(busybox_layers(compression), ImageConfig::default());
        assert!(image.layers.iter().all(|l| l.media_type == media_type));
        registry.push("test/layers", tag, &image).await;
        check_image(&registry, "test/layers", tag, &image).await;
        check_busybox_base(&image.layers[0]);
        check_busybox_top(&image.layers[1]);
    }
}

#[tokio::test]
async fn docker_schema2_image_round_trips() {
    let registry = Registry::start().await;
    let image = TestImage::docker(busybox_layers(Compression::Gzip), ImageConfig::default());
    assert_eq!(image.manifest_media_type, DOCKER_MANIFEST);
    registry.push("test/docker", "latest", &image).await;
    check_image(&registry, "test/docker", "latest", &image).await;
    let manifest: Value = serde_json::from_slice(&image.manifest).expect("manifest JSON");
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);
    check_busybox_top(&image.layers[1]);
}

fn arch_image(architecture: &str, docker: bool) -> TestImage {
    let layers = vec![LayerBuilder::new().busybox().build(Compression::Gzip)];
    let config = ImageConfig {
        architecture: architecture.to_string(),
        ..ImageConfig::default()
    };
    if docker {
        TestImage::docker(layers, config)
    } else {
        TestImage::new(layers, config)
    }
}

#[tokio::test]
async fn index_and_manifest_list_round_trip() {
    let registry = Registry::start().await;
    for (docker, media_type) in [(false, OCI_INDEX), (true, DOCKER_MANIFEST_LIST)] {
        let amd64 = arch_image("amd64", docker);
        let arm64 = arch_image("arm64", docker);
        assert_ne!(amd64.manifest_digest, arm64.manifest_digest);
        let platforms = [(&amd64, "amd64"), (&arm64, "arm64")];
        let index = if docker {
            TestIndex::docker(&platforms)
        } else {
            TestIndex::new(&platforms)
        };
        assert_eq!(index.media_type, media_type);
        assert_eq!(index.digest, sha256_digest(&index.json));
        registry
            .push_index(
                "test/multi",
                media_type_tag(docker),
                &index,
                &[&amd64, &arm64],
            )
            .await;

        check_manifest(
            &registry,
            "test/multi",
            media_type_tag(docker),
            media_type,
            &index.json,
        )
        .await;
        let json: Value = serde_json::from_slice(&index.json).expect("index JSON");
        assert_eq!(json["mediaType"], media_type);
        for (entry, (image, architecture)) in json["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .zip(platforms)
        {
            assert_eq!(entry["digest"], image.manifest_digest.as_str());
            assert_eq!(entry["mediaType"], image.manifest_media_type.as_str());
            assert_eq!(entry["size"], image.manifest.len());
            assert_eq!(entry["platform"]["architecture"], architecture);
            assert_eq!(entry["platform"]["os"], "linux");
            check_image(&registry, "test/multi", &image.manifest_digest, image).await;
        }
    }
}

fn media_type_tag(docker: bool) -> &'static str {
    if docker { "list" } else { "index" }
}

#[tokio::test]
async fn auth_registry_refuses_anonymous_pushes() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("tester".to_string(), "s3cret".to_string())),
        tls: false,
        ..Default::default()
    })
    .await;
    assert!(registry.url().starts_with("http://"));
    let image = arch_image("amd64", false);

    let refused = registry
        .pusher_as(None)
        .image("test/private", "v1", &image)
        .await
        .expect_err("an anonymous push");
    assert_eq!(
        refused.status(),
        Some(StatusCode::UNAUTHORIZED),
        "{refused}"
    );
    let wrong = registry
        .pusher_as(Some(("tester", "wrong")))
        .image("test/private", "v1", &image)
        .await
        .expect_err("a push with a wrong password");
    assert_eq!(wrong.status(), Some(StatusCode::UNAUTHORIZED), "{wrong}");
    let anonymous = reader()
        .get(format!("{}/v2/test/private/manifests/v1", registry.url()))
        .send()
        .await
        .expect("GET without credentials");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(header(anonymous.headers(), "www-authenticate").starts_with("Basic realm="));

    registry.push("test/private", "v1", &image).await;
    check_image(&registry, "test/private", "v1", &image).await;
}

#[tokio::test]
async fn tls_registry_serves_a_certificate_its_ca_verifies() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("tester".to_string(), "s3cret".to_string())),
        tls: true,
        ..Default::default()
    })
    .await;
    assert_eq!(registry.url(), format!("https://{}", registry.host()));
    let image = arch_image("amd64", false);
    registry.push("test/tls", "v1", &image).await;
    check_image(&registry, "test/tls", "v1", &image).await;

    // A client that trusts only the test CA, as berth would be configured.
    let ca = registry.ca_cert_pem().expect("a TLS registry has a CA");
    let verifying = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("parse the CA"))
        .no_proxy()
        .build()
        .expect("build the verifying client");
    let response = verifying
        .get(format!("{}/v2/", registry.url()))
        .basic_auth("tester", Some("s3cret"))
        .send()
        .await
        .expect("a verified TLS connection to the registry");
    assert_eq!(response.status(), StatusCode::OK);
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .no_proxy()
        .build()
        .expect("build the client");
    assert!(
        untrusting
            .get(format!("{}/v2/", registry.url()))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_blob_overwritten_in_storage_is_served_with_its_old_digest() {
    let registry = Registry::start().await;
    assert!(registry.ca_cert_pem().is_none());
    let image = arch_image("amd64", false);
    registry.push("test/corrupt", "v1", &image).await;
    let layer = &image.layers[0];
    let path = registry.blob_path(&layer.digest);
    assert!(path.starts_with(registry.storage_dir()));
    assert_eq!(
        std::fs::read(&path).expect("read the stored blob"),
        layer.blob
    );

    let mut corrupt = layer.blob.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    std::fs::write(&path, &corrupt).expect("overwrite the stored blob");
    let (status, headers, got) = get(
        &registry,
        &format!("/v2/test/corrupt/blobs/{}", layer.digest),
        "*/*",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, corrupt);
    assert_eq!(header(&headers, "docker-content-digest"), layer.digest);
    assert_ne!(sha256_digest(&got), layer.digest);
}

#[tokio::test]
async fn raw_manifests_and_blobs_can_be_pushed() {
    let registry = Registry::start().await;
    let image = arch_image("amd64", false);
    for (digest, data) in image.blobs() {
        assert_eq!(registry.push_blob("test/raw", data).await, digest);
    }
    // The same manifest with different whitespace: a different digest, same content.
    let mut reformatted = image.manifest.clone();
    reformatted.push(b'\n');
    let digest = registry
        .push_manifest_raw("test/raw", "spaced", OCI_MANIFEST, &reformatted)
        .await;
    assert_eq!(digest, sha256_digest(&reformatted));
    check_manifest(&registry, "test/raw", "spaced", OCI_MANIFEST, &reformatted).await;
}

#[test]
fn builds_are_reproducible() {
    let build = || TestImage::new(busybox_layers(Compression::Gzip), ImageConfig::default());
    let (first, second) = (build(), build());
    assert_eq!(first.manifest_digest, second.manifest_digest);
    assert_eq!(first.manifest, second.manifest);
    let zstd = || {
        LayerBuilder::new()
            .busybox()
            .build(Compression::Zstd)
            .digest
    };
    assert_eq!(zstd(), zstd());
    let config: Value = serde_json::from_slice(&first.config).expect("config JSON");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([first.layers[0].diff_id, first.layers[1].diff_id])
    );
    assert_eq!(first.config_digest, sha256_digest(&first.config));
    let manifest: Value = serde_json::from_slice(&first.manifest).expect("manifest JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    assert_eq!(manifest["config"]["size"], first.config.len());
}

#[test]
#[should_panic(expected = "xattr for \"missing\"")]
fn an_xattr_without_its_entry_is_refused() {
    LayerBuilder::new()
        .file("present", b"", 0o644)
        .xattr("missing", "user.x", b"1")
        .build(Compression::None);
}

/// Runs `skopeo inspect ARGS` and parses its JSON.
fn skopeo_inspect(args: &[&str]) -> Value {
    let output = Command::new("skopeo")
        .arg("inspect")
        .args(args)
        .output()
        .expect("run skopeo (make test installs skopeo)");
    assert!(
        output.status.success(),
        "skopeo inspect {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("skopeo's JSON")
}

fn check_inspected(inspected: &Value, image: &TestImage) {
    assert_eq!(inspected["Digest"], image.manifest_digest.as_str());
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Os"], "linux");
    let layers: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(inspected["Layers"], serde_json::json!(layers));
}

/// Checks an unpacked OCI layout: the marker file, the named manifest, every blob.
fn check_layout(dir: &Path, image: &TestImage, ref_name: &str) {
    let marker: Value =
        serde_json::from_slice(&std::fs::read(dir.join("oci-layout")).expect("oci-layout"))
            .expect("JSON");
    assert_eq!(marker, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("JSON");
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], image.manifest_digest.as_str());
    assert_eq!(manifests[0]["annotations"][REF_NAME_ANNOTATION], ref_name);
    let mut expected: Vec<&str> = image.blobs().into_iter().map(|(d, _)| d).collect();
    expected.push(&image.manifest_digest);
    for digest in expected {
        let blob =
            std::fs::read(dir.join("blobs/sha256").join(digest_hex(digest))).expect("a blob");
        assert_eq!(sha256_digest(&blob), digest);
    }
}

#[test]
fn oci_layouts_are_standard() {
    let image = TestImage::new(busybox_layers(Compression::Gzip), ImageConfig::default());
    let scratch = tempfile::tempdir().expect("a temporary directory");

    let archive = oci_layout_tar(&image, "busybox:v1");
    let listed = list_tar(&archive);
    assert!(
        paths(&listed).contains(&"index.json"),
        "{:?}",
        paths(&listed)
    );
    let unpacked = scratch.path().join("unpacked");
    tar::Archive::new(archive.as_slice())
        .unpack(&unpacked)
        .expect("unpack the layout tar");
    check_layout(&unpacked, &image, "busybox:v1");
    let file = scratch.path().join("image.tar");
    std::fs::write(&file, &archive).expect("write the layout tar");
    let location = format!("oci-archive:{}:busybox:v1", file.display());
    check_inspected(&skopeo_inspect(&[&location]), &image);

    let dir = scratch.path().join("layout");
    oci_layout_dir(&image, "busybox:v1", &dir);
    check_layout(&dir, &image, "busybox:v1");
    let location = format!("oci:{}:busybox:v1", dir.display());
    check_inspected(&skopeo_inspect(&[&location]), &image);
}
