//! A blob that lands in a file as it downloads and is read, as it grows, by the unpacking
//! of its layer: the two overlap, and the download never waits for the unpacking (it
//! runs at the network's pace and its verdict, size and digest, comes as soon as the
//! last byte is in). A reader that catches up with the download waits for more; once
//! the download has failed, the reader's next read fails, so an unpacking of bytes that
//! did not match stops there.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// What the download has done so far.
#[derive(Debug, Default)]
struct Progress {
    written: u64,
    /// `Some(true)`: all of it came and matched; `Some(false)`: the download failed.
    end: Option<bool>,
}

#[derive(Debug, Default)]
struct Shared {
    progress: Mutex<Progress>,
    grown: Condvar,
}

impl Shared {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The download's end of a landing. Dropped without [`Landing::finish`]: a failed
/// download (a cancelled pull among them).
#[derive(Debug)]
pub struct Landing {
    file: File,
    shared: Arc<Shared>,
}

/// The unpacking's end: a reader of what has landed, waiting for more.
#[derive(Debug)]
pub struct LandingReader {
    file: File,
    read: u64,
    shared: Arc<Shared>,
}

/// A new landing file at `path`, and its reader.
pub fn open(path: &Path) -> io::Result<(Landing, LandingReader)> {
    let file = File::options().write(true).create_new(true).open(path)?;
    let reader = File::open(path)?;
    let shared = Arc::new(Shared::default());
    Ok((
        Landing {
            file,
            shared: shared.clone(),
        },
        LandingReader {
            file: reader,
            read: 0,
            shared,
        },
    ))
}

impl Landing {
    /// Appends a chunk; the reader may read it from now on. (A write to the page cache,
    /// done in place: it is a copy, and the chunks are small.)
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        let mut progress = self.shared.progress();
        progress.written += chunk.len() as u64;
        drop(progress);
        self.shared.grown.notify_all();
        Ok(())
    }

    /// The download's verdict: `true` when all of it came and matched its digest.
    pub fn finish(self, matched: bool) {
        self.end(matched);
    }

    fn end(&self, matched: bool) {
        let mut progress = self.shared.progress();
        if progress.end.is_none() {
            progress.end = Some(matched);
        }
        drop(progress);
        self.shared.grown.notify_all();
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl Read for LandingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut progress = self.shared.progress();
        loop {
            if progress.end == Some(false) {
                return Err(io::Error::other("the download failed"));
            }
            if progress.written > self.read {
                let ready = (progress.written - self.read).min(buf.len() as u64) as usize;
                drop(progress);
                let n = self.file.read(&mut buf[..ready])?;
                self.read += n as u64;
                return Ok(n);
            }
            if progress.end == Some(true) {
                return Ok(0);
            }
            progress = self
                .shared
                .grown
                .wait(progress)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_follows_the_download_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let (mut landing, mut reader) = open(&dir.path().join("blob")).unwrap();
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).map(|_| all)
        });
        for chunk in [&b"one "[..], b"two ", b"three"] {
            landing.write(chunk).unwrap();
            std::thread::yield_now();
        }
        landing.finish(true);
        assert_eq!(reading.join().unwrap().unwrap(), b"one two three");
    }

    #[test]
    fn a_failed_download_fails_the_reader_even_with_bytes_unread() {
        let dir = tempfile::tempdir().unwrap();
        let (mut landing, mut reader) = open(&dir.path().join("blob")).unwrap();
        landing.write(b"not what the digest says").unwrap();
        // Dropped unfinished: failed.
        drop(landing);
        let mut buf = [0u8; 4];
        assert!(reader.read(&mut buf).is_err());
    }

    #[test]
    fn a_reader_waits_for_more_and_an_empty_blob_ends_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (landing, mut reader) = open(&dir.path().join("empty")).unwrap();
        let reading = std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            reader.read(&mut buf)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!reading.is_finished(), "the reader waits for the download");
        landing.finish(true);
        assert_eq!(reading.join().unwrap().unwrap(), 0);
    }
}
