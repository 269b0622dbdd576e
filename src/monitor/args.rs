//! The monitor's command line, as the daemon builds it ([`MonitorArgs::to_args`]); the
//! monitor reads it with [`super::argv::parse`]. Hand-written both ways, so the monitor
//! carries no argument-parsing library.
//!
//! The monitor program itself is built with berth (`monitor/`, by the build script) and
//! embedded in the berth binary, which installs it under its state directory at start-up
//! ([`install`]), as it does the pause program.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::MonitorArgs;

/// The monitor program, as built for this berth.
pub static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-monitor"));

/// Where the daemon installs the monitor: `<state>/bin/berth-monitor`.
pub fn program_path(state: &Path) -> PathBuf {
    state.join("bin").join("berth-monitor")
}

/// Installs the monitor program under `state` unless the same program is there already.
/// A new program replaces the old one by a rename: monitors still running keep theirs.
pub fn install(state: &Path) -> std::io::Result<PathBuf> {
    let target = program_path(state);
    if std::fs::read(&target).is_ok_and(|current| current == PROGRAM) {
        return Ok(target);
    }
    let dir = state.join("bin");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".berth-monitor.tmp");
    std::fs::write(&tmp, PROGRAM)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

impl MonitorArgs {
    /// The arguments that [`super::argv::parse`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut value = |flag: &str, v: &std::ffi::OsStr| {
            args.push(flag.into());
            args.push(v.to_os_string());
        };
        value("--id", self.id.as_ref());
        value("--bundle", self.bundle.as_os_str());
        value("--runtime", self.runtime.as_os_str());
        value("--runtime-root", self.runtime_root.as_os_str());
        value("--log", self.log_path.as_os_str());
        value("--dir", self.dir.as_os_str());
        value("--control-socket", self.socket.as_os_str());
        if let Some(cgroup) = &self.memory_cgroup {
            value("--memory-cgroup", cgroup.as_os_str());
        }
        if let Some(process) = &self.exec_process {
            value("--exec-process", process.as_os_str());
        }
        for (flag, on) in [
            ("--tty", self.tty),
            ("--stdin", self.stdin),
            ("--stdin-once", self.stdin_once),
        ] {
            if on {
                args.push(flag.into());
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::super::argv::{Args, parse};
    use super::*;

    fn sample() -> MonitorArgs {
        MonitorArgs {
            id: "abc".into(),
            bundle: "/s/containers/abc".into(),
            runtime: "/usr/sbin/runc".into(),
            runtime_root: "/s/runtime/runc".into(),
            log_path: "/var/log/pods/p/c/0.log".into(),
            dir: "/s/containers/abc".into(),
            socket: "/s/m/abc.sock".into(),
            memory_cgroup: Some("/sys/fs/cgroup/memory/pod/abc".into()),
            tty: true,
            stdin: false,
            stdin_once: true,
            exec_process: None,
        }
    }

    fn read_back(args: &MonitorArgs) -> Result<Args, String> {
        let line: Vec<OsString> = args.to_args();
        parse(line.iter().map(|a| a.as_encoded_bytes()))
    }

    #[test]
    fn round_trips() {
        let parsed = read_back(&sample()).expect("parses");
        assert_eq!(
            parsed,
            Args {
                id: "abc".into(),
                bundle: "/s/containers/abc".into(),
                runtime: "/usr/sbin/runc".into(),
                runtime_root: "/s/runtime/runc".into(),
                log_path: "/var/log/pods/p/c/0.log".into(),
                dir: "/s/containers/abc".into(),
                socket: "/s/m/abc.sock".into(),
                memory_cgroup: Some("/sys/fs/cgroup/memory/pod/abc".into()),
                tty: true,
                stdin: false,
                stdin_once: true,
                exec_process: None,
            }
        );
        let mut exec = sample();
        exec.memory_cgroup = None;
        exec.exec_process = Some("/s/execs/1/process.json".into());
        exec.tty = false;
        exec.stdin = true;
        let parsed = read_back(&exec).expect("parses");
        assert_eq!(
            parsed.exec_process.as_deref(),
            Some("/s/execs/1/process.json")
        );
        assert_eq!(parsed.memory_cgroup, None);
        assert!(parsed.stdin && !parsed.tty && parsed.stdin_once);
    }

    #[test]
    fn refuses_bad_lines() {
        let run = |args: &[&str]| parse(args.iter().map(|a| a.as_bytes()));
        assert_eq!(run(&["--id"]).err().as_deref(), Some("--id needs a value"));
        assert_eq!(
            run(&["--colour", "red"]).err().as_deref(),
            Some("unknown flag --colour")
        );
        let mut line: Vec<String> = sample()
            .to_args()
            .into_iter()
            .map(|a| a.into_string().expect("UTF-8"))
            .collect();
        let at = line.iter().position(|a| a == "--dir").expect("has --dir");
        line.drain(at..at + 2);
        let line: Vec<&str> = line.iter().map(String::as_str).collect();
        assert_eq!(run(&line).err().as_deref(), Some("--dir is required"));
        assert!(
            parse([&b"--id"[..], &b"\xff\xfe"[..]]).is_err(),
            "not UTF-8"
        );
    }

    /// The program types of an ELF64 file's segments.
    fn segment_types(elf: &[u8]) -> Vec<u32> {
        assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF file");
        let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&elf[0x20..0x28]);
        let table = u64::from_le_bytes(offset) as usize;
        let (size, count) = (u16_at(0x36), u16_at(0x38));
        (0..count)
            .map(|i| {
                let at = table + i * size;
                u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]])
            })
            .collect()
    }

    #[test]
    fn the_monitor_is_static_and_small() {
        const PT_DYNAMIC: u32 = 2;
        const PT_INTERP: u32 = 3;
        let segments = segment_types(PROGRAM);
        assert!(!segments.is_empty());
        assert!(
            !segments.contains(&PT_INTERP) && !segments.contains(&PT_DYNAMIC),
            "no dynamic loader, no shared libraries: {segments:?}"
        );
        // Every page of it is resident once per container.
        assert!(PROGRAM.len() < 256 << 10, "{} bytes", PROGRAM.len());
    }

    #[test]
    fn installs_once_and_replaces_by_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = install(dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), PROGRAM);
        assert!(crate::oci::is_executable(&path));
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = inode(&path);
        install(dir.path()).unwrap();
        assert_eq!(inode(&path), first, "the same program is left alone");
        std::fs::write(&path, b"older").unwrap();
        install(dir.path()).unwrap();
        assert_ne!(
            inode(&path),
            first,
            "another program is replaced, not overwritten"
        );
        assert_eq!(std::fs::read(&path).unwrap(), PROGRAM);
    }
}
