//! The monitor's command line: built by the daemon ([`MonitorArgs::to_args`]) and read by
//! the `berth-monitor` binary ([`MonitorArgs::parse`]). A hand-written parser, so the
//! monitor binary carries no argument-parsing library: every page it maps counts in the
//! resident memory of every container.

use std::ffi::OsString;
use std::path::PathBuf;

use super::MonitorArgs;

/// The monitor program's file name, installed next to `berth`.
pub const PROGRAM: &str = "berth-monitor";

/// The monitor binary next to the running `berth` binary.
pub fn program() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(PROGRAM);
    if !crate::oci::is_executable(&path) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} is missing: {PROGRAM} is installed next to berth",
                path.display()
            ),
        ));
    }
    Ok(path)
}

impl MonitorArgs {
    /// The arguments that [`MonitorArgs::parse`] reads back.
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

    /// Reads the arguments (without the program name).
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<MonitorArgs, String> {
        let mut parsed = MonitorArgs {
            id: String::new(),
            bundle: PathBuf::new(),
            runtime: PathBuf::new(),
            runtime_root: PathBuf::new(),
            log_path: PathBuf::new(),
            dir: PathBuf::new(),
            socket: PathBuf::new(),
            memory_cgroup: None,
            tty: false,
            stdin: false,
            stdin_once: false,
            exec_process: None,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let flag = flag
                .into_string()
                .map_err(|f| format!("unexpected argument {f:?}"))?;
            match flag.as_str() {
                "--tty" => parsed.tty = true,
                "--stdin" => parsed.stdin = true,
                "--stdin-once" => parsed.stdin_once = true,
                _ => {
                    let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
                    let path = PathBuf::from(&value);
                    match flag.as_str() {
                        "--id" => {
                            parsed.id = value
                                .into_string()
                                .map_err(|v| format!("--id {v:?} is not UTF-8"))?;
                        }
                        "--bundle" => parsed.bundle = path,
                        "--runtime" => parsed.runtime = path,
                        "--runtime-root" => parsed.runtime_root = path,
                        "--log" => parsed.log_path = path,
                        "--dir" => parsed.dir = path,
                        "--control-socket" => parsed.socket = path,
                        "--memory-cgroup" => parsed.memory_cgroup = Some(path),
                        "--exec-process" => parsed.exec_process = Some(path),
                        _ => return Err(format!("unknown flag {flag}")),
                    }
                }
            }
        }
        for (flag, missing) in [
            ("--id", parsed.id.is_empty()),
            ("--bundle", parsed.bundle.as_os_str().is_empty()),
            ("--runtime", parsed.runtime.as_os_str().is_empty()),
            ("--runtime-root", parsed.runtime_root.as_os_str().is_empty()),
            ("--log", parsed.log_path.as_os_str().is_empty()),
            ("--dir", parsed.dir.as_os_str().is_empty()),
            ("--control-socket", parsed.socket.as_os_str().is_empty()),
        ] {
            if missing {
                return Err(format!("{flag} is required"));
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn round_trips() {
        let args = sample();
        let parsed = MonitorArgs::parse(args.to_args()).expect("parses");
        assert_eq!(format!("{parsed:?}"), format!("{args:?}"));
        let mut exec = sample();
        exec.memory_cgroup = None;
        exec.exec_process = Some("/s/execs/1/process.json".into());
        exec.tty = false;
        exec.stdin = true;
        let parsed = MonitorArgs::parse(exec.to_args()).expect("parses");
        assert_eq!(format!("{parsed:?}"), format!("{exec:?}"));
    }

    #[test]
    fn refuses_bad_lines() {
        let parse = |args: &[&str]| MonitorArgs::parse(args.iter().map(OsString::from));
        assert_eq!(
            parse(&["--id"]).err().as_deref(),
            Some("--id needs a value")
        );
        assert_eq!(
            parse(&["--colour", "red"]).err().as_deref(),
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
        assert_eq!(parse(&line).err().as_deref(), Some("--dir is required"));
    }
}
