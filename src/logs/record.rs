//! Writing the CRI log format (see `logs`): what the container monitor needs, in code
//! that uses only `core` and `alloc`, so the monitor (which has no standard library)
//! compiles this same file.

use alloc::vec::Vec;

/// The longest piece written as one record, as containerd and CRI-O cut lines.
pub const MAX_PIECE: usize = 16 * 1024;

/// Which output a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whether a record ends its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// A piece of a line that goes on in the next record of the stream.
    Partial,
    /// The last (or only) piece of a line.
    Full,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Partial => "P",
            Tag::Full => "F",
        }
    }
}

/// Cuts one stream's output into line pieces of at most `max` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Takes more output; calls `emit` for every complete piece it now has.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], Tag)) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.take(&data[..end], &mut emit);
                    // A terminal ends lines with "\r\n": the "\r" is part of the end.
                    let line = self.pending.strip_suffix(b"\r").unwrap_or(&self.pending);
                    emit(line, Tag::Full);
                    self.pending.clear();
                    data = &data[end + 1..];
                }
                None => {
                    self.take(data, &mut emit);
                    data = &[];
                }
            }
        }
    }

    /// Adds bytes of the current line, emitting full-size partial pieces as they fill.
    fn take(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&[u8], Tag)) {
        while !bytes.is_empty() {
            let room = self.max - self.pending.len();
            let n = room.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == self.max && !bytes.is_empty() {
                emit(&self.pending, Tag::Partial);
                self.pending.clear();
            }
        }
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], Tag)) {
        if !self.pending.is_empty() {
            emit(&self.pending, Tag::Full);
            self.pending.clear();
        }
    }
}

/// A wall-clock time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub secs: u64,
    pub nanos: u32,
}

/// Appends one record to `out`.
pub fn write_record(out: &mut Vec<u8>, time: Time, stream: Stream, tag: Tag, content: &[u8]) {
    push_rfc3339(out, time);
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Appends `2026-11-24T03:30:00.123456789Z` (UTC, nine fraction digits).
pub fn push_rfc3339(out: &mut Vec<u8>, time: Time) {
    let (days, rest) = (time.secs / 86_400, time.secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    push_digits(out, year.max(0) as u64, 4);
    out.push(b'-');
    push_digits(out, u64::from(month), 2);
    out.push(b'-');
    push_digits(out, u64::from(day), 2);
    out.push(b'T');
    push_digits(out, rest / 3600, 2);
    out.push(b':');
    push_digits(out, rest % 3600 / 60, 2);
    out.push(b':');
    push_digits(out, rest % 60, 2);
    out.push(b'.');
    push_digits(out, u64::from(time.nanos), 9);
    out.push(b'Z');
}

/// `value` in decimal, zero-padded to `width` digits.
fn push_digits(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut n = value;
    let mut i = digits.len();
    while n > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(digits.len() - width.min(digits.len()));
    out.extend_from_slice(&digits[start..]);
}

/// The calendar date of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar starting 0000-03-01, so leap days end each 4/100/400 cycle.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
