//! The host devices a container gets: the CRI `devices` (a device node, or a directory of
//! them, each with its cgroup permissions), or every device under the host's /dev for a
//! privileged container, as containerd and CRI-O do.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

use crate::proto::Device;
use crate::spec::container::{DeviceKind, ResolvedDevice};

/// Directories of /dev that hold no devices of the host's own (or are mounted per
/// container anyway).
const SKIPPED_IN_DEV: [&str; 6] = ["pts", "shm", "fd", "mqueue", ".lxc", ".udev"];

/// The devices a CRI `devices` list asks for. `Err` says which entry is wrong.
pub fn resolve(requested: &[Device]) -> Result<Vec<ResolvedDevice>, String> {
    let mut devices = Vec::new();
    for device in requested {
        let container = Path::new(&device.container_path);
        if !container.is_absolute() || container.components().any(|c| c == Component::ParentDir) {
            return Err(format!(
                "container_path {:?} must be an absolute path without '..'",
                device.container_path
            ));
        }
        let permissions = if device.permissions.is_empty() {
            "rwm".to_string()
        } else {
            device.permissions.clone()
        };
        if permissions.chars().any(|c| !"rwm".contains(c)) {
            return Err(format!(
                "permissions {:?} of {:?} may only hold r, w and m",
                device.permissions, device.host_path
            ));
        }
        let host = Path::new(&device.host_path);
        let metadata = std::fs::metadata(host)
            .map_err(|e| format!("host_path {:?}: {e}", device.host_path))?;
        if metadata.is_dir() {
            let before = devices.len();
            walk(host, container, &permissions, &mut devices);
            if devices.len() == before {
                return Err(format!("host_path {:?} holds no device", device.host_path));
            }
        } else {
            let found = node(&metadata, container, &permissions)
                .ok_or_else(|| format!("host_path {:?} is not a device", device.host_path))?;
            devices.push(found);
        }
    }
    Ok(devices)
}

/// Every device under the host's /dev, for a privileged container.
pub fn host_devices() -> Vec<ResolvedDevice> {
    let mut devices = Vec::new();
    walk(Path::new("/dev"), Path::new("/dev"), "rwm", &mut devices);
    devices
}

fn walk(host: &Path, container: &Path, permissions: &str, out: &mut Vec<ResolvedDevice>) {
    let Ok(entries) = std::fs::read_dir(host) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if host == Path::new("/dev") && SKIPPED_IN_DEV.iter().any(|s| name == *s) {
            continue;
        }
        // Not following symlinks: /dev is full of aliases.
        let Ok(metadata) = entry.path().symlink_metadata() else {
            continue;
        };
        if metadata.is_dir() {
            walk(&entry.path(), &container.join(&name), permissions, out);
        } else if let Some(device) = node(&metadata, &container.join(&name), permissions) {
            out.push(device);
        }
    }
}

fn node(metadata: &std::fs::Metadata, path: &Path, permissions: &str) -> Option<ResolvedDevice> {
    let kind = if metadata.file_type().is_char_device() {
        DeviceKind::Char
    } else if metadata.file_type().is_block_device() {
        DeviceKind::Block
    } else {
        return None;
    };
    let rdev = metadata.rdev();
    Some(ResolvedDevice {
        path: path.to_path_buf(),
        kind,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        mode: metadata.mode() & 0o7777,
        uid: metadata.uid(),
        gid: metadata.gid(),
        permissions: permissions.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(host: &str, container: &str, permissions: &str) -> Device {
        Device {
            container_path: container.into(),
            host_path: host.into(),
            permissions: permissions.into(),
        }
    }

    #[test]
    fn device_nodes_and_bad_requests() {
        let found = resolve(&[device("/dev/null", "/dev/mynull", "r")]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].major, found[0].minor), (1, 3));
        assert_eq!(found[0].kind, DeviceKind::Char);
        assert_eq!(found[0].path, Path::new("/dev/mynull"));
        assert_eq!(found[0].permissions, "r");
        let all = resolve(&[device("/dev/zero", "/dev/z", "")]).unwrap();
        assert_eq!(all[0].permissions, "rwm");
        assert!(resolve(&[device("/dev/null", "dev/x", "r")]).is_err());
        assert!(resolve(&[device("/dev/null", "/dev/../x", "r")]).is_err());
        assert!(resolve(&[device("/dev/null", "/dev/x", "rx")]).is_err());
        assert!(resolve(&[device("/etc/hostname", "/dev/x", "r")]).is_err());
        assert!(resolve(&[device("/no/such/device", "/dev/x", "r")]).is_err());
        assert!(
            host_devices()
                .iter()
                .any(|d| d.path == Path::new("/dev/null"))
        );
    }
}
