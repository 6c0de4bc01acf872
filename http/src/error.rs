//! The one error shape of the API: `{"error", "message", "code", "details"}`.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

/// An error answer. 5xx bodies are generic; their cause is logged here, once.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `validation_failed`.
    pub error: &'static str,
    /// For humans.
    pub message: String,
    /// Structured context.
    pub details: Value,
    /// What went wrong inside, for the log, never for the client (see [`ErrorCause`]).
    pub cause: Option<String>,
}

/// The cause of a 5xx answer, carried in the response's extensions to the middleware
/// that logs each failed request once, with its route and its correlation and trace
/// ids (`eventfold_read_api::observe`). Logging where the error arises would print it
/// outside the request's span, which is off at the default log level.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// The body of every error answer, as the OpenAPI document describes it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody<'a> {
    /// Stable machine-readable code, e.g. `validation_failed`.
    pub error: &'a str,
    /// For humans.
    pub message: &'a str,
    /// The HTTP status, repeated.
    pub code: u16,
    /// Structured context (the field at fault, the lag, the retry delay, …).
    pub details: &'a Value,
}

impl ApiError {
    /// An error with empty details.
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
            details: json!({}),
            cause: None,
        }
    }

    /// Adds the cause the log gets (not the client).
    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// 404 for a path nobody serves.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            message: &self.message,
            code: self.status.as_u16(),
            details: &self.details,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(ErrorCause(cause));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 is worth retrying shortly (a store down, a deadline passed, a
            // read model behind): say when (RFC 9110 §10.2.3).
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let (status, error) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "validation_failed"),
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => (status, "payload_too_large"),
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        ApiError::new(status, error, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}
