//! The CRI v1 API, generated at build time from `proto/runtime/v1/api.proto`, and
//! berth's admin API.
//!
//! Both the servers (used by the daemon) and the clients (used by the tests, the benchmark
//! and any tool built on the library) are generated.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use runtime::v1::*;

/// berth's own admin API (`proto/berth/admin/v1/admin.proto`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod admin {
    tonic::include_proto!("berth.admin.v1");
}
