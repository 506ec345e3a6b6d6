//! Controller errors as HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wharf_controller::ControlError;
use wharf_types::api::{ApiError, ErrorKind};

/// An error answer: status from the kind, body an [`ApiError`].
pub struct HttpError(pub ApiError);

impl HttpError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self(ApiError {
            kind: ErrorKind::BadInput,
            error: message.into(),
            manifest: None,
        })
    }
}

impl HttpError {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self(ApiError {
            kind: ErrorKind::Forbidden,
            error: message.into(),
            manifest: None,
        })
    }
}

impl From<ControlError> for HttpError {
    fn from(e: ControlError) -> Self {
        let manifest = match &e {
            ControlError::Manifest(m) => Some(m.clone()),
            _ => None,
        };
        Self(ApiError {
            kind: e.kind(),
            error: e.to_string(),
            manifest,
        })
    }
}

pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Failed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.0.kind == ErrorKind::Internal {
            tracing::error!("api: {}", self.0.error);
        }
        (status_of(self.0.kind), Json(self.0)).into_response()
    }
}
