//! Build-time products:
//! - the gRPC code: the CRI v1 API from the vendored `api.proto`, and berth's own admin
//!   API (protox compiles them in pure Rust, so no system `protoc` is needed);
//! - the pause program (`src/sandbox/pause.c`), linked statically so a pod's pause rootfs
//!   holds that one file; the berth binary embeds it.

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
    build_pause()
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
