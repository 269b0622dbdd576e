//! The files a monitor writes in its directory, and the exit record's form: what the
//! daemon reads back. Code that needs only `core` and `alloc`, so the monitor (which has
//! no standard library) compiles this same file.

use alloc::format;
use alloc::string::String;

/// The monitor's own pid, written first: the daemon finds a monitor by it.
pub const MONITOR_PID: &str = "monitor.pid";
/// The container's (or exec'd process's) pid, as the runtime writes it.
pub const CONTAINER_PID: &str = "container.pid";
/// How the container ended (see [`exit_record`]); written atomically.
pub const EXIT: &str = "exit.json";
/// A failure the monitor can no longer tell the daemon on its stdout.
pub const ERROR: &str = "monitor.error";
/// The extension of the console socket runc hands a terminal over on, next to the
/// control socket (for the same length limit).
pub const CONSOLE_EXTENSION: &str = "tty";

/// The exit file's content: the exit code (128 + the signal for a killed process), the
/// signal, when it ended (nanoseconds since the epoch), and whether the memory cgroup
/// recorded an OOM kill. The daemon reads it as `ExitRecord`.
pub fn exit_record(
    exit_code: i32,
    signal: Option<i32>,
    finished_at_ns: i64,
    oom_killed: bool,
) -> String {
    let signal = signal.map_or(String::from("null"), |s| format!("{s}"));
    format!(
        "{{\"exit_code\":{exit_code},\"signal\":{signal},\"finished_at_ns\":{finished_at_ns},\"oom_killed\":{oom_killed}}}"
    )
}
