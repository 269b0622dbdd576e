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

    /// The reader reads each chunk once it has landed, and waits, not ends, when it has
    /// caught up with a download still under way: each chunk is written only once the
    /// reader has read the one before, so each of its reads meets an empty file first.
    #[test]
    fn the_reader_follows_the_download_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let (mut landing, mut reader) = open(&dir.path().join("blob")).unwrap();
        let (got, read) = std::sync::mpsc::channel();
        let reading = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                let n = reader.read(&mut buf).unwrap();
                got.send(buf[..n].to_vec()).unwrap();
                if n == 0 {
                    return;
                }
            }
        });
        let wait = std::time::Duration::from_secs(10);
        for chunk in [&b"one "[..], b"two ", b"three"] {
            landing.write(chunk).unwrap();
            assert_eq!(read.recv_timeout(wait).unwrap(), chunk);
        }
        landing.finish(true);
        assert_eq!(
            read.recv_timeout(wait).unwrap(),
            b"",
            "the end, once finished"
        );
        reading.join().unwrap();
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
    fn an_empty_blob_ends_the_reader_once_it_matched() {
        let dir = tempfile::tempdir().unwrap();
        let (landing, mut reader) = open(&dir.path().join("empty")).unwrap();
        landing.finish(true);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
    }
}
