//! User namespaces for pods (KEP-127, `userns_options` with mode POD): the pod gets a user
//! namespace of its own, made with the pod's one uid and one gid mapping and pinned at a
//! path like the network namespace (which is made inside it, so that it belongs to the
//! pod's root and `/sys` can be mounted there); the pause and every container join both.
//! Root in the pod is the mapping's host id, unprivileged on the host.
//!
//! Nothing is chowned: a container's image layers are given to overlayfs through
//! id-mapped mounts (`mount_setattr(MOUNT_ATTR_IDMAP)`, which the OCI runtimes here cannot
//! do themselves), so a file that belongs to root in the image belongs to the pod's root;
//! only the container's own empty upper layer is made the pod root's. Its private volumes
//! are bound id-mapped the same way.
//!
//! The namespace is made by a short-lived child (`unshare --user --net`, util-linux):
//! a multi-threaded daemon cannot enter a new user namespace itself. The daemon writes
//! the child's maps, pins its namespaces and kills it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::proto::{IdMapping, NamespaceMode, UserNamespace};

/// How long the child may take to be in its new namespaces.
const CHILD_DEADLINE: Duration = Duration::from_secs(5);

/// One id range: `length` ids from `container` in the pod are `host` onwards on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub length: u32,
}

impl IdRange {
    /// The host id of `id` in the pod, if the range maps it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container)?;
        (offset < self.length).then(|| self.host + offset)
    }

    /// The line of `/proc/<pid>/uid_map` (or `gid_map`) that sets this range.
    fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container, self.host, self.length)
    }
}

/// A pod's user namespace: its uid and gid ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mappings {
    pub uids: IdRange,
    pub gids: IdRange,
}

impl Mappings {
    /// Root of the pod as seen from the host: (uid, gid).
    pub fn host_root(&self) -> (u32, u32) {
        (self.uids.host, self.gids.host)
    }
}

/// The user namespace a pod asks for: `None` for the host's (no options, or NODE without
/// mappings), the mappings for POD. What a runtime cannot give is an error saying why,
/// with the field it is about: CONTAINER and TARGET modes, mappings with NODE, other than
/// exactly one uid and one gid range with POD, a range that does not map the pod's root
/// (id 0), is empty, or runs past the last id.
pub fn requested(
    options: Option<&UserNamespace>,
) -> Result<Option<Mappings>, (&'static str, String)> {
    const FIELD: &str = "config.linux.security_context.namespace_options.userns_options";
    let Some(options) = options else {
        return Ok(None);
    };
    let mode = NamespaceMode::try_from(options.mode)
        .map_err(|_| (FIELD, format!("unknown mode {}", options.mode)))?;
    match mode {
        NamespaceMode::Node => {
            if options.uids.is_empty() && options.gids.is_empty() {
                Ok(None)
            } else {
                Err((FIELD, "mode NODE takes no uid or gid mappings".to_string()))
            }
        }
        NamespaceMode::Pod => Ok(Some(Mappings {
            uids: one_range(&options.uids, "uids")?,
            gids: one_range(&options.gids, "gids")?,
        })),
        other => Err((
            FIELD,
            format!(
                "mode {} is not supported for user namespaces (only POD and NODE)",
                other.as_str_name()
            ),
        )),
    }
}

fn one_range(list: &[IdMapping], what: &str) -> Result<IdRange, (&'static str, String)> {
    const FIELD: &str = "config.linux.security_context.namespace_options.userns_options";
    let [only] = list else {
        return Err((
            FIELD,
            format!(
                "mode POD takes exactly one {what} mapping, not {}",
                list.len()
            ),
        ));
    };
    let range = IdRange {
        container: only.container_id,
        host: only.host_id,
        length: only.length,
    };
    if range.length == 0 {
        return Err((FIELD, format!("the {what} mapping is empty")));
    }
    if range.host == 0 {
        return Err((
            FIELD,
            format!("the {what} mapping must not include the host's root (host id 0)"),
        ));
    }
    if range.container != 0 {
        return Err((
            FIELD,
            format!(
                "the {what} mapping must start at id 0 in the pod (the pod's root), not {}",
                range.container
            ),
        ));
    }
    let last = |start: u32| u64::from(start) + u64::from(range.length) - 1;
    if last(range.host) >= u64::from(u32::MAX) || last(range.container) >= u64::from(u32::MAX) {
        return Err((FIELD, format!("the {what} mapping runs past the last id")));
    }
    Ok(range)
}

/// Makes a user namespace with `mappings`, pinned at `user_pin`, and (with `net_pin`) a
/// network namespace that belongs to it, pinned there. Both pins must not exist yet;
/// on failure neither is left.
pub fn create(user_pin: &Path, net_pin: Option<&Path>, mappings: &Mappings) -> io::Result<()> {
    let result = create_pinned(user_pin, net_pin, mappings);
    if result.is_err() {
        let _ = super::netns::remove(user_pin);
        if let Some(pin) = net_pin {
            let _ = super::netns::remove(pin);
        }
    }
    result
}

fn create_pinned(user_pin: &Path, net_pin: Option<&Path>, mappings: &Mappings) -> io::Result<()> {
    let child = Holder::start(net_pin.is_some())?;
    std::fs::write(
        format!("/proc/{}/uid_map", child.pid()),
        mappings.uids.map_line(),
    )?;
    std::fs::write(
        format!("/proc/{}/gid_map", child.pid()),
        mappings.gids.map_line(),
    )?;
    pin(&child.namespace("user"), user_pin)?;
    if let Some(net_pin) = net_pin {
        pin(&child.namespace("net"), net_pin)?;
    }
    Ok(())
}

/// Bind-mounts a namespace file onto a new file at `pin`.
fn pin(namespace: &Path, pin: &Path) -> io::Result<()> {
    File::options().write(true).create_new(true).open(pin)?;
    nix::mount::mount(
        Some(namespace),
        pin,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )?;
    Ok(())
}

/// The child that holds new namespaces while the daemon pins them; killed and reaped
/// when dropped.
struct Holder {
    child: std::process::Child,
}

impl Holder {
    fn start(with_network: bool) -> io::Result<Holder> {
        let mut command = std::process::Command::new("unshare");
        command.arg("--user");
        if with_network {
            command.arg("--net");
        }
        command
            .args(["sleep", "60"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let holder = Holder {
            child: command.spawn()?,
        };
        // Once `unshare` has made the namespaces, its user namespace is no longer ours.
        let ours = std::fs::read_link("/proc/self/ns/user")?;
        let deadline = Instant::now() + CHILD_DEADLINE;
        let mut holder = holder;
        loop {
            if let Some(status) = holder.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "unshare --user failed ({status}): user namespaces may be off here"
                )));
            }
            match std::fs::read_link(holder.namespace("user")) {
                Ok(theirs) if theirs != ours => return Ok(holder),
                Ok(_) => {}
                Err(err) => return Err(err),
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "unshare did not make a user namespace in time",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn namespace(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid()))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Our own child, by the handle we started it with.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The new mount API (Linux 5.2, `mount_setattr` 5.12), which neither nix nor the
// standard library wrap; values from <linux/mount.h> and <linux/fcntl.h>.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr`, version 0.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// A detached copy of the mount at `source` (with what is mounted below it when
/// `recursive`), id-mapped
/// through the user namespace `userns`: a file the host's id N owns is owned, through
/// it, by whatever host id the namespace maps N to.
fn idmapped_tree(source: &Path, userns: &File, recursive: bool) -> io::Result<OwnedFd> {
    let recursive = if recursive { AT_RECURSIVE } else { 0 };
    let path = c_path(source)?;
    // SAFETY: open_tree reads a NUL-terminated path that lives across the call and
    // returns a new descriptor or -1; nothing else is touched.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | recursive | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor open_tree just returned, owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes of `attr` and the empty
    // path, both alive across the call; it changes only the detached tree.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | recursive,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// Attaches a detached tree at `target` (an existing directory).
fn attach(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let path = c_path(target)?;
    // SAFETY: move_mount reads the empty path and `path`, both alive across the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bind-mounts `source` on `target` id-mapped through the user namespace pinned at
/// `userns_pin`.
pub fn bind_idmapped(source: &Path, target: &Path, userns_pin: &Path) -> io::Result<()> {
    let userns = File::open(userns_pin)?;
    attach(&idmapped_tree(source, &userns, true)?, target)
}

/// An id-mapped bind of a volume's `source` (a directory or a file) on `target`, made
/// (a directory or an empty file) for it.
pub fn idmapped_volume(source: &Path, target: &Path, userns_pin: &Path) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::metadata(source)?.is_dir() {
        std::fs::create_dir(target)?;
    } else {
        File::options().write(true).create_new(true).open(target)?;
    }
    bind_idmapped(source, target, userns_pin)
}

/// Detaches and removes the id-mapped volume binds under `layer_dir/volumes` (also what
/// a daemon that died while making them left there). An error when one stays: the
/// directory must then not be removed, or the removal would reach into the volume.
pub fn unmount_volumes(layer_dir: &Path) -> io::Result<()> {
    crate::mounts::unmount_all(&layer_dir.join("volumes"))
}

/// Mounts image layers (bottom first) as an overlay on `target` for a container of a pod
/// with its own user namespace (pinned at `userns_pin`): each layer goes to overlayfs
/// through an id-mapped mount under `scratch/lower/<n>` (detached again once the overlay
/// holds it), and the private upper layer (`scratch/upper`) belongs to the pod's root.
pub fn mount_overlay_idmapped(
    layers: &[PathBuf],
    scratch: &Path,
    target: &Path,
    userns_pin: &Path,
    root: (u32, u32),
) -> io::Result<()> {
    if layers.is_empty() {
        return Err(io::Error::other("an image without layers has no rootfs"));
    }
    let userns = File::open(userns_pin)?;
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    std::os::unix::fs::chown(&upper, Some(root.0), Some(root.1))?;
    let lower_dir = scratch.join("lower");
    let mut lowers = Vec::with_capacity(layers.len());
    let result = (|| {
        for (n, layer) in layers.iter().enumerate() {
            let mapped = lower_dir.join(n.to_string());
            std::fs::create_dir_all(&mapped)?;
            attach(&idmapped_tree(layer, &userns, false)?, &mapped)?;
            lowers.push(mapped);
        }
        crate::mounts::mount_overlay_of(&lowers, &upper, &work, target)
    })();
    // The overlay keeps its own references to the layers.
    let unmounted = unmount_lowers(scratch);
    if result.is_ok() && unmounted.is_err() {
        let _ = crate::mounts::unmount(target);
    }
    result.and(unmounted)
}

/// Detaches and removes the id-mapped layer mounts under `scratch/lower` (also what a
/// daemon that died while mounting left there). An error when one stays: the directory
/// must then not be removed, or the removal would reach into a shared image layer.
pub fn unmount_lowers(scratch: &Path) -> io::Result<()> {
    crate::mounts::unmount_all(&scratch.join("lower"))
}

/// Whether pods can have user namespaces here: the kernel takes id-mapped layers in
/// overlayfs (5.19), and the filesystem of `dir` (the root, where image layers live)
/// takes an id-mapped mount, tried on a detached copy that is thrown away.
pub fn probe(dir: &Path) -> Result<(), String> {
    if crate::oci::features::running_kernel().is_none_or(|k| k < (5, 19)) {
        return Err("the kernel is older than 5.19 (id-mapped overlayfs layers)".to_string());
    }
    let child = Holder::start(false).map_err(|e| format!("unshare --user: {e}"))?;
    let range = IdRange {
        container: 0,
        host: 1 << 20,
        length: 65536,
    };
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{}/{file}", child.pid()), range.map_line())
            .map_err(|e| format!("writing the probe's {file}: {e}"))?;
    }
    let userns = File::open(child.namespace("user")).map_err(|e| e.to_string())?;
    // Not recursive: what is mounted below (pins, a pod's tmpfs) is not what is asked.
    idmapped_tree(dir, &userns, false)
        .map(drop)
        .map_err(|e| format!("an id-mapped mount of {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container: u32, host: u32, length: u32) -> IdMapping {
        IdMapping {
            container_id: container,
            host_id: host,
            length,
        }
    }

    fn pod(uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
        UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids,
            gids,
        }
    }

    #[test]
    fn the_pod_gets_its_one_range_and_the_node_none() {
        let asked = pod(vec![range(0, 1000, 100_000)], vec![range(0, 2000, 65536)]);
        let mappings = requested(Some(&asked)).unwrap().unwrap();
        assert_eq!(mappings.host_root(), (1000, 2000));
        assert_eq!(mappings.uids.to_host(65535), Some(66535));
        assert_eq!(mappings.uids.to_host(100_000), None);
        assert_eq!(mappings.uids.map_line(), "0 1000 100000\n");
        assert_eq!(requested(None).unwrap(), None);
        let node = UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert_eq!(requested(Some(&node)).unwrap(), None);
    }

    #[test]
    fn what_a_pod_cannot_have_is_refused_with_the_reason() {
        let cases = [
            (
                pod(
                    vec![range(0, 1000, 100_000), range(0, 2000, 100_000)],
                    vec![range(0, 1000, 100_000)],
                ),
                "exactly one uids mapping",
            ),
            (
                pod(vec![range(1, 1000, 100_000)], vec![range(1, 1000, 100_000)]),
                "must start at id 0",
            ),
            (pod(vec![], vec![]), "exactly one uids mapping"),
            (
                pod(vec![range(0, 1000, 0)], vec![range(0, 1000, 1)]),
                "is empty",
            ),
            (
                pod(vec![range(0, u32::MAX - 10, 100)], vec![range(0, 1, 1)]),
                "past the last id",
            ),
            (
                pod(vec![range(0, 0, 65536)], vec![range(0, 1000, 65536)]),
                "host's root",
            ),
            (
                UserNamespace {
                    mode: NamespaceMode::Container as i32,
                    ..Default::default()
                },
                "mode CONTAINER is not supported",
            ),
            (
                UserNamespace {
                    mode: NamespaceMode::Target as i32,
                    ..Default::default()
                },
                "mode TARGET is not supported",
            ),
            (
                UserNamespace {
                    mode: NamespaceMode::Node as i32,
                    uids: vec![range(0, 1000, 1)],
                    gids: vec![],
                },
                "NODE takes no",
            ),
        ];
        for (asked, why) in cases {
            let (field, reason) = requested(Some(&asked)).unwrap_err();
            assert!(field.ends_with("userns_options"), "{field}");
            assert!(reason.contains(why), "{asked:?}: {reason}");
        }
    }
}
