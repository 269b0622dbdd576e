//! berth's configuration: a TOML file (default `/etc/berth/berth.toml`) plus command-line
//! overrides.
//!
//! Every key has a default, so a missing default file means "all defaults". The keys are
//! user-facing and stable:
//!
//! ```toml
//! root = "/var/lib/berth"          # persistent state: metadata store, images
//! state = "/run/berth"             # volatile state: bundles, netns pins, monitor files
//! socket = "/run/berth/berth.sock" # the CRI socket
//! log_level = "info"               # or any tracing filter, e.g. "berth=debug,h2=warn"
//! log_format = "text"              # or "json"
//! sandbox_image = "registry.k8s.io/pause:3.10"  # optional: berth ships its own pause
//!
//! [streaming]
//! address = "127.0.0.1:0"
//! idle_timeout_seconds = 14400     # connections idle this long are closed
//! token_ttl_seconds = 60           # how long a streaming URL stays usable
//!
//! [network]
//! conf_dir = "/etc/cni/net.d"
//! bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
//! default_bridge = "berth0"        # for the conflist written when conf_dir has none
//! default_subnet = "10.88.0.0/16"
//! plugin_timeout_seconds = 60      # a plugin taking longer is killed, the pod undone
//!
//! [runtime]
//! default_handler = "runc"
//! start_timeout_seconds = 60       # the same for a runtime command, or a container's start
//! [runtime.handlers.runc]
//! path = "/usr/sbin/runc"
//!
//! [registries."docker.io"]
//! mirrors = ["http://127.0.0.1:5000"]
//! insecure = true
//! server = "https://registry-1.docker.io"   # the registry's own endpoint
//! ```
//!
//! An unknown key or a bad value is a start-up error that names the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::image::registry::RegistryConfig;

/// Where the configuration file is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/berth.toml";

/// The name of the runtime handler that exists even when none is configured.
pub const IMPLICIT_HANDLER: &str = "runc";

/// The longest path a unix socket address can hold (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}, line {line}: {}{message}", key_prefix(key))]
    Parse {
        path: PathBuf,
        line: usize,
        /// The dotted key path; empty for a syntax error outside any key.
        key: String,
        message: String,
    },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The largest `events.subscriber_buffer`.
const MAX_SUBSCRIBER_BUFFER: usize = 1_000_000;

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state: the metadata store, image blobs and layers.
    pub root: PathBuf,
    /// Volatile state: bundles, netns pins, monitor sockets and exit files.
    pub state: PathBuf,
    /// The CRI unix socket.
    pub socket: PathBuf,
    /// A `tracing` filter: a level (`info`) or directives (`berth=debug,h2=warn`).
    pub log_level: String,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
    /// A pause image to run pods' infra containers from, instead of berth's own pause
    /// program (which needs no pull). Pulled on first use and pinned.
    pub sandbox_image: Option<String>,
    pub streaming: StreamingConfig,
    pub network: NetworkConfig,
    pub runtime: RuntimeSettings,
    pub events: EventsConfig,
    pub metrics: MetricsConfig,
    /// Per registry host (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`).
    pub registries: BTreeMap<String, RegistryConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/berth"),
            state: PathBuf::from("/run/berth"),
            socket: PathBuf::from("/run/berth/berth.sock"),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            sandbox_image: None,
            streaming: StreamingConfig::default(),
            network: NetworkConfig::default(),
            runtime: RuntimeSettings::default(),
            events: EventsConfig::default(),
            metrics: MetricsConfig::default(),
            registries: BTreeMap::new(),
        }
    }
}

/// `[events]`: the GetContainerEvents streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events one subscriber may have unread; past it, its stream ends with
    /// ResourceExhausted (the kubelet then relists). Also how many events are kept for the
    /// next subscriber while none listens.
    pub subscriber_buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            subscriber_buffer: 1000,
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (e.g. `127.0.0.1:9810`); none by default.
    pub address: Option<SocketAddr>,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// `[streaming]`: the exec / attach / port-forward HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Listen address; port 0 picks a free port. Loopback by default, as kubelet expects
    /// streaming to go through the API server's proxy.
    pub address: SocketAddr,
    /// A connection with no traffic (not even a PING) for this long is closed; the
    /// kubelet's default is 4 hours.
    pub idle_timeout_seconds: u64,
    /// How long the URL an Exec, Attach or PortForward call returns stays usable.
    pub token_ttl_seconds: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            idle_timeout_seconds: 4 * 60 * 60,
            token_ttl_seconds: crate::streaming::tokens::TOKEN_TTL.as_secs(),
        }
    }
}

/// `[network]`: where CNI configuration and plugins are found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// The bridge of the conflist berth writes when `conf_dir` has none.
    pub default_bridge: String,
    /// Its subnet, unless the kubelet has given a pod CIDR by then.
    pub default_subnet: String,
    /// How long one plugin may take before it (and what it runs) is killed and the
    /// pod's network torn down: the RunPodSandbox fails instead of hanging.
    pub plugin_timeout_seconds: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            default_bridge: "berth0".to_string(),
            default_subnet: "10.88.0.0/16".to_string(),
            plugin_timeout_seconds: 60,
        }
    }
}

/// `[runtime]`: the OCI runtimes, one per CRI runtime handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// The handler used when a request names none (`runtime_handler` empty).
    pub default_handler: String,
    /// `[runtime.handlers.<name>]`.
    pub handlers: BTreeMap<String, HandlerConfig>,
    /// How long one runtime command (create, start, kill, delete, update…), or a
    /// container's start by its monitor, may take before it (and what it made) is
    /// killed and the RPC fails.
    pub start_timeout_seconds: u64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            default_handler: IMPLICIT_HANDLER.to_string(),
            handlers: BTreeMap::new(),
            start_timeout_seconds: 60,
        }
    }
}

/// `[runtime.handlers.<name>]`: one OCI runtime binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// An absolute path, or a bare name looked up in `PATH`.
    pub path: PathBuf,
}

/// Values given on the command line; each replaces the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads the configuration: the file at `path` (which must exist), or the default file
    /// (which may be missing), then the overrides, then validation.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Config::read_file(path)?,
            None => match Config::read_file(Path::new(DEFAULT_CONFIG_PATH)) {
                Err(ConfigError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Config::default()
                }
                other => other?,
            },
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    fn read_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|err| match err {
            ConfigError::Parse {
                line, key, message, ..
            } => ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                key,
                message,
            },
            other => other,
        })
    }

    /// The whole default configuration as a config file (`berth config default`): every
    /// key with its default value, under a header that says where it is read from.
    pub fn default_file() -> String {
        let body = toml::to_string_pretty(&Config::default())
            .unwrap_or_else(|e| format!("# cannot print the defaults: {e}\n"));
        format!(
            "# berth's configuration, every key at its default value (`berth config default`).\n\
             # Read from {DEFAULT_CONFIG_PATH} unless `--config` names another file; a missing\n\
             # file means these defaults. An unknown key or a bad value is a start-up error\n\
             # that names the key. The keys are described in berth's README (Configuration).\n\
             # A handler besides runc is a table of its own, e.g.:\n\
             #   [runtime.handlers.youki]\n\
             #   path = \"youki\"\n\
             # Prometheus metrics are served when [metrics] has an address, e.g.:\n\
             #   address = \"127.0.0.1:9810\"\n\n{body}"
        )
    }

    /// Parses TOML text; the error names the key that is unknown or of the wrong type.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = err.into_inner();
            let offset = inner.span().map_or(0, |span| span.start);
            ConfigError::Parse {
                path: PathBuf::new(),
                line: text[..offset.min(text.len())].matches('\n').count() + 1,
                key,
                message: inner.message().trim().replace('\n', "; "),
            }
        })
    }

    fn apply(&mut self, overrides: Overrides) {
        let Overrides {
            root,
            state,
            socket,
            log_level,
            log_format,
        } = overrides;
        if let Some(root) = root {
            self.root = root;
        }
        if let Some(state) = state {
            self.state = state;
        }
        if let Some(socket) = socket {
            self.socket = socket;
        }
        if let Some(level) = log_level {
            self.log_level = level;
        }
        if let Some(format) = log_format {
            self.log_format = format;
        }
    }

    /// Checks the values that the types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_absolute("root", &self.root)?;
        require_absolute("state", &self.state)?;
        require_absolute("socket", &self.socket)?;
        if self.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ConfigError::invalid(
                "socket",
                format!(
                    "{} is longer than the {MAX_SOCKET_PATH} bytes a unix socket path can hold",
                    self.socket.display()
                ),
            ));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError::invalid(
                "log_level",
                format!(
                    "{:?} is not a level or tracing filter: {err}",
                    self.log_level
                ),
            ));
        }
        if !(1..=MAX_SUBSCRIBER_BUFFER).contains(&self.events.subscriber_buffer) {
            return Err(ConfigError::invalid(
                "events.subscriber_buffer",
                format!("must be 1 to {MAX_SUBSCRIBER_BUFFER}"),
            ));
        }
        require_absolute("network.conf_dir", &self.network.conf_dir)?;
        if self.network.bin_dirs.is_empty() {
            return Err(ConfigError::invalid(
                "network.bin_dirs",
                "at least one CNI plugin directory is needed",
            ));
        }
        for dir in &self.network.bin_dirs {
            require_absolute("network.bin_dirs", dir)?;
        }
        let bridge = &self.network.default_bridge;
        if bridge.is_empty()
            || bridge.len() > 15
            || !bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError::invalid(
                "network.default_bridge",
                format!(
                    "{bridge:?} is not an interface name (1 to 15 letters, digits, '-', '_', '.')"
                ),
            ));
        }
        crate::network::validate_cidr(&self.network.default_subnet)
            .map_err(|reason| ConfigError::invalid("network.default_subnet", reason))?;
        for (key, seconds) in [
            (
                "network.plugin_timeout_seconds",
                self.network.plugin_timeout_seconds,
            ),
            (
                "runtime.start_timeout_seconds",
                self.runtime.start_timeout_seconds,
            ),
        ] {
            if seconds == 0 || seconds > 3600 {
                return Err(ConfigError::invalid(
                    key,
                    format!("{seconds} is not 1 to 3600 seconds"),
                ));
            }
        }
        if let Some(image) = &self.sandbox_image {
            crate::image::reference::Reference::parse(image)
                .map_err(|reason| ConfigError::invalid("sandbox_image", reason))?;
        }
        self.validate_runtime()?;
        self.validate_registries()
    }

    fn validate_runtime(&self) -> Result<(), ConfigError> {
        for (name, handler) in &self.runtime.handlers {
            if !is_handler_name(name) {
                return Err(ConfigError::invalid(
                    format!("runtime.handlers.{name}"),
                    "a handler name is 1 to 63 lowercase letters, digits, '-', '_' or '.'",
                ));
            }
            let path = &handler.path;
            let bare_name = path.components().count() == 1 && path.is_relative();
            if path.as_os_str().is_empty() || !(path.is_absolute() || bare_name) {
                return Err(ConfigError::invalid(
                    format!("runtime.handlers.{name}.path"),
                    format!(
                        "{:?} must be an absolute path or a program name looked up in PATH",
                        path.display()
                    ),
                ));
            }
        }
        let default = &self.runtime.default_handler;
        if !self.handlers().contains_key(default.as_str()) {
            return Err(ConfigError::invalid(
                "runtime.default_handler",
                format!("{default:?} is not a configured handler (see [runtime.handlers.<name>])"),
            ));
        }
        Ok(())
    }

    fn validate_registries(&self) -> Result<(), ConfigError> {
        for (host, registry) in &self.registries {
            if host.is_empty()
                || host.contains('/')
                || host.parse::<http::uri::Authority>().is_err()
            {
                return Err(ConfigError::invalid(
                    format!("registries.\"{host}\""),
                    "a registry key is a host name with an optional port, e.g. \"docker.io\"",
                ));
            }
            let urls = registry
                .mirrors
                .iter()
                .map(|m| ("mirrors", m))
                .chain(registry.server.iter().map(|s| ("server", s)));
            for (key, url) in urls {
                let uri: Option<http::Uri> = url.parse().ok();
                let valid = uri.as_ref().is_some_and(|uri| {
                    matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
                });
                if !valid {
                    return Err(ConfigError::invalid(
                        format!("registries.\"{host}\".{key}"),
                        format!("{url:?} is not an http:// or https:// URL"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The runtime handlers in effect: the configured ones, plus the implicit `runc`
    /// (found in `PATH`) unless a handler of that name is configured.
    pub fn handlers(&self) -> BTreeMap<&str, &Path> {
        let mut handlers: BTreeMap<&str, &Path> = self
            .runtime
            .handlers
            .iter()
            .map(|(name, handler)| (name.as_str(), handler.path.as_path()))
            .collect();
        handlers
            .entry(IMPLICIT_HANDLER)
            .or_insert_with(|| Path::new(IMPLICIT_HANDLER));
        handlers
    }
}

fn require_absolute(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{:?} must be an absolute path", path.display()),
        ))
    }
}

fn is_handler_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name != "."
        && name != ".."
}

#[cfg(test)]
mod default_file_tests {
    use super::Config;

    #[test]
    fn the_default_file_reads_back_as_the_defaults() {
        let text = Config::default_file();
        assert!(
            text.contains("[runtime]") && text.contains("[network]"),
            "{text}"
        );
        let read = Config::parse(&text).expect("the default file parses");
        assert_eq!(read, Config::default());
        read.validate().expect("and is valid");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_key(text: &str) -> String {
        match Config::parse(text).and_then(|c| c.validate().map(|()| c)) {
            Err(ConfigError::Parse { key, .. }) | Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.root, Path::new("/var/lib/berth"));
        assert_eq!(config.state, Path::new("/run/berth"));
        assert_eq!(config.socket, Path::new("/run/berth/berth.sock"));
        assert_eq!(config.streaming.address.to_string(), "127.0.0.1:0");
        assert_eq!(config.network.conf_dir, Path::new("/etc/cni/net.d"));
        assert_eq!(
            config.network.bin_dirs,
            vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
        );
        assert_eq!(config.runtime.default_handler, "runc");
        config.validate().unwrap();
    }

    #[test]
    fn every_documented_key_parses() {
        let text = r#"
            root = "/tmp/r"
            state = "/tmp/s"
            socket = "/tmp/s/b.sock"
            log_level = "berth=debug,h2=warn"
            log_format = "json"
            sandbox_image = "registry.k8s.io/pause:3.10"
            [streaming]
            address = "0.0.0.0:10010"
            [network]
            conf_dir = "/tmp/cni"
            bin_dirs = ["/tmp/bin"]
            default_bridge = "cni-test0"
            default_subnet = "10.99.0.0/24"
            [runtime]
            default_handler = "fast"
            [runtime.handlers.fast]
            path = "/usr/bin/crun"
            [runtime.handlers.runc]
            path = "runc"
            [registries."docker.io"]
            mirrors = ["http://127.0.0.1:5000", "https://mirror.example:443/v2"]
            [registries."127.0.0.1:5000"]
            insecure = true
            server = "http://127.0.0.1:5000"
        "#;
        let config = Config::parse(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.streaming.address.port(), 10010);
        assert_eq!(config.handlers()["fast"], Path::new("/usr/bin/crun"));
        assert_eq!(config.handlers()["runc"], Path::new("runc"));
        assert_eq!(config.registries["docker.io"].mirrors.len(), 2);
        assert!(config.registries["127.0.0.1:5000"].insecure);
        assert!(!config.registries["docker.io"].insecure);
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(invalid_key("rooot = \"/x\""), "rooot");
        assert_eq!(
            invalid_key("[network]\nconfdir = \"/x\""),
            "network.confdir"
        );
        assert_eq!(
            invalid_key("[runtime.handlers.runc]\npath = \"runc\"\nargs = []"),
            "runtime.handlers.runc.args"
        );
        assert_eq!(
            invalid_key("[registries.\"docker.io\"]\nmirror = []"),
            "registries.docker.io.mirror"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        assert_eq!(invalid_key("root = 3"), "root");
        assert_eq!(
            invalid_key("[network]\nbin_dirs = \"/x\""),
            "network.bin_dirs"
        );
        assert_eq!(
            invalid_key("[streaming]\naddress = \"nowhere\""),
            "streaming.address"
        );
        assert_eq!(invalid_key("log_format = \"xml\""), "log_format");
        assert_eq!(
            invalid_key("[registries.\"docker.io\"]\ninsecure = \"yes\""),
            "registries.docker.io.insecure"
        );
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(invalid_key("root = \"relative\""), "root");
        assert_eq!(invalid_key("state = \"\""), "state");
        let long = format!("socket = \"/{}\"", "s".repeat(120));
        assert_eq!(invalid_key(&long), "socket");
        assert_eq!(invalid_key("log_level = \"berth=loud=2\""), "log_level");
        assert_eq!(invalid_key("sandbox_image = \"Pause:\""), "sandbox_image");
        assert_eq!(invalid_key("[network]\nbin_dirs = []"), "network.bin_dirs");
        assert_eq!(
            invalid_key("[network]\nbin_dirs = [\"rel\"]"),
            "network.bin_dirs"
        );
        assert_eq!(
            invalid_key("[runtime]\ndefault_handler = \"kata\""),
            "runtime.default_handler"
        );
        assert_eq!(
            invalid_key("[runtime.handlers.x]\npath = \"bin/runc\""),
            "runtime.handlers.x.path"
        );
        assert_eq!(
            invalid_key("[runtime.handlers.Bad]\npath = \"runc\""),
            "runtime.handlers.Bad"
        );
        assert_eq!(
            invalid_key("[registries.\"docker.io\"]\nmirrors = [\"ftp://m\"]"),
            "registries.\"docker.io\".mirrors"
        );
        assert_eq!(invalid_key("[registries.\"a/b\"]"), "registries.\"a/b\"");
        assert_eq!(
            invalid_key("[registries.\"docker.io\"]\nserver = \"registry-1.docker.io\""),
            "registries.\"docker.io\".server"
        );
    }

    #[test]
    fn errors_give_the_line() {
        let err = Config::parse("root = \"/a\"\n\n[network]\nconfdir = 1").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { line: 4, .. }),
            "{err:?}"
        );
        let err = Config::parse("root = \"/a\"\n[[[").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { line: 2, key, .. } if key.is_empty()),
            "{err:?}"
        );
    }

    #[test]
    fn overrides_replace_file_values() {
        let mut config = Config::parse("root = \"/a\"\nlog_level = \"warn\"").unwrap();
        config.apply(Overrides {
            root: Some(PathBuf::from("/b")),
            log_format: Some(LogFormat::Json),
            ..Overrides::default()
        });
        assert_eq!(config.root, Path::new("/b"));
        assert_eq!(config.log_level, "warn");
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn explicit_missing_file_is_an_error_naming_it() {
        let err = Config::load(
            Some(Path::new("/nonexistent/berth.toml")),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/berth.toml"), "{err}");
    }
}
