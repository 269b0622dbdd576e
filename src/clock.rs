//! Wall-clock time in the CRI's unit: nanoseconds since the Unix epoch.
//!
//! Records (created, started, finished), events and stats take their times from here;
//! the rules that compare times take them as values, so a unit test gives its own.

/// Nanoseconds since the Unix epoch, the CRI's unit of time (0 on a clock before 1970).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
