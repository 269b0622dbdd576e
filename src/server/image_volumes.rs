//! A pod's image volumes (KEP-4639): each image is mounted once per pod, read-only, at
//! `<sandbox dir>/images/<image id>`, for every container of the pod that names it (each
//! binds it at its own sub path). It is unmounted when the last container naming it is
//! removed (a container being created, which has no record yet, counts), and whatever is
//! left goes with the pod; after a crash, the start-up sweep unmounts those no container
//! record names (a CreateContainer cut short).
//!
//! The image's layers stay on disk while it is mounted: every container naming it keeps
//! them in its record, as its own image's.

use std::collections::HashSet;
use std::path::PathBuf;

use super::CriService;
use crate::error::{Error, Result};
use crate::store::ImageRecord;

/// The directory name of an image's mount: its id, `:` made `-`.
fn mount_name(image_id: &str) -> String {
    image_id.replace(':', "-")
}

impl CriService {
    /// Where sandbox `id` mounts its image volumes.
    fn pod_images_dir(&self, sandbox_id: &str) -> PathBuf {
        self.sandboxes.dir(sandbox_id).join("images")
    }

    /// The pod's mount of `image` for container `id` being created: mounted now unless a
    /// container of the pod has it mounted already. Until [`CriService::settle_image_volumes`],
    /// the mount counts as used by that container, which has no record yet.
    pub(crate) fn pod_image_volume(
        &self,
        sandbox_id: &str,
        id: &str,
        image: &ImageRecord,
    ) -> Result<PathBuf> {
        let mut pending = self.image_volumes.lock().unwrap_or_else(|p| p.into_inner());
        let images = self.pod_images_dir(sandbox_id);
        let target = images.join(mount_name(&image.id));
        if !crate::mounts::is_mount_point(&target).map_err(Error::io("image volume", &target))? {
            // Only inside the sandbox's own directory: a pod removed meanwhile gets none.
            for dir in [&images, &target] {
                match std::fs::create_dir(dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(Error::io("image volume", dir)(e));
                    }
                    _ => {}
                }
            }
            let layers = self.images.layer_paths(image)?;
            crate::mounts::mount_read_only_layers(&layers, &target)
                .map_err(Error::io("mounting the image volume on", &target))?;
        }
        pending
            .entry(id.to_string())
            .or_default()
            .push(target.clone());
        Ok(target)
    }

    /// Container `id`'s create has ended: its record names its image volumes now, or, if
    /// it failed, nothing does any more (the caller releases them then).
    pub(crate) fn settle_image_volumes(&self, id: &str) {
        self.image_volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The container being created that has mounted image `image_id`, if any.
    pub(crate) fn creating_with_image_volume(&self, image_id: &str) -> Option<String> {
        let name = mount_name(image_id);
        let pending = self.image_volumes.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .iter()
            .find(|(_, mounts)| {
                mounts
                    .iter()
                    .any(|m| m.file_name().is_some_and(|f| f.to_string_lossy() == name))
            })
            .map(|(id, _)| id.clone())
    }

    /// Unmounts (and removes) the pod's image volumes that no container record of the pod
    /// names any more.
    pub(crate) fn release_image_volumes(&self, sandbox_id: &str) -> Result<()> {
        let pending = self.image_volumes.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.pod_images_dir(sandbox_id);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("image volumes", &dir)(e)),
        };
        let mut used: HashSet<String> = self
            .containers
            .of_sandbox(sandbox_id)
            .iter()
            .flat_map(|r| r.image_volumes.iter().map(|(_, id)| mount_name(id)))
            .collect();
        // And what the containers being created have mounted.
        used.extend(
            pending
                .values()
                .flatten()
                .filter(|m| m.parent() == Some(dir.as_path()))
                .filter_map(|m| m.file_name())
                .map(|f| f.to_string_lossy().into_owned()),
        );
        for entry in entries {
            let entry = entry.map_err(Error::io("image volumes", &dir))?;
            if used.contains(entry.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            let path = entry.path();
            // Mounts may be stacked there (two creates racing before the lock existed).
            while crate::mounts::is_mount_point(&path).map_err(Error::io("image volume", &path))? {
                nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
                    .map_err(|e| Error::io("unmounting the image volume", &path)(e.into()))?;
            }
            std::fs::remove_dir(&path).map_err(Error::io("image volume", &path))?;
        }
        if used.is_empty() {
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }

    /// At start-up: every pod's image volumes that no container record names (what a
    /// CreateContainer cut short by a crash mounted).
    pub(crate) fn release_unused_image_volumes(&self) {
        for sandbox in self.sandboxes.list() {
            if let Err(err) = self.release_image_volumes(&sandbox.id) {
                tracing::warn!(sandbox = %sandbox.id, %err, "an image volume stays mounted");
            }
        }
    }
}
