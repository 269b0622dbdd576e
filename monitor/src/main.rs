//! `berth-monitor`: the per-container monitor the daemon starts (see `berth::monitor` for
//! what it does and the protocols it speaks).
//!
//! One runs for every container, for the container's whole life, so its memory counts
//! once per container: it is written without the standard library or a C library
//! (`rt.rs` is its start-up, heap and memory functions; rustix makes the system calls)
//! and linked statically. It maps a few tens of kilobytes where a program on glibc maps
//! two megabytes.
//!
//! Its pure parts are the `berth_monitor` library (`lib.rs`): the code it shares with
//! the daemon (the command line, the files it writes and the exit record, the attach
//! frames, the log format, runc's error messages), compiled from the daemon's own files,
//! which use only `core` and `alloc`, and what it reads of a cgroup. They have the unit
//! tests; what is here makes system calls.

#![no_std]
#![no_main]

extern crate alloc;

mod monitor;
mod pump;
mod rt;
mod sys;

use berth_monitor::{argv, cgroup, files, frames, record, runc_log};

fn main() -> i32 {
    if sys::ignore_sigpipe().is_err() {
        return 1;
    }
    let args = match argv::parse(rt::args()) {
        Ok(args) => args,
        Err(message) => {
            let line = alloc::format!("berth-monitor: {message}\n");
            let _ = sys::write_all(rt::stderr(), line.as_bytes());
            return 2;
        }
    };
    monitor::run(&args)
}
