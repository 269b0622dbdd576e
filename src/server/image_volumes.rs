//! A pod's image volumes (KEP-4639): each image is mounted once per pod, read-only, at
//! `<sandbox dir>/images/<image id>`, for every container of the pod that names it (each
//! binds it at its own sub path). It is unmounted when the last container naming it is
//! removed, and whatever is left goes with the pod; after a crash, the start-up sweep
//! unmounts those no container record names (a CreateContainer cut short).
//!
//! The image's layers stay on disk while it is mounted: every container naming it keeps
//! them in its record, as its own image's.

use std::collections::HashSet;
use std::path::PathBuf;

use super::CriService;
use crate::error::{Error, Result};
use crate::sandbox::files;
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

    /// The pod's mount of `image`: mounted now unless a container of the pod has it
    /// mounted already.
    pub(crate) fn pod_image_volume(
        &self,
        sandbox_id: &str,
        image: &ImageRecord,
    ) -> Result<PathBuf> {
        let _held = self.image_volumes.lock().unwrap_or_else(|p| p.into_inner());
        let target = self.pod_images_dir(sandbox_id).join(mount_name(&image.id));
        if files::is_mount_point(&target).map_err(Error::io("image volume", &target))? {
            return Ok(target);
        }
        std::fs::create_dir_all(&target).map_err(Error::io("image volume", &target))?;
        let layers = self.images.layer_paths(image)?;
        files::mount_read_only_layers(&layers, &target)
            .map_err(Error::io("mounting the image volume on", &target))?;
        Ok(target)
    }

    /// Unmounts (and removes) the pod's image volumes that no container record of the pod
    /// names any more.
    pub(crate) fn release_image_volumes(&self, sandbox_id: &str) -> Result<()> {
        let _held = self.image_volumes.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.pod_images_dir(sandbox_id);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("image volumes", &dir)(e)),
        };
        let used: HashSet<String> = self
            .containers
            .of_sandbox(sandbox_id)
            .iter()
            .flat_map(|r| r.image_volumes.iter().map(|(_, id)| mount_name(id)))
            .collect();
        for entry in entries {
            let entry = entry.map_err(Error::io("image volumes", &dir))?;
            if used.contains(entry.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            let path = entry.path();
            // Mounts may be stacked there (two creates racing before the lock existed).
            while files::is_mount_point(&path).map_err(Error::io("image volume", &path))? {
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
