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
/// each made by `message` (the items move into the messages; an empty listing is no
/// message).
pub fn chunked<T, M>(items: Vec<T>, message: impl Fn(Vec<T>) -> M) -> RpcResult<RpcStream<M>>
where
    M: Send + 'static,
{
    let mut items = items.into_iter().peekable();
    let mut messages: Vec<Result<M, tonic::Status>> = Vec::new();
    while items.peek().is_some() {
        messages.push(Ok(message(items.by_ref().take(STREAM_CHUNK).collect())));
    }
    Ok(tonic::Response::new(Box::pin(tokio_stream::iter(messages))))
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn a_listing_goes_in_messages_of_stream_chunk_items_in_order() {
        let items: Vec<usize> = (0..super::STREAM_CHUNK * 2 + 1).collect();
        let stream = super::chunked(items.clone(), |chunk| chunk)
            .unwrap()
            .into_inner();
        let messages: Vec<Vec<usize>> = stream.map(|m| m.unwrap()).collect().await;
        let sizes: Vec<usize> = messages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [super::STREAM_CHUNK, super::STREAM_CHUNK, 1]);
        assert_eq!(messages.concat(), items);
        let none = super::chunked(Vec::<usize>::new(), |chunk| chunk)
            .unwrap()
            .into_inner();
        assert_eq!(
            none.collect::<Vec<_>>().await.len(),
            0,
            "no message for no item"
        );
    }
}
