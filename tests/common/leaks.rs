//! What a daemon's pods may leave on the host, and the check that they left nothing.

use std::path::{Path, PathBuf};

use super::Daemon;

/// Everything that must be gone once every pod of `daemon` is removed: no netns pin, veth
/// on its bridge, IP lease, iptables rule naming an address of its subnet, mount under
/// its directories, cgroup under `cgroup_tree`, runtime container, helper, monitor or
/// container process, nor file of a pod or container under its state directory.
pub fn assert_nothing_left(daemon: &Daemon, cgroup_tree: &str) {
    let paths = daemon.paths();
    for dir in ["netns", "sandboxes", "containers", "cni/results", "m"] {
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
        runc_containers(&paths.state),
        Vec::<String>::new(),
        "runtime containers"
    );
    let prefix = daemon.setup.dir().to_string_lossy().into_owned();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    assert_eq!(mounts, Vec::<String>::new(), "mounts");
    let subnet = daemon.setup.subnet.trim_end_matches(".0/24").to_string();
    let nat = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    let rules: Vec<String> = String::from_utf8_lossy(&nat.stdout)
        .lines()
        .filter(|l| l.contains(&format!("{subnet}.")))
        .map(str::to_string)
        .collect();
    assert_eq!(
        rules,
        Vec::<String>::new(),
        "iptables rules of the test network"
    );
    let state = paths.state.to_string_lossy().into_owned();
    let processes: Vec<String> = entries(Path::new("/proc"))
        .into_iter()
        .filter(|p| p.parse::<u32>().is_ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let helper =
                String::from_utf8_lossy(&environ).contains(&format!("BERTH_HELPER={state}"));
            (helper || cmdline.contains(&state)).then_some(cmdline)
        })
        .collect();
    assert_eq!(
        processes,
        Vec::<String>::new(),
        "helpers, monitors or containers left"
    );
    let mut cgroups = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    // Each v1 hierarchy, or the v2 root.
    let hierarchies = entries(root)
        .into_iter()
        .map(|h| root.join(h))
        .chain([root.to_path_buf()]);
    for hierarchy in hierarchies {
        let top = hierarchy.join(cgroup_tree);
        for child in entries(&top) {
            if top.join(&child).is_dir() {
                cgroups.push(top.join(child).display().to_string());
            }
        }
    }
    assert_eq!(
        cgroups,
        Vec::<String>::new(),
        "cgroups of pods or containers"
    );
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

/// The containers the daemon's runc knows.
pub fn runc_containers(state: &Path) -> Vec<String> {
    let output = std::process::Command::new("runc")
        .arg("--root")
        .arg(state.join("runtime/runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
