//! The files a pod's containers share: hostname, /etc/hosts, /etc/resolv.conf and the
//! /dev/shm tmpfs. They live in the sandbox's directory under `state`. The mounts
//! of image layers are [`crate::mounts`]'.

use std::io;
use std::path::Path;

use nix::mount::{MsFlags, mount};

use crate::proto::DnsConfig;

/// The size of a pod's /dev/shm, as Docker and containerd make it.
const SHM_SIZE: &str = "size=65536k";
const HOST_RESOLV: &str = "/etc/resolv.conf";

pub fn write_hostname(path: &Path, hostname: &str) -> io::Result<()> {
    std::fs::write(path, format!("{hostname}\n"))
}

/// A hosts file naming localhost and the pod itself (the kubelet mounts its own for pods
/// it manages; this one serves the others).
pub fn write_hosts(path: &Path, hostname: &str, ips: &[String]) -> io::Result<()> {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        for ip in ips {
            text.push_str(&format!("{ip}\t{hostname}\n"));
        }
    }
    std::fs::write(path, text)
}

/// resolv.conf from the pod's DNS config, or the host's when it gives none.
pub fn write_resolv_conf(path: &Path, dns: Option<&DnsConfig>) -> io::Result<()> {
    let text = match dns {
        Some(dns)
            if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) =>
        {
            resolv_conf(dns)
        }
        _ => std::fs::read_to_string(HOST_RESOLV).unwrap_or_default(),
    };
    std::fs::write(path, text)
}

fn resolv_conf(dns: &DnsConfig) -> String {
    let mut text = String::new();
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    text
}

/// Mounts the pod's /dev/shm tmpfs on `path` (an existing directory).
pub fn mount_shm(path: &Path) -> io::Result<()> {
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,{SHM_SIZE}").as_str()),
    )?;
    Ok(())
}

/// Checks DNS values that end up in resolv.conf: one token each, no line breaks.
pub fn validate_dns(dns: &DnsConfig) -> Result<(), String> {
    for server in &dns.servers {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("server {server:?} is not an IP address"));
        }
    }
    for value in dns.searches.iter().chain(&dns.options) {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{value:?} is not a single word"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5 edns0\n"
        );
        assert!(validate_dns(&dns).is_ok());
        let bad = DnsConfig {
            servers: vec!["dns.example".into()],
            ..Default::default()
        };
        assert!(validate_dns(&bad).is_err());
        let injected = DnsConfig {
            options: vec!["ndots:5\nnameserver 6.6.6.6".into()],
            ..Default::default()
        };
        assert!(validate_dns(&injected).is_err());
    }

    #[test]
    fn hosts_names_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        write_hosts(&path, "web-0", &["10.88.0.7".to_string()]).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.88.0.7\tweb-0\n"));
    }
}
