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
//! without its newline (or `\r\n`, as a terminal ends lines). [`LineSplitter`] cuts a
//! stream of output into such pieces and [`write_record`] formats one (both in
//! `record.rs`, which the monitor compiles too); [`parse_record`] reads one back.
//!
//! Pure code, no I/O: the per-container monitor feeds it what the container writes.

mod record;

use std::time::{SystemTime, UNIX_EPOCH};

pub use record::{LineSplitter, MAX_PIECE, Stream, Tag, Time, push_rfc3339, write_record};

impl From<SystemTime> for Time {
    fn from(time: SystemTime) -> Time {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Time {
            secs: since.as_secs(),
            nanos: since.subsec_nanos(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `2026-11-24T03:30:00.123456789Z` (UTC, nine fraction digits).
    fn rfc3339_nanos(time: SystemTime) -> String {
        let mut out = Vec::with_capacity(30);
        push_rfc3339(&mut out, time.into());
        String::from_utf8_lossy(&out).into_owned()
    }
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
        write_record(
            &mut out,
            time.into(),
            Stream::Stderr,
            Tag::Partial,
            b"half a line",
        );
        assert_eq!(
            out,
            b"2026-05-24T03:30:00.123456789Z stderr P half a line\n"
        );
        let record = parse_record(&out[..out.len() - 1]).unwrap();
        assert_eq!(record.stream, Stream::Stderr);
        assert_eq!(record.tag, Tag::Partial);
        assert_eq!(record.content, b"half a line");
        let mut empty = Vec::new();
        write_record(&mut empty, time.into(), Stream::Stdout, Tag::Full, b"");
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
