//! The records kept in the metadata store, one table per kind.
//!
//! Fields are added by the issues that need them; `serde(default)` lets a newer berth read
//! what an older one wrote.

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::Record;

/// A pod sandbox: what is needed to rebuild the daemon's view of it after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    /// Creation time, nanoseconds since the Unix epoch (the CRI's unit).
    pub created_at_ns: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Record for SandboxRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("sandboxes");
    const KIND: &'static str = "sandbox";
    fn id(&self) -> &str {
        &self.id
    }
}

/// A container of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the request named it.
    pub image: String,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_at_ns: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Record for ContainerRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("containers");
    const KIND: &'static str = "container";
    fn id(&self) -> &str {
        &self.id
    }
}

/// An image in the content store, keyed by its config digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRecord {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
}

impl Record for ImageRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("images");
    const KIND: &'static str = "image";
    fn id(&self) -> &str {
        &self.id
    }
}
