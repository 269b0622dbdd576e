//! The one error type of the CRI services and its one mapping to `tonic::Status`.
//!
//! Every variant carries the object or field it is about, so the message that reaches the
//! client names it. The `From<Error> for tonic::Status` match is exhaustive on purpose:
//! adding a variant forces a choice of gRPC code.

use crate::image::ImageError;
use crate::store::StoreError;

/// A domain error returned by the CRI service implementation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// The RPC is part of CRI v1 but berth does not implement it yet.
    #[error("{rpc} is not implemented by berth yet")]
    Unimplemented { rpc: &'static str },

    /// An image operation failed; the error carries its own gRPC code.
    #[error(transparent)]
    Image(#[from] ImageError),

    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// A malformed or missing request field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::InvalidField { .. } => tonic::Status::invalid_argument(message),
            Error::Unimplemented { .. } => tonic::Status::unimplemented(message),
            Error::Image(err) => tonic::Status::new(err.code(), message),
            Error::Store(_) => tonic::Status::internal(message),
        }
    }
}

/// The result type of the CRI service implementation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
