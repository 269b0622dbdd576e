//! Links the monitor as a static executable with no C runtime: `rt.rs` is its start-up.

fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
