//! What a daemon's pods may leave on the host, and the check that they left nothing.

use std::path::{Path, PathBuf};

use super::Daemon;

/// Everything that must be gone once every pod of `daemon` is removed: no netns pin, veth
/// on its bridge, IP lease, iptables rule naming an address of its subnet, mount under
/// its directories, pod or container cgroup under `cgroup_tree`, runtime container,
/// helper, monitor or container process, nor file of a pod or container under its state
/// directory.
pub fn assert_nothing_left(daemon: &Daemon, cgroup_tree: &str) {
    let paths = daemon.paths();
    for dir in [
        "netns",
        "userns",
        "sandboxes",
        "containers",
        "cni/results",
        "m",
    ] {
        assert_eq!(
            entries(&paths.state.join(dir)),
            Vec::<String>::new(),
            "{dir}"
        );
    }
    assert_eq!(
        entries(&paths.root.join("containers")),
        Vec::<String>::new(),
        "layers"
    );
    assert_eq!(leases(&paths.state), Vec::<String>::new(), "IP leases");
    let bridge = &daemon.setup.bridge;
    assert_eq!(
        entries(&PathBuf::from(format!("/sys/class/net/{bridge}/brif"))),
        Vec::<String>::new(),
        "veths on {bridge}"
    );
    assert_eq!(
        runtime_containers(&paths.state),
        Vec::<String>::new(),
        "runtime containers"
    );
    assert_eq!(
        mounts_under(daemon.setup.dir()),
        Vec::<String>::new(),
        "mounts"
    );
    let subnet = format!("{}.", daemon.setup.subnet.trim_end_matches(".0/24"));
    assert_eq!(
        nat_rules(&subnet),
        Vec::<String>::new(),
        "iptables rules of the test network"
    );
    assert_eq!(
        processes_of(&paths.state),
        Vec::<String>::new(),
        "helpers, monitors or containers left"
    );
    assert_eq!(
        id_cgroups(cgroup_tree),
        Vec::<String>::new(),
        "cgroups of pods or containers"
    );
}

/// The mount points under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The NAT rules that hold `text` (an address prefix, a port).
pub fn nat_rules(text: &str) -> Vec<String> {
    let nat = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&nat.stdout)
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_string)
        .collect()
}

/// Processes of the daemon whose state directory is `state` but the daemon itself: its
/// tagged helpers, and what names the directory (monitors, runtime commands).
pub fn processes_of(state: &Path) -> Vec<String> {
    let tag = helper_tag(state);
    let state = state.to_string_lossy().into_owned();
    entries(Path::new("/proc"))
        .into_iter()
        .filter(|p| p.parse::<u32>().is_ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let helper = environ.split(|&b| b == 0).any(|v| v == tag.as_bytes());
            (helper || cmdline.contains(&state)).then_some(cmdline)
        })
        .collect()
}

/// `BERTH_HELPER=<tag>`, what the helpers of the daemon with state directory `state`
/// carry in their environment (`<state>/helper.tag`).
pub fn helper_tag(state: &Path) -> String {
    let tag = std::fs::read_to_string(state.join("helper.tag")).unwrap_or_default();
    format!("BERTH_HELPER={}", tag.trim())
}

/// Cgroups named by a pod or container id (64 hex digits) anywhere under `tree`, in any
/// hierarchy; the levels above them (a kubelet's `kubepods/…/pod<uid>`) are not theirs.
pub fn id_cgroups(tree: &str) -> Vec<String> {
    let root = Path::new("/sys/fs/cgroup");
    // Each v1 hierarchy, or the v2 root.
    let hierarchies = entries(root)
        .into_iter()
        .map(|h| root.join(h))
        .chain([root.to_path_buf()]);
    let mut found = Vec::new();
    for hierarchy in hierarchies {
        let mut pending = vec![hierarchy.join(tree)];
        while let Some(dir) = pending.pop() {
            for child in entries(&dir) {
                let path = dir.join(&child);
                if !path.is_dir() {
                    continue;
                }
                if child.len() == 64 && child.bytes().all(|b| b.is_ascii_hexdigit()) {
                    found.push(path.display().to_string());
                }
                pending.push(path);
            }
        }
    }
    found
}

/// The names in `dir` (none when it is not there).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The addresses host-local has leased in the daemon's default network.
pub fn leases(state: &Path) -> Vec<String> {
    entries(&state.join("cni/networks/berth"))
        .into_iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// The containers the daemon's runc knows (each is a directory named by its id in the
/// handler's state directory).
pub fn runc_containers(state: &Path) -> Vec<String> {
    entries(&state.join("runtime/runc"))
}

/// The containers any of the daemon's handlers knows (runc's, youki's, …), as
/// `<handler>/<id>`.
pub fn runtime_containers(state: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for handler in entries(&state.join("runtime")) {
        for container in entries(&state.join("runtime").join(&handler)) {
            found.push(format!("{handler}/{container}"));
        }
    }
    found
}
