//! The one error type of the CRI services and its one mapping to `tonic::Status`.
//!
//! Every variant carries the object or field it is about, so the message that reaches the
//! client names it. The `From<Error> for tonic::Status` match is exhaustive on purpose:
//! adding a variant forces a choice of gRPC code.

use std::path::PathBuf;

use crate::image::ImageError;
use crate::network::cni::CniError;
use crate::oci::runtime::OciError;
use crate::spec::SpecError;
use crate::store::StoreError;

/// A domain error returned by the CRI service implementation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// The object named by the request does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },

    /// An object with the same name exists already.
    #[error("{kind} {name:?} already exists as {id}")]
    AlreadyExists {
        kind: &'static str,
        name: String,
        id: String,
    },

    /// The object is not in a state that allows the operation.
    #[error("{kind} {id}: {reason}")]
    WrongState {
        kind: &'static str,
        id: String,
        reason: String,
    },

    /// The OCI runtime failed.
    #[error(transparent)]
    Runtime(#[from] OciError),

    /// CNI networking failed.
    #[error(transparent)]
    Network(#[from] CniError),

    /// An OCI spec could not be generated: from the request (InvalidArgument) or from
    /// berth's own inputs (Internal).
    #[error(transparent)]
    Spec(#[from] SpecError),

    /// A local file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// berth cannot take the request now (a limit is reached, a part is not running).
    #[error("{0}")]
    Unavailable(String),

    /// The operation did not finish in the time the request allowed.
    #[error("{what} timed out after {after:?}")]
    TimedOut {
        what: String,
        after: std::time::Duration,
    },

    /// A background task of the operation died (panicked or was cancelled).
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    /// A container monitor did not start or did not answer.
    #[error(transparent)]
    Monitor(#[from] crate::monitor::launch::LaunchError),

    /// A file berth wrote itself (a bundle's spec) does not parse, or a value does not
    /// encode.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A bundle's spec lacks what berth wrote into it.
    #[error("the spec {path} has no {missing}")]
    BadBundle {
        path: PathBuf,
        missing: &'static str,
    },

    /// An image operation failed; the error carries its own gRPC code.
    #[error(transparent)]
    Image(#[from] ImageError),

    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// A local file operation on `path` failed.
    pub fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error + use<> {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }

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
            Error::NotFound { .. } => tonic::Status::not_found(message),
            Error::AlreadyExists { .. } => tonic::Status::already_exists(message),
            Error::WrongState { .. } => tonic::Status::failed_precondition(message),
            Error::TimedOut { .. } => tonic::Status::deadline_exceeded(message),
            Error::Unavailable(_) => tonic::Status::unavailable(message),
            Error::Network(CniError::NotReady(_)) => tonic::Status::failed_precondition(message),
            Error::Spec(SpecError::Invalid { .. } | SpecError::Resources(_)) => {
                tonic::Status::invalid_argument(message)
            }
            Error::Runtime(_)
            | Error::Network(_)
            | Error::Spec(SpecError::Build(_))
            | Error::Io { .. }
            | Error::Task(_)
            | Error::Monitor(_)
            | Error::Json { .. }
            | Error::BadBundle { .. } => tonic::Status::internal(message),
            Error::Image(err) => tonic::Status::new(err.code(), message),
            Error::Store(_) => tonic::Status::internal(message),
        }
    }
}

impl From<crate::sandbox::OpenError> for Error {
    fn from(err: crate::sandbox::OpenError) -> Self {
        match err {
            crate::sandbox::OpenError::Io { path, source } => Error::Io {
                what: "preparing sandbox state in",
                path,
                source,
            },
            crate::sandbox::OpenError::Store(err) => Error::Store(err),
        }
    }
}

/// The result type of the CRI service implementation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
