//! The metadata store: sandboxes, containers and images, kept in an embedded transactional
//! database (redb) at `<root>/metadata.redb`.
//!
//! Each record kind has its own table, keyed by id, holding the record as JSON (readable
//! in a debugger, and tolerant of fields added by later versions through `serde(default)`).
//! A `meta` table holds the schema version and daemon-wide settings (the pod CIDR).
//!
//! Every write is one redb transaction, committed durably before the call returns, so the
//! store survives a crash of the daemon at any point: a reader sees a record whole or not
//! at all. In-memory indexes elsewhere in berth are caches rebuilt from this store at
//! start-up ([`RecordCache`]); [`Watched`] says which live records have a watcher that
//! records their process's end as it happens. [`cri`] is the CRI's view of the records:
//! the configs they keep, their statuses and list entries.

mod cache;
pub mod cri;
mod records;
mod watched;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use cache::{NameTaken, Named, Observer, RecordCache};
pub use records::{
    ContainerRecord, ContainerState, ImageRecord, LayerRecord, SandboxRecord, SandboxState,
};
pub use watched::{WatchMark, Watched};

/// The file name of the database under `root`.
pub const DB_FILE: &str = "metadata.redb";

/// The version of the record layout this build writes. A store written by a newer
/// layout is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_SCHEMA: &str = "schema_version";

/// A failure of the metadata store, naming the operation and the record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open metadata store {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "metadata store {path} has schema version {found}, newer than this berth's {SCHEMA_VERSION}"
    )]
    NewerSchema { path: PathBuf, found: u32 },
    #[error("metadata store: {op} failed: {source}")]
    Db {
        op: &'static str,
        source: redb::Error,
    },
    #[error("metadata store: {kind} {id:?} is unreadable: {source}")]
    Decode {
        kind: &'static str,
        id: String,
        source: serde_json::Error,
    },
    /// A record whose contents no longer make sense (its config does not decode).
    #[error("metadata store: {kind} {id:?} is corrupt: {reason}")]
    Corrupt {
        kind: &'static str,
        id: String,
        reason: String,
    },
    #[error("metadata store: {kind} {id:?} cannot be encoded: {source}")]
    Encode {
        kind: &'static str,
        id: String,
        source: serde_json::Error,
    },
}

/// Wraps a redb error with the operation that failed.
fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |err| StoreError::Db {
        op,
        source: err.into(),
    }
}

/// A kind of record kept in its own table.
pub trait Record: Serialize + DeserializeOwned {
    /// The table holding every record of this kind, keyed by id.
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    /// The kind's name in errors ("sandbox", "container", "image").
    const KIND: &'static str;
    /// The record's key.
    fn id(&self) -> &str;
}

/// The metadata store. Cheap to share behind an `Arc`; every method is one transaction.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `root`, creates the tables and checks the
    /// schema version.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let path = root.join(DB_FILE);
        // Readable by root alone from the start, in a root directory others may search.
        let private = |e: std::io::Error| StoreError::Open {
            path: path.clone(),
            source: redb::DatabaseError::Storage(redb::StorageError::Io(e)),
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(private)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(private)?;
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = Store { db, path };
        store.init()?;
        Ok(store)
    }

    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut meta = txn.open_table(META).map_err(db("open meta table"))?;
            let found = meta
                .get(META_SCHEMA)
                .map_err(db("read schema version"))?
                .map(|v| parse_u32(v.value()));
            match found {
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found,
                    });
                }
                Some(_) => {}
                None => {
                    let version = SCHEMA_VERSION.to_string();
                    meta.insert(META_SCHEMA, version.as_bytes())
                        .map_err(db("write schema version"))?;
                }
            }
            txn.open_table(SandboxRecord::TABLE)
                .map_err(db("open sandboxes table"))?;
            txn.open_table(ContainerRecord::TABLE)
                .map_err(db("open containers table"))?;
            txn.open_table(ImageRecord::TABLE)
                .map_err(db("open images table"))?;
            txn.open_table(LayerRecord::TABLE)
                .map_err(db("open layers table"))?;
        }
        txn.commit().map_err(db("commit"))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inserts or replaces a record.
    pub fn put<R: Record>(&self, record: &R) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|source| StoreError::Encode {
            kind: R::KIND,
            id: record.id().to_string(),
            source,
        })?;
        let txn = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut table = txn.open_table(R::TABLE).map_err(db("open table"))?;
            table
                .insert(record.id(), bytes.as_slice())
                .map_err(db("insert"))?;
        }
        txn.commit().map_err(db("commit"))
    }

    /// The record with this id, if any.
    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, StoreError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let table = txn.open_table(R::TABLE).map_err(db("open table"))?;
        let Some(value) = table.get(id).map_err(db("get"))? else {
            return Ok(None);
        };
        decode::<R>(id, value.value()).map(Some)
    }

    /// Removes a record; returns whether it existed.
    pub fn delete<R: Record>(&self, id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db("begin"))?;
        let existed = {
            let mut table = txn.open_table(R::TABLE).map_err(db("open table"))?;
            table.remove(id).map_err(db("remove"))?.is_some()
        };
        txn.commit().map_err(db("commit"))?;
        Ok(existed)
    }

    /// Every record of a kind, in id order.
    pub fn list<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let table = txn.open_table(R::TABLE).map_err(db("open table"))?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(db("iterate"))? {
            let (key, value) = entry.map_err(db("iterate"))?;
            records.push(decode::<R>(key.value(), value.value())?);
        }
        Ok(records)
    }

    /// A daemon-wide setting.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let table = txn.open_table(META).map_err(db("open meta table"))?;
        let value = table.get(key).map_err(db("get meta"))?;
        Ok(value.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    /// Records a daemon-wide setting.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut table = txn.open_table(META).map_err(db("open meta table"))?;
            table
                .insert(key, value.as_bytes())
                .map_err(db("write meta"))?;
        }
        txn.commit().map_err(db("commit"))
    }
}

fn decode<R: Record>(id: &str, bytes: &[u8]) -> Result<R, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        kind: R::KIND,
        id: id.to_string(),
        source,
    })
}

fn parse_u32(bytes: &[u8]) -> u32 {
    // An unparsable version can only come from a foreign writer: treat it as newer.
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sandbox(id: &str, name: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.to_string(),
            name: name.to_string(),
            namespace: "default".to_string(),
            uid: format!("uid-{id}"),
            attempt: 0,
            created_at_ns: 1,
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            ..SandboxRecord::default()
        }
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put(&sandbox("b", "two")).unwrap();
            store.put(&sandbox("a", "one")).unwrap();
            store.set_meta("pod_cidr", "10.88.0.0/16").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let all: Vec<SandboxRecord> = store.list().unwrap();
        assert_eq!(
            all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            store.get::<SandboxRecord>("a").unwrap(),
            Some(sandbox("a", "one"))
        );
        assert_eq!(
            store.get_meta("pod_cidr").unwrap().as_deref(),
            Some("10.88.0.0/16")
        );
        assert!(store.get::<ContainerRecord>("a").unwrap().is_none());
    }

    #[test]
    fn put_replaces_and_delete_reports_existence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put(&sandbox("a", "one")).unwrap();
        store.put(&sandbox("a", "uno")).unwrap();
        assert_eq!(
            store.list::<SandboxRecord>().unwrap(),
            vec![sandbox("a", "uno")]
        );
        assert!(store.delete::<SandboxRecord>("a").unwrap());
        assert!(!store.delete::<SandboxRecord>("a").unwrap());
        assert!(store.list::<SandboxRecord>().unwrap().is_empty());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.set_meta(META_SCHEMA, "99").unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn second_open_of_one_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
    }
}
