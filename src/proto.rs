//! The CRI v1 API, generated at build time from `proto/runtime/v1/api.proto`.
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
