//! An in-memory cache of one kind of record, in front of the store: what the sandbox and
//! container registries share. It answers lookups without touching the disk (by id or
//! unique id prefix, as crictl lets people type them), writes through to the store,
//! reserves the names that must be unique (a pod's name, a container's name in its pod),
//! hands out one lock per record to serialize the operations on it, and tells an observer
//! of every change once it is durable (the container events are made from them).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use super::{Record, Store, StoreError};

/// A record whose name must be unique among the live records of its kind.
pub trait Named: Record + Clone {
    /// The key that must be unique.
    fn name_key(&self) -> String;
}

/// What is told of a change: the record before (`None`: it is new) and after (`None`:
/// it was forgotten). Called under the cache's locks, once the change is in the store, in
/// the order the changes are made; it must not block, and may only read other caches.
pub type Observer<R> = Box<dyn Fn(Option<&R>, Option<&R>) + Send + Sync>;

/// A name reserved already, by the record `holder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTaken {
    pub holder: String,
}

/// See the module docs.
pub struct RecordCache<R> {
    store: Arc<Store>,
    records: RwLock<BTreeMap<String, R>>,
    /// Held across each change (the store's write, then the cache's), so that the store,
    /// the cache and the observer see the changes in one order; lookups never wait for it.
    writer: Mutex<()>,
    observer: OnceLock<Observer<R>>,
    /// Name key → id.
    names: Mutex<HashMap<String, String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn unpoisoned<T>(guard: std::sync::LockResult<T>) -> T {
    guard.unwrap_or_else(|p| p.into_inner())
}

impl<R: Named> RecordCache<R> {
    /// Loads every record of the kind from the store (at start-up).
    pub fn load(store: Arc<Store>) -> Result<RecordCache<R>, StoreError> {
        let records: Vec<R> = store.list()?;
        let names = records
            .iter()
            .map(|r| (r.name_key(), r.id().to_string()))
            .collect();
        Ok(RecordCache {
            records: RwLock::new(
                records
                    .into_iter()
                    .map(|r| (r.id().to_string(), r))
                    .collect(),
            ),
            names: Mutex::new(names),
            locks: Mutex::new(HashMap::new()),
            writer: Mutex::new(()),
            observer: OnceLock::new(),
            store,
        })
    }

    /// Sets the observer of the changes from now on (once: a second is refused).
    pub fn observe(&self, observer: Observer<R>) -> Result<(), Observer<R>> {
        self.observer.set(observer)
    }

    fn tell(&self, before: Option<&R>, after: Option<&R>) {
        if let Some(observer) = self.observer.get() {
            observer(before, after);
        }
    }

    /// The record with this id, or with this unique id prefix.
    pub fn get(&self, id: &str) -> Option<R> {
        let records = unpoisoned(self.records.read());
        if let Some(record) = records.get(id) {
            return Some(record.clone());
        }
        if id.is_empty() {
            return None;
        }
        let mut matches = records
            .range(id.to_string()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some((_, record)), None) => Some(record.clone()),
            _ => None,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        unpoisoned(self.records.read()).contains_key(id)
    }

    /// Every record, in id order.
    pub fn all(&self) -> Vec<R> {
        self.filter_map(|r| Some(r.clone()))
    }

    /// `f` of every record, in id order, under the read lock: nothing is cloned unless
    /// `f` clones it.
    pub fn filter_map<T>(&self, f: impl FnMut(&R) -> Option<T>) -> Vec<T> {
        unpoisoned(self.records.read())
            .values()
            .filter_map(f)
            .collect()
    }

    /// Stores a new or changed record.
    pub fn save(&self, record: &R) -> Result<(), StoreError> {
        let _writing = unpoisoned(self.writer.lock());
        self.store.put(record)?;
        let mut records = unpoisoned(self.records.write());
        let before = records.insert(record.id().to_string(), record.clone());
        self.tell(before.as_ref(), Some(record));
        Ok(())
    }

    /// Stores `after`, a correction of `before`, only if the cached record is still
    /// `before`: for corrections made without the record's lock (a listing that notices
    /// an exit), which must neither undo a change made meanwhile under the lock nor bring
    /// back a record removed meanwhile. Returns the record that stands: `after`, or the
    /// newer one (`after` again when the record is gone: what the caller saw of it).
    pub fn correct(&self, before: &R, after: R) -> Result<R, StoreError>
    where
        R: PartialEq,
    {
        let _writing = unpoisoned(self.writer.lock());
        match unpoisoned(self.records.read()).get(before.id()) {
            Some(current) if current == before => {}
            Some(newer) => return Ok(newer.clone()),
            None => return Ok(after),
        }
        // No other change can come in between: they all hold `writer`.
        self.store.put(&after)?;
        let mut records = unpoisoned(self.records.write());
        let before = records.insert(after.id().to_string(), after.clone());
        self.tell(before.as_ref(), Some(&after));
        Ok(after)
    }

    /// Forgets a record, frees its name and drops its lock.
    pub fn forget(&self, record: &R) -> Result<(), StoreError> {
        let writing = unpoisoned(self.writer.lock());
        self.store.delete::<R>(record.id())?;
        let mut records = unpoisoned(self.records.write());
        if let Some(before) = records.remove(record.id()) {
            self.tell(Some(&before), None);
        }
        drop(records);
        drop(writing);
        self.release_name(&record.name_key());
        unpoisoned(self.locks.lock()).remove(record.id());
        Ok(())
    }

    /// Reserves a name for `id`; an error naming the id that holds it already, if any.
    pub fn reserve_name(&self, key: &str, id: &str) -> Result<(), NameTaken> {
        let mut names: MutexGuard<'_, _> = unpoisoned(self.names.lock());
        if let Some(holder) = names.get(key) {
            return Err(NameTaken {
                holder: holder.clone(),
            });
        }
        names.insert(key.to_string(), id.to_string());
        Ok(())
    }

    pub fn release_name(&self, key: &str) {
        unpoisoned(self.names.lock()).remove(key);
    }

    /// The lock that serializes operations on one record.
    pub fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        unpoisoned(self.locks.lock())
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SandboxRecord;

    fn record(id: &str, name: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.to_string(),
            name: name.to_string(),
            ..SandboxRecord::default()
        }
    }

    #[test]
    fn lookups_names_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let cache: RecordCache<SandboxRecord> = RecordCache::load(store.clone()).unwrap();
        let web = record("abc123", "web").name_key();
        cache.reserve_name(&web, "abc123").unwrap();
        assert_eq!(
            cache.reserve_name(&web, "abd999"),
            Err(NameTaken {
                holder: "abc123".to_string()
            })
        );
        cache.save(&record("abc123", "web")).unwrap();
        cache.save(&record("abd999", "db")).unwrap();
        assert_eq!(cache.get("abc").map(|r| r.name), Some("web".to_string()));
        assert!(
            cache.get("ab").is_none(),
            "an ambiguous prefix finds nothing"
        );
        assert!(cache.get("").is_none());

        let reloaded: RecordCache<SandboxRecord> = RecordCache::load(store).unwrap();
        assert_eq!(reloaded.all().len(), 2);
        assert!(
            reloaded.reserve_name(&web, "x").is_err(),
            "names are rebuilt from the store"
        );
        reloaded.forget(&record("abc123", "web")).unwrap();
        assert!(!reloaded.contains("abc123"));
        reloaded.reserve_name(&web, "x").unwrap();
    }

    #[test]
    fn corrections_keep_newer_changes_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let cache: RecordCache<SandboxRecord> = RecordCache::load(store.clone()).unwrap();
        let seen = record("abc123", "web");
        cache.save(&seen).unwrap();
        let corrected = SandboxRecord {
            pid: 7,
            ..seen.clone()
        };
        let newer = SandboxRecord {
            pid: 9,
            ..seen.clone()
        };

        cache.save(&newer).unwrap();
        assert_eq!(cache.correct(&seen, corrected.clone()).unwrap().pid, 9);
        assert_eq!(cache.get("abc123").map(|r| r.pid), Some(9));

        assert_eq!(cache.correct(&newer, corrected.clone()).unwrap().pid, 7);
        assert_eq!(cache.get("abc123").map(|r| r.pid), Some(7));
        let stored: Vec<SandboxRecord> = store.list().unwrap();
        assert_eq!(stored.first().map(|r| r.pid), Some(7), "written through");

        cache.forget(&corrected).unwrap();
        cache.correct(&corrected, newer).unwrap();
        assert!(!cache.contains("abc123"), "a removed record stays removed");
        let stored: Vec<SandboxRecord> = store.list().unwrap();
        assert!(stored.is_empty());
    }
}
