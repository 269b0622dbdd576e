//! berth: a Kubernetes container runtime serving the CRI v1 gRPC API on a unix socket.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; the integration tests and
//! the benchmark use the library's generated CRI client and types. See `DESIGN.md` in the
//! shared docs for the architecture; each module's docs say what it owns.
//!
//! The modules, from the wire inwards. Their imports form no cycle
//! (`tests/module_graph.rs` holds the crate to it):
//!
//! | layer | modules |
//! | --- | --- |
//! | the daemon | [`daemon`] (start-up, shutdown, locks, the client of a running daemon), [`config`] |
//! | the transport | [`grpc`] (convert, validate, delegate; request logging), [`proto`] |
//! | the CRI logic | [`server`] (one file per RPC family), [`error`] (one mapping to gRPC codes), [`events`] |
//! | pods and containers | [`sandbox`], [`container`], [`store`] (records, caches, their CRI view) |
//! | what they are made of | [`spec`] (pure OCI specs), [`oci`] (runtimes), [`monitor`] (the daemon's side), [`network`] (CNI, lo), [`image`], [`mounts`], [`cgroups`], [`stats`], [`logs`], [`streaming`] |
//! | small pieces | [`clock`], [`ids`], [`rollback`], [`helpers`] (the tag of helper processes), [`metrics`] (the daemon's own endpoint) |

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
