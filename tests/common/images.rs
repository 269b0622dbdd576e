//! Test images built in memory: layer tarballs (with whiteouts, hard links, xattrs and a
//! static busybox copied from the host), OCI and Docker schema 2 manifests and configs,
//! image indexes and manifest lists, and OCI image layouts as a directory or a tar
//! archive. Pure Rust and no network; every build of the same input gives the same
//! bytes, and so the same digests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The modification time of every tar entry (2024-01-01T00:00:00Z), so builds are
/// reproducible.
pub const MTIME: u64 = 1_704_067_200;
/// The `created` time of every config and history entry; the same instant as [`MTIME`].
const CREATED: &str = "2024-01-01T00:00:00Z";

/// Where [`LayerBuilder::busybox`] copies the binary from (Debian's busybox-static).
pub const HOST_BUSYBOX: &str = "/bin/busybox";
/// The applets [`LayerBuilder::busybox`] links to `bin/busybox`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "true", "id", "touch", "mkdir", "rm", "httpd", "wget",
    "stty", "tty", "dd", "hostname", "chmod", "grep", "head", "mknod", "date", "test", "tar",
    "env",
];

pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The annotation naming a manifest in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// `"sha256:<hex>"` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of a `sha256:` digest.
pub fn digest_hex(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest:?} is not a sha256 digest"))
}

/// How a layer's tar is compressed in its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }

    fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                // flate2 writes a zero mtime and a fixed OS byte, so this is reproducible.
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(tar).expect("gzip in memory");
                encoder.finish().expect("gzip in memory")
            }
            Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd in memory"),
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
}

#[derive(Debug, Clone)]
struct Entry {
    /// Relative, without a trailing slash.
    path: String,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
}

/// Builds one layer's tar, entry by entry, in the order the methods are called. Paths
/// are relative like those of Docker-built layers (a leading `/` is dropped), and
/// directories are written with a trailing `/`. Every entry carries a mode, a uid and
/// gid (0 unless `file_owned` says otherwise) and the fixed [`MTIME`].
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
    /// path → extended attributes, applied at build time to the entry with that path.
    xattrs: BTreeMap<String, Vec<(String, Vec<u8>)>>,
}

fn relative(path: &str) -> String {
    let path = path.trim_start_matches('/').trim_end_matches('/');
    assert!(!path.is_empty(), "a layer entry needs a path");
    path.to_string()
}

/// Splits `a/b/c` into (`a/b/`, `c`) and `c` into (``, `c`).
fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(at) => path.split_at(at + 1),
        None => ("", path),
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    fn push(mut self, path: &str, kind: Kind, mode: u32, uid: u64, gid: u64) -> LayerBuilder {
        self.entries.push(Entry {
            path: relative(path),
            kind,
            mode,
            uid,
            gid,
        });
        self
    }

    /// A regular file owned by root.
    pub fn file(self, path: &str, contents: &[u8], mode: u32) -> LayerBuilder {
        self.file_owned(path, contents, mode, 0, 0)
    }

    /// A regular file owned by `uid:gid`. `mode` may carry setuid, setgid and sticky bits.
    pub fn file_owned(
        self,
        path: &str,
        contents: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> LayerBuilder {
        self.push(path, Kind::File(contents.to_vec()), mode, uid, gid)
    }

    /// A directory owned by root.
    pub fn dir(self, path: &str, mode: u32) -> LayerBuilder {
        self.dir_owned(path, mode, 0, 0)
    }

    /// A directory owned by `uid:gid`.
    pub fn dir_owned(self, path: &str, mode: u32, uid: u64, gid: u64) -> LayerBuilder {
        self.push(path, Kind::Dir, mode, uid, gid)
    }

    /// A symbolic link to `target`, which is written as given (relative or absolute).
    pub fn symlink(self, path: &str, target: &str) -> LayerBuilder {
        self.push(path, Kind::Symlink(target.to_string()), 0o777, 0, 0)
    }

    /// A tar hard-link entry: `path` is another name for the earlier entry `target`
    /// (a relative path in the same archive, as tar writes it).
    pub fn hardlink(self, path: &str, target: &str) -> LayerBuilder {
        self.push(path, Kind::Hardlink(relative(target)), 0o644, 0, 0)
    }

    /// The OCI whiteout `dir/.wh.name` that deletes `dir/name` from the layers below.
    pub fn whiteout(self, path: &str) -> LayerBuilder {
        let path = relative(path);
        let (parent, name) = split_parent(&path);
        self.file(&format!("{parent}.wh.{name}"), b"", 0o644)
    }

    /// The OCI opaque whiteout `dir/.wh..wh..opq`: `dir` hides everything below it.
    pub fn opaque(self, dir: &str) -> LayerBuilder {
        self.file(&format!("{}/.wh..wh..opq", relative(dir)), b"", 0o644)
    }

    /// Attaches the extended attribute `name` (e.g. `user.berth` or
    /// `security.capability`) to the entry at `path`, as a PAX `SCHILY.xattr.<name>`
    /// record written just before that entry. The entry may be added before or after this
    /// call; `build` panics if the layer has no entry at `path`.
    pub fn xattr(mut self, path: &str, name: &str, value: &[u8]) -> LayerBuilder {
        self.xattrs
            .entry(relative(path))
            .or_default()
            .push((name.to_string(), value.to_vec()));
        self
    }

    /// A minimal root filesystem: the host's static busybox as `bin/busybox` (0755),
    /// applet symlinks `bin/<applet>` → `busybox` for [`BUSYBOX_APPLETS`], `etc/passwd`
    /// with `root` and `app` (1000:1000, home `/home/app`), `etc/group`, `root` (0700),
    /// `tmp` (01777) and `home/app` (owned by 1000:1000).
    pub fn busybox(self) -> LayerBuilder {
        let mut layer = self
            .dir("bin", 0o755)
            .file("bin/busybox", host_busybox(), 0o755);
        for applet in BUSYBOX_APPLETS {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
        layer
            .dir("etc", 0o755)
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
                0o644,
            )
            .file(
                "etc/group",
                b"root:x:0:\napp:x:1000:\nstaff:x:50000:app\n",
                0o644,
            )
            .dir("home", 0o755)
            .dir_owned("home/app", 0o755, 1000, 1000)
            .dir("root", 0o700)
            .dir("tmp", 0o1777)
    }

    /// Writes the tar, compresses it and digests both.
    pub fn build(self, compression: Compression) -> Layer {
        let tar = self.tar();
        let blob = compression.compress(&tar);
        Layer {
            digest: sha256_digest(&blob),
            diff_id: sha256_digest(&tar),
            media_type: compression.media_type().to_string(),
            size: blob.len() as u64,
            blob,
        }
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        if let Some(path) = self
            .xattrs
            .keys()
            .find(|path| !self.entries.iter().any(|e| &e.path == *path))
        {
            panic!("xattr for {path:?}, which is not in the layer");
        }
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            if let Some(xattrs) = self.xattrs.get(&entry.path) {
                let records: Vec<(String, &[u8])> = xattrs
                    .iter()
                    .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value.as_slice()))
                    .collect();
                builder
                    .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                    .expect("tar in memory");
            }
            append_entry(&mut builder, entry);
        }
        builder.into_inner().expect("tar in memory")
    }
}

fn append_entry(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) {
    let mut header = tar::Header::new_ustar();
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(MTIME);
    header.set_size(0);
    let done = match &entry.kind {
        Kind::File(contents) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(contents.len() as u64);
            builder.append_data(&mut header, &entry.path, contents.as_slice())
        }
        Kind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            builder.append_data(&mut header, format!("{}/", entry.path), std::io::empty())
        }
        Kind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            builder.append_link(&mut header, &entry.path, target)
        }
        Kind::Hardlink(target) => {
            header.set_entry_type(tar::EntryType::Link);
            builder.append_link(&mut header, &entry.path, target)
        }
    };
    done.unwrap_or_else(|e| panic!("add {:?} to the layer: {e}", entry.path));
}

/// The host's busybox, read once per test binary.
fn host_busybox() -> &'static [u8] {
    static BUSYBOX: OnceLock<Vec<u8>> = OnceLock::new();
    BUSYBOX.get_or_init(|| {
        std::fs::read(HOST_BUSYBOX).unwrap_or_else(|e| {
            panic!("read {HOST_BUSYBOX} (make test installs busybox-static): {e}")
        })
    })
}

/// One layer blob and its descriptors.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    /// `sha256:<hex>` of `blob`.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

/// What goes into an image config. `Default` is a linux/amd64 image running `sh` with
/// the usual `PATH`; empty fields are left out of the JSON.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
}

impl Default for ImageConfig {
    fn default() -> ImageConfig {
        ImageConfig {
            architecture: "amd64".to_string(),
            os: "linux".to_string(),
            user: String::new(),
            entrypoint: Vec::new(),
            cmd: vec!["sh".to_string()],
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ],
            working_dir: String::new(),
            labels: BTreeMap::new(),
            stop_signal: String::new(),
        }
    }
}

// The JSON documents. Structs rather than `json!` so the field order, and so the digest,
// does not depend on serde_json's features.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, &'a str>,
}

impl<'a> Descriptor<'a> {
    fn new(media_type: &'a str, digest: &'a str, size: u64) -> Descriptor<'a> {
        Descriptor {
            media_type,
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize)]
struct Platform<'a> {
    architecture: &'a str,
    os: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    config: RuntimeConfig<'a>,
    rootfs: RootFs<'a>,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cmd: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    working_dir: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    stop_signal: &'a str,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct History {
    created: &'static str,
    created_by: String,
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize test JSON")
}

impl ImageConfig {
    /// The config JSON for an image of `layers`, with `rootfs.diff_ids` in layer order
    /// and one `history` entry per layer.
    pub fn to_json(&self, layers: &[Layer]) -> Vec<u8> {
        to_json(&ConfigJson {
            created: CREATED,
            architecture: &self.architecture,
            os: &self.os,
            config: RuntimeConfig {
                user: &self.user,
                env: &self.env,
                entrypoint: &self.entrypoint,
                cmd: &self.cmd,
                working_dir: &self.working_dir,
                labels: &self.labels,
                stop_signal: &self.stop_signal,
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.diff_id.as_str()).collect(),
            },
            history: (1..=layers.len())
                .map(|n| History {
                    created: CREATED,
                    created_by: format!("berth test layer {n}"),
                })
                .collect(),
        })
    }
}

/// An image: its layers, config and manifest, each with its digest.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
}

impl TestImage {
    /// An OCI image: OCI manifest and OCI config, layers as built.
    pub fn new(layers: Vec<Layer>, config: ImageConfig) -> TestImage {
        TestImage::assemble(layers, &config, OCI_MANIFEST, OCI_CONFIG)
    }

    /// A Docker schema 2 image. Its layers must be gzip; their media type becomes
    /// Docker's.
    pub fn docker(layers: Vec<Layer>, config: ImageConfig) -> TestImage {
        let layers = layers
            .into_iter()
            .map(|mut layer| {
                assert!(
                    layer.media_type == OCI_LAYER_GZIP || layer.media_type == DOCKER_LAYER_GZIP,
                    "Docker schema 2 layers are gzip, not {}",
                    layer.media_type
                );
                layer.media_type = DOCKER_LAYER_GZIP.to_string();
                layer
            })
            .collect();
        TestImage::assemble(layers, &config, DOCKER_MANIFEST, DOCKER_CONFIG)
    }

    fn assemble(
        layers: Vec<Layer>,
        config: &ImageConfig,
        manifest_media_type: &str,
        config_media_type: &str,
    ) -> TestImage {
        let config = config.to_json(&layers);
        let config_digest = sha256_digest(&config);
        let manifest = to_json(&Manifest {
            schema_version: 2,
            media_type: manifest_media_type,
            config: Descriptor::new(config_media_type, &config_digest, config.len() as u64),
            layers: layers
                .iter()
                .map(|l| Descriptor::new(&l.media_type, &l.digest, l.size))
                .collect(),
        });
        TestImage {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            manifest_media_type: manifest_media_type.to_string(),
            config_digest,
            config,
            layers,
        }
    }

    /// Every blob the manifest refers to, config first, as (digest, bytes).
    pub fn blobs(&self) -> Vec<(&str, &[u8])> {
        std::iter::once((self.config_digest.as_str(), self.config.as_slice()))
            .chain(
                self.layers
                    .iter()
                    .map(|l| (l.digest.as_str(), l.blob.as_slice())),
            )
            .collect()
    }
}

/// A multi-platform image: an OCI image index or a Docker manifest list.
#[derive(Debug, Clone)]
pub struct TestIndex {
    pub json: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

impl TestIndex {
    /// An OCI image index with one linux manifest per (image, architecture).
    pub fn new(images: &[(&TestImage, &str)]) -> TestIndex {
        TestIndex::assemble(images, OCI_INDEX)
    }

    /// A Docker manifest list with one linux manifest per (image, architecture).
    pub fn docker(images: &[(&TestImage, &str)]) -> TestIndex {
        TestIndex::assemble(images, DOCKER_MANIFEST_LIST)
    }

    fn assemble(images: &[(&TestImage, &str)], media_type: &str) -> TestIndex {
        let json = to_json(&Index {
            schema_version: 2,
            media_type,
            manifests: images
                .iter()
                .map(|(image, architecture)| Descriptor {
                    platform: Some(Platform {
                        architecture,
                        os: "linux",
                    }),
                    ..Descriptor::new(
                        &image.manifest_media_type,
                        &image.manifest_digest,
                        image.manifest.len() as u64,
                    )
                })
                .collect(),
        });
        TestIndex {
            digest: sha256_digest(&json),
            json,
            media_type: media_type.to_string(),
        }
    }
}

/// The files of an OCI image layout holding `image` under `ref_name`, as
/// (relative path, contents).
fn layout_files(image: &TestImage, ref_name: &str) -> Vec<(String, Vec<u8>)> {
    let mut descriptor = Descriptor::new(
        &image.manifest_media_type,
        &image.manifest_digest,
        image.manifest.len() as u64,
    );
    descriptor.annotations.insert(REF_NAME_ANNOTATION, ref_name);
    let index = to_json(&Index {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: vec![descriptor],
    });
    let mut files = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index),
        (
            format!("blobs/sha256/{}", digest_hex(&image.manifest_digest)),
            image.manifest.clone(),
        ),
    ];
    for (digest, data) in image.blobs() {
        files.push((
            format!("blobs/sha256/{}", digest_hex(digest)),
            data.to_vec(),
        ));
    }
    files
}

/// Writes an OCI image layout holding `image`, named `ref_name` in `index.json`, into
/// `dir` (created if missing): what `skopeo copy … oci:DIR:REF` makes.
pub fn oci_layout_dir(image: &TestImage, ref_name: &str, dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("create {}/blobs/sha256: {e}", dir.display()));
    for (path, contents) in layout_files(image, ref_name) {
        let path = dir.join(path);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// The same layout as [`oci_layout_dir`] as an uncompressed tar archive: what
/// `skopeo copy … oci-archive:FILE:REF` makes.
pub fn oci_layout_tar(image: &TestImage, ref_name: &str) -> Vec<u8> {
    let mut layer = LayerBuilder::new()
        .dir("blobs", 0o755)
        .dir("blobs/sha256", 0o755);
    for (path, contents) in layout_files(image, ref_name) {
        layer = layer.file(&path, &contents, 0o644);
    }
    layer.tar()
}
