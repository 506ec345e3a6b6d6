//! Errors of control-plane operations, each with the kind that decides its status code.

use wharf_types::ManifestError;

/// What kind of failure: decides the API status and the CLI exit code (the API's own
/// error kinds, so that nothing translates between two copies).
pub use wharf_types::api::ErrorKind as Kind;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("{message}")]
    Op { kind: Kind, message: String },
    #[error(transparent)]
    Store(#[from] wharf_core::ports::StoreError),
}

impl ControlError {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Manifest(_) => Kind::BadInput,
            Self::Op { kind, .. } => *kind,
            Self::Store(_) => Kind::Internal,
        }
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::Op {
            kind: Kind::BadInput,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::Op {
            kind: Kind::NotFound,
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Op {
            kind: Kind::Conflict,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Op {
            kind: Kind::Failed,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Op {
            kind: Kind::Internal,
            message: message.into(),
        }
    }
    pub(crate) fn poisoned<T>(_: T) -> Self {
        Self::internal("controller state lock poisoned (a previous panic); restart the server")
    }
}
