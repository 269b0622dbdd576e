//! berth: a Kubernetes container runtime serving the CRI v1 gRPC API on a unix socket.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; the integration tests and
//! the benchmark use the library's generated CRI client and types. See `DESIGN.md` in the
//! shared docs for the architecture; each module's docs say what it owns.

extern crate alloc;

pub mod cgroups;
pub mod clock;
pub mod config;
pub mod container;
pub mod daemon;
pub mod error;
pub mod events;
pub mod grpc;
pub mod helpers;
pub mod ids;
pub mod image;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod mounts;
pub mod network;
pub mod oci;
pub mod proto;
pub mod rollback;
pub mod sandbox;
pub mod server;
pub mod spec;
pub mod stats;
pub mod store;
pub mod streaming;
