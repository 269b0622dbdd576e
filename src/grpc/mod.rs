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

/// Items per message of the `Stream*` methods: a listing of thousands of objects goes as
/// several messages, each well under the kubelet's 16 MiB limit.
pub const STREAM_CHUNK: usize = 200;

/// A listing as a `Stream*` method's response: `items` in messages of [`STREAM_CHUNK`],
/// each made by `message`.
pub fn chunked<T, M>(items: Vec<T>, message: impl Fn(Vec<T>) -> M) -> RpcResult<RpcStream<M>>
where
    T: Clone,
    M: Send + 'static,
{
    let messages: Vec<Result<M, tonic::Status>> = items
        .chunks(STREAM_CHUNK)
        .map(|chunk| Ok(message(chunk.to_vec())))
        .collect();
    Ok(tonic::Response::new(Box::pin(tokio_stream::iter(messages))))
}
