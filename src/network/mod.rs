//! CNI networking: finding the network configuration and the plugins that carry it out.
//!
//! The configuration in use is the first file of `[network] conf_dir`, in lexical order,
//! ending in `.conflist`, `.conf` or `.json`, as libcni picks it. The network is ready
//! when that file parses and every plugin it names is an executable in one of
//! `[network] bin_dirs`. A pod's `lo` is brought up by the daemon itself ([`loopback`]);
//! its network by the plugins ([`cni`]).

pub mod cni;
pub mod loopback;

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The network configuration berth would use, once it is known to be usable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkSummary {
    pub file: PathBuf,
    pub name: String,
    /// The plugin `type`s of the chain, in order.
    pub plugins: Vec<String>,
}

/// Why the network is not ready, in words for the kubelet's node condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("no CNI network config (*.conflist, *.conf, *.json) in {0}")]
    NoConfig(PathBuf),
    #[error("cannot read CNI network config {file}: {reason}")]
    BadConfig { file: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} of network {network:?} is not an executable in {dirs}")]
    MissingPlugin {
        network: String,
        plugin: String,
        dirs: String,
    },
}

/// The subset of a CNI conflist (or single-plugin conf) that readiness needs.
#[derive(Deserialize)]
struct ConfFile {
    name: String,
    #[serde(default)]
    plugins: Option<Vec<PluginConf>>,
    #[serde(default, rename = "type")]
    plugin_type: Option<String>,
}

#[derive(Deserialize)]
struct PluginConf {
    #[serde(rename = "type")]
    plugin_type: String,
}

/// The first network config file of `conf_dir`, in the order libcni uses.
pub fn first_config_file(conf_dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(conf_dir).ok()?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    files.into_iter().next()
}

/// Checks that the network configuration is usable: a config file exists, parses, and
/// every plugin it chains is installed.
pub fn readiness(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkSummary, NotReady> {
    let file = first_config_file(conf_dir).ok_or_else(|| NotReady::NoConfig(conf_dir.into()))?;
    let bad = |reason: String| NotReady::BadConfig {
        file: file.clone(),
        reason,
    };
    let text = std::fs::read(&file).map_err(|e| bad(e.to_string()))?;
    let conf: ConfFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let plugins: Vec<String> = match (conf.plugins, conf.plugin_type) {
        (Some(list), _) if !list.is_empty() => list.into_iter().map(|p| p.plugin_type).collect(),
        (None, Some(single)) => vec![single],
        _ => return Err(bad("it names no plugin".to_string())),
    };
    for plugin in &plugins {
        // A plugin type is a file name in bin_dirs, never a path.
        let valid_name =
            !plugin.is_empty() && !plugin.contains('/') && plugin != "." && plugin != "..";
        let found = valid_name
            && bin_dirs
                .iter()
                .any(|dir| crate::oci::is_executable(&dir.join(plugin)));
        if !found {
            return Err(NotReady::MissingPlugin {
                network: conf.name.clone(),
                plugin: plugin.clone(),
                dirs: join_paths(bin_dirs),
            });
        }
    }
    Ok(NetworkSummary {
        file,
        name: conf.name,
        plugins,
    })
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks an `address/prefix` CIDR such as `10.88.0.0/16` or `fd00::/64`.
pub fn validate_cidr(cidr: &str) -> Result<(), String> {
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} is not address/prefix"))?;
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{cidr:?}: {addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => Ok(()),
        _ => Err(format!("{cidr:?}: prefix {prefix:?} is not 0 to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cidrs() {
        assert!(validate_cidr("10.88.0.0/16").is_ok());
        assert!(validate_cidr("fd00:10::/64").is_ok());
        assert!(validate_cidr("0.0.0.0/0").is_ok());
        assert!(validate_cidr("10.88.0.0").is_err());
        assert!(validate_cidr("10.88.0.0/33").is_err());
        assert!(validate_cidr("fd00::/129").is_err());
        assert!(validate_cidr("pods/16").is_err());
        assert!(validate_cidr("10.0.0.0/-1").is_err());
    }

    fn plugin(dir: &Path, name: &str) {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn ready_when_first_config_and_plugins_exist() {
        let conf = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        std::fs::write(
            conf.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(conf.path().join("99-other.conf"), "not json").unwrap();
        std::fs::write(conf.path().join("05-readme.txt"), "ignored").unwrap();
        plugin(bin.path(), "bridge");
        let dirs = [PathBuf::from("/nonexistent"), bin.path().to_path_buf()];
        let err = readiness(conf.path(), &dirs).unwrap_err();
        assert!(
            matches!(&err, NotReady::MissingPlugin { plugin, .. } if plugin == "portmap"),
            "{err}"
        );
        plugin(bin.path(), "portmap");
        let summary = readiness(conf.path(), &dirs).unwrap();
        assert_eq!(summary.name, "pods");
        assert_eq!(summary.plugins, ["bridge", "portmap"]);
        assert!(summary.file.ends_with("10-net.conflist"));
    }

    #[test]
    fn single_plugin_conf_is_accepted() {
        let conf = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        std::fs::write(
            conf.path().join("a.conf"),
            r#"{"name":"n","type":"loopback"}"#,
        )
        .unwrap();
        plugin(bin.path(), "loopback");
        let summary = readiness(conf.path(), &[bin.path().to_path_buf()]).unwrap();
        assert_eq!(summary.plugins, ["loopback"]);
    }

    #[test]
    fn missing_dir_bad_json_and_path_like_types_are_not_ready() {
        let bin = tempfile::tempdir().unwrap();
        let dirs = [bin.path().to_path_buf()];
        assert!(matches!(
            readiness(Path::new("/nonexistent/cni"), &dirs),
            Err(NotReady::NoConfig(_))
        ));
        let conf = tempfile::tempdir().unwrap();
        std::fs::write(conf.path().join("a.conflist"), "{").unwrap();
        assert!(matches!(
            readiness(conf.path(), &dirs),
            Err(NotReady::BadConfig { .. })
        ));
        std::fs::write(
            conf.path().join("a.conflist"),
            r#"{"name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            readiness(conf.path(), &dirs),
            Err(NotReady::MissingPlugin { .. })
        ));
    }
}
