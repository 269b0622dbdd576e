//! A real OCI distribution registry for tests: Debian's `docker-registry` (distribution
//! 2.8) on `127.0.0.1`, with its own temporary storage, optionally behind htpasswd basic
//! auth or token auth (see `super::token`) and TLS with a throwaway CA, and a client that
//! pushes [`TestImage`]s to it with the registry HTTP API. The registry is killed (by its own PID) and its directory
//! removed when the [`Registry`] is dropped, even when the test fails.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use tempfile::TempDir;

use super::images::{TestImage, TestIndex, digest_hex, sha256_digest};

/// The registry binary, from Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long the registry may take to start serving.
pub const REGISTRY_START_DEADLINE: Duration = Duration::from_secs(20);
/// How many free ports to try before giving up, should another process take the one
/// picked before the registry binds it.
const BIND_ATTEMPTS: usize = 5;
/// A bound on every request the harness makes, so a wedged registry fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How a [`Registry`] is set up. `Default` is plain HTTP without auth.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// (user, password) for htpasswd basic auth; distribution 2.8 accepts it over plain
    /// HTTP too.
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS with a certificate for `127.0.0.1` issued by a throwaway CA (see
    /// [`Registry::ca_cert_pem`]).
    pub tls: bool,
    /// Delegate authentication to a token service (`auth: token:`); exclusive with
    /// `basic_auth`.
    pub token_auth: Option<TokenAuth>,
}

/// A registry's token authentication: it accepts only bearer JWTs signed by a key
/// certified in `rootcertbundle`, issued by `issuer` for `service`, and sends clients
/// without one to `realm`. `super::token::TokenIssuer::registry_auth` fills it in.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM certificates of the keys that sign tokens.
    pub rootcertbundle: PathBuf,
    /// (user, password) the harness's pushes present to the token service.
    pub credentials: Option<(String, String)>,
}

/// A registry request that failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url} answered {status} without a usable Location header")]
    NoLocation {
        method: Method,
        url: String,
        status: StatusCode,
    },
    #[error("token service {url}: {reason}")]
    Token { url: String, reason: String },
}

impl PushError {
    /// The HTTP status the registry answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            PushError::Transport { .. } | PushError::Token { .. } => None,
            PushError::Status { status, .. } | PushError::NoLocation { status, .. } => {
                Some(*status)
            }
        }
    }
}

/// The registry process; killed by its own PID and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `docker-registry`.
pub struct Registry {
    // Declared before `dir` so the process is gone before its directory is removed.
    process: Process,
    dir: TempDir,
    storage: PathBuf,
    port: u16,
    options: RegistryOptions,
    http: reqwest::Client,
}

/// How one start-up attempt ended.
enum Started {
    Serving(Process),
    PortTaken,
}

impl Registry {
    /// A plain-HTTP registry without auth.
    pub async fn start() -> Registry {
        Registry::start_with(RegistryOptions::default()).await
    }

    /// A registry set up as `options` says; returns once it answers `GET /v2/`.
    pub async fn start_with(options: RegistryOptions) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("create a temporary directory");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("create the storage dir");
        assert!(
            options.basic_auth.is_none() || options.token_auth.is_none(),
            "a registry has one kind of authentication"
        );
        if let Some((user, password)) = &options.basic_auth {
            write_htpasswd(dir.path(), user, password);
        }
        if options.tls {
            make_certificates(dir.path());
        }
        let http = http_client(options.tls);
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(dir.path(), port, &options))
                .expect("write the registry config");
            let base = base_url(options.tls, port);
            match start_once(dir.path(), &config, port, &base, &http).await {
                Started::Serving(process) => {
                    return Registry {
                        process,
                        dir,
                        storage,
                        port,
                        options,
                        http,
                    };
                }
                Started::PortTaken => continue,
            }
        }
        panic!("docker-registry found no free port in {BIND_ATTEMPTS} attempts");
    }

    /// `127.0.0.1:PORT`, as an image reference names the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        base_url(self.options.tls, self.port)
    }

    /// The PEM of the CA that issued the registry's certificate, when it serves TLS.
    pub fn ca_cert_pem(&self) -> Option<Vec<u8>> {
        self.options
            .tls
            .then(|| std::fs::read(self.dir.path().join("ca.pem")).expect("read the test CA"))
    }

    /// The (user, password) the registry accepts, when it has basic auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.options
            .basic_auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's filesystem storage root. Blob data lives in
    /// `docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data` (see [`Registry::blob_path`]).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The file holding the data of the blob `digest`. The registry serves it as it is
    /// and does not check it against the digest, so overwriting it simulates a corrupt
    /// blob (keep the length to avoid a size mismatch too).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest_hex(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Everything the registry has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The registry's token authentication, when it has it.
    pub fn token_auth(&self) -> Option<&TokenAuth> {
        self.options.token_auth.as_ref()
    }

    /// A pusher with the registry's own credentials, if it has any: the htpasswd user's,
    /// or under token auth those the token service grants push to.
    pub fn pusher(&self) -> Pusher {
        let token_credentials = self
            .token_auth()
            .and_then(|t| t.credentials.as_ref())
            .map(|(u, p)| (u.as_str(), p.as_str()));
        self.pusher_as(self.credentials().or(token_credentials))
    }

    /// A pusher with the given credentials, or none. Under token auth they go to the
    /// token service, not to the registry.
    pub fn pusher_as(&self, credentials: Option<(&str, &str)>) -> Pusher {
        Pusher {
            http: self.http.clone(),
            base: self.url(),
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            bearer: self
                .options
                .token_auth
                .is_some()
                .then(|| Arc::new(Mutex::new(None))),
        }
    }

    /// Pushes `image`'s blobs and its manifest under `tag` in `repo`; panics on failure.
    pub async fn push(&self, repo: &str, tag: &str, image: &TestImage) {
        let pushed = self.pusher().image(repo, tag, image).await;
        pushed.unwrap_or_else(|e| panic!("push {repo}:{tag}: {e}\n{}", self.log_tail()));
    }

    /// Pushes each image (blobs and manifest, by digest), then `index` under `tag`.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        index: &TestIndex,
        images: &[&TestImage],
    ) {
        let pushed = self.pusher().index(repo, tag, index, images).await;
        pushed.unwrap_or_else(|e| panic!("push index {repo}:{tag}: {e}\n{}", self.log_tail()));
    }

    /// Pushes `body` as a manifest of `media_type` under `reference` (a tag or digest)
    /// and returns the digest the registry computed.
    pub async fn push_manifest_raw(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let pushed = self
            .pusher()
            .manifest(repo, reference, media_type, body)
            .await;
        pushed.unwrap_or_else(|e| {
            panic!("push manifest {repo}:{reference}: {e}\n{}", self.log_tail())
        })
    }

    /// Pushes one blob and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let pushed = self.pusher().blob(repo, &digest, data).await;
        pushed.unwrap_or_else(|e| panic!("push blob {digest}: {e}\n{}", self.log_tail()));
        digest
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- docker-registry log (tail) ---\n{tail}")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// Spawns the registry on `port` and waits until it serves, dies, or the deadline passes.
async fn start_once(
    dir: &Path,
    config: &Path,
    port: u16,
    base: &str,
    http: &reqwest::Client,
) -> Started {
    let log_path = dir.join("registry.log");
    let log = File::create(&log_path).expect("create the registry log");
    let mut command = Command::new(REGISTRY_BIN);
    command
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the registry log handle"))
        .stderr(log);
    // REGISTRY_* variables override the config file; the test's registry is only ours.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(name);
        }
    }
    let child = command.spawn().unwrap_or_else(|e| {
        panic!("spawn {REGISTRY_BIN} (make test installs docker-registry): {e}")
    });
    let mut process = Process(child);
    // The registry logs "listening on ADDR" only once it holds the port, so a server of
    // someone else's that took the port in the meantime is never mistaken for ours.
    let listening = format!("listening on 127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(status) = process.0.try_wait().expect("wait for docker-registry") {
            if log.contains("address already in use") {
                return Started::PortTaken;
            }
            panic!("docker-registry exited during start-up with {status}; log:\n{log}");
        }
        if log.contains(&listening) && answers_v2(http, base).await {
            return Started::Serving(process);
        }
        assert!(
            start.elapsed() < REGISTRY_START_DEADLINE,
            "docker-registry did not serve within {REGISTRY_START_DEADLINE:?}; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `GET /v2/` gets a registry's answer (200, or 401 behind auth).
async fn answers_v2(http: &reqwest::Client, base: &str) -> bool {
    match http.get(format!("{base}/v2/")).send().await {
        Ok(response) => response
            .headers()
            .contains_key("docker-distribution-api-version"),
        Err(_) => false,
    }
}

fn base_url(tls: bool, port: u16) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{port}")
}

/// A port that was free a moment ago: bound to port 0, then released.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a local port")
        .port()
}

fn http_client(tls: bool) -> reqwest::Client {
    reqwest::Client::builder()
        // The test registry's certificate comes from a throwaway CA.
        .danger_accept_invalid_certs(tls)
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build the HTTP client")
}

/// The registry's YAML config. Paths are quoted with `{:?}`, which YAML reads as a
/// double-quoted string.
fn config_yaml(dir: &Path, port: u16, options: &RegistryOptions) -> String {
    let mut yaml = format!(
        "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage:?}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: berth-test-secret
",
        storage = dir.join("storage"),
    );
    if options.tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {:?}\n    key: {:?}\n",
            dir.join("cert.pem"),
            dir.join("key.pem")
        ));
    }
    if options.basic_auth.is_some() {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {:?}\n",
            dir.join("htpasswd")
        ));
    }
    if let Some(token) = &options.token_auth {
        yaml.push_str(&format!(
            "auth:\n  token:\n    realm: {:?}\n    service: {:?}\n    issuer: {:?}\n    rootcertbundle: {:?}\n",
            token.realm, token.service, token.issuer, token.rootcertbundle
        ));
    }
    yaml
}

/// Runs a helper tool in `dir` and returns its stdout; panics with its stderr if it fails.
fn run_tool(dir: &Path, program: &str, args: &[&str], install_hint: &str) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} ({install_hint}): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A bcrypt htpasswd file, the only hash distribution accepts.
fn write_htpasswd(dir: &Path, user: &str, password: &str) {
    let line = run_tool(
        dir,
        "htpasswd",
        &["-Bbn", user, password],
        "make test installs apache2-utils",
    );
    std::fs::write(dir.join("htpasswd"), line).expect("write the htpasswd file");
}

/// A throwaway CA (`ca.pem`) and a server certificate for `127.0.0.1` it issued
/// (`cert.pem`, `key.pem`). A CA plus a leaf rather than one self-signed certificate,
/// because rustls refuses a CA certificate as a server's own.
fn make_certificates(dir: &Path) {
    const HINT: &str = "make test installs openssl";
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca: Vec<&str> = ["req", "-x509"]
        .into_iter()
        .chain(ec)
        .chain([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
        ])
        .collect();
    run_tool(dir, "openssl", &ca, HINT);
    let request: Vec<&str> = ["req"]
        .into_iter()
        .chain(ec)
        .chain([
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .collect();
    run_tool(dir, "openssl", &request, HINT);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\n",
    )
    .expect("write the certificate extensions");
    run_tool(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ],
        HINT,
    );
}

/// Pushes to one registry with the HTTP API, with or without credentials. Under token
/// auth it answers the registry's `Bearer` challenges as a client would: it asks the
/// challenge's realm for a token for the challenge's service and scope (presenting the
/// credentials as Basic auth) and retries the request once with that token, which it then
/// sends with every request until the registry asks for another.
#[derive(Clone)]
pub struct Pusher {
    http: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
    /// Under token auth, the last token the token service issued (shared by clones).
    bearer: Option<Arc<Mutex<Option<String>>>>,
}

impl Pusher {
    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        if let Some(bearer) = &self.bearer {
            return match lock(bearer).as_deref() {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
        }
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Sends `request` and returns the response if its status is `expected`; under token
    /// auth, a `401` is answered with a fresh token first.
    async fn send(
        &self,
        method: Method,
        url: &str,
        request: reqwest::RequestBuilder,
        expected: &[StatusCode],
    ) -> Result<reqwest::Response, PushError> {
        let transport = |source| PushError::Transport {
            method: method.clone(),
            url: url.to_string(),
            source,
        };
        // Every request here has an in-memory body (or none), so it can be cloned.
        let retry = request.try_clone();
        let mut response = request.send().await.map_err(transport)?;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(bearer) = &self.bearer
            && let Some(retry) = retry
        {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let token = self.token(&challenge).await?;
            *lock(bearer) = Some(token.clone());
            let mut retry = retry.build().map_err(transport)?;
            // `insert` replaces the stale token the first attempt may have carried.
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| {
                PushError::Token {
                    url: url.to_string(),
                    reason: format!("the token is not a header value: {e}"),
                }
            })?;
            retry.headers_mut().insert(AUTHORIZATION, value);
            response = self.http.execute(retry).await.map_err(transport)?;
        }
        expect_status(method, url, response, expected).await
    }

    /// Gets a token from the realm of a `Bearer` challenge, for its service and scope.
    async fn token(&self, challenge: &str) -> Result<String, PushError> {
        let params = bearer_params(challenge);
        let realm = params
            .iter()
            .find(|(key, _)| key == "realm")
            .map(|(_, value)| value.clone())
            .ok_or_else(|| PushError::Token {
                url: self.base.clone(),
                reason: format!("the registry's challenge names no Bearer realm: {challenge:?}"),
            })?;
        let query: Vec<&(String, String)> = params
            .iter()
            .filter(|(key, _)| key == "service" || key == "scope")
            .collect();
        let mut request = self.http.get(&realm).query(&query);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|source| PushError::Transport {
                method: Method::GET,
                url: realm.clone(),
                source,
            })?;
        let response = expect_status(Method::GET, &realm, response, &[StatusCode::OK]).await?;
        let unusable = |reason: String| PushError::Token {
            url: realm.clone(),
            reason,
        };
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| unusable(format!("unreadable answer: {e}")))?;
        ["token", "access_token"]
            .iter()
            .find_map(|field| body[field].as_str().filter(|t| !t.is_empty()))
            .map(str::to_string)
            .ok_or_else(|| unusable(format!("no token in {body}")))
    }

    /// Uploads a blob monolithically (`POST` an upload, then `PUT` it with the digest),
    /// unless the repository already has it.
    pub async fn blob(&self, repo: &str, digest: &str, data: &[u8]) -> Result<(), PushError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let head = self.request(Method::HEAD, &url);
        let ok_or_missing = [StatusCode::OK, StatusCode::NOT_FOUND];
        if self
            .send(Method::HEAD, &url, head, &ok_or_missing)
            .await?
            .status()
            == StatusCode::OK
        {
            return Ok(());
        }
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let post = self.request(Method::POST, &url);
        let started = self
            .send(Method::POST, &url, post, &[StatusCode::ACCEPTED])
            .await?;
        let no_location = || PushError::NoLocation {
            method: Method::POST,
            url: url.clone(),
            status: started.status(),
        };
        // The Location may be absolute or relative and already carries a query.
        let location = started
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(no_location)?;
        let mut upload = Url::parse(&self.base)
            .and_then(|base| base.join(location))
            .map_err(|_| no_location())?;
        upload.query_pairs_mut().append_pair("digest", digest);
        let upload = upload.to_string();
        let put = self
            .request(Method::PUT, &upload)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec());
        self.send(Method::PUT, &upload, put, &[StatusCode::CREATED])
            .await?;
        Ok(())
    }

    /// Puts a manifest under `reference` and returns the registry's
    /// `Docker-Content-Digest` for it.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, PushError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let put = self
            .request(Method::PUT, &url)
            .header(CONTENT_TYPE, media_type)
            .body(body.to_vec());
        let response = self
            .send(Method::PUT, &url, put, &[StatusCode::CREATED])
            .await?;
        Ok(response
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }

    /// Pushes `image`'s config and layers, then its manifest under `reference`.
    pub async fn image(
        &self,
        repo: &str,
        reference: &str,
        image: &TestImage,
    ) -> Result<(), PushError> {
        for (digest, data) in image.blobs() {
            self.blob(repo, digest, data).await?;
        }
        self.manifest(repo, reference, &image.manifest_media_type, &image.manifest)
            .await?;
        Ok(())
    }

    /// Pushes each image under its manifest digest, then `index` under `tag`. The
    /// registry refuses an index whose manifests it does not have.
    pub async fn index(
        &self,
        repo: &str,
        tag: &str,
        index: &TestIndex,
        images: &[&TestImage],
    ) -> Result<(), PushError> {
        for image in images {
            self.image(repo, &image.manifest_digest, image).await?;
        }
        self.manifest(repo, tag, &index.media_type, &index.json)
            .await?;
        Ok(())
    }
}

/// Returns `response` if its status is `expected`, or the error naming the request.
async fn expect_status(
    method: Method,
    url: &str,
    response: reqwest::Response,
    expected: &[StatusCode],
) -> Result<reqwest::Response, PushError> {
    let status = response.status();
    if expected.contains(&status) {
        return Ok(response);
    }
    Err(PushError::Status {
        method,
        url: url.to_string(),
        status,
        body: response.text().await.unwrap_or_default(),
    })
}

fn lock(token: &Mutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    token.lock().unwrap_or_else(|p| p.into_inner())
}

/// The parameters of a `Bearer` challenge (`Bearer realm="…",service="…",scope="…"`),
/// names lower-cased; none for another scheme. Quoted values may hold commas (a scope
/// like `repository:a:pull,push` does).
fn bearer_params(challenge: &str) -> Vec<(String, String)> {
    let Some((scheme, mut rest)) = challenge.trim().split_once(' ') else {
        return Vec::new();
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Vec::new();
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some((name, after)) = rest.split_once('=') else {
            return params;
        };
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        rest = after;
    }
}
