//! Build-time products:
//! - the gRPC code: the CRI v1 API from the vendored `api.proto`, and berth's own admin
//!   API (protox compiles them in pure Rust, so no system `protoc` is needed);
//! - the pause program (`src/sandbox/pause.c`), linked statically so a pod's pause rootfs
//!   holds that one file; the berth binary embeds it;
//! - the container monitor (`monitor/`, a crate of its own: it has no standard library
//!   and needs `panic = "abort"`), built in release by a nested cargo; the berth binary
//!   embeds it too.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/runtime/v1/api.proto",
        "proto/berth/admin/v1/admin.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    build_pause()?;
    build_monitor()
}

fn build_monitor() -> Result<(), Box<dyn std::error::Error>> {
    for path in [
        "monitor/Cargo.toml",
        "monitor/Cargo.lock",
        "monitor/build.rs",
        "monitor/src",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    // Files the monitor compiles from the daemon's tree.
    for path in [
        "src/monitor/argv.rs",
        "src/monitor/files.rs",
        "src/monitor/frames.rs",
        "src/logs/record.rs",
        "src/oci/runc_log.rs",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = std::process::Command::new(&cargo);
    command
        .current_dir("monitor")
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(out.join("monitor-target"));
    // The outer build's settings are not the monitor's: no flags meant for berth, and no
    // clippy or coverage wrapper around its compiler.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run {cargo} to build the monitor: {e}"))?;
    if !status.success() {
        return Err(format!("building the monitor (monitor/) failed ({status})").into());
    }
    std::fs::copy(
        out.join("monitor-target/release/berth-monitor"),
        out.join("berth-monitor"),
    )?;
    Ok(())
}

fn build_pause() -> Result<(), Box<dyn std::error::Error>> {
    let source = "src/sandbox/pause.c";
    println!("cargo:rerun-if-changed={source}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("pause");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = std::process::Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(source)
        .status()
        .map_err(|e| format!("cannot run {cc} to build the pause program: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{cc} failed to build {source} statically ({status}); it needs gcc and libc6-dev"
        )
        .into());
    }
    Ok(())
}
