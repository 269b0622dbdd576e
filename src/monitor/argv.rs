//! The monitor's command line: the daemon writes it ([`Args::to_args`]), the monitor
//! reads it ([`parse`]). Hand-written both ways, so the monitor carries no
//! argument-parsing library. Code that needs only `core` and `alloc`, so the monitor
//! (which has no standard library) compiles this same file.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// What the daemon asks of one monitor. Paths are UTF-8, as the daemon's paths and ids
/// are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub id: String,
    pub bundle: String,
    pub runtime: String,
    pub runtime_root: String,
    pub log_path: String,
    pub dir: String,
    /// The control socket.
    pub socket: String,
    /// The container's file that counts OOM kills in an `oom_kill N` line
    /// (`memory.oom_control` on cgroup v1, `memory.events` on v2), when the host has a
    /// memory controller.
    pub oom_events: Option<String>,
    /// The container has a terminal (its spec says `terminal: true`).
    pub tty: bool,
    /// The container's stdin stays open for attached clients (else it is /dev/null).
    pub stdin: bool,
    /// Close stdin when the first client attached to it lets go.
    pub stdin_once: bool,
    /// Exec mode: run this process spec in the (running) container `id` with `runc exec`
    /// once the first client has attached, relay its stdio to that client, kill it when
    /// the client goes away, and exit with it. No log, no exit file.
    pub exec_process: Option<String>,
}

impl Args {
    /// The arguments that [`parse`] reads back.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut value = |flag: &str, v: &str| {
            args.push(flag.to_string());
            args.push(v.to_string());
        };
        value("--id", &self.id);
        value("--bundle", &self.bundle);
        value("--runtime", &self.runtime);
        value("--runtime-root", &self.runtime_root);
        value("--log", &self.log_path);
        value("--dir", &self.dir);
        value("--control-socket", &self.socket);
        if let Some(file) = &self.oom_events {
            value("--oom-events", file);
        }
        if let Some(process) = &self.exec_process {
            value("--exec-process", process);
        }
        for (flag, on) in [
            ("--tty", self.tty),
            ("--stdin", self.stdin),
            ("--stdin-once", self.stdin_once),
        ] {
            if on {
                args.push(flag.to_string());
            }
        }
        args
    }
}

/// Reads the arguments (without the program name). Every value is UTF-8: the daemon's
/// paths and ids are.
pub fn parse<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut args = args.into_iter();
    let text = |bytes: &[u8]| {
        core::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| format!("argument {:?} is not UTF-8", String::from_utf8_lossy(bytes)))
    };
    while let Some(flag) = args.next() {
        let flag = text(flag)?;
        match flag.as_str() {
            "--tty" => parsed.tty = true,
            "--stdin" => parsed.stdin = true,
            "--stdin-once" => parsed.stdin_once = true,
            _ => {
                let value = text(args.next().ok_or_else(|| format!("{flag} needs a value"))?)?;
                match flag.as_str() {
                    "--id" => parsed.id = value,
                    "--bundle" => parsed.bundle = value,
                    "--runtime" => parsed.runtime = value,
                    "--runtime-root" => parsed.runtime_root = value,
                    "--log" => parsed.log_path = value,
                    "--dir" => parsed.dir = value,
                    "--control-socket" => parsed.socket = value,
                    "--oom-events" => parsed.oom_events = Some(value),
                    "--exec-process" => parsed.exec_process = Some(value),
                    _ => return Err(format!("unknown flag {flag}")),
                }
            }
        }
    }
    for (flag, value) in [
        ("--id", &parsed.id),
        ("--bundle", &parsed.bundle),
        ("--runtime", &parsed.runtime),
        ("--runtime-root", &parsed.runtime_root),
        ("--log", &parsed.log_path),
        ("--dir", &parsed.dir),
        ("--control-socket", &parsed.socket),
    ] {
        if value.is_empty() {
            return Err(format!("{flag} is required"));
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Args {
        Args {
            id: "abc".into(),
            bundle: "/s/containers/abc".into(),
            runtime: "/usr/sbin/runc".into(),
            runtime_root: "/s/runtime/runc".into(),
            log_path: "/var/log/pods/p/c/0.log".into(),
            dir: "/s/containers/abc".into(),
            socket: "/s/m/abc.sock".into(),
            oom_events: Some("/sys/fs/cgroup/memory/pod/abc/memory.oom_control".into()),
            tty: true,
            stdin: false,
            stdin_once: true,
            exec_process: None,
        }
    }

    fn read_back(args: &Args) -> Result<Args, String> {
        let line = args.to_args();
        parse(line.iter().map(|a| a.as_bytes()))
    }

    #[test]
    fn round_trips() {
        assert_eq!(read_back(&sample()), Ok(sample()));
        let exec = Args {
            oom_events: None,
            exec_process: Some("/s/execs/1/process.json".into()),
            tty: false,
            stdin: true,
            ..sample()
        };
        assert_eq!(read_back(&exec), Ok(exec));
    }

    #[test]
    fn refuses_bad_lines() {
        let run = |args: &[&str]| parse(args.iter().map(|a| a.as_bytes()));
        assert_eq!(run(&["--id"]).err().as_deref(), Some("--id needs a value"));
        assert_eq!(
            run(&["--colour", "red"]).err().as_deref(),
            Some("unknown flag --colour")
        );
        let mut line = sample().to_args();
        let at = line.iter().position(|a| a == "--dir").expect("has --dir");
        line.drain(at..at + 2);
        let line: Vec<&str> = line.iter().map(String::as_str).collect();
        assert_eq!(run(&line).err().as_deref(), Some("--dir is required"));
        assert!(
            parse([&b"--id"[..], &b"\xff\xfe"[..]]).is_err(),
            "not UTF-8"
        );
    }
}
