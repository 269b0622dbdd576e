//! Containers: what berth keeps for them and where their files live.
//!
//! ```text
//! <root>/containers/<id>/   upper/ and work/ (the writable layer), rootfs/ (the overlay)
//! <state>/containers/<id>/  config.json (the bundle), runc.log, and the monitor's files:
//!                           monitor.pid, container.pid, control.sock, exit.json
//! ```
//!
//! Records are kept in the metadata store and cached here (rebuilt at start-up); a
//! running container's record is corrected from its monitor's exit file when it ends, so
//! an exit that happened while the daemon was down is reported with its code and time.
//! The RPCs are in `server/container_*.rs`.

pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::monitor::{ExitRecord, MonitorPaths};
use crate::store::{ContainerRecord, ContainerState, Store, StoreError};

/// The containers of this daemon.
pub struct Containers {
    root: PathBuf,
    state: PathBuf,
    store: Arc<Store>,
    records: RwLock<BTreeMap<String, ContainerRecord>>,
    /// `sandbox/name/attempt` → container id.
    names: Mutex<HashMap<String, String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containers")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A container name is unique within its sandbox and attempt.
pub fn name_key(sandbox: &str, name: &str, attempt: u32) -> String {
    format!("{sandbox}/{name}/{attempt}")
}

impl Containers {
    pub fn open(root: &Path, state: &Path, store: Arc<Store>) -> Result<Containers, StoreError> {
        let containers = Containers {
            root: root.join("containers"),
            state: state.join("containers"),
            store,
            records: RwLock::new(BTreeMap::new()),
            names: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        };
        let records: Vec<ContainerRecord> = containers.store.list()?;
        {
            let mut names = containers.lock_names();
            for r in &records {
                names.insert(name_key(&r.sandbox_id, &r.name, r.attempt), r.id.clone());
            }
        }
        *containers.write_records() = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        Ok(containers)
    }

    /// `<root>/containers/<id>`: the writable layer and the rootfs mount point.
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// `<state>/containers/<id>`: the bundle and the monitor's files.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    pub fn monitor_paths(&self, id: &str) -> MonitorPaths {
        let short = &id[..id.len().min(24)];
        MonitorPaths {
            dir: self.state_dir(id),
            socket: self.state.with_file_name("m").join(format!("{short}.sock")),
        }
    }

    fn read_records(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ContainerRecord>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_records(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ContainerRecord>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container with this id or unique id prefix, its state brought up to date.
    pub fn find(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        let found = {
            let records = self.read_records();
            match records.get(id) {
                Some(record) => Some(record.clone()),
                None if id.is_empty() => None,
                None => {
                    let mut matches = records
                        .range(id.to_string()..)
                        .take_while(|(k, _)| k.starts_with(id));
                    match (matches.next(), matches.next()) {
                        (Some((_, record)), None) => Some(record.clone()),
                        _ => None,
                    }
                }
            }
        };
        found.map(|r| self.refresh(r)).transpose()
    }

    /// Every container, states brought up to date.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let records: Vec<ContainerRecord> = self.read_records().values().cloned().collect();
        records.into_iter().map(|r| self.refresh(r)).collect()
    }

    /// A live container whose monitor recorded an exit is Exited, with the code, time and
    /// reason the monitor saw.
    pub fn refresh(&self, mut record: ContainerRecord) -> Result<ContainerRecord, StoreError> {
        if record.state == ContainerState::Exited {
            return Ok(record);
        }
        let Some(exit) = ExitRecord::read(&self.monitor_paths(&record.id)) else {
            return Ok(record);
        };
        record.state = ContainerState::Exited;
        record.exit_code = exit.exit_code;
        record.finished_at_ns = exit.finished_at_ns;
        record.reason = if exit.oom_killed {
            "OOMKilled"
        } else if exit.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string();
        self.save(&record)?;
        Ok(record)
    }

    pub fn save(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.store.put(record)?;
        self.write_records()
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    pub fn forget(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.store.delete::<ContainerRecord>(&record.id)?;
        self.write_records().remove(&record.id);
        self.lock_names()
            .remove(&name_key(&record.sandbox_id, &record.name, record.attempt));
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.id);
        Ok(())
    }

    pub fn reserve_name(&self, key: &str, id: &str) -> Result<(), String> {
        let mut names = self.lock_names();
        if let Some(holder) = names.get(key) {
            return Err(holder.clone());
        }
        names.insert(key.to_string(), id.to_string());
        Ok(())
    }

    pub fn release_name(&self, key: &str) {
        self.lock_names().remove(key);
    }

    pub fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}
