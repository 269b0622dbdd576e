//! Pure OCI runtime spec generation: CRI configs in, `oci_spec::runtime::Spec` out, no I/O.
//! Golden-tested without a runtime.

pub mod container;
mod sandbox;
pub mod seccomp;

pub use sandbox::{NamespaceMode, PauseProcess, SandboxSpec, sandbox_spec};

/// A spec that could not be built from its inputs.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OCI spec: {0}")]
pub struct SpecError(pub(crate) String);

impl SpecError {
    pub fn new(reason: impl Into<String>) -> Self {
        SpecError(reason.into())
    }
}

impl From<oci_spec::OciSpecError> for SpecError {
    fn from(err: oci_spec::OciSpecError) -> Self {
        SpecError(err.to_string())
    }
}
