//! `berth-monitor`: the per-container monitor the daemon starts (see `berth::monitor`).
//! A program of its own rather than a mode of `berth`, so that each container's monitor
//! maps only the monitor's code: it is resident once per container.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match berth::monitor::MonitorArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("berth-monitor: {message}");
            return ExitCode::from(2);
        }
    };
    match berth::monitor::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth-monitor: {err}");
            ExitCode::FAILURE
        }
    }
}
