//! The files a pod's containers share: hostname, /etc/hosts, /etc/resolv.conf and the
//! /dev/shm tmpfs. They live in the sandbox's directory under `state`. Also the mount
//! helpers the sandboxes and containers share (overlays, read-only layers, unmounting).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

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

/// Mounts image layers (bottom first) as an overlay on `target`, with a private upper
/// layer in `scratch` (`scratch/upper`, `scratch/work`) where the runtime can make its
/// mount points; the container itself gets the root read-only from its spec.
pub fn mount_overlay(
    layers: &[std::path::PathBuf],
    scratch: &Path,
    target: &Path,
) -> io::Result<()> {
    if layers.is_empty() {
        return Err(io::Error::other("an image without layers has no rootfs"));
    }
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    mount_overlay_of(layers, &upper, &work, target)
}

/// Mounts image layers (bottom first) read-only on `target`: an overlay of them without an
/// upper layer, or the one layer of a one-layer image bound read-only (overlayfs wants
/// two layers then).
pub fn mount_read_only_layers(layers: &[std::path::PathBuf], target: &Path) -> io::Result<()> {
    match layers {
        [] => Err(io::Error::other(
            "an image without layers has no filesystem",
        )),
        [only] => {
            mount(
                Some(only.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            let read_only = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
            if let Err(err) = mount(None::<&str>, target, None::<&str>, read_only, None::<&str>) {
                let _ = unmount(target);
                return Err(err.into());
            }
            Ok(())
        }
        many => {
            let lower: Vec<String> = many.iter().rev().map(|l| l.display().to_string()).collect();
            let options = format!("lowerdir={}", lower.join(":"));
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(options.as_str()),
            )?;
            Ok(())
        }
    }
}

/// Mounts `lower` (bottom first) under `upper`, with `work`, as an overlay on `target`.
pub fn mount_overlay_of(
    lower: &[std::path::PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    let lower: Vec<String> = lower
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )?;
    Ok(())
}

/// Removes a directory tree; one that is not there is no error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a file; one that is not there is no error.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Unmounts whatever is mounted on `path`; nothing mounted there is not an error.
pub fn unmount(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(err) => Err(err.into()),
    }
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

/// Unmounts each entry of `dir` (until nothing is mounted there) and removes it, then
/// `dir`; none of it there is no error.
pub fn unmount_all(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        // Mounts may be stacked there (a start cut short, then retried).
        while is_mount_point(&path)? {
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)?;
        }
        // Empty now: remove_dir (or remove_file) never follows into anything.
        std::fs::remove_dir(&path).or_else(|_| std::fs::remove_file(&path))?;
    }
    std::fs::remove_dir(dir)
}

/// Whether something is mounted on `path` (it is the root of a mount in this namespace).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    // The mount table names real paths: a symlink on the way (`/var/run`) would not
    // match. The last component is never followed.
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(path == Path::new("/"));
    };
    let real = match std::fs::canonicalize(parent) {
        Ok(real) => real.join(name),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let wanted = real.as_os_str().as_bytes();
    let table = std::fs::read("/proc/self/mountinfo")?;
    Ok(table.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|point| unescape_octal(point) == wanted)
    }))
}

/// A mountinfo field with its `\NNN` escapes (space, tab, newline, backslash) undone.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push(
                digits
                    .iter()
                    .fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_points_are_read_with_their_escapes() {
        assert_eq!(unescape_octal(b"/a\\040b\\134c"), b"/a b\\c");
        assert_eq!(unescape_octal(b"/plain\\9"), b"/plain\\9");
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        assert!(!is_mount_point(Path::new("/proc/self")).unwrap());
    }

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
