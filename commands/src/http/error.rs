//! Command errors in the API's error shape.

use axum::http::StatusCode;
use eventfold_domain::ErrorKind;
use eventfold_http::ApiError;
use serde_json::json;

use crate::CommandError;

impl From<CommandError> for ApiError {
    /// 5xx answers carry their cause for the request log ([`eventfold_http::ErrorCause`]).
    fn from(error: CommandError) -> Self {
        let message = error.to_string();
        match &error {
            CommandError::Domain(domain) => {
                let status = match domain.kind() {
                    ErrorKind::NotFound => StatusCode::NOT_FOUND,
                    ErrorKind::Conflict => StatusCode::CONFLICT,
                    ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError::new(status, domain.code(), message)
                    .with_details(json!({ "rule": domain.code() }))
            }
            CommandError::Forbidden { what, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
                    .with_details(json!({ "resource": what }))
            }
            CommandError::InvalidInput(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", message)
            }
            CommandError::IdempotencyKeyReused(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            ),
            CommandError::Contention { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            CommandError::Store(store) if store.is_client_error() => {
                ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", message)
            }
            CommandError::Undecodable { stream, .. }
            | CommandError::UnknownEventType { stream, .. } => {
                // Not an outage: retrying cannot help until the stream is repaired or
                // a version that reads it is deployed.
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unreadable_stream",
                    format!("stream {stream} holds an event this server cannot read; the command was not run"),
                )
                .with_details(json!({ "stream": stream }))
                .with_cause(&error)
            }
            CommandError::OutcomeUnknown(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the event log failed while this command was being stored, and it could not \
                 be told whether it was; retry it with the same Idempotency-Key, which \
                 answers its first result if it was stored",
            )
            .with_cause(&error),
            CommandError::Store(_) | CommandError::Slots(_) | CommandError::Injected(_) => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the event log is unavailable; retry later",
                )
                .with_cause(&error)
            }
        }
    }
}
