//! Running CNI plugins, as the CNI specification describes: a plugin is executed with
//! `CNI_*` variables in its environment and its network configuration on stdin, and
//! answers with a result (or an error) as JSON on stdout.
//!
//! A pod is attached by bringing up `lo` (in the daemon, as the loopback plugin would:
//! [`super::loopback`]), then running the network list's plugins in order, each given
//! the previous result (`prevResult`) and, when it declares the capability, the pod's
//! port mappings (`runtimeConfig`). The final result and the configuration used are
//! cached under `state`, so DEL gets the same configuration and `prevResult` even if the
//! config directory changed since.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How long one plugin may run.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The interface name of the pod network inside the pod.
const POD_IFNAME: &str = "eth0";

/// Why a CNI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("{0}")]
    NotReady(#[from] super::NotReady),
    #[error("CNI plugin {plugin} ({command}) for pod {pod}: {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        pod: String,
        message: String,
    },
    #[error("CNI result cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("bringing up lo in the network namespace of pod {pod}: {reason}")]
    Loopback { pod: String, reason: String },
}

/// Whether a plugin's DEL failed only because what it would delete is gone already: the
/// bridge plugin (1.1) removes its masquerading rule with `iptables -D POSTROUTING … -j
/// CNI-…`, which iptables-nft refuses with "Chain '…' does not exist" (status 2) when an
/// ADD cut short never made that chain, and the plugin takes that for a failure. Its DEL
/// has released the address and the veth before it gets there, and a rule cannot jump
/// to a chain that does not exist: nothing is left. Without this, such a pod could never
/// be removed.
fn already_gone(err: &CniError) -> bool {
    let CniError::Plugin { message, .. } = err else {
        return false;
    };
    message.contains("iptables")
        && message.contains("-D POSTROUTING")
        && (message.contains("does not exist")
            || message.contains("No chain/target/match by that name"))
}

/// A port the pod publishes on the host (the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(rename = "hostIP")]
    pub host_ip: String,
}

/// The pod as CNI sees it.
#[derive(Debug, Clone)]
pub struct PodNetwork<'a> {
    pub id: &'a str,
    pub netns: &'a Path,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub port_mappings: &'a [PortMapping],
}

impl PodNetwork<'_> {
    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.id, self.uid
        )
    }
}

/// What attaching a pod produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The pod's addresses, the primary (first IPv4) first.
    pub ips: Vec<IpAddr>,
}

/// What is cached between ADD and DEL: what ADD ran with, so that DEL runs with the
/// same, whoever asks for it (a restarted daemon's sweep knows only the id).
#[derive(Serialize, Deserialize)]
struct Cached {
    list: Value,
    result: Value,
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
    /// `CNI_ARGS` as ADD had them.
    #[serde(default)]
    args: Option<String>,
}

/// One plugin invocation's environment.
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    command: &'static str,
    /// `CNI_CONTAINERID`: the pod's id.
    id: &'a str,
    args: &'a str,
    ifname: &'a str,
    /// None: the namespace is gone (DEL may be asked without one).
    netns: Option<&'a Path>,
}

/// The CNI executor of one daemon.
#[derive(Debug, Clone)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    /// What its plugins are tagged with ([`crate::helpers`]), when a daemon runs them.
    helper_tag: Option<std::ffi::OsString>,
    /// How long one plugin may take.
    timeout: Duration,
}

impl Cni {
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Cni {
        Cni {
            conf_dir,
            bin_dirs,
            cache_dir,
            helper_tag: None,
            timeout: PLUGIN_TIMEOUT,
        }
    }

    /// The same executor, a plugin that takes longer than `timeout` killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Cni {
        self.timeout = timeout;
        self
    }

    /// The same executor, its plugins tagged as the daemon's helpers.
    pub fn with_helper_tag(mut self, tag: &std::ffi::OsStr) -> Cni {
        self.helper_tag = Some(tag.to_owned());
        self
    }

    fn cache_path(&self, id: &str) -> PathBuf {
        self.cache_dir.join(format!("{id}.json"))
    }

    /// ADD: brings up `lo`, then runs the network list in order.
    ///
    /// What DEL needs (the list, the port mappings) is cached before the first plugin
    /// runs, and the result once the last has answered: a daemon that dies in between
    /// leaves a cache its successor's DEL undoes the ADD with, without a `prevResult`
    /// (which the CNI spec allows), instead of no cache and an IP lease nobody frees.
    pub async fn attach(&self, pod: &PodNetwork<'_>) -> Result<Attached, CniError> {
        let summary = super::readiness(&self.conf_dir, &self.bin_dirs)?;
        let list = load_list(&summary.file)?;
        let mut cache = Cached {
            list: list.clone(),
            result: Value::Null,
            port_mappings: pod.port_mappings.to_vec(),
            args: Some(pod.cni_args()),
        };
        self.write_cache(pod.id, &cache)?;
        let started = std::time::Instant::now();
        let added = self.add(&list, pod).await;
        crate::metrics::cni(
            crate::metrics::CniOperation::ADD,
            added.is_ok(),
            started.elapsed(),
        );
        match added {
            Ok(result) => {
                cache.result = result;
                self.write_cache(pod.id, &cache)?;
                Ok(Attached {
                    ips: result_ips(&cache.result),
                })
            }
            Err(err) => {
                // Undo what the plugins that ran did (an IP lease, iptables rules): DEL
                // over the whole list, as the spec makes DEL idempotent.
                if let Err(del) = self.detach(pod).await {
                    // The cache stays: the next daemon's sweep tries DEL again, so that
                    // what the plugins hold is not lost for good.
                    tracing::warn!(pod = pod.id, %del, "CNI DEL after a failed ADD failed");
                }
                Err(err)
            }
        }
    }

    /// The ADDs themselves: `lo` up ([`super::loopback`]), then each plugin of the list
    /// with the previous one's result; returns the last result.
    async fn add(&self, list: &Value, pod: &PodNetwork<'_>) -> Result<Value, CniError> {
        super::loopback::up(pod.netns)
            .await
            .map_err(|err| CniError::Loopback {
                pod: pod.id.to_string(),
                reason: err.to_string(),
            })?;
        let args = pod.cni_args();
        let call = |ifname| Call {
            command: "ADD",
            id: pod.id,
            args: &args,
            ifname,
            netns: Some(pod.netns),
        };
        let version = list["cniVersion"].clone();
        let name = list["name"].clone();
        let mut previous: Option<Value> = None;
        for plugin in plugins(list) {
            let conf = plugin_conf(
                plugin,
                &version,
                &name,
                previous.as_ref(),
                pod.port_mappings,
            );
            previous = Some(self.exec(&call(POD_IFNAME), &conf).await?);
        }
        Ok(previous.unwrap_or(Value::Null))
    }

    /// Removes the temporary files of cache writes a crash cut short.
    pub fn remove_stray_temporaries(&self) {
        for entry in std::fs::read_dir(&self.cache_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".json.tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Writes what DEL will need, atomically (a torn cache would be no cache).
    fn write_cache(&self, id: &str, cache: &Cached) -> Result<(), CniError> {
        let path = self.cache_path(id);
        let cache_err = |reason: String| CniError::Cache {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| cache_err(e.to_string()))?;
        let bytes = serde_json::to_vec(cache).map_err(|e| cache_err(e.to_string()))?;
        let tmp = self.cache_dir.join(format!(".{id}.json.tmp"));
        let written = std::fs::File::create(&tmp).and_then(|mut file| {
            std::io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()
        });
        written.map_err(|e| cache_err(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| cache_err(e.to_string()))
    }

    /// DEL: runs the cached list in reverse, with the cached result as `prevResult` and
    /// the cached port mappings. Idempotent: a pod with nothing attached is not an error.
    pub async fn detach(&self, pod: &PodNetwork<'_>) -> Result<(), CniError> {
        let started = std::time::Instant::now();
        let detached = self.detach_plugins(pod).await;
        if !matches!(detached, Ok(false)) {
            crate::metrics::cni(
                crate::metrics::CniOperation::DEL,
                detached.is_ok(),
                started.elapsed(),
            );
        }
        detached.map(drop)
    }

    /// [`Cni::detach`]; `false` when there was nothing to detach (no plugin ran).
    async fn detach_plugins(&self, pod: &PodNetwork<'_>) -> Result<bool, CniError> {
        let path = self.cache_path(pod.id);
        let cached: Option<Cached> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let Some(cached) = cached else {
            // Nothing was attached (or the cache is gone): nothing to detach.
            return Ok(false);
        };
        let netns = pod.netns.exists().then_some(pod.netns);
        let args = cached.args.clone().unwrap_or_else(|| pod.cni_args());
        let version = cached.list["cniVersion"].clone();
        let name = cached.list["name"].clone();
        let prev = (!cached.result.is_null()).then_some(&cached.result);
        // Every plugin gets its DEL, even after one failed: what the others hold (an
        // address, rules) is freed all the same; the first failure is the answer, and
        // the cache stays for a retry.
        let mut failed = None;
        for plugin in plugins(&cached.list).into_iter().rev() {
            let conf = plugin_conf(plugin, &version, &name, prev, &cached.port_mappings);
            let call = Call {
                command: "DEL",
                id: pod.id,
                args: &args,
                ifname: POD_IFNAME,
                netns,
            };
            match self.exec(&call, &conf).await {
                Err(err) if already_gone(&err) => {
                    tracing::info!(pod = pod.id, %err, "CNI DEL found its rules gone already: done");
                }
                Err(err) => {
                    failed.get_or_insert(err);
                }
                Ok(_) => {}
            }
        }
        if let Some(err) = failed {
            return Err(err);
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::Cache {
                path,
                reason: e.to_string(),
            }),
            _ => Ok(true),
        }
    }

    /// Runs one plugin.
    async fn exec(&self, call: &Call<'_>, conf: &Value) -> Result<Value, CniError> {
        let Call {
            command,
            id,
            args,
            ifname,
            netns,
        } = *call;
        let kind = conf["type"].as_str().unwrap_or("").to_string();
        let fail = |message: String| CniError::Plugin {
            plugin: kind.clone(),
            command,
            pod: id.to_string(),
            message,
        };
        let binary = self
            .bin_dirs
            .iter()
            .map(|dir| dir.join(&kind))
            .find(|p| !kind.contains('/') && crate::oci::is_executable(p))
            .ok_or_else(|| fail("not found in the CNI plugin directories".to_string()))?;
        let cni_path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut child = Command::new(&binary)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env(
                "CNI_NETNS",
                netns.map(|p| p.as_os_str()).unwrap_or_default(),
            )
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", cni_path)
            .envs(self.helper_tag.iter().map(|tag| (crate::helpers::ENV, tag)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that what it runs (IPAM, iptables) ends with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", binary.display())))?;
        let group = child
            .id()
            .map(|pid| nix::unistd::Pid::from_raw(-(pid as i32)));
        let input = serde_json::to_vec(conf).map_err(|e| fail(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            match stdin.write_all(&input).await {
                // It ended without reading its config: its exit status says how it went.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.map_err(|e| fail(format!("writing its config: {e}")))?,
            }
        }
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(output) => output.map_err(|e| fail(e.to_string()))?,
            Err(_) => {
                // Our plugin's group, by the pid we started it with.
                if let Some(group) = group {
                    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
                }
                return Err(fail(format!("no answer within {:?}", self.timeout)));
            }
        };
        if !output.status.success() {
            return Err(fail(plugin_error(
                &output.stdout,
                &output.stderr,
                output.status,
            )));
        }
        if output.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&output.stdout).map_err(|e| fail(format!("unreadable result: {e}")))
    }
}

/// Reads a `.conflist`, or wraps a single-plugin `.conf` into a list.
fn load_list(file: &Path) -> Result<Value, CniError> {
    let bad = |reason: String| {
        CniError::NotReady(super::NotReady::BadConfig {
            file: file.to_path_buf(),
            reason,
        })
    };
    let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if value.get("plugins").is_some() {
        return Ok(value);
    }
    Ok(json!({
        "cniVersion": value["cniVersion"].clone(),
        "name": value["name"].clone(),
        "plugins": [value],
    }))
}

fn plugins(list: &Value) -> Vec<&Value> {
    list["plugins"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// One plugin's stdin: its own config plus the list's name and version, the previous
/// result, and the runtime's capability arguments it asks for.
fn plugin_conf(
    plugin: &Value,
    version: &Value,
    name: &Value,
    previous: Option<&Value>,
    port_mappings: &[PortMapping],
) -> Value {
    let mut conf = plugin.clone();
    let Some(object) = conf.as_object_mut() else {
        return conf;
    };
    object.insert("cniVersion".to_string(), version.clone());
    object.insert("name".to_string(), name.clone());
    if let Some(previous) = previous {
        object.insert("prevResult".to_string(), previous.clone());
    }
    let wants_ports = plugin["capabilities"]["portMappings"].as_bool() == Some(true);
    if wants_ports && !port_mappings.is_empty() {
        object.insert(
            "runtimeConfig".to_string(),
            json!({ "portMappings": port_mappings }),
        );
    }
    conf
}

/// The addresses of a CNI result (0.3.0 and later), the first IPv4 one first.
fn result_ips(result: &Value) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = result["ips"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| !ip.is_ipv4());
    ips
}

/// The plugin's error: the spec's `{"code", "msg", "details"}` on stdout, else stderr.
fn plugin_error(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> String {
    #[derive(Deserialize)]
    struct PluginError {
        #[serde(default)]
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    if let Ok(err) = serde_json::from_slice::<PluginError>(stdout)
        && !err.msg.is_empty()
    {
        let details = if err.details.is_empty() {
            String::new()
        } else {
            format!(": {}", err.details)
        };
        return format!("{}{details} (code {})", err.msg, err.code);
    }
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        format!("failed ({status})")
    } else {
        stderr.to_string()
    }
}

/// The conflist berth writes when the config directory has none, as CRI-O does: a bridge
/// with host-local addresses and masquerading, and portmap for hostPort. (The loopback
/// interface is brought up separately for every pod.)
pub fn default_conflist(bridge: &str, subnet: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "berth",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": data_dir
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// Writes the default conflist into `conf_dir` unless it already holds a network config.
/// Returns the file written, if any.
pub fn ensure_default_config(
    conf_dir: &Path,
    bridge: &str,
    subnet: &str,
    data_dir: &Path,
) -> std::io::Result<Option<PathBuf>> {
    if super::first_config_file(conf_dir).is_some() {
        return Ok(None);
    }
    std::fs::create_dir_all(conf_dir)?;
    let target = conf_dir.join("10-berth.conflist");
    let tmp = conf_dir.join(".10-berth.conflist.tmp");
    let text = serde_json::to_string_pretty(&default_conflist(bridge, subnet, data_dir))
        .map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &target)?;
    Ok(Some(target))
}

/// Port mappings by the CRI's protocol enum.
pub fn protocol_name(protocol: i32) -> &'static str {
    match protocol {
        1 => "udp",
        2 => "sctp",
        _ => "tcp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_del_that_finds_the_masquerade_chain_gone_is_done() {
        let plugin = |message: &str| CniError::Plugin {
            plugin: "bridge".into(),
            command: "DEL",
            pod: "p".into(),
            message: message.into(),
        };
        let nft = "running [/usr/sbin/iptables -t nat -D POSTROUTING -s 10.231.0.24 -j CNI-e66715efb6d4c890fa1805e3 -m comment --comment name: \"berth\" id: \"1c18\" --wait]: exit status 2: iptables v1.8.9 (nf_tables): Chain 'CNI-e66715efb6d4c890fa1805e3' does not exist";
        assert!(already_gone(&plugin(nft)));
        let legacy = "running [/usr/sbin/iptables -t nat -D POSTROUTING -s 10.0.0.2 -j CNI-1 --wait]: exit status 1: iptables: No chain/target/match by that name.";
        assert!(already_gone(&plugin(legacy)));
        assert!(!already_gone(&plugin(
            "failed to delete veth: permission denied"
        )));
        assert!(!already_gone(&plugin(
            "running [/usr/sbin/iptables -t nat -A POSTROUTING …]: Chain 'X' does not exist"
        )));
    }

    #[test]
    fn plugin_conf_carries_name_version_prev_and_ports() {
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let prev = json!({"ips": [{"address": "10.1.0.2/24"}]});
        let conf = plugin_conf(
            &portmap,
            &json!("1.0.0"),
            &json!("net"),
            Some(&prev),
            &ports,
        );
        assert_eq!(conf["name"], "net");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(conf["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(
            conf["runtimeConfig"]["portMappings"][0]["containerPort"],
            80
        );
        let bridge = json!({"type": "bridge"});
        let conf = plugin_conf(&bridge, &json!("1.0.0"), &json!("net"), None, &ports);
        assert!(conf.get("runtimeConfig").is_none() && conf.get("prevResult").is_none());
    }

    #[test]
    fn results_and_errors() {
        let result = json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/24"}]});
        let ips = result_ips(&result);
        assert_eq!(ips[0].to_string(), "10.1.0.5");
        assert_eq!(ips[1].to_string(), "fd00::5");
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(256);
        let msg = plugin_error(
            br#"{"code":11,"msg":"no IP addresses available","details":"range full"}"#,
            b"",
            status,
        );
        assert_eq!(msg, "no IP addresses available: range full (code 11)");
        assert_eq!(plugin_error(b"", b"boom\n", status), "boom");
    }

    #[test]
    fn default_config_only_when_none() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("leases");
        let written = ensure_default_config(dir.path(), "bt0", "10.250.0.0/24", &data).unwrap();
        let file = written.expect("written into an empty dir");
        let list: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(list["plugins"][0]["bridge"], "bt0");
        assert_eq!(
            list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.250.0.0/24"
        );
        assert_eq!(list["plugins"][1]["type"], "portmap");
        assert!(
            ensure_default_config(dir.path(), "x", "10.0.0.0/8", &data)
                .unwrap()
                .is_none()
        );
    }
}
