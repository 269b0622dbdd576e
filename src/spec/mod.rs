//! Pure OCI runtime spec generation: CRI configs in, `oci_spec::runtime::Spec` out, no I/O.
//! Golden-tested without a runtime.

pub mod container;
mod sandbox;
pub mod seccomp;

pub use sandbox::{NamespaceMode, PauseProcess, SandboxSpec, sandbox_spec};

/// A spec that could not be built from its inputs.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The request asks for what no spec can hold; `field` is the request's field.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Resources no host would take.
    #[error("invalid resources: {0}")]
    Resources(#[from] container::ResourceError),
    /// The spec builder refused what berth gave it: berth's fault, not the request's.
    #[error("cannot build the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl SpecError {
    /// The request's `field` asks for what no spec can hold.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        SpecError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
