//! The daemon as a whole: start-up, the runtime-information RPCs, configuration errors,
//! the locks, restarts and crashes, and Go gRPC clients on the unix socket.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;

use berth::proto::{
    CgroupDriver, CheckpointContainerRequest, NetworkConfig, RuntimeConfig, RuntimeConfigRequest,
    StatusRequest, StatusResponse, UpdateRuntimeConfigRequest, VersionRequest,
};
use common::{Daemon, Setup, criprobe};

async fn status(daemon: &Daemon, verbose: bool) -> StatusResponse {
    daemon
        .runtime()
        .await
        .status(StatusRequest { verbose })
        .await
        .expect("Status")
        .into_inner()
}

/// (status, reason, message) of one condition.
fn condition(status: &StatusResponse, kind: &str) -> (bool, String, String) {
    let c = status
        .status
        .as_ref()
        .expect("status is set")
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"));
    (c.status, c.reason.clone(), c.message.clone())
}

fn update_cidr(cidr: &str) -> UpdateRuntimeConfigRequest {
    UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.to_string(),
            }),
        }),
    }
}

#[tokio::test]
async fn version_and_runtime_config() {
    let daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let version = client
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "berth");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.version, "0.1.0");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

    let config = client
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        config.linux.expect("linux config").cgroup_driver,
        CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test]
async fn status_follows_the_cni_config_and_the_runtime_binary() {
    let daemon = Setup::new().start().await;
    let conf_dir = daemon.paths().cni_conf.clone();

    // berth wrote its default network into the empty directory: ready.
    let default = conf_dir.join("10-berth.conflist");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&default).unwrap()).unwrap();
    assert_eq!(written["plugins"][0]["bridge"], daemon.setup.bridge);
    assert_eq!(
        written["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        daemon.setup.subnet
    );
    let (ready, reason, _) = condition(&status(&daemon, false).await, "NetworkReady");
    assert!(ready, "{reason}");

    // No CNI config: network not ready, naming the directory.
    std::fs::remove_file(&default).unwrap();
    let s = status(&daemon, false).await;
    let (ready, reason, message) = condition(&s, "NetworkReady");
    assert!(!ready);
    assert_eq!(reason, "NetworkPluginNotReady");
    assert!(message.contains(conf_dir.to_str().unwrap()), "{message}");
    // runc is installed (make test installs it), so the runtime is ready.
    assert_eq!(
        condition(&s, "RuntimeReady"),
        (true, String::new(), String::new())
    );

    // A config naming a plugin that is not installed: still not ready, naming it.
    std::fs::write(
        conf_dir.join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"bridge"},{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let (ready, _, message) = condition(&status(&daemon, false).await, "NetworkReady");
    assert!(!ready);
    assert!(message.contains("no-such-plugin"), "{message}");

    // The Debian CNI plugins: ready, without a restart.
    std::fs::write(
        conf_dir.join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
    )
    .unwrap();
    let (ready, reason, _) = condition(&status(&daemon, false).await, "NetworkReady");
    assert!(ready, "{reason}");
}

#[tokio::test]
async fn runtime_not_ready_when_the_default_handler_is_missing() {
    let daemon = Setup::new()
        .toml("[runtime]\ndefault_handler = \"ghost\"\n[runtime.handlers.ghost]\npath = \"/nonexistent/ghost-runtime\"")
        .start()
        .await;
    let s = status(&daemon, false).await;
    let (ready, reason, message) = condition(&s, "RuntimeReady");
    assert!(!ready);
    assert_eq!(reason, "OCIRuntimeNotFound");
    assert!(message.contains("/nonexistent/ghost-runtime"), "{message}");
    let names: Vec<&str> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["", "ghost", "runc"],
        "default first, then each handler"
    );
}

#[tokio::test]
async fn verbose_status_returns_the_config() {
    let daemon = Setup::new().start().await;
    assert!(
        status(&daemon, false).await.info.is_empty(),
        "info only when verbose"
    );
    let info: HashMap<String, String> = status(&daemon, true).await.info;
    let config: serde_json::Value = serde_json::from_str(&info["config"]).expect("config is JSON");
    assert_eq!(config["root"], daemon.paths().root.to_str().unwrap());
    assert_eq!(config["socket"], daemon.paths().socket.to_str().unwrap());
    assert_eq!(
        config["network"]["conf_dir"],
        daemon.paths().cni_conf.to_str().unwrap()
    );
    assert_eq!(config["runtime"]["default_handler"], "runc");

    // The cgroup layout, against what the host's own files say: v2 when the root is the
    // unified hierarchy, hybrid when one is mounted beside v1 hierarchies.
    let cgroups: serde_json::Value =
        serde_json::from_str(&info["cgroups"]).expect("cgroups is JSON");
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mode = if root.join("cgroup.controllers").exists() {
        "v2"
    } else if root.join("unified/cgroup.controllers").exists() {
        "hybrid"
    } else {
        "v1"
    };
    assert_eq!(cgroups["mode"], mode, "{cgroups}");
    let omitted: Vec<&str> = cgroups["omitted"]
        .as_array()
        .expect("omitted is a list")
        .iter()
        .filter_map(|o| o["field"].as_str())
        .collect();
    let hugetlb = if mode == "v2" {
        std::fs::read_to_string(root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "hugetlb")
    } else {
        root.join("hugetlb/tasks").exists()
    };
    assert_eq!(
        !omitted.contains(&"hugepage_limits"),
        hugetlb,
        "hugepage limits are kept exactly when a usable hugetlb controller exists: {cgroups}"
    );
    assert_eq!(omitted.contains(&"unified"), mode != "v2", "{cgroups}");
}

#[tokio::test]
async fn pod_cidr_is_validated_and_survives_a_restart() {
    let mut daemon = Setup::new().start().await;
    let mut client = daemon.runtime().await;
    let err = client
        .update_runtime_config(update_cidr("10.244.1.0/33"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("pod_cidr"), "{}", err.message());
    client
        .update_runtime_config(update_cidr("10.244.1.0/24,fd00:10:244:1::/64"))
        .await
        .unwrap();
    // An empty CIDR changes nothing (api.proto: runtimes should omit it).
    client.update_runtime_config(update_cidr("")).await.unwrap();
    let pod_cidr = |s: StatusResponse| s.info["podCIDR"].clone();
    assert_eq!(
        pod_cidr(status(&daemon, true).await),
        r#""10.244.1.0/24,fd00:10:244:1::/64""#
    );

    assert!(daemon.stop().await.success());
    daemon.restart().await;
    assert_eq!(
        pod_cidr(status(&daemon, true).await),
        r#""10.244.1.0/24,fd00:10:244:1::/64""#,
        "the store reopened with the recorded CIDR"
    );
}

#[tokio::test]
async fn unimplemented_rpcs_name_themselves() {
    let daemon = Setup::new().start().await;
    let err = daemon
        .runtime()
        .await
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer") && err.message().contains("criu"),
        "names the RPC and why (criu): {}",
        err.message()
    );
}

#[tokio::test]
async fn a_service_manager_hears_ready_then_stopping() {
    // What systemd's Type=notify listens on: a datagram socket named by NOTIFY_SOCKET.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut daemon = Setup::new().env("NOTIFY_SOCKET", &path).start().await;
    let mut buffer = [0u8; 256];
    let n = manager.recv(&mut buffer).expect("READY=1 within 20 s");
    let pid = daemon.pid().expect("the daemon runs");
    assert_eq!(
        String::from_utf8_lossy(&buffer[..n]),
        format!("READY=1\nMAINPID={pid}")
    );
    let status = daemon.stop().await;
    assert!(status.success(), "{status}");
    let n = manager.recv(&mut buffer).expect("STOPPING=1 at shutdown");
    assert_eq!(&buffer[..n], b"STOPPING=1");
}

#[test]
fn berth_config_default_prints_the_defaults_as_a_config_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let config = berth::config::Config::parse(&text).expect("it reads back");
    assert_eq!(config, berth::config::Config::default());
}

#[test]
fn make_install_puts_the_binary_unit_config_and_crictl_config_in_place() {
    let root = tempfile::tempdir().unwrap();
    // A config the operator wrote is kept.
    let kept = root.path().join("kept");
    std::fs::create_dir_all(kept.join("etc/berth")).unwrap();
    std::fs::write(kept.join("etc/berth/berth.toml"), "log_level = \"debug\"\n").unwrap();
    for destdir in [root.path().join("fresh"), kept.clone()] {
        let status = std::process::Command::new("make")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            // The binary this test runs with, not a release build made for it.
            .args(["-s", "-o", "build", "install"])
            .arg(format!("DESTDIR={}", destdir.display()))
            .arg(format!("BERTH_BINARY={}", env!("CARGO_BIN_EXE_berth")))
            .status()
            .unwrap();
        assert!(status.success(), "make install: {status}");
        let binary = destdir.join("usr/local/bin/berth");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&binary).unwrap().permissions(),
        );
        assert_eq!(mode & 0o755, 0o755, "{}", binary.display());
        let unit =
            std::fs::read_to_string(destdir.join("etc/systemd/system/berth.service")).unwrap();
        for line in [
            "Type=notify",
            "KillMode=process",
            "ExecStart=/usr/local/bin/berth serve",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} in {unit}");
        }
        assert!(destdir.join("etc/crictl.yaml").is_file());
    }
    let fresh = std::fs::read_to_string(root.path().join("fresh/etc/berth/berth.toml")).unwrap();
    assert_eq!(
        berth::config::Config::parse(&fresh).unwrap(),
        berth::config::Config::default()
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("etc/berth/berth.toml")).unwrap(),
        "log_level = \"debug\"\n"
    );
}

#[tokio::test]
async fn socket_is_0660_and_removed_on_sigterm() {
    let mut daemon = Setup::new().start().await;
    let socket = daemon.paths().socket.clone();
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let status = daemon.stop().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(!socket.exists(), "socket removed on shutdown");
    let log = daemon.log();
    assert!(
        log.contains("SIGTERM received") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test]
async fn a_second_daemon_cannot_share_root_state_or_socket() {
    let daemon = Setup::new().start().await;
    let first = daemon.paths().clone();

    // Same root, its own state and socket.
    let mut setup = Setup::new();
    setup.paths.root = first.root.clone();
    let (status, stderr) = setup.run_expecting_failure();
    assert!(!status.success());
    assert!(stderr.contains("root lock"), "{stderr}");
    assert!(
        stderr.contains(&daemon.pid().unwrap().to_string()),
        "names the holder: {stderr}"
    );

    // Same state directory.
    let mut setup = Setup::new();
    setup.paths.state = first.state.clone();
    let (status, stderr) = setup.run_expecting_failure();
    assert!(!status.success());
    assert!(stderr.contains("state lock"), "{stderr}");

    // Same socket.
    let mut setup = Setup::new();
    setup.paths.socket = first.socket.clone();
    let (status, stderr) = setup.run_expecting_failure();
    assert!(!status.success());
    assert!(stderr.contains("socket lock"), "{stderr}");

    // The first daemon still serves.
    let mut client = daemon.runtime().await;
    client
        .version(VersionRequest::default())
        .await
        .expect("first daemon serves");
}

#[tokio::test]
async fn restart_after_a_crash_reuses_root_and_socket() {
    let mut daemon = Setup::new().start().await;
    daemon
        .runtime()
        .await
        .update_runtime_config(update_cidr("10.99.0.0/16"))
        .await
        .unwrap();
    daemon.crash().await;
    let socket = daemon.paths().socket.clone();
    assert!(socket.exists(), "a killed daemon leaves its socket behind");
    daemon.restart().await;
    let info = status(&daemon, true).await.info;
    assert_eq!(info["podCIDR"], r#""10.99.0.0/16""#);
    assert!(daemon.log().contains("removing stale socket"));
}

#[tokio::test]
async fn start_up_errors_name_the_key() {
    let cases = [
        ("[streaming]\nadress = \"127.0.0.1:0\"", "streaming.adress"),
        ("log_format = \"xml\"", "log_format"),
        ("[streaming]\naddress = \"everywhere\"", "streaming.address"),
        (
            "[runtime]\ndefault_handler = \"kata\"",
            "runtime.default_handler",
        ),
        (
            "[registries.\"docker.io\"]\nmirrors = [\"ftp://m\"]",
            "mirrors",
        ),
    ];
    for (toml, key) in cases {
        let setup = Setup::new().toml(toml);
        let (status, stderr) = setup.run_expecting_failure();
        assert!(!status.success(), "{toml:?} was accepted");
        assert!(
            stderr.contains(key),
            "{toml:?}: stderr does not name {key}: {stderr}"
        );
        assert!(
            !setup.paths.socket.exists(),
            "no socket after a refused start"
        );
    }
    let setup = Setup::new().arg("--root").arg("relative/root");
    let (status, stderr) = setup.run_expecting_failure();
    assert!(!status.success());
    assert!(stderr.contains("`root`"), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let mut daemon = Setup::new().arg("--log-format").arg("json").start().await;
    assert!(daemon.stop().await.success());
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
}

/// grpc-go, as crictl and the kubelet use it, with both `:authority` forms they send.
#[tokio::test]
async fn go_grpc_clients_with_either_authority() {
    let daemon = Setup::new().start().await;
    let probe = criprobe();
    let socket = daemon.paths().socket.to_str().unwrap().to_string();
    for authority in ["", "localhost"] {
        let output = Command::new(&probe)
            .args(["-socket", &socket, "-authority", authority, "-calls", "5"])
            .output()
            .expect("run criprobe");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "authority {authority:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("runtime_name=berth runtime_api_version=v1 calls=5"),
            "{stdout}"
        );
    }
    // grpc-go 1.33 sent the socket path for the default case: berth rewrote it once, for
    // that connection only.
    let log = daemon.log();
    assert_eq!(log.matches("rewriting it to localhost").count(), 1, "{log}");
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let mut daemon = Setup::new().start().await;
    let status = daemon
        .signal_and_wait(nix::sys::signal::Signal::SIGINT)
        .await;
    assert!(status.success(), "{status}");
    assert!(!daemon.paths().socket.exists());
    assert!(daemon.log().contains("SIGINT received"), "{}", daemon.log());
}

#[test]
fn version_and_help() {
    let berth = env!("CARGO_BIN_EXE_berth");
    let output = Command::new(berth).arg("version").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        format!("berth {} (CRI v1)", env!("CARGO_PKG_VERSION"))
    );

    let output = Command::new(berth).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--root",
        "--state",
        "--socket",
        "--log-level",
        "--log-format",
    ] {
        assert!(
            help.contains(flag),
            "--help does not document {flag}:\n{help}"
        );
    }
    for command in ["serve", "version"] {
        assert!(
            help.contains(command),
            "--help does not list {command}:\n{help}"
        );
    }
}
