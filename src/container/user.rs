//! Who a container runs as: `run_as_user` / `run_as_username` / `run_as_group` from the
//! CRI, else the image's `USER`, resolved against the image's own /etc/passwd and
//! /etc/group, plus the supplemental groups (and, unless the policy is `Strict`, the
//! user's memberships in the image's /etc/group).
//!
//! The image's files are read inside its rootfs only: a path component that is a symlink
//! is not followed (an image's /etc/passwd pointing at the host's is treated as missing).

use std::path::{Path, PathBuf};

use crate::spec::container::ResolvedUser;

/// What the request and the image say about the user.
#[derive(Debug, Clone, Default)]
pub struct UserRequest {
    pub run_as_user: Option<i64>,
    pub run_as_username: String,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    /// The image config's `User`: `name`, `uid`, `name:group` or `uid:gid`.
    pub image_user: String,
    /// `SupplementalGroupsPolicy::Strict`: the image's /etc/group memberships are not
    /// added.
    pub strict_groups: bool,
}

/// Resolves the user; the error says which name was not found.
pub fn resolve(rootfs: &Path, request: &UserRequest) -> Result<ResolvedUser, String> {
    let passwd = read_confined(rootfs, "etc/passwd").unwrap_or_default();
    let group = read_confined(rootfs, "etc/group").unwrap_or_default();
    let (user_part, group_part) = match (&request.run_as_user, request.run_as_username.as_str()) {
        (Some(uid), _) => (uid.to_string(), None),
        (None, name) if !name.is_empty() => (name.to_string(), None),
        _ => {
            let mut parts = request.image_user.splitn(2, ':');
            let user = parts.next().unwrap_or("").to_string();
            (user, parts.next().map(str::to_string))
        }
    };
    let (uid, name, passwd_gid) = match user_part.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd_entries(&passwd).find(|e| e.1 == uid);
            (uid, entry.as_ref().map(|e| e.0.clone()), entry.map(|e| e.2))
        }
        Err(_) if user_part.is_empty() => (0, Some("root".to_string()), Some(0)),
        Err(_) => {
            let entry = passwd_entries(&passwd)
                .find(|e| e.0 == user_part)
                .ok_or_else(|| format!("user {user_part:?} is not in the image's /etc/passwd"))?;
            (entry.1, Some(entry.0), Some(entry.2))
        }
    };
    let gid = match (request.run_as_group, group_part) {
        (Some(gid), _) => {
            u32::try_from(gid).map_err(|_| format!("group id {gid} is out of range"))?
        }
        (None, Some(g)) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(&group)
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
        (None, None) => passwd_gid.unwrap_or(0),
    };
    // The primary group first, as the process's group list holds it (containerd's order).
    let mut additional: Vec<u32> = vec![gid];
    if let Some(name) = name.as_ref().filter(|_| !request.strict_groups) {
        for (_, id, members) in group_entries(&group) {
            if members.iter().any(|m| m == name) && !additional.contains(&id) {
                additional.push(id);
            }
        }
    }
    for g in &request.supplemental_groups {
        let id =
            u32::try_from(*g).map_err(|_| format!("supplemental group {g} is out of range"))?;
        if !additional.contains(&id) {
            additional.push(id);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// (name, uid, gid) of each passwd line.
fn passwd_entries(text: &str) -> impl Iterator<Item = (String, u32, u32)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        Some((
            fields.first()?.to_string(),
            fields.get(2)?.parse().ok()?,
            fields.get(3)?.parse().ok()?,
        ))
    })
}

/// (name, gid, members) of each group line.
fn group_entries(text: &str) -> impl Iterator<Item = (String, u32, Vec<String>)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let members = fields
            .get(3)
            .map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Some((
            fields.first()?.to_string(),
            fields.get(2)?.parse().ok()?,
            members,
        ))
    })
}

/// Reads `rel` under `root` without following any symlink on the way.
fn read_confined(root: &Path, rel: &str) -> Option<String> {
    let mut path = PathBuf::from(root);
    for component in Path::new(rel).components() {
        path.push(component);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if meta.file_type().is_symlink() {
            return None;
        }
    }
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 4 << 20 {
        return None;
    }
    std::fs::read_to_string(&path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nvideo:x:44:app\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn users_by_name_id_and_image_default() {
        let root = rootfs();
        let resolve = |r: UserRequest| resolve(root.path(), &r);
        let app = resolve(UserRequest {
            image_user: "app".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (app.uid, app.gid, app.additional_gids.clone()),
            (1000, 1000, vec![1000, 50, 44])
        );
        let by_id = resolve(UserRequest {
            run_as_user: Some(1000),
            supplemental_groups: vec![7],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (by_id.uid, by_id.gid, by_id.additional_gids),
            (1000, 1000, vec![1000, 50, 44, 7])
        );
        let strict = resolve(UserRequest {
            run_as_user: Some(1000),
            supplemental_groups: vec![7],
            strict_groups: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            strict.additional_gids,
            vec![1000, 7],
            "no /etc/group memberships"
        );
        let unknown_id = resolve(UserRequest {
            run_as_user: Some(4242),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((unknown_id.uid, unknown_id.gid), (4242, 0));
        let with_group = resolve(UserRequest {
            image_user: "app:staff".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(with_group.gid, 50);
        let run_as_group = resolve(UserRequest {
            run_as_username: "app".into(),
            run_as_group: Some(33),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((run_as_group.uid, run_as_group.gid), (1000, 33));
        let root_user = resolve(UserRequest::default()).unwrap();
        assert_eq!((root_user.uid, root_user.gid), (0, 0));
        assert!(
            resolve(UserRequest {
                run_as_username: "ghost".into(),
                ..Default::default()
            })
            .unwrap_err()
            .contains("ghost")
        );
    }

    #[test]
    fn symlinked_passwd_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/passwd")).unwrap();
        assert!(
            resolve(
                root.path(),
                &UserRequest {
                    run_as_username: "root".into(),
                    ..Default::default()
                }
            )
            .is_err()
        );
    }
}
