//! The monitor's pure parts: code with no system calls, in `core` and `alloc` only, that
//! the program (`main.rs`) is built on. Most of it is compiled from the daemon's own
//! files, so both ends of each protocol are one code: the command line ([`argv`]), the
//! files the monitor writes and the exit record ([`files`]), the attach frames
//! ([`frames`]), the CRI log format ([`record`]) and runc's error messages
//! ([`runc_log`]). [`cgroup`] is the monitor's own.
//!
//! Without the standard library, as the program is; its unit tests (`cargo test`) run
//! with it, for the test harness.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

#[path = "../../src/monitor/argv.rs"]
pub mod argv;
pub mod cgroup;
#[path = "../../src/monitor/files.rs"]
pub mod files;
#[path = "../../src/monitor/frames.rs"]
pub mod frames;
#[path = "../../src/logs/record.rs"]
pub mod record;
#[path = "../../src/oci/runc_log.rs"]
pub mod runc_log;

#[cfg(test)]
mod tests;
