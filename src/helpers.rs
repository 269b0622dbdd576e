//! The one-shot helper processes a daemon runs: CNI plugins and OCI runtime commands
//! (`runc create`, `start`, `kill`, `delete`, `exec` …). Each carries
//! `BERTH_HELPER=<tag>` in its environment, which its own children inherit (a plugin's
//! IPAM plugin, the iptables it runs). The tag is random, made once per state directory
//! (`<state>/helper.tag`): nobody else can name it, not even a container whose
//! environment a pod chose.
//!
//! Why: a daemon killed in the middle of a RunPodSandbox leaves its helpers running. A
//! bridge plugin may still be allocating an address, a `runc create` still making the pause
//! container. The next daemon undoes what the dead one left half made (a CNI DEL, a
//! `runc delete`); a helper that finished after that would leave an IP lease or a
//! container nobody owns. So before it sweeps, the next daemon ends every process that
//! carries its state directory's tag ([`end_leftovers`]): they can only be a dead
//! daemon's, as two daemons never share a state directory and a daemon sweeps before it
//! serves. Monitors and containers never carry the tag: they outlive the daemon on
//! purpose.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The environment variable that tags a helper.
pub const ENV: &str = "BERTH_HELPER";

/// How long [`end_leftovers`] waits for them to be gone.
const END_DEADLINE: Duration = Duration::from_secs(10);

/// The tag of the helpers of daemons with state directory `state`: made at the first
/// start, then the same for every daemon on that directory.
pub fn tag(state: &Path) -> std::io::Result<std::ffi::OsString> {
    let file = state.join("helper.tag");
    match std::fs::read_to_string(&file) {
        Ok(tag) if !tag.trim().is_empty() => return Ok(tag.trim().into()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(state)?;
    let tag = crate::ids::random_id();
    let tmp = state.join(".helper.tag.tmp");
    std::fs::write(&tmp, &tag)?;
    std::fs::rename(&tmp, &file)?;
    Ok(tag.into())
}

/// The processes tagged with `tag`, by pid.
pub fn tagged(tag: &OsStr) -> Vec<i32> {
    let mut wanted = format!("{ENV}=").into_bytes();
    wanted.extend_from_slice(tag.as_encoded_bytes());
    let own = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            // Unreadable (gone, or a kernel thread): not ours.
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|&b| b == 0).any(|var| var == wanted))
        })
        .collect()
}

/// Ends (SIGKILL, by pid) the helpers tagged `tag` a dead daemon left running, and waits
/// until none is left; returns how many there were, or how many would not end.
pub async fn end_leftovers(tag: &OsStr) -> Result<usize, usize> {
    let mut ended = std::collections::BTreeSet::new();
    let start = Instant::now();
    loop {
        let left = tagged(tag);
        if left.is_empty() {
            return Ok(ended.len());
        }
        if start.elapsed() > END_DEADLINE {
            return Err(left.len());
        }
        for pid in left {
            // A helper of a dead daemon of this state directory: ours to end.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            ended.insert(pid);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_directory_keeps_its_tag() {
        let dir = tempfile::tempdir().unwrap();
        let first = tag(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(
            tag(dir.path()).unwrap(),
            first,
            "the same at the next start"
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(tag(other.path()).unwrap(), first);
    }

    #[tokio::test]
    async fn tagged_processes_are_found_and_ended() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let spawn = |tag: &Path| {
            std::process::Command::new("sleep")
                .arg("60")
                .env(ENV, tag)
                .spawn()
                .unwrap()
        };
        let mut ours = spawn(dir.path());
        let mut theirs = spawn(other.path());
        let pid = |c: &std::process::Child| c.id() as i32;
        let found = tagged(dir.path().as_os_str());
        assert_eq!(found, vec![pid(&ours)]);
        assert_eq!(end_leftovers(dir.path().as_os_str()).await, Ok(1));
        assert!(ours.wait().unwrap().code().is_none(), "killed by a signal");
        assert_eq!(tagged(other.path().as_os_str()), vec![pid(&theirs)]);
        let _ = theirs.kill();
        let _ = theirs.wait();
    }
}
