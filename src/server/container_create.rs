//! CreateContainer: the rootfs (an overlay of the image's layers with a private writable
//! layer), the user, the OCI spec and the bundle. As in containerd, the OCI runtime hears
//! of the container only at StartContainer, when its monitor runs it (`runc run
//! --detach`: one runtime call instead of create then start). Every step has a rollback;
//! the work runs as a task, so a cancelled call leaves nothing half made.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use super::{CriService, In, refused};
use crate::container::name_key;
use crate::container::security::clamp_oom_score_adj;
use crate::container::user::{UserRequest, resolve};
use crate::error::{Error, Result};
use crate::oci::runtime::OciRuntime;
use crate::proto::{ContainerConfig, CreateContainerRequest, NamespaceMode as CriNamespaceMode};
use crate::rollback::Rollback;
use crate::spec::container::{ContainerSpecInput, PodContext, container_spec};
use crate::store::{ContainerRecord, ContainerState, ImageRecord, SandboxRecord};

#[derive(Clone)]
struct ContainerRequest {
    id: String,
    name_key: String,
    sandbox: SandboxRecord,
    config: ContainerConfig,
    image: ImageRecord,
    log_path: PathBuf,
    /// The pod's own user namespace, which the container joins.
    userns: Option<crate::sandbox::userns::Mappings>,
    /// The images of its image volumes (KEP-4639), by the index of their mount.
    image_volumes: Vec<(usize, ImageRecord)>,
    /// The pod's config as the kubelet sent it, decoded once.
    pod_config: crate::proto::PodSandboxConfig,
}

impl CriService {
    /// Creates a container in a ready sandbox; returns its id.
    pub async fn create_container(
        self: &Arc<Self>,
        request: CreateContainerRequest,
    ) -> Result<String> {
        let container = self.validate_container(request)?;
        if let Err(taken) = self
            .containers
            .reserve_name(&container.name_key, &container.id)
        {
            return Err(Error::AlreadyExists {
                kind: "container",
                name: container.name_key.clone(),
                id: taken.holder,
            });
        }
        let service = self.clone();
        tokio::spawn(async move {
            let key = container.name_key.clone();
            let mut undo = Rollback::default();
            let result = service.create_container_steps(&container, &mut undo).await;
            // Its record names its image volumes now, or nothing does.
            service.settle_image_volumes(&container.id);
            match result {
                Ok(id) => {
                    undo.commit();
                    tracing::info!(container = %id, sandbox = %container.sandbox.id, "container created");
                    Ok(id)
                }
                Err(err) => {
                    undo.run().await;
                    if !container.image_volumes.is_empty()
                        && let Err(left) = service.release_image_volumes(&container.sandbox.id)
                    {
                        tracing::warn!(sandbox = %container.sandbox.id, %left, "an image volume stays mounted");
                    }
                    service.containers.release_name(&key);
                    Err(err)
                }
            }
        })
        .await?
    }

    fn validate_container(&self, request: CreateContainerRequest) -> Result<ContainerRequest> {
        let sandbox = self.ready_sandbox(&request.pod_sandbox_id)?;
        let config = request
            .config
            .ok_or_else(|| Error::invalid("config", "missing"))?;
        let metadata = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid("config.metadata", "missing"))?;
        check_container_name(&metadata.name)?;
        check_user(&config)?;
        let runtime = self.sandboxes.runtime(&sandbox.runtime_handler);
        let features = runtime.map(|r| r.features()).unwrap_or_default();
        if let Some(runtime) = runtime {
            check_pid_namespace(&config, runtime, &sandbox.runtime_handler)?;
        }
        let mut image_volumes = Vec::new();
        for (n, mount) in config.mounts.iter().enumerate() {
            check_mount_destination(&mount.container_path)
                .map_err(|reason| Error::invalid("config.mounts.container_path", reason))?;
            check_recursive_read_only(mount, features, &sandbox.runtime_handler)?;
            if let Some(image) = self.image_volume(mount)? {
                image_volumes.push((n, image));
            }
        }
        if let Some(resources) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
            crate::spec::container::check_resources(resources)
                .map_err(|e| refused(e, In::Create))?;
        }
        let image = self.container_image(&config)?;
        let pod_config = sandbox.pod_config()?;
        let userns = container_user_namespace(&pod_config, &config)?;
        let log_path = log_path(&pod_config.log_directory, &config.log_path)?;
        Ok(ContainerRequest {
            id: crate::ids::random_id(),
            name_key: name_key(&sandbox.id, &metadata.name, metadata.attempt),
            sandbox,
            config,
            image,
            log_path,
            userns,
            image_volumes,
            pod_config,
        })
    }

    /// The image the container runs, which must be here (the kubelet pulls it first).
    fn container_image(&self, config: &ContainerConfig) -> Result<ImageRecord> {
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::invalid("config.image.image", "no image named"));
        }
        self.images.lookup(&image_name)?.ok_or(Error::NotFound {
            kind: "image",
            id: image_name,
        })
    }

    /// The image of an image volume (a mount naming an image, KEP-4639), which must be
    /// here (the kubelet pulls it first); `None` for a mount of a host path.
    fn image_volume(&self, mount: &crate::proto::Mount) -> Result<Option<ImageRecord>> {
        let Some(name) = mount
            .image
            .as_ref()
            .map(|i| i.image.as_str())
            .filter(|i| !i.is_empty())
        else {
            return Ok(None);
        };
        if !mount.host_path.is_empty() {
            return Err(Error::invalid(
                "config.mounts.host_path",
                format!(
                    "must be empty for the image volume at {:?}",
                    mount.container_path
                ),
            ));
        }
        let sub_path = Path::new(&mount.image_sub_path);
        if !sub_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(Error::invalid(
                "config.mounts.image_sub_path",
                format!(
                    "{:?} must be a relative path in the image, without '..'",
                    mount.image_sub_path
                ),
            ));
        }
        let image = self.images.lookup(name)?.ok_or_else(|| Error::NotFound {
            kind: "image of an image volume",
            id: name.to_string(),
        })?;
        Ok(Some(image))
    }

    async fn create_container_steps(
        &self,
        c: &ContainerRequest,
        undo: &mut Rollback,
    ) -> Result<String> {
        let id = c.id.as_str();
        // The runtime runs it at StartContainer; it must be there now.
        self.sandboxes
            .runtime(&c.sandbox.runtime_handler)
            .ok_or_else(|| Error::WrongState {
                kind: "pod sandbox",
                id: c.sandbox.id.clone(),
                reason: format!(
                    "its runtime handler {:?} is not configured",
                    c.sandbox.runtime_handler
                ),
            })?;
        let rootfs = self.mount_rootfs(c, undo)?;
        let security = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let user = resolve(
            &rootfs,
            &UserRequest {
                run_as_user: security.run_as_user.map(|v| v.value),
                run_as_username: security.run_as_username.clone(),
                run_as_group: security.run_as_group.map(|v| v.value),
                supplemental_groups: security.supplemental_groups.clone(),
                image_user: c.image.user.clone(),
                strict_groups: security.supplemental_groups_policy
                    == crate::proto::SupplementalGroupsPolicy::Strict as i32,
            },
        )
        .map_err(|reason| Error::invalid("config.linux.security_context", reason))?;
        check_user_is_mapped(&user, c.userns.as_ref())?;
        let run = self.images.run_config(&c.image)?;
        prepare_mount_sources(&c.config.mounts)?;
        // The record keeps the request as it came; the spec gets the mounted images.
        let request = c;
        let with_images = self.mount_image_volumes(c)?;
        let c = with_images.as_ref().unwrap_or(c);
        let spec = match self.idmap_volumes(c)? {
            Some(mapped) => self.spec_of(&mapped, &rootfs, &user, &run)?,
            None => self.spec_of(c, &rootfs, &user, &run)?,
        };

        let state_dir = self.containers.state_dir(id);
        std::fs::create_dir_all(&state_dir)
            .map_err(Error::io("container state directory", &state_dir))?;
        let removed = state_dir.clone();
        undo.push("container state directory", move || async move {
            std::fs::remove_dir_all(&removed).map_err(|e| e.to_string())
        });
        let bundle_config = state_dir.join("config.json");
        let json = self
            .sandboxes
            .runtime(&c.sandbox.runtime_handler)
            .map_or_else(|| serde_json::to_vec(&spec), |r| r.bundle_config(&spec))
            .map_err(|source| Error::Json {
                what: format!("encoding the spec of container {}", c.id),
                source,
            })?;
        std::fs::write(&bundle_config, json).map_err(Error::io("bundle", &bundle_config))?;

        let mut record = container_record(request, &run, &user);
        // The layers of its image volumes stay on disk with it, as its own image's do.
        record.layers = c.image.layers.clone();
        self.containers.save(&record)?;
        Ok(record.id)
    }

    /// The rootfs: the image's layers under a private writable layer, mounted at
    /// `<layer dir>/rootfs`.
    fn mount_rootfs(&self, c: &ContainerRequest, undo: &mut Rollback) -> Result<PathBuf> {
        let layer_dir = self.containers.layer_dir(&c.id);
        std::fs::create_dir_all(&layer_dir)
            .map_err(Error::io("container directory", &layer_dir))?;
        // Its writable layer is nobody else's: root's alone, or searchable by the group of
        // the pod's root in a pod with its own user namespace (whose root must reach the
        // rootfs by path).
        let mode = match &c.userns {
            Some(mappings) => {
                std::os::unix::fs::chown(&layer_dir, None, Some(mappings.host_root().1))
                    .map_err(Error::io("container directory", &layer_dir))?;
                0o710
            }
            None => 0o700,
        };
        std::fs::set_permissions(
            &layer_dir,
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .map_err(Error::io("container directory", &layer_dir))?;
        let removed = layer_dir.clone();
        undo.push("container directory", move || async move {
            // Never into an id-mapped layer or volume that is still mounted there.
            crate::sandbox::userns::unmount_lowers(&removed)
                .and_then(|()| crate::sandbox::userns::unmount_volumes(&removed))
                .and_then(|()| std::fs::remove_dir_all(&removed))
                .map_err(|e| e.to_string())
        });
        let rootfs = layer_dir.join("rootfs");
        std::fs::create_dir(&rootfs).map_err(Error::io("rootfs", &rootfs))?;
        let layers = self.images.layer_paths(&c.image)?;
        match &c.userns {
            Some(mappings) => crate::sandbox::userns::mount_overlay_idmapped(
                &layers,
                &layer_dir,
                &rootfs,
                &self.sandboxes.userns_path(&c.sandbox.id),
                mappings.host_root(),
            ),
            None => crate::mounts::mount_overlay(&layers, &layer_dir, &rootfs),
        }
        .map_err(Error::io("mounting the rootfs on", &rootfs))?;
        let mounted = rootfs.clone();
        undo.push("rootfs mount", move || async move {
            crate::mounts::unmount(&mounted).map_err(|e| e.to_string())
        });
        Ok(rootfs)
    }

    /// Points the container's image volumes at the pod's mounts of their images (made now
    /// for an image no container of the pod has yet: an overlay of its layers, or a
    /// one-layer image's layer bound, read-only), at their sub path: `None` when it has
    /// none. A create that fails releases what it mounted.
    fn mount_image_volumes(&self, c: &ContainerRequest) -> Result<Option<ContainerRequest>> {
        if c.image_volumes.is_empty() {
            return Ok(None);
        }
        let mut mapped = c.clone();
        for (n, image) in &c.image_volumes {
            let target = self.pod_image_volume(&c.sandbox.id, &c.id, image)?;
            let mount = &mut mapped.config.mounts[*n];
            let source = target.join(&mount.image_sub_path);
            // A sub path must be a directory in the image, not a way out of it.
            let inside = std::fs::canonicalize(&source)
                .ok()
                .filter(|real| real.starts_with(&target) && real.is_dir());
            let Some(source) = inside else {
                return Err(Error::invalid(
                    "config.mounts.image_sub_path",
                    format!(
                        "{:?} is not a directory in image {}",
                        mount.image_sub_path, image.id
                    ),
                ));
            };
            mount.host_path = source.display().to_string();
            mount.readonly = true;
            mapped.image.layers.extend(image.layers.iter().cloned());
        }
        Ok(Some(mapped))
    }

    /// In a pod with its own user namespace, the container's volumes are id-mapped through
    /// it as its layers are: each private volume's source gets an id-mapped copy under
    /// `<layer dir>/volumes/<n>`, which the spec binds instead (the record keeps the
    /// host paths). Volumes that propagate mounts stay as they are: a detached copy would
    /// not propagate. `None` when nothing is mapped.
    /// What is mapped is undone with the container's directory.
    fn idmap_volumes(&self, c: &ContainerRequest) -> Result<Option<ContainerRequest>> {
        if c.userns.is_none() || c.config.mounts.is_empty() {
            return Ok(None);
        }
        let pin = self.sandboxes.userns_path(&c.sandbox.id);
        let volumes = self.containers.layer_dir(&c.id).join("volumes");
        let mut mapped = c.clone();
        for (n, mount) in mapped.config.mounts.iter_mut().enumerate() {
            let image_volume = mount.image.as_ref().is_some_and(|i| !i.image.is_empty());
            if image_volume
                || mount.propagation != crate::proto::MountPropagation::PropagationPrivate as i32
            {
                continue;
            }
            let target = volumes.join(n.to_string());
            crate::sandbox::userns::idmapped_volume(Path::new(&mount.host_path), &target, &pin)
                .map_err(|e| {
                    Error::invalid(
                        "config.mounts.host_path",
                        format!(
                            "{:?} cannot be id-mapped into the pod's user namespace: {e}",
                            mount.host_path
                        ),
                    )
                })?;
            mount.host_path = target.display().to_string();
        }
        Ok(Some(mapped))
    }

    /// The container's OCI spec, its resources fitted to the host's cgroups.
    fn spec_of(
        &self,
        c: &ContainerRequest,
        rootfs: &Path,
        user: &crate::spec::container::ResolvedUser,
        run: &crate::image::manifest::RunConfig,
    ) -> Result<oci_spec::runtime::Spec> {
        let linux = c.config.linux.clone().unwrap_or_default();
        let security = linux.security_context.clone().unwrap_or_default();
        let sandbox_config = &c.pod_config;
        let pod_namespaces = sandbox_config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let pod = PodContext {
            pause_pid: c.sandbox.pid,
            netns: c.sandbox.netns.as_ref().map(PathBuf::from),
            host_ipc: pod_namespaces.ipc == CriNamespaceMode::Node as i32,
            dir: self.sandboxes.dir(&c.sandbox.id),
            userns: c
                .userns
                .map(|mappings| (self.sandboxes.userns_path(&c.sandbox.id), mappings)),
        };
        let cgroups_path = c.sandbox.container_cgroup(&c.id);
        let wanted_oom = linux
            .resources
            .as_ref()
            .map_or(0, |r| r.oom_score_adj as i32);
        let devices = if security.privileged {
            crate::container::devices::host_devices()
        } else {
            crate::container::devices::resolve(&c.config.devices)
                .map_err(|reason| Error::invalid("config.devices", reason))?
        };
        let seccomp = crate::container::security::seccomp(&security)
            .map_err(|reason| Error::invalid("config.linux.security_context.seccomp", reason))?;
        let apparmor = crate::container::security::apparmor(&security)
            .map_err(|reason| Error::invalid("config.linux.security_context.apparmor", reason))?;
        let mut spec = container_spec(&ContainerSpecInput {
            config: &c.config,
            image: run,
            rootfs,
            user,
            pod: &pod,
            target_pid: self.target_pid(&security)?,
            cgroups_path: &cgroups_path,
            host_capabilities: &own_capabilities(),
            oom_score_adj: clamp_oom_score_adj(wanted_oom),
            devices: &devices,
            seccomp: &seccomp,
            apparmor_profile: apparmor,
            selinux_label: crate::container::security::selinux(&security),
        })?;
        if let Some(mut linux) = spec.linux().clone() {
            let mut resources = linux.resources().clone().unwrap_or_default();
            self.fit_resources(&mut resources, &c.id, &cgroups_path, In::Create)?;
            linux.set_resources(Some(resources));
            spec.set_linux(Some(linux));
        }
        Ok(spec)
    }

    /// The pid whose PID namespace the container joins, when it asks for a target
    /// container's (`NamespaceMode::TARGET`); that container must be running.
    fn target_pid(
        &self,
        security: &crate::proto::LinuxContainerSecurityContext,
    ) -> Result<Option<i32>> {
        let Some(options) = security
            .namespace_options
            .as_ref()
            .filter(|o| o.pid == CriNamespaceMode::Target as i32)
        else {
            return Ok(None);
        };
        let target = self
            .containers
            .find(&options.target_id)?
            .ok_or_else(|| Error::NotFound {
                kind: "target container",
                id: options.target_id.clone(),
            })?;
        if target.state != ContainerState::Running {
            return Err(Error::WrongState {
                kind: "target container",
                id: target.id,
                reason: "it is not running".to_string(),
            });
        }
        Ok(Some(target.pid))
    }
}

/// A container's name: a Kubernetes name, which never holds `/` or spaces.
fn check_container_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 253
        || name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            "config.metadata.name",
            format!("{name:?} is not a container name"),
        ));
    }
    Ok(())
}

/// Where the container's log goes: `log_path` under the pod's `log_directory` (a
/// relative path without `..`), or nowhere when either is empty.
fn log_path(log_directory: &str, log_path: &str) -> Result<PathBuf> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(PathBuf::from("/dev/null"));
    }
    let relative = Path::new(log_path);
    let safe = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !safe {
        return Err(Error::invalid(
            "config.log_path",
            "must be a relative path without '..'",
        ));
    }
    Ok(Path::new(log_directory).join(relative))
}

/// The files under /proc a mount may cover, as runc allows them (lxcfs serves these).
const PROC_FILES: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Where a mount may go in the container: a path without `..` (a relative one is taken
/// from the container's `/`, as runc takes it), and not over the container's /proc or
/// /sys (the runtime refuses those, and covering them would hide what it mounts there),
/// but for the /proc files runc lets lxcfs cover.
fn check_mount_destination(path: &str) -> std::result::Result<(), String> {
    let destination = Path::new(path);
    if path.is_empty() || destination.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{path:?} is not a path without '..'"));
    }
    let normal: PathBuf = Path::new("/").join(destination).components().collect();
    let over_proc =
        normal.starts_with("/proc") && !PROC_FILES.iter().any(|f| normal == Path::new(f));
    if over_proc || normal == Path::new("/sys") {
        return Err(format!(
            "{path:?} would cover the container's /proc or /sys"
        ));
    }
    Ok(())
}

/// A recursive read-only mount (KEP-3857) must be read-only and private, and needs a
/// handler that can make it so: one that cannot is refused rather than leaving what is
/// mounted below writable.
fn check_recursive_read_only(
    mount: &crate::proto::Mount,
    features: crate::oci::runtime::Features,
    handler: &str,
) -> Result<()> {
    if !mount.recursive_read_only {
        return Ok(());
    }
    let field = "config.mounts.recursive_read_only";
    let path = &mount.container_path;
    if !mount.readonly {
        return Err(Error::invalid(
            field,
            format!("the mount at {path:?} is not read-only"),
        ));
    }
    if mount.propagation != crate::proto::MountPropagation::PropagationPrivate as i32 {
        return Err(Error::invalid(
            field,
            format!(
                "the mount at {path:?} is not private (a recursive read-only mount cannot propagate)"
            ),
        ));
    }
    if !features.recursive_read_only {
        return Err(Error::invalid(
            field,
            format!(
                "the runtime handler {handler:?} cannot make the mount at {path:?} recursively read-only"
            ),
        ));
    }
    Ok(())
}

/// The pod's own user namespace, which its containers join. A container that names a
/// user namespace (the kubelet names the pod's) must name the pod's.
fn container_user_namespace(
    pod: &crate::proto::PodSandboxConfig,
    config: &ContainerConfig,
) -> Result<Option<crate::sandbox::userns::Mappings>> {
    let options = |linux: Option<&crate::proto::NamespaceOption>| {
        linux.and_then(|o| o.userns_options.clone())
    };
    let of_pod = options(
        pod.linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref()),
    );
    let of_container = options(
        config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref()),
    );
    // The pod's were checked when it was made.
    let pod_mappings = crate::sandbox::userns::requested(of_pod.as_ref()).unwrap_or(None);
    if let Some(asked) = &of_container {
        let field = "config.linux.security_context.namespace_options.userns_options";
        let mappings = crate::sandbox::userns::requested(Some(asked))
            .map_err(|(_, reason)| Error::invalid(field, reason))?;
        if mappings != pod_mappings {
            return Err(Error::invalid(
                field,
                "a container has its pod's user namespace, not one of its own",
            ));
        }
    }
    Ok(pod_mappings)
}

/// In a pod with its own user namespace, the container's user and groups must be ids
/// the namespace maps (the runtime could not switch to them otherwise).
fn check_user_is_mapped(
    user: &crate::spec::container::ResolvedUser,
    userns: Option<&crate::sandbox::userns::Mappings>,
) -> Result<()> {
    let Some(mappings) = userns else {
        return Ok(());
    };
    let field = "config.linux.security_context";
    if mappings.uids.to_host(user.uid).is_none() {
        return Err(Error::invalid(
            field,
            format!("uid {} is outside the pod's user namespace", user.uid),
        ));
    }
    for gid in std::iter::once(&user.gid).chain(&user.additional_gids) {
        if mappings.gids.to_host(*gid).is_none() {
            return Err(Error::invalid(
                field,
                format!("gid {gid} is outside the pod's user namespace"),
            ));
        }
    }
    Ok(())
}

/// A container that joins another's PID namespace (POD, TARGET) needs a handler that
/// can join one: youki 0.7 cannot (its init looks itself up in the host's /proc by the
/// pid it has in the namespace, and fails when the host has no such process), so it is
/// refused up front rather than failing at start now and then.
fn check_pid_namespace(
    config: &ContainerConfig,
    runtime: &crate::oci::runc::Runtime,
    handler: &str,
) -> Result<()> {
    if runtime.kind().joins_pid_namespaces() {
        return Ok(());
    }
    let pid = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map_or(CriNamespaceMode::Pod as i32, |o| o.pid);
    if pid == CriNamespaceMode::Pod as i32 || pid == CriNamespaceMode::Target as i32 {
        return Err(Error::invalid(
            "config.linux.security_context.namespace_options.pid",
            format!(
                "the runtime handler {handler:?} ({:?}) cannot join a PID namespace; ask for CONTAINER or NODE",
                runtime.kind()
            ),
        ));
    }
    Ok(())
}

/// A group without a user is refused (as containerd and CRI-O refuse it): the image's
/// user would run with a group it was not given. The kubelet always names the user.
fn check_user(config: &crate::proto::ContainerConfig) -> Result<()> {
    let Some(security) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    else {
        return Ok(());
    };
    if security.run_as_group.is_some()
        && security.run_as_user.is_none()
        && security.run_as_username.is_empty()
    {
        return Err(Error::invalid(
            "config.linux.security_context.run_as_group",
            "is set without run_as_user or run_as_username",
        ));
    }
    Ok(())
}

/// The kubelet expects a missing host path of a bind mount to be created.
fn prepare_mount_sources(mounts: &[crate::proto::Mount]) -> Result<()> {
    let host_paths = mounts
        .iter()
        .filter(|m| m.image.as_ref().is_none_or(|i| i.image.is_empty()));
    for mount in host_paths {
        let host = Path::new(&mount.host_path);
        if !host.is_absolute() || host.components().any(|c| c == Component::ParentDir) {
            return Err(Error::invalid(
                "config.mounts.host_path",
                format!(
                    "{:?} must be an absolute path without '..'",
                    mount.host_path
                ),
            ));
        }
        if std::fs::symlink_metadata(host).is_err() {
            std::fs::create_dir_all(host).map_err(Error::io("creating the mount source", host))?;
        }
    }
    Ok(())
}

/// The record of a container just created.
fn container_record(
    c: &ContainerRequest,
    run: &crate::image::manifest::RunConfig,
    user: &crate::spec::container::ResolvedUser,
) -> ContainerRecord {
    let metadata = c.config.metadata.clone().unwrap_or_default();
    ContainerRecord {
        id: c.id.clone(),
        sandbox_id: c.sandbox.id.clone(),
        name: metadata.name.clone(),
        attempt: metadata.attempt,
        image: c
            .config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        image_ref: c.image.id.clone(),
        layers: c.image.layers.clone(),
        image_volumes: c
            .image_volumes
            .iter()
            .map(|(n, image)| (*n, image.id.clone()))
            .collect(),
        created_at_ns: crate::clock::now_ns(),
        labels: c.config.labels.clone().into_iter().collect(),
        annotations: c.config.annotations.clone().into_iter().collect(),
        state: ContainerState::Created,
        config: crate::store::cri::encode_config(&c.config),
        log_path: c.log_path.display().to_string(),
        runtime_handler: c.sandbox.runtime_handler.clone(),
        stop_signal: run.stop_signal.clone(),
        uid: user.uid,
        gid: user.gid,
        supplemental_groups: user.additional_gids.clone(),
        ..ContainerRecord::default()
    }
}

/// The capabilities berth itself may grant: its bounding set.
fn own_capabilities() -> HashSet<oci_spec::runtime::Capability> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    crate::spec::container::ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .filter_map(|(_, name)| oci_spec::runtime::Capability::from_str(name).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        IdMapping, LinuxContainerConfig, LinuxContainerSecurityContext, NamespaceOption,
        PodSandboxConfig, UserNamespace,
    };
    use crate::server::tests::field_of;

    #[test]
    fn a_container_name_is_a_kubernetes_name() {
        assert!(check_container_name("app").is_ok());
        for bad in ["", "a/b", "a b", "tab\there", &"x".repeat(254)] {
            let err = check_container_name(bad).unwrap_err();
            assert_eq!(field_of(err), "config.metadata.name", "{bad:?}");
        }
    }

    #[test]
    fn the_log_goes_under_the_pods_directory_or_nowhere() {
        assert_eq!(
            log_path("/var/log/pods/ns_p_uid", "app/0.log").unwrap(),
            Path::new("/var/log/pods/ns_p_uid/app/0.log")
        );
        assert_eq!(log_path("", "app/0.log").unwrap(), Path::new("/dev/null"));
        assert_eq!(
            log_path("/var/log/pods/x", "").unwrap(),
            Path::new("/dev/null")
        );
        for escape in ["../../etc/passwd", "/etc/passwd", "app/../../x", "./app"] {
            let err = log_path("/var/log/pods/x", escape).unwrap_err();
            assert_eq!(field_of(err), "config.log_path", "{escape:?}");
        }
    }

    #[test]
    fn a_recursive_read_only_mount_is_read_only_private_and_supported() {
        let features = |rro| crate::oci::runtime::Features {
            recursive_read_only: rro,
            ..Default::default()
        };
        let mount = |readonly, propagation: crate::proto::MountPropagation| crate::proto::Mount {
            container_path: "/data".into(),
            readonly,
            recursive_read_only: true,
            propagation: propagation as i32,
            ..Default::default()
        };
        use crate::proto::MountPropagation::{PropagationHostToContainer, PropagationPrivate};
        let check =
            |m: &crate::proto::Mount, rro| check_recursive_read_only(m, features(rro), "runc");
        assert!(check(&mount(true, PropagationPrivate), true).is_ok());
        let refused = [
            (mount(false, PropagationPrivate), true, "not read-only"),
            (mount(true, PropagationHostToContainer), true, "not private"),
            (mount(true, PropagationPrivate), false, "cannot make"),
        ];
        for (m, rro, why) in refused {
            let err = check(&m, rro).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            assert_eq!(field_of(err), "config.mounts.recursive_read_only");
        }
        let plain = crate::proto::Mount {
            recursive_read_only: false,
            ..mount(false, PropagationHostToContainer)
        };
        assert!(
            check(&plain, false).is_ok(),
            "only rro mounts are held to it"
        );
    }

    #[test]
    fn a_group_without_a_user_is_refused() {
        let with = |user: Option<i64>, name: &str, group: Option<i64>| ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    run_as_user: user.map(|value| crate::proto::Int64Value { value }),
                    run_as_username: name.into(),
                    run_as_group: group.map(|value| crate::proto::Int64Value { value }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_user(&ContainerConfig::default()).is_ok());
        assert!(check_user(&with(Some(1000), "", Some(1000))).is_ok());
        assert!(check_user(&with(None, "app", Some(1000))).is_ok());
        assert!(check_user(&with(Some(0), "", None)).is_ok());
        let err = check_user(&with(None, "", Some(1000))).unwrap_err();
        assert_eq!(field_of(err), "config.linux.security_context.run_as_group");
    }

    #[test]
    fn a_container_joins_its_pods_user_namespace_and_no_other() {
        let userns = |length| NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: CriNamespaceMode::Pod as i32,
                uids: vec![IdMapping {
                    host_id: 100_000,
                    container_id: 0,
                    length,
                }],
                gids: vec![IdMapping {
                    host_id: 100_000,
                    container_id: 0,
                    length,
                }],
            }),
            ..Default::default()
        };
        let pod = PodSandboxConfig {
            linux: Some(crate::proto::LinuxPodSandboxConfig {
                security_context: Some(crate::proto::LinuxSandboxSecurityContext {
                    namespace_options: Some(userns(65536)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = |options: Option<NamespaceOption>| ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: options,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let silent = container_user_namespace(&pod, &container(None)).unwrap();
        assert!(
            silent.is_some(),
            "a container that names none gets the pod's"
        );
        let same = container_user_namespace(&pod, &container(Some(userns(65536)))).unwrap();
        assert_eq!(same, silent);
        let other = container_user_namespace(&pod, &container(Some(userns(1000)))).unwrap_err();
        assert_eq!(
            field_of(other),
            "config.linux.security_context.namespace_options.userns_options"
        );
        let none = container_user_namespace(&PodSandboxConfig::default(), &container(None));
        assert_eq!(none.unwrap(), None, "a pod without one gives none");
    }

    #[test]
    fn mounts_cannot_cover_proc_or_sys() {
        for ok in [
            "/data",
            "/etc/hosts",
            "/sys/fs/cgroup/x",
            "/proc/cpuinfo",
            "/procfs",
            "/data/./x",
            "data",
        ] {
            assert!(check_mount_destination(ok).is_ok(), "{ok}");
        }
        for refused in [
            "/proc",
            "/proc/",
            "/proc/self",
            "/proc/sys/kernel",
            "/sys",
            "/sys/",
            "//proc",
            "proc",
            "",
            "/data/../proc",
        ] {
            assert!(check_mount_destination(refused).is_err(), "{refused}");
        }
    }
}
