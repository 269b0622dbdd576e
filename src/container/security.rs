//! The host side of a container's confinement: reading a `Localhost` seccomp profile, and
//! the AppArmor and SELinux labels, which apply only on hosts that run those LSMs.
//!
//! - Seccomp: see `spec::seccomp` for the choice and the profiles.
//! - AppArmor (when the host has it): `Localhost` names a loaded profile (an error when it
//!   is not loaded); `RuntimeDefault` is the `berth-default` profile when the node
//!   operator loaded one, else none; `Unconfined` is none. On a host without AppArmor only
//!   `Localhost` is an error: a profile that cannot be enforced must not be silently
//!   dropped.
//! - SELinux (when the host has it): a full `user:role:type:level` from the options; on a
//!   host without SELinux the options are ignored, as containerd does.

use std::path::Path;

use crate::proto::{LinuxContainerSecurityContext, SecurityProfile, security_profile::ProfileType};
use crate::spec::container::SeccompSource;
use crate::spec::seccomp::{Choice, choose};

/// The AppArmor profile berth's `RuntimeDefault` means, when loaded on the host.
pub const APPARMOR_DEFAULT: &str = "berth-default";

/// The seccomp profile for `security`, its `Localhost` file read. `Err` says why.
// The deprecated path is still what older kubelets send.
#[allow(deprecated)]
pub fn seccomp(security: &LinuxContainerSecurityContext) -> Result<SeccompSource, String> {
    Ok(
        match choose(security.seccomp.as_ref(), &security.seccomp_profile_path)? {
            Choice::Unconfined => SeccompSource::Unconfined,
            Choice::RuntimeDefault => SeccompSource::RuntimeDefault,
            Choice::Localhost(path) => SeccompSource::Profile(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("localhost profile {path:?}: {e}"))?,
            ),
        },
    )
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

fn apparmor_loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").is_ok_and(|list| {
        list.lines().any(|l| {
            l.rsplit_once(" (")
                .is_some_and(|(profile, _)| profile == name)
        })
    })
}

/// The AppArmor profile for `security`. `Err` says why it cannot be applied.
// The deprecated name is still what older kubelets send.
#[allow(deprecated)]
pub fn apparmor(security: &LinuxContainerSecurityContext) -> Result<Option<String>, String> {
    if security.privileged {
        return Ok(None);
    }
    let wanted = match (&security.apparmor, security.apparmor_profile.as_str()) {
        (Some(profile), _) => apparmor_choice(profile)?,
        (None, "" | "unconfined") => None,
        (None, "runtime/default") => Some(None),
        (None, other) => match other.strip_prefix("localhost/") {
            Some(name) if !name.is_empty() => Some(Some(name.to_string())),
            _ => return Err(format!("unknown AppArmor profile {other:?}")),
        },
    };
    let enabled = apparmor_enabled();
    match wanted {
        None => Ok(None),
        Some(None) if enabled && apparmor_loaded(APPARMOR_DEFAULT) => {
            Ok(Some(APPARMOR_DEFAULT.to_string()))
        }
        Some(None) => Ok(None),
        Some(Some(name)) if !enabled => Err(format!(
            "AppArmor profile {name:?} asked for, but this host does not run AppArmor"
        )),
        Some(Some(name)) if !apparmor_loaded(&name) => {
            Err(format!("AppArmor profile {name:?} is not loaded"))
        }
        Some(Some(name)) => Ok(Some(name)),
    }
}

/// `None`: unconfined; `Some(None)`: the runtime default; `Some(Some(name))`: localhost.
fn apparmor_choice(profile: &SecurityProfile) -> Result<Option<Option<String>>, String> {
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::Unconfined) => Ok(None),
        Ok(ProfileType::RuntimeDefault) => Ok(Some(None)),
        Ok(ProfileType::Localhost) => {
            let name = profile
                .localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&profile.localhost_ref);
            if name.is_empty() {
                return Err("a Localhost AppArmor profile needs localhost_ref".to_string());
            }
            Ok(Some(Some(name.to_string())))
        }
        Err(_) => Err(format!("unknown profile type {}", profile.profile_type)),
    }
}

/// The SELinux process label for `security`, on a host that runs SELinux.
pub fn selinux(security: &LinuxContainerSecurityContext) -> Option<String> {
    if security.privileged || !Path::new("/sys/fs/selinux/enforce").exists() {
        return None;
    }
    let o = security.selinux_options.as_ref()?;
    let parts = [&o.user, &o.role, &o.r#type, &o.level];
    parts
        .iter()
        .all(|p| !p.is_empty())
        .then(|| format!("{}:{}:{}:{}", o.user, o.role, o.r#type, o.level))
}

/// The OOM score berth may give: never below its own (lowering it needs
/// CAP_SYS_RESOURCE, and runc fails outright when it is refused).
pub fn clamp_oom_score_adj(wanted: i32) -> i32 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    wanted.max(own).min(1000)
}
