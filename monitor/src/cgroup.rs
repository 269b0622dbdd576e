//! What the monitor reads of the container's memory cgroup when the container has
//! exited: whether the kernel's OOM killer ended a process in it.

/// Whether a memory cgroup's events file counts an OOM kill: an `oom_kill N` line with
/// N > 0. cgroup v1's `memory.oom_control` and v2's `memory.events` both have one (v1's
/// also has an `oom_kill_disable` line, which is not it).
pub fn oom_killed(events: &str) -> bool {
    events
        .lines()
        .find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .is_some_and(|kills| kills > 0)
}
