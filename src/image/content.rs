//! The on-disk content store under `<root>/images`:
//!
//! ```text
//! blobs/sha256/<hex>    manifests, indexes and configs, by digest
//! layers/sha256/<hex>   unpacked layers, by diff ID: overlayfs lower directories
//! tmp/                  work in progress; emptied at start-up
//! ```
//!
//! Everything appears in `blobs/` and `layers/` by an atomic rename from `tmp/`, only once
//! it is complete and verified, so a crash at any point leaves either nothing or a whole
//! object. Removal renames into `tmp/` first for the same reason.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::digest::Digest;

/// The content store's directories.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

/// A directory under `tmp/` that is removed when dropped, unless it was committed.
#[derive(Debug)]
pub struct TempDir {
    path: Option<PathBuf>,
}

impl TempDir {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

impl ContentStore {
    /// Opens the store at `dir`, creating its directories and clearing `tmp/`.
    pub fn open(dir: &Path) -> io::Result<ContentStore> {
        let store = ContentStore {
            root: dir.to_path_buf(),
        };
        fs::create_dir_all(store.root.join("blobs/sha256"))?;
        fs::create_dir_all(store.root.join("layers/sha256"))?;
        let tmp = store.root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(store)
    }

    /// The store's directory: what ImageFsInfo reports as the image filesystem.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// A fresh directory for work in progress.
    pub fn temp_dir(&self) -> io::Result<TempDir> {
        let path = self.root.join("tmp").join(crate::ids::random_id());
        fs::create_dir(&path)?;
        Ok(TempDir { path: Some(path) })
    }

    /// Stores a small blob whose content is in memory, checking it against its digest.
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        if Digest::of(bytes) != *digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("content does not match {digest}"),
            ));
        }
        let target = self.blob_path(digest);
        if target.exists() {
            return Ok(());
        }
        let tmp = self.temp_dir()?;
        let file_path = tmp.path().join("blob");
        let mut file = fs::File::create(&file_path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&file_path, &target)
    }

    pub fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        fs::read(self.blob_path(digest))
    }

    /// Moves a completely unpacked and verified layer into place. When another pull put
    /// the same layer there first, this one is discarded.
    pub fn commit_layer(&self, unpacked: TempDir, diff_id: &Digest) -> io::Result<()> {
        let mut unpacked = unpacked;
        let Some(source) = unpacked.path.take() else {
            return Ok(());
        };
        let target = self.layer_path(diff_id);
        match fs::rename(&source, &target) {
            Ok(()) => Ok(()),
            Err(_) if target.is_dir() => fs::remove_dir_all(&source),
            Err(e) => {
                let _ = fs::remove_dir_all(&source);
                Err(e)
            }
        }
    }

    /// Removes a layer: out of sight first (atomic), then from the disk.
    pub fn remove_layer(&self, diff_id: &Digest) -> io::Result<()> {
        self.remove_dir(&self.layer_path(diff_id))
    }

    pub fn remove_blob(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let graveyard = self.root.join("tmp").join(crate::ids::random_id());
        match fs::rename(dir, &graveyard) {
            Ok(()) => fs::remove_dir_all(&graveyard),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The diff IDs of the layers present on disk.
    pub fn layers_on_disk(&self) -> io::Result<Vec<Digest>> {
        let mut layers = Vec::new();
        for entry in fs::read_dir(self.root.join("layers/sha256"))? {
            let name = entry?.file_name();
            if let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) {
                layers.push(digest);
            }
        }
        Ok(layers)
    }

    /// The digests of the blobs present on disk and their total size.
    pub fn blobs_on_disk(&self) -> io::Result<(Vec<Digest>, u64)> {
        let mut blobs = Vec::new();
        let mut bytes = 0;
        for entry in fs::read_dir(self.root.join("blobs/sha256"))? {
            let entry = entry?;
            bytes += entry.metadata()?.len();
            if let Ok(digest) =
                Digest::parse(&format!("sha256:{}", entry.file_name().to_string_lossy()))
            {
                blobs.push(digest);
            }
        }
        Ok((blobs, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_and_layers_commit_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"config");
        assert!(store.write_blob(&Digest::of(b"other"), b"config").is_err());
        store.write_blob(&digest, b"config").unwrap();
        assert_eq!(store.read_blob(&digest).unwrap(), b"config");

        let diff_id = Digest::of(b"layer");
        let tmp = store.temp_dir().unwrap();
        fs::write(tmp.path().join("file"), b"x").unwrap();
        assert!(!store.has_layer(&diff_id));
        store.commit_layer(tmp, &diff_id).unwrap();
        assert!(store.layer_path(&diff_id).join("file").exists());
        assert_eq!(store.layers_on_disk().unwrap(), vec![diff_id.clone()]);

        // A second commit of the same layer is discarded, not an error.
        let tmp = store.temp_dir().unwrap();
        store.commit_layer(tmp, &diff_id).unwrap();

        // An abandoned temp dir goes away with its guard, and at the next open.
        let tmp = store.temp_dir().unwrap();
        let path = tmp.path().to_path_buf();
        drop(tmp);
        assert!(!path.exists());
        let leftover = dir.path().join("tmp/leftover");
        fs::create_dir(&leftover).unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        assert!(!leftover.exists());

        store.remove_layer(&diff_id).unwrap();
        assert!(!store.has_layer(&diff_id));
        store.remove_layer(&diff_id).unwrap();
    }
}
