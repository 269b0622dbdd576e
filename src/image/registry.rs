//! A client for the OCI distribution (Docker registry HTTP API v2) pull protocol.
//!
//! - Endpoints: the `mirrors` configured for the reference's registry, in order, then the
//!   registry itself (`docker.io` is served by `registry-1.docker.io`).
//! - TLS is verified unless the registry is `insecure`; an insecure registry is also
//!   tried over plain HTTP when HTTPS fails, and the choice is remembered.
//! - Authentication follows the registry's `WWW-Authenticate` challenge: Basic with the
//!   CRI credentials, or Bearer with a token from the challenge's realm (anonymous, or
//!   with the credentials, a registry token or an identity token). Tokens are cached per
//!   endpoint and repository.
//! - Manifests are read with a size cap; blobs stream to a file, hashed on the way, and
//!   are accepted only when their size and digest match the descriptor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::{Response, StatusCode, header};

use super::digest::{Digest, Hasher};
use super::reference::{DEFAULT_REGISTRY, Reference};
use serde::{Deserialize, Serialize};

/// Manifests and indexes larger than this are refused (containerd uses the same cap).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// How often a long blob download reports its progress in the log.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Every manifest format berth understands, for the `Accept` header.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// `[registries."<host>"]` of the daemon's config: how to reach one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Endpoints (`http://127.0.0.1:5000`) tried in order before the registry itself.
    pub mirrors: Vec<String>,
    /// Plain HTTP (and unverified TLS) is allowed for this registry.
    pub insecure: bool,
    /// The registry's own endpoint, tried after the mirrors (as containerd's hosts.toml
    /// `server`). Default: `https://<host>`, or `https://registry-1.docker.io` for
    /// docker.io.
    pub server: Option<String>,
}

/// Credentials from the CRI `AuthConfig`.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A bearer token to send as is (`registry_token`).
    RegistryToken(String),
    /// An OAuth2 refresh token to exchange at the token realm (`identity_token`).
    IdentityToken(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.write_str(match self {
            Auth::Anonymous => "Anonymous",
            Auth::Basic { .. } => "Basic",
            Auth::RegistryToken(_) => "RegistryToken",
            Auth::IdentityToken(_) => "IdentityToken",
        })
    }
}

impl Auth {
    /// Decodes the CRI `AuthConfig` fields; `auth` is base64 of `user:password`.
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Auth, String> {
        if !registry_token.is_empty() {
            return Ok(Auth::RegistryToken(registry_token.to_string()));
        }
        if !identity_token.is_empty() {
            return Ok(Auth::IdentityToken(identity_token.to_string()));
        }
        if !username.is_empty() || !password.is_empty() {
            return Ok(Auth::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        if !auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| "auth is not base64".to_string())?;
            let text = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
            let (username, password) = text
                .split_once(':')
                .ok_or_else(|| "auth is not base64 of user:password".to_string())?;
            return Ok(Auth::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        Ok(Auth::Anonymous)
    }

    /// A digest of the credentials, so that what one set of credentials obtained (a cached
    /// token, a shared pull) is never used for another.
    pub fn fingerprint(&self) -> String {
        let canonical = match self {
            Auth::Anonymous => "anonymous".to_string(),
            Auth::Basic { username, password } => format!("basic\0{username}\0{password}"),
            Auth::RegistryToken(token) => format!("registry-token\0{token}"),
            Auth::IdentityToken(token) => format!("identity-token\0{token}"),
        };
        Digest::of(canonical.as_bytes()).hex()[..16].to_string()
    }

    fn has_credentials(&self) -> bool {
        !matches!(self, Auth::Anonymous)
    }

    fn basic_header(&self) -> Option<String> {
        match self {
            Auth::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

/// One place a repository can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://registry-1.docker.io/v2` or a mirror's URL ending in `/v2`.
    pub base: String,
    /// The registry or mirror as users name it, for messages.
    pub name: String,
    pub insecure: bool,
    pub is_mirror: bool,
}

/// Why a request to one endpoint failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} refused access: {reason}")]
    Unauthorized { endpoint: String, reason: String },
    #[error("{endpoint} has no {what}")]
    NotFound { endpoint: String, what: String },
    #[error("{endpoint} answered {status} for {what}")]
    Status {
        endpoint: String,
        status: u16,
        what: String,
    },
    #[error("{endpoint}: {what}: {reason}")]
    Invalid {
        endpoint: String,
        what: String,
        reason: String,
    },
    #[error("{what} from {endpoint} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        endpoint: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("writing {path}: {reason}")]
    Local { path: String, reason: String },
}

/// A fetched manifest or index.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// The registry client shared by all pulls.
pub struct RegistryClient {
    registries: BTreeMap<String, RegistryConfig>,
    verified: reqwest::Client,
    unverified: reqwest::Client,
    /// `Authorization` values by endpoint base, repository and credentials fingerprint:
    /// a token is only ever reused with the credentials that obtained it.
    tokens: Mutex<HashMap<(String, String, String), String>>,
    /// Insecure registries found to speak plain HTTP.
    plain_http: Mutex<HashSet<String>>,
}

impl RegistryClient {
    pub fn new(
        registries: BTreeMap<String, RegistryConfig>,
    ) -> Result<RegistryClient, reqwest::Error> {
        let build = |verify: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(60))
                .danger_accept_invalid_certs(!verify)
                .build()
        };
        Ok(RegistryClient {
            registries,
            verified: build(true)?,
            unverified: build(false)?,
            tokens: Mutex::new(HashMap::new()),
            plain_http: Mutex::new(HashSet::new()),
        })
    }

    /// The endpoints to try for a reference, mirrors first.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let config = self.registries.get(&reference.registry);
        let insecure = config.is_some_and(|c| c.insecure);
        let mut endpoints: Vec<Endpoint> = config
            .map(|c| c.mirrors.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|mirror| {
                let trimmed = mirror.trim_end_matches('/');
                Endpoint {
                    base: api_base(trimmed),
                    name: format!("mirror {trimmed}"),
                    insecure: insecure || trimmed.starts_with("http://"),
                    is_mirror: true,
                }
            })
            .collect();
        let base = match config.and_then(|c| c.server.as_deref()) {
            Some(server) => api_base(server.trim_end_matches('/')),
            None if reference.registry == DEFAULT_REGISTRY => {
                "https://registry-1.docker.io/v2".to_string()
            }
            None => format!("https://{}/v2", reference.registry),
        };
        endpoints.push(Endpoint {
            insecure: insecure || base.starts_with("http://"),
            base,
            name: format!("registry {}", reference.registry),
            is_mirror: false,
        });
        endpoints
    }

    /// Fetches a manifest or index by tag or digest. When asked by digest, the content
    /// must match it.
    pub async fn manifest(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        reference: &str,
        auth: &Auth,
    ) -> Result<Fetched, FetchError> {
        let what = format!("manifest {repository}:{reference}");
        let response = self
            .get(
                endpoint,
                repository,
                &format!("manifests/{reference}"),
                Some(ACCEPT_MANIFESTS),
                auth,
                &what,
            )
            .await?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_limited(response, MAX_MANIFEST, endpoint, &what).await?;
        let digest = Digest::of(&bytes);
        let expected = Digest::parse(reference)
            .ok()
            .or_else(|| header_digest.as_deref().and_then(|d| Digest::parse(d).ok()));
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(FetchError::DigestMismatch {
                endpoint: endpoint.name.clone(),
                what,
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// Fetches a small blob (a config) into memory, verified.
    pub async fn small_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        digest: &Digest,
        limit: u64,
        auth: &Auth,
    ) -> Result<Vec<u8>, FetchError> {
        let what = format!("blob {digest}");
        let response = self
            .get(
                endpoint,
                repository,
                &format!("blobs/{digest}"),
                None,
                auth,
                &what,
            )
            .await?;
        let bytes = read_limited(response, limit, endpoint, &what).await?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(FetchError::DigestMismatch {
                endpoint: endpoint.name.clone(),
                what,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Streams blob `digest` of `size` bytes into `landing` as it arrives, and checks its
    /// size and digest on the way: `Ok` only once all of it came and matched. What
    /// landed is to be used only then (the caller tells the landing's reader so).
    pub async fn stream_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        digest: &Digest,
        size: u64,
        landing: &mut super::landing::Landing,
        auth: &Auth,
    ) -> Result<(), FetchError> {
        let what = format!("blob {digest}");
        let response = self
            .get(
                endpoint,
                repository,
                &format!("blobs/{digest}"),
                None,
                auth,
                &what,
            )
            .await?;
        let mut hasher = Hasher::default();
        let mut stream = response.bytes_stream();
        let mut last_report = std::time::Instant::now();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| FetchError::Unreachable {
                endpoint: endpoint.name.clone(),
                reason: format!("{what} interrupted: {e}"),
            })?;
            hasher.update(&chunk);
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = std::time::Instant::now();
                tracing::info!(blob = %digest, bytes = hasher.len(), of = size, from = %endpoint.name, "downloading");
            }
            if hasher.len() > size {
                return Err(FetchError::Invalid {
                    endpoint: endpoint.name.clone(),
                    what,
                    reason: format!("larger than the {size} bytes its descriptor gives"),
                });
            }
            landing.write(&chunk).map_err(|e| FetchError::Local {
                path: format!("the landing file of {what}"),
                reason: e.to_string(),
            })?;
        }
        if hasher.len() != size {
            return Err(FetchError::Invalid {
                endpoint: endpoint.name.clone(),
                what,
                reason: format!(
                    "{} bytes, not the {size} its descriptor gives",
                    hasher.len()
                ),
            });
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(FetchError::DigestMismatch {
                endpoint: endpoint.name.clone(),
                what,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// A GET with authentication: answers the registry's challenge once.
    async fn get(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        path: &str,
        accept: Option<&str>,
        auth: &Auth,
        what: &str,
    ) -> Result<Response, FetchError> {
        let key = (
            endpoint.base.clone(),
            repository.to_string(),
            auth.fingerprint(),
        );
        let cached = self.lock_tokens().get(&key).cloned();
        let mut response = self
            .send(endpoint, repository, path, accept, cached.as_deref())
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_default();
            let authorization = self
                .answer_challenge(endpoint, repository, &challenge, auth)
                .await?;
            self.lock_tokens().insert(key, authorization.clone());
            response = self
                .send(endpoint, repository, path, accept, Some(&authorization))
                .await?;
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FetchError::Unauthorized {
                endpoint: endpoint.name.clone(),
                reason: if auth.has_credentials() {
                    format!("the credentials were refused ({status})")
                } else {
                    format!("{what} needs credentials ({status})")
                },
            },
            StatusCode::NOT_FOUND => FetchError::NotFound {
                endpoint: endpoint.name.clone(),
                what: what.to_string(),
            },
            _ => FetchError::Status {
                endpoint: endpoint.name.clone(),
                status: status.as_u16(),
                what: what.to_string(),
            },
        })
    }

    /// Sends one GET, falling back to plain HTTP for an insecure registry that does not
    /// speak TLS.
    async fn send(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        path: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response, FetchError> {
        let client = if endpoint.insecure {
            &self.unverified
        } else {
            &self.verified
        };
        let plain = endpoint.insecure && self.lock_plain().contains(&endpoint.base);
        let base = if plain {
            endpoint.base.replacen("https://", "http://", 1)
        } else {
            endpoint.base.clone()
        };
        let request = |base: &str| {
            let mut request = client.get(format!("{base}/{repository}/{path}"));
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            if let Some(authorization) = authorization {
                request = request.header(header::AUTHORIZATION, authorization);
            }
            request
        };
        match request(&base).send().await {
            Ok(response) => Ok(response),
            Err(err)
                if endpoint.insecure
                    && !endpoint.is_mirror
                    && !plain
                    && base.starts_with("https://") =>
            {
                let http = base.replacen("https://", "http://", 1);
                tracing::debug!(endpoint = %endpoint.name, %err, "HTTPS failed; trying plain HTTP on an insecure registry");
                let response = request(&http)
                    .send()
                    .await
                    .map_err(|e| unreachable(endpoint, &e))?;
                self.lock_plain().insert(endpoint.base.clone());
                Ok(response)
            }
            Err(err) => Err(unreachable(endpoint, &err)),
        }
    }

    /// Computes the `Authorization` value that answers a `WWW-Authenticate` challenge.
    async fn answer_challenge(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        challenge: &str,
        auth: &Auth,
    ) -> Result<String, FetchError> {
        let refused = |reason: String| FetchError::Unauthorized {
            endpoint: endpoint.name.clone(),
            reason,
        };
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            return auth.basic_header().ok_or_else(|| {
                refused("the registry needs credentials (a user name and password)".to_string())
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(refused(format!(
                "unsupported authentication challenge {challenge:?}"
            )));
        }
        if let Auth::RegistryToken(token) = auth {
            return Ok(format!("Bearer {token}"));
        }
        let realm = params
            .get("realm")
            .ok_or_else(|| refused("the Bearer challenge names no realm".to_string()))?;
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{repository}:pull"));
        let service = params.get("service").cloned().unwrap_or_default();
        let request = self.token_request(endpoint, realm, &service, &scope, auth);
        let response = request.send().await.map_err(|e| FetchError::Unreachable {
            endpoint: format!("token service {realm}"),
            reason: e.to_string(),
        })?;
        bearer_token(response, auth).await.map_err(refused)
    }

    /// The request for a Bearer token of `scope` from the token service at `realm`: a
    /// refresh-token grant for an identity token, else a GET with the credentials (if
    /// any) as Basic authentication.
    fn token_request(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: &str,
        scope: &str,
        auth: &Auth,
    ) -> reqwest::RequestBuilder {
        let client = if endpoint.insecure {
            &self.unverified
        } else {
            &self.verified
        };
        match auth {
            Auth::IdentityToken(refresh) => client.post(realm).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", service),
                ("scope", scope),
                ("client_id", "berth"),
            ]),
            _ => {
                let mut request = client
                    .get(realm)
                    .query(&[("service", service), ("scope", scope)]);
                if let Some(basic) = auth.basic_header() {
                    request = request.header(header::AUTHORIZATION, basic);
                }
                request
            }
        }
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), String>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_plain(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.plain_http.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `Authorization` value a token service's answer gives; `Err` says why it gives
/// none.
async fn bearer_token(response: Response, auth: &Auth) -> Result<String, String> {
    let status = response.status();
    if !status.is_success() {
        return Err(if auth.has_credentials() {
            format!("the token service refused the credentials ({status})")
        } else {
            format!("the token service refused an anonymous token ({status})")
        });
    }
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let body: TokenResponse = response
        .json()
        .await
        .map_err(|e| format!("unreadable token response: {e}"))?;
    body.token
        .or(body.access_token)
        .filter(|t| !t.is_empty())
        .map(|t| format!("Bearer {t}"))
        .ok_or_else(|| "the token service returned no token".to_string())
}

/// The API root of an endpoint URL: `http://m:5000` → `http://m:5000/v2`.
fn api_base(url: &str) -> String {
    if url.ends_with("/v2") {
        url.to_string()
    } else {
        format!("{url}/v2")
    }
}

fn unreachable(endpoint: &Endpoint, err: &reqwest::Error) -> FetchError {
    // reqwest's Display hides the cause; the chain says "connection refused" and the like.
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::Unreachable {
        endpoint: endpoint.name.clone(),
        reason,
    }
}

/// Reads a response body into memory, refusing more than `limit` bytes.
async fn read_limited(
    response: Response,
    limit: u64,
    endpoint: &Endpoint,
    what: &str,
) -> Result<Vec<u8>, FetchError> {
    let too_big = || FetchError::Invalid {
        endpoint: endpoint.name.clone(),
        what: what.to_string(),
        reason: format!("larger than {limit} bytes"),
    };
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Unreachable {
            endpoint: endpoint.name.clone(),
            reason: format!("{what} interrupted: {e}"),
        })?;
        if bytes.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Splits `Bearer realm="…",service="…",scope="…"` into its scheme and parameters.
fn parse_challenge(challenge: &str) -> (String, HashMap<String, String>) {
    let challenge = challenge.trim();
    let (scheme, rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(params["realm"], "Registry Realm");
        let (scheme, params) = parse_challenge("Basic");
        assert_eq!((scheme.as_str(), params.len()), ("Basic", 0));
    }

    #[test]
    fn cri_auth_fields() {
        let basic = base64::engine::general_purpose::STANDARD.encode("user:pa:ss");
        match Auth::from_cri("", "", &basic, "", "").unwrap() {
            Auth::Basic { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("user", "pa:ss"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Auth::from_cri("u", "p", "", "", "").unwrap(),
            Auth::Basic { .. }
        ));
        assert!(matches!(
            Auth::from_cri("", "", "", "", "tok").unwrap(),
            Auth::RegistryToken(_)
        ));
        assert!(matches!(
            Auth::from_cri("", "", "", "id", "").unwrap(),
            Auth::IdentityToken(_)
        ));
        assert!(matches!(
            Auth::from_cri("", "", "", "", "").unwrap(),
            Auth::Anonymous
        ));
        assert!(Auth::from_cri("", "", "!!!", "", "").is_err());
        assert!(
            format!("{:?}", Auth::from_cri("u", "secret", "", "", "").unwrap())
                .find("secret")
                .is_none()
        );
    }

    #[test]
    fn mirrors_come_first() {
        let mut registries = BTreeMap::new();
        registries.insert(
            "docker.io".to_string(),
            RegistryConfig {
                mirrors: vec![
                    "http://127.0.0.1:5000/".to_string(),
                    "https://m.example/v2".to_string(),
                ],
                insecure: false,
                server: None,
            },
        );
        registries.insert(
            "local.test".to_string(),
            RegistryConfig {
                mirrors: Vec::new(),
                insecure: false,
                server: Some("http://127.0.0.1:5000/".to_string()),
            },
        );
        let client = RegistryClient::new(registries).unwrap();
        let endpoints = client.endpoints(&Reference::parse("busybox").unwrap());
        let bases: Vec<&str> = endpoints.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://127.0.0.1:5000/v2",
                "https://m.example/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert!(endpoints[0].insecure && !endpoints[1].insecure && !endpoints[2].is_mirror);
        let other = client.endpoints(&Reference::parse("quay.io/a/b").unwrap());
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].base, "https://quay.io/v2");
        let local = client.endpoints(&Reference::parse("local.test/a").unwrap());
        assert_eq!(local[0].base, "http://127.0.0.1:5000/v2");
        assert!(local[0].insecure, "an http:// server is plain HTTP");
    }
}
