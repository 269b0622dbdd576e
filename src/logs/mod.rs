//! The CRI container log format, as the kubelet reads it (`kubectl logs`):
//!
//! ```text
//! 2026-11-24T03:30:00.123456789Z stdout F a whole line
//! 2026-11-24T03:30:00.123456790Z stderr P the first 16 KiB of a long line…
//! 2026-11-24T03:30:00.123456791Z stderr F …and the rest of it
//! ```
//!
//! Each record is one line: an RFC 3339 timestamp with nanoseconds, the stream, `P` for a
//! partial piece of a longer line or `F` for the piece that ends it, and the content
//! without its newline (or `\r\n`, as a terminal ends lines). [`LineSplitter`] cuts a stream of output into such pieces;
//! [`write_record`] formats one; [`parse_record`] reads one back.
//!
//! Pure code, no I/O: the per-container monitor feeds it what the container writes.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// Appends one record to `out`.
pub fn write_record(out: &mut Vec<u8>, time: SystemTime, stream: Stream, tag: Tag, content: &[u8]) {
    out.extend_from_slice(rfc3339_nanos(time).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: Stream,
    pub tag: Tag,
    pub content: &'a [u8],
}

/// Reads one record (without its newline); `None` for a malformed line.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = match parts.next()? {
        b"P" => Tag::Partial,
        b"F" => Tag::Full,
        _ => return None,
    };
    let content = parts.next().unwrap_or(&[]);
    if time.len() < 20 || !time.ends_with('Z') {
        return None;
    }
    Some(Record {
        time,
        stream,
        tag,
        content,
    })
}

/// `2026-11-24T03:30:00.123456789Z` (UTC, nine fraction digits).
pub fn rfc3339_nanos(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pieces(max: usize, chunks: &[&[u8]]) -> Vec<(String, Tag)> {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, |piece, tag| {
                out.push((String::from_utf8_lossy(piece).into_owned(), tag))
            });
        }
        splitter.finish(|piece, tag| out.push((String::from_utf8_lossy(piece).into_owned(), tag)));
        out
    }

    #[test]
    fn lines_split_across_writes_and_long_lines_cut() {
        use Tag::{Full as F, Partial as P};
        assert_eq!(
            pieces(8, &[b"hel", b"lo\nwor", b"ld\n"]),
            [("hello".into(), F), ("world".into(), F)]
        );
        assert_eq!(
            pieces(4, &[b"abcdefghij\n"]),
            [("abcd".into(), P), ("efgh".into(), P), ("ij".into(), F)]
        );
        // Exactly the size: one full piece, no empty partial.
        assert_eq!(pieces(4, &[b"abcd\n"]), [("abcd".into(), F)]);
        assert_eq!(pieces(4, &[b"\n\n"]), [("".into(), F), ("".into(), F)]);
        // No newline at the end of the stream: still a full line.
        assert_eq!(pieces(8, &[b"tail"]), [("tail".into(), F)]);
        assert!(pieces(8, &[]).is_empty());
        // A terminal's "\r\n", even split across writes; a lone "\r" stays.
        assert_eq!(
            pieces(8, &[b"tty\r", b"\na\rb\r\n"]),
            [("tty".into(), F), ("a\rb".into(), F)]
        );
    }

    #[test]
    fn records_round_trip() {
        let time = UNIX_EPOCH + Duration::new(1_779_593_400, 123_456_789);
        let mut out = Vec::new();
        write_record(&mut out, time, Stream::Stderr, Tag::Partial, b"half a line");
        assert_eq!(
            out,
            b"2026-05-24T03:30:00.123456789Z stderr P half a line\n"
        );
        let record = parse_record(&out[..out.len() - 1]).unwrap();
        assert_eq!(record.stream, Stream::Stderr);
        assert_eq!(record.tag, Tag::Partial);
        assert_eq!(record.content, b"half a line");
        let mut empty = Vec::new();
        write_record(&mut empty, time, Stream::Stdout, Tag::Full, b"");
        let record = parse_record(&empty[..empty.len() - 1]).unwrap();
        assert_eq!(record.content, b"");
        assert!(parse_record(b"not a record").is_none());
        assert!(parse_record(b"2026-05-24T03:30:00.1Z stdin F x").is_none());
    }

    #[test]
    fn calendar_dates() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let at = |secs: u64| rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59.000000000Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00.000000000Z");
        assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59.000000000Z");
    }
}
