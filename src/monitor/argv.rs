//! The monitor's command line as the monitor reads it: the daemon writes it with
//! [`super::MonitorArgs::to_args`]. Code that needs only `core` and `alloc`, so the
//! monitor (which has no standard library) compiles this same file.

use alloc::format;
use alloc::string::{String, ToString};

/// What the daemon asked of one monitor (see `MonitorArgs` for each field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub id: String,
    pub bundle: String,
    pub runtime: String,
    pub runtime_root: String,
    pub log_path: String,
    pub dir: String,
    pub socket: String,
    pub memory_cgroup: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub exec_process: Option<String>,
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
                    "--memory-cgroup" => parsed.memory_cgroup = Some(value),
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
