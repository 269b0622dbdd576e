//! Seccomp profiles: which one a container gets, berth's own `RuntimeDefault` profile, and
//! `Localhost` profile files in the kubelet's format.
//!
//! - No profile (nil), `Unconfined`, or a privileged container: no filter.
//! - `RuntimeDefault`: [`runtime_default`], an allow-list written for berth. Everything
//!   not listed fails with EPERM; syscalls that only a capability makes useful (mount,
//!   reboot, module loading, clock setting, …) are listed only when the container holds
//!   that capability; `clone` may not create namespaces without CAP_SYS_ADMIN, and
//!   `clone3` (whose flags a filter cannot see) reports ENOSYS there so libc falls back to
//!   `clone`.
//! - `Localhost`: a JSON profile on the host, by absolute path. Both the OCI form
//!   (`syscalls[].names`) and the Docker form the kubelet documents (`archMap`, `name`,
//!   `includes`/`excludes` by capability and architecture) are read.
//!
//! The deprecated `seccomp_profile_path` strings are understood too: `unconfined`,
//! `runtime/default`, `docker/default` and `localhost/<path>`.

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxSeccomp};
use serde_json::{Value, json};

use crate::proto::{SecurityProfile, security_profile::ProfileType};

/// The profile a container asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Unconfined,
    RuntimeDefault,
    /// An absolute path on the host.
    Localhost(String),
}

/// The choice from the CRI fields: the `seccomp` profile when set, else the deprecated
/// path string; neither means unconfined. `Err` names what is wrong.
pub fn choose(profile: Option<&SecurityProfile>, deprecated_path: &str) -> Result<Choice, String> {
    if let Some(profile) = profile {
        return match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Choice::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(Choice::Unconfined),
            Ok(ProfileType::Localhost) => localhost(&profile.localhost_ref),
            Err(_) => Err(format!("unknown profile type {}", profile.profile_type)),
        };
    }
    match deprecated_path {
        "" | "unconfined" => Ok(Choice::Unconfined),
        "runtime/default" | "docker/default" => Ok(Choice::RuntimeDefault),
        other => match other.strip_prefix("localhost/") {
            Some(path) => localhost(path),
            None => Err(format!("unknown seccomp profile {other:?}")),
        },
    }
}

fn localhost(path: &str) -> Result<Choice, String> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(format!(
            "localhost profile {path:?} must be an absolute path without '..'"
        ));
    }
    Ok(Choice::Localhost(path.to_string()))
}

/// Syscalls any container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed only with a capability, which the kernel would demand anyway: listing
/// them keeps the filter from taking away what the capability grants.
const WITH_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("SYS_BOOT", &["reboot"]),
    ("SYS_CHROOT", &["chroot"]),
    (
        "SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("SYS_PACCT", &["acct"]),
    ("SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise"]),
    ("SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("SYS_TTY_CONFIG", &["vhangup"]),
    (
        "SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("SYSLOG", &["syslog"]),
    ("BPF", &["bpf"]),
    ("PERFMON", &["perf_event_open"]),
];

/// The namespace flags of `clone`: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 | 0x7E00_0000;
/// The `personality` values programs use (Linux, with ADDR_NO_RANDOMIZE, UNAME26, and
/// the query), as other runtimes allow them.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Whether `caps` holds the capability `name` (without its `CAP_` prefix).
fn holds(caps: &HashSet<Capability>, name: &str) -> bool {
    name.parse::<Capability>()
        .is_ok_and(|cap| caps.contains(&cap))
}

/// berth's `RuntimeDefault` profile for a container holding `caps`.
pub fn runtime_default(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, String> {
    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    for (cap, names) in WITH_CAPABILITY {
        if holds(caps, cap) {
            allowed.extend(names.iter().copied());
        }
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut syscalls = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    for value in PERSONALITIES {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
        }));
    }
    if !holds(caps, "SYS_ADMIN") {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{
                "index": 0,
                "value": CLONE_NAMESPACE_FLAGS,
                "valueTwo": 0,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }));
        syscalls.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": ENOSYS,
        }));
    }
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": native_architectures(),
        "syscalls": syscalls,
    });
    serde_json::from_value(profile).map_err(|e| format!("berth's default profile: {e}"))
}

/// The architectures a filter must cover on this machine: its own and the 32-bit ones
/// its kernel also runs.
fn native_architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => vec!["SCMP_ARCH_NATIVE"],
    }
}

/// The Go name of this machine's architecture, as Docker-form profiles name it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A `Localhost` profile's text, for a container holding `caps`.
pub fn parse_profile(text: &str, caps: &HashSet<Capability>) -> Result<LinuxSeccomp, String> {
    let mut profile: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON seccomp profile: {e}"))?;
    let object = profile
        .as_object_mut()
        .ok_or("a seccomp profile is a JSON object")?;
    // Docker form: architectures from archMap (the machine's own and its sub-arches).
    if let Some(map) = object.remove("archMap")
        && !object.contains_key("architectures")
    {
        let native = native_architectures();
        let mut arches: Vec<Value> = Vec::new();
        for entry in map.as_array().into_iter().flatten() {
            let main = entry["architecture"].as_str().unwrap_or_default();
            if native.contains(&main) {
                arches.push(main.into());
                for sub in entry["subArchitectures"].as_array().into_iter().flatten() {
                    arches.push(sub.clone());
                }
            }
        }
        object.insert("architectures".into(), arches.into());
    }
    object.remove("defaultErrno");
    let syscalls = object
        .remove("syscalls")
        .unwrap_or(Value::Array(Vec::new()));
    let mut kept = Vec::new();
    for mut rule in syscalls.as_array().cloned().unwrap_or_default() {
        let Some(rule_object) = rule.as_object_mut() else {
            return Err("a syscalls entry is not an object".to_string());
        };
        let includes = rule_object.remove("includes").unwrap_or(Value::Null);
        let excludes = rule_object.remove("excludes").unwrap_or(Value::Null);
        rule_object.remove("comment");
        if !applies(&includes, &excludes, caps) {
            continue;
        }
        if let Some(name) = rule_object.remove("name") {
            let names = rule_object
                .entry("names")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(list) = names.as_array_mut() {
                list.push(name);
            }
        }
        kept.push(rule);
    }
    object.insert("syscalls".into(), kept.into());
    serde_json::from_value(profile).map_err(|e| format!("not a usable seccomp profile: {e}"))
}

/// Whether a Docker-form rule applies: every `includes` capability held and this
/// architecture listed (when any is); no `excludes` capability held and this
/// architecture not listed.
fn applies(includes: &Value, excludes: &Value, caps: &HashSet<Capability>) -> bool {
    let names = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .map(|s| s.trim_start_matches("CAP_").to_string())
            .collect()
    };
    let arch = go_arch();
    let included_caps = names(includes, "caps");
    let included_arches = names(includes, "arches");
    let excluded_caps = names(excludes, "caps");
    let excluded_arches = names(excludes, "arches");
    included_caps.iter().all(|c| holds(caps, c))
        && (included_arches.is_empty() || included_arches.iter().any(|a| a == arch))
        && !excluded_caps.iter().any(|c| holds(caps, c))
        && !excluded_arches.iter().any(|a| a == arch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSeccompAction;

    fn caps(names: &[&str]) -> HashSet<Capability> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn allowed(profile: &LinuxSeccomp) -> HashSet<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn choices_from_both_fields() {
        let profile = |t: ProfileType, r: &str| SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.to_string(),
        };
        assert_eq!(choose(None, ""), Ok(Choice::Unconfined));
        assert_eq!(
            choose(Some(&SecurityProfile::default()), ""),
            Ok(Choice::RuntimeDefault)
        );
        assert_eq!(
            choose(
                Some(&profile(ProfileType::Unconfined, "")),
                "runtime/default"
            ),
            Ok(Choice::Unconfined),
            "the field wins over the deprecated path"
        );
        assert_eq!(
            choose(Some(&profile(ProfileType::Localhost, "/p/x.json")), ""),
            Ok(Choice::Localhost("/p/x.json".into()))
        );
        assert!(choose(Some(&profile(ProfileType::Localhost, "x.json")), "").is_err());
        assert!(choose(Some(&profile(ProfileType::Localhost, "/a/../b")), "").is_err());
        assert_eq!(choose(None, "docker/default"), Ok(Choice::RuntimeDefault));
        assert_eq!(
            choose(None, "localhost//var/lib/p.json"),
            Ok(Choice::Localhost("/var/lib/p.json".into()))
        );
        assert!(choose(None, "bogus").is_err());
    }

    #[test]
    fn the_default_profile_follows_capabilities() {
        let plain = runtime_default(&caps(&["CHOWN", "KILL"])).unwrap();
        assert_eq!(plain.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(plain.default_errno_ret(), Some(EPERM));
        let names = allowed(&plain);
        for expected in ["read", "execve", "openat", "futex", "exit_group"] {
            assert!(names.contains(expected), "{expected} not allowed");
        }
        for denied in [
            "mount",
            "reboot",
            "init_module",
            "unshare",
            "sethostname",
            "clone",
        ] {
            assert!(
                !names.contains(denied),
                "{denied} allowed without its capability"
            );
        }
        // clone without namespace flags only; clone3 falls back.
        let rules = plain.syscalls().clone().unwrap();
        let clone = rules
            .iter()
            .find(|s| s.names() == &vec!["clone".to_string()])
            .unwrap();
        let arg = clone.args().clone().unwrap()[0];
        assert_eq!(
            (arg.value(), arg.value_two()),
            (CLONE_NAMESPACE_FLAGS, Some(0))
        );
        assert!(
            rules
                .iter()
                .any(|s| s.names() == &vec!["clone3".to_string()] && s.errno_ret() == Some(ENOSYS))
        );

        let admin = runtime_default(&caps(&["SYS_ADMIN", "SYS_TIME"])).unwrap();
        let names = allowed(&admin);
        for expected in [
            "mount",
            "unshare",
            "clone",
            "clone3",
            "sethostname",
            "clock_settime",
        ] {
            assert!(
                names.contains(expected),
                "{expected} not allowed with its capability"
            );
        }
    }

    #[test]
    fn localhost_profiles_in_oci_and_docker_form() {
        let oci = r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["chmod","fchmodat"],"action":"SCMP_ACT_ERRNO"}]}"#;
        let p = parse_profile(oci, &caps(&[])).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(p.syscalls().as_ref().unwrap()[0].names().len(), 2);

        let docker = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]},
                       {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]}],
            "syscalls":[
              {"names":["read"],"action":"SCMP_ACT_ALLOW","comment":"always"},
              {"name":"mount","action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["ptrace"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_PTRACE"]}},
              {"names":["s390_only"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["s390x"]}}
            ]}"#;
        let plain = parse_profile(docker, &caps(&["SYS_PTRACE"])).unwrap();
        assert_eq!(allowed(&plain), ["read".to_string()].into_iter().collect());
        let admin = parse_profile(docker, &caps(&["SYS_ADMIN"])).unwrap();
        assert_eq!(
            allowed(&admin),
            ["read", "mount", "ptrace"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(admin.architectures().as_ref().unwrap().len(), 2);
        }
        assert!(parse_profile("[1]", &caps(&[])).is_err());
        assert!(parse_profile("{\"defaultAction\":\"NOPE\"}", &caps(&[])).is_err());
    }
}
