//! One tower layer that logs every RPC: a span named after the method (so the domain's
//! own log lines carry it), its duration, and its outcome, also counted in the metrics
//! ([`crate::metrics::rpc`]). Failures are logged here and only here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;

/// Wraps the gRPC router with per-RPC logging.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogLayer;

impl<S> Layer<S> for LogLayer {
    type Service = LogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LogService { inner }
    }
}

/// See [`LogLayer`].
#[derive(Debug, Clone)]
pub struct LogService<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for LogService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // "/runtime.v1.RuntimeService/Version" → "Version"
        let path = request.uri().path();
        let rpc = path.rsplit('/').next().unwrap_or(path).to_string();
        let span = tracing::info_span!("rpc", rpc = %rpc);
        let start = Instant::now();
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let response = response.await?;
                let took = start.elapsed();
                let micros = took.as_micros() as u64;
                // A failed unary call is a trailers-only response: its status is in the
                // headers. A successful one carries no grpc-status header.
                let code = match tonic::Status::from_header_map(response.headers()) {
                    Some(status) if status.code() != tonic::Code::Ok => {
                        log_failure(&status, micros);
                        status.code()
                    }
                    _ => {
                        tracing::debug!(micros, "ok");
                        tonic::Code::Ok
                    }
                };
                crate::metrics::rpc(&rpc, code, took);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

fn log_failure(status: &tonic::Status, micros: u64) {
    let code = status.code();
    let message = status.message();
    match code {
        // Routine answers the kubelet expects to get.
        tonic::Code::NotFound | tonic::Code::Unimplemented | tonic::Code::Cancelled => {
            tracing::debug!(micros, ?code, message, "failed")
        }
        tonic::Code::InvalidArgument
        | tonic::Code::AlreadyExists
        | tonic::Code::FailedPrecondition
        | tonic::Code::DeadlineExceeded => tracing::info!(micros, ?code, message, "failed"),
        _ => tracing::warn!(micros, ?code, message, "failed"),
    }
}
