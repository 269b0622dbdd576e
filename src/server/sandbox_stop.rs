//! StopPodSandbox and RemovePodSandbox. Both are idempotent (api.proto): an unknown id, or
//! a sandbox already stopped, is not an error, and every step tolerates finding its
//! resource already gone, so a retry after a partial failure finishes the job.

use std::future::Future;
use std::sync::Arc;

use super::CriService;
use crate::error::{Error, Result};
use crate::network::cni::PodNetwork;
use crate::oci::teardown::kill_and_delete;
use crate::sandbox::netns;
use crate::store::{SandboxRecord, SandboxState};

impl CriService {
    /// Stops the pod's containers and its pause process and tears its network down.
    pub async fn stop_pod_sandbox(self: &Arc<Self>, id: &str) -> Result<()> {
        self.on_locked_sandbox(id, |service, record| async move {
            service.stop_sandbox(record).await.map(drop)
        })
        .await
    }

    /// Stops and removes the pod and everything it has.
    pub async fn remove_pod_sandbox(self: &Arc<Self>, id: &str) -> Result<()> {
        self.on_locked_sandbox(id, |service, record| async move {
            service.remove_sandbox(record).await
        })
        .await
    }

    /// Runs `work` on a sandbox under its lock, as a task (a client that gives up cannot
    /// interrupt it), with the record re-read under the lock. An unknown id is not an
    /// error: Stop and Remove are idempotent (api.proto).
    async fn on_locked_sandbox<F, Fut>(self: &Arc<Self>, id: &str, work: F) -> Result<()>
    where
        F: FnOnce(Arc<CriService>, SandboxRecord) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send,
    {
        if id.is_empty() {
            return Err(Error::invalid("pod_sandbox_id", "must not be empty"));
        }
        let Some(record) = self.sandboxes.find(id) else {
            return Ok(());
        };
        let service = self.clone();
        tokio::spawn(async move {
            let lock = service.sandboxes.lock(&record.id);
            let _held = lock.lock().await;
            let Some(record) = service.sandboxes.find(&record.id) else {
                return Ok(());
            };
            work(service.clone(), record).await
        })
        .await?
    }

    async fn remove_sandbox(&self, record: SandboxRecord) -> Result<()> {
        let record = self.stop_sandbox(record).await?;
        self.remove_sandbox_containers(&record.id, true).await?;
        let dir = self.sandboxes.dir(&record.id);
        for mounted in [dir.join("shm"), dir.join("rootfs")] {
            crate::mounts::unmount(&mounted).map_err(Error::io("unmounting", &mounted))?;
        }
        // Its containers are gone: so are the image volumes they mounted.
        self.release_image_volumes(&record.id)?;
        crate::mounts::remove_tree(&dir).map_err(Error::io("removing", &dir))?;
        self.sandboxes.forget(&record)?;
        tracing::info!(sandbox = %record.id, "pod sandbox removed");
        if !record.rootfs_layers.is_empty() {
            // Its pause image may have been removed meanwhile: reclaim what it held.
            self.images.collect_garbage_soon();
        }
        Ok(())
    }

    /// The stop itself, under the sandbox's lock. Safe to repeat.
    ///
    /// The processes (containers first, as api.proto says they are forcibly terminated,
    /// then the pause container) and the network (CNI DEL) are torn down side by side:
    /// DEL needs only the pinned namespace, which outlives the processes. The pin goes
    /// once both are done.
    async fn stop_sandbox(&self, mut record: SandboxRecord) -> Result<SandboxRecord> {
        let runtime = self
            .sandboxes
            .runtime(&record.runtime_handler)
            .cloned()
            .ok_or_else(|| Error::WrongState {
                kind: "pod sandbox",
                id: record.id.clone(),
                reason: format!(
                    "its runtime handler {:?} is no longer configured",
                    record.runtime_handler
                ),
            })?;
        // NotReady first: no container of it may start while it stops.
        let was_ready = record.state.can_stop();
        if was_ready {
            record.state = SandboxState::NotReady;
            self.sandboxes.save(&record)?;
        }
        let pin = record.netns.clone().map(std::path::PathBuf::from);
        // A finished stop leaves the record NotReady with no pid and no netns: its pause
        // container is deleted already, and asking the runtime again costs a runc call.
        let stopped = !record.state.can_stop() && record.pid == 0 && record.netns.is_none();
        let processes = async {
            self.remove_sandbox_containers(&record.id, false).await?;
            if !stopped {
                kill_and_delete(&runtime, &record.id, record.pid).await?;
            }
            Ok::<(), Error>(())
        };
        let network = async {
            let Some(pin) = &pin else {
                return Ok(());
            };
            let network = PodNetwork {
                id: &record.id,
                netns: pin,
                name: &record.name,
                namespace: &record.namespace,
                uid: &record.uid,
                port_mappings: &[],
            };
            // DEL replays the port mappings cached at ADD.
            self.sandboxes.cni.detach(&network).await?;
            Ok::<(), Error>(())
        };
        let (processes, network) = tokio::join!(processes, network);
        processes?;
        network?;
        if let Some(pin) = &pin {
            netns::remove(pin).map_err(Error::io("removing network namespace", pin))?;
        }
        // A pod with its own user namespace: nothing joins it once the pause is gone.
        let user_pin = self.sandboxes.userns_path(&record.id);
        netns::remove(&user_pin).map_err(Error::io("removing user namespace", &user_pin))?;
        if was_ready || record.netns.is_some() || record.pid != 0 {
            record.state = SandboxState::NotReady;
            record.netns = None;
            record.pid = 0;
            self.sandboxes.save(&record)?;
            tracing::info!(sandbox = %record.id, "pod sandbox stopped");
        }
        Ok(record)
    }
}
