//! A token service for tests, the other half of the registry v2 "token" authentication:
//! a registry set up with [`TokenIssuer::registry_auth`] answers `401` with
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, the client `GET`s the realm
//! (`?service=…&scope=…`, Basic credentials optional) and presents the JWT it gets back.
//!
//! The issuer listens on `127.0.0.1` (plain HTTP/1.1, one request per connection) and
//! signs RS256 JWTs with an RSA key generated per issuer by the `openssl` CLI. Each
//! token's header carries the issuer's self-signed certificate in `x5c`; the registry
//! trusts it because the same certificate is its `rootcertbundle`. What distribution 2.8
//! checks: `iss` is its `issuer`, `aud` (a string; a JSON array is a malformed token) is
//! its `service`, `exp` is in the future and `nbf` in the past (60 s leeway each; a
//! missing `exp` reads as 1970), the signature verifies with the key the header points at
//! (`x5c`, verified against the bundle, or a `kid` in libtrust fingerprint form of a
//! bundle certificate's key; a header with neither is refused), and `access` grants every
//! action the request needs. `sub`, `iat` and `jti` are not checked.
//!
//! The configured user gets `pull` and `push` on what it asks for, a wrong password is
//! refused with 401, and a request without credentials gets `pull` when anonymous pulls
//! are allowed and a token granting nothing otherwise (which the registry then refuses,
//! as with public token services). Every request is recorded, so tests can check the
//! client really asked. Dropping the [`TokenIssuer`] stops its server task and every
//! connection task.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::Url;
use serde_json::json;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::registry::TokenAuth;

/// The registry's `service`, which tokens carry as their audience.
pub const SERVICE: &str = "berth-test-registry";
/// The tokens' `iss`, which the registry must be configured to trust.
pub const ISSUER: &str = "berth-test-token-issuer";
/// How long an issued token is valid.
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// A bound on reading one request, so a silent client does not keep a task alive.
const READ_DEADLINE: Duration = Duration::from_secs(10);
/// The largest request head the issuer reads.
const MAX_HEAD: usize = 16 * 1024;

/// The actions the configured user is granted.
const USER_ACTIONS: &[&str] = &["pull", "push"];
/// The actions an anonymous request is granted, when anonymous pulls are allowed.
const ANONYMOUS_ACTIONS: &[&str] = &["pull"];

/// How a [`TokenIssuer`] decides.
#[derive(Debug, Clone)]
pub struct IssuerOptions {
    /// (user, password) granted pull and push.
    pub user: (String, String),
    /// Whether a request without credentials gets a pull token.
    pub anonymous_pull: bool,
}

impl Default for IssuerOptions {
    /// The user `berth` with password `s3cret`; no anonymous pulls.
    fn default() -> IssuerOptions {
        IssuerOptions {
            user: ("berth".to_string(), "s3cret".to_string()),
            anonymous_pull: false,
        }
    }
}

/// One request the issuer got, and how it answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    pub path: String,
    /// The decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The user name of the request's Basic credentials, when it carried any (empty when
    /// they could not be decoded).
    pub user: Option<String>,
    /// The HTTP status the issuer answered with.
    pub status: u16,
}

impl TokenRequest {
    /// Whether the request carried Basic credentials.
    pub fn has_credentials(&self) -> bool {
        self.user.is_some()
    }

    /// The first query parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every scope asked for: all `scope` parameters, each split on spaces.
    pub fn scopes(&self) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(key, _)| key == "scope")
            .flat_map(|(_, value)| value.split(' '))
            .filter(|scope| !scope.is_empty())
            .collect()
    }
}

/// The signing key's file, in the issuer's directory.
const KEY_FILE: &str = "token-key.pem";
/// The signing key's self-signed certificate, in the issuer's directory.
const CERT_FILE: &str = "token-cert.pem";

/// The RSA key that signs tokens, and its self-signed certificate.
struct Signer {
    /// Where [`KEY_FILE`] and [`CERT_FILE`] are.
    dir: PathBuf,
    /// The certificate's DER in standard base64, as a JWT `x5c` entry holds it.
    x5c: String,
}

impl Signer {
    /// A fresh 2048-bit RSA key and a certificate for it, in `dir`.
    fn generate(dir: &Path) -> Signer {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                KEY_FILE,
                "-out",
                CERT_FILE,
                "-days",
                "2",
                "-subj",
                "/CN=berth test token issuer",
            ],
            &[],
        )
        .unwrap_or_else(|e| panic!("generate the token signing key: {e}"));
        let der = openssl(dir, &["x509", "-in", CERT_FILE, "-outform", "DER"], &[])
            .unwrap_or_else(|e| panic!("convert the token certificate to DER: {e}"));
        Signer {
            dir: dir.to_path_buf(),
            x5c: STANDARD.encode(der),
        }
    }

    /// A compact RS256 JWT of `claims`. RS256 is RSASSA-PKCS1-v1_5 with SHA-256, which
    /// is what `openssl dgst -sha256 -sign` computes over the `header.payload` bytes.
    fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = openssl(
            &self.dir,
            &["dgst", "-sha256", "-sign", KEY_FILE],
            signing_input.as_bytes(),
        )?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// Runs `openssl` in `dir` with `input` on its stdin and returns its stdout.
fn openssl(dir: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run openssl (make test installs openssl): {e}"))?;
    // The input is a few kilobytes at most, well under a pipe's buffer, so writing it all
    // before reading the output cannot deadlock.
    let mut stdin = child.stdin.take().expect("openssl's stdin is piped");
    stdin
        .write_all(input)
        .map_err(|e| format!("write to openssl: {e}"))?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .map_err(|e| format!("wait for openssl: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "openssl {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output.stdout)
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// One `access` entry of a token's claims, as distribution reads it.
fn access_entry(repository: &str, actions: &[&str]) -> serde_json::Value {
    json!({"type": "repository", "name": repository, "actions": actions})
}

/// The claims of a token for `subject` granting `access`. Every token gets a `jti`
/// unique in this process.
fn claims(subject: &str, access: Vec<serde_json::Value>) -> serde_json::Value {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let now = now();
    json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + TOKEN_TTL.as_secs(),
        "nbf": now,
        "iat": now,
        "jti": format!("berth-test-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        "access": access,
    })
}

/// What the server task shares with the [`TokenIssuer`].
struct State {
    options: IssuerOptions,
    signer: Signer,
    requests: Mutex<Vec<TokenRequest>>,
}

/// A running token service.
pub struct TokenIssuer {
    // Declared before `dir` so the server is stopped before its files are removed.
    server: JoinHandle<()>,
    state: Arc<State>,
    port: u16,
    dir: TempDir,
}

impl TokenIssuer {
    /// Generates a signing key and starts serving on a free loopback port.
    pub async fn start(options: IssuerOptions) -> TokenIssuer {
        let dir = tempfile::Builder::new()
            .prefix("berth-token-")
            .tempdir()
            .expect("create a temporary directory");
        let signer = Signer::generate(dir.path());
        // Bound here and kept, so no other process can take the port in between.
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the token service");
        let port = listener
            .local_addr()
            .expect("the token service's address")
            .port();
        let state = Arc::new(State {
            options,
            signer,
            requests: Mutex::new(Vec::new()),
        });
        let server = tokio::spawn(accept_loop(listener, state.clone()));
        TokenIssuer {
            server,
            state,
            port,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT/token`, the realm the registry's challenge names.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The PEM certificate the registry must trust (`auth.token.rootcertbundle`).
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join(CERT_FILE)
    }

    /// The registry side of this issuer, with the configured user's credentials for the
    /// harness's pushes.
    pub fn registry_auth(&self) -> TokenAuth {
        TokenAuth {
            realm: self.realm(),
            service: SERVICE.to_string(),
            issuer: ISSUER.to_string(),
            rootcertbundle: self.certificate(),
            credentials: Some(self.state.options.user.clone()),
        }
    }

    /// A token granting `actions` on `repository`, without a request; what a CRI
    /// `registry_token` would carry.
    pub fn mint(&self, repository: &str, actions: &[&str]) -> String {
        let claims = claims("berth-test-minted", vec![access_entry(repository, actions)]);
        self.state
            .signer
            .sign(&claims)
            .unwrap_or_else(|e| panic!("mint a token: {e}"))
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock_requests().clone()
    }

    /// Every request so far, forgetting them; for a test to look only at what follows.
    pub fn take_requests(&self) -> Vec<TokenRequest> {
        std::mem::take(&mut *self.state.lock_requests())
    }

    /// The directory holding the key and certificate.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.server.abort();
    }
}

impl State {
    fn lock_requests(&self) -> std::sync::MutexGuard<'_, Vec<TokenRequest>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(serve(stream, state.clone()));
            }
            // Out of file descriptors and the like: the test will see its client fail.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Answers one request and closes the connection.
async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let head = match tokio::time::timeout(READ_DEADLINE, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return,
    };
    let (status, body) = answer(&state, &head).await;
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let body = body.to_string();
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        response.push_str("WWW-Authenticate: Basic realm=\"berth-test-token\"\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    // A client that went away gets nothing; the request is recorded all the same.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads up to the blank line ending the request head; `None` if the client closes first
/// or sends more than [`MAX_HEAD`] bytes. A body, if any, is ignored.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return String::from_utf8(head).ok();
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}

/// A parsed request head.
struct Request {
    method: String,
    url: Url,
    /// (user, password) from a Basic `Authorization` header; empty strings when it
    /// could not be decoded.
    basic: Option<(String, String)>,
}

fn parse_request(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?;
    let url = Url::parse(&format!("http://127.0.0.1{target}")).ok()?;
    let basic = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| {
            let (scheme, credentials) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| decode_basic(credentials.trim()))
        });
    Some(Request { method, url, basic })
}

fn decode_basic(credentials: &str) -> (String, String) {
    STANDARD
        .decode(credentials)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.split_once(':')
                .map(|(user, password)| (user.to_string(), password.to_string()))
        })
        .unwrap_or_default()
}

/// Decides, records the request, and returns the status and JSON body to answer with.
async fn answer(state: &Arc<State>, head: &str) -> (u16, serde_json::Value) {
    let Some(request) = parse_request(head) else {
        return (400, json!({"details": "malformed request"}));
    };
    let (status, body) = decide(state, &request).await;
    state.lock_requests().push(TokenRequest {
        method: request.method.clone(),
        path: request.url.path().to_string(),
        query: request.url.query_pairs().into_owned().collect(),
        user: request.basic.as_ref().map(|(user, _)| user.clone()),
        status,
    });
    (status, body)
}

async fn decide(state: &Arc<State>, request: &Request) -> (u16, serde_json::Value) {
    if request.url.path() != "/token" {
        return (404, json!({"details": "not found"}));
    }
    // The OAuth2 POST form (refresh tokens) is not something these tests issue.
    if request.method != "GET" {
        return (405, json!({"details": "only GET is served"}));
    }
    let query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
    let service = query.iter().find(|(key, _)| key == "service");
    if service.is_none_or(|(_, value)| value != SERVICE) {
        return (
            400,
            json!({"details": format!("unknown service {service:?}")}),
        );
    }
    let (subject, allowed) = match &request.basic {
        Some(credentials) if *credentials == state.options.user => {
            (credentials.0.clone(), USER_ACTIONS)
        }
        Some(_) => return (401, json!({"details": "incorrect username or password"})),
        None if state.options.anonymous_pull => (String::new(), ANONYMOUS_ACTIONS),
        None => (String::new(), &[][..]),
    };
    let access = query
        .iter()
        .filter(|(key, _)| key == "scope")
        .flat_map(|(_, value)| value.split(' '))
        .filter_map(|scope| grant(scope, allowed))
        .collect();
    let claims = claims(&subject, access);
    let state = state.clone();
    match tokio::task::spawn_blocking(move || state.signer.sign(&claims)).await {
        Ok(Ok(token)) => (
            200,
            json!({"token": token, "access_token": token, "expires_in": TOKEN_TTL.as_secs()}),
        ),
        Ok(Err(e)) => (500, json!({"details": e})),
        Err(e) => (500, json!({"details": e.to_string()})),
    }
}

/// The access entry for one `repository:NAME:ACTIONS` scope: the requested actions that
/// are `allowed`, or `None` when that leaves nothing (or the scope is of another type).
fn grant(scope: &str, allowed: &[&str]) -> Option<serde_json::Value> {
    let (resource, actions) = scope.rsplit_once(':')?;
    let name = resource.strip_prefix("repository:")?;
    let granted: Vec<&str> = actions
        .split(',')
        .filter(|action| allowed.contains(action))
        .collect();
    (!granted.is_empty()).then(|| access_entry(name, &granted))
}
