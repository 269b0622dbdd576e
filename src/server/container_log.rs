//! ReopenContainerLog: the monitor reopens the log file after the kubelet rotated it.

use std::path::Path;
use std::sync::Arc;

use super::CriService;
use crate::error::{Error, Result};
use crate::monitor::request_reopen;

impl CriService {
    /// Makes the monitor reopen the log file after the kubelet rotated it; an error when
    /// the container is not running (api.proto: then no new file may be created).
    pub async fn reopen_container_log(self: &Arc<Self>, id: &str) -> Result<()> {
        let record = self.running_container(id)?;
        let paths = self.containers.monitor_paths(&record.id);
        tokio::task::spawn_blocking(move || request_reopen(&paths))
            .await?
            .map_err(Error::io(
                "reopening the log of",
                Path::new(&record.log_path),
            ))
    }
}
