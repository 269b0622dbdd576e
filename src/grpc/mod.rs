//! The gRPC transport: the CRI service traits implemented over [`crate::server::CriService`],
//! one tower layer for request logging, and the `:authority` fix for unix-socket clients.
//!
//! Methods here convert requests, validate them and delegate; domain logic lives in
//! `server/`. Errors are logged once, by [`LogLayer`], not by each method.

mod admin;
mod authority;
mod image;
mod logging;
mod runtime;

use std::pin::Pin;

use tokio_stream::Stream;

pub use admin::AdminApi;
pub use authority::AuthorityFix;
pub use image::ImageApi;
pub use logging::LogLayer;
pub use runtime::RuntimeApi;

/// What a unary CRI method returns.
pub type RpcResult<T> = Result<tonic::Response<T>, tonic::Status>;

/// The response stream of a server-streaming CRI method.
pub type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;
