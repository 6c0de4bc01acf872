//! The HTTP command routes under `/api/v1`.
//!
//! Every accepted command answers with the consistency token of its last event, in the
//! body (`consistency_token`) and in the `X-Consistency-Token` header. Bodies are JSON,
//! at most 64 KiB; errors use [`ApiError`]'s shape.

mod error;
mod routes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::post;
use axum::Router;
use eventfold_event_log::EventStore;

pub use eventfold_http::{ApiError, AuthConfig, Caller, Claims};

use crate::CommandService;

/// The caller of a command route as the command side sees it: the authenticated
/// [`Caller`] turned into a [`crate::CommandContext`].
#[derive(Debug, Clone)]
pub(crate) struct Ctx(pub(crate) crate::CommandContext);

impl<S> axum::extract::FromRequestParts<S> for Ctx
where
    S: Send + Sync,
    Arc<AuthConfig>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Ctx(caller.into()))
    }
}

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the command routes share.
#[derive(Debug)]
pub struct CommandApi<S> {
    /// The domain's commands.
    pub service: Arc<CommandService<S>>,
    /// Who may call.
    pub auth: Arc<AuthConfig>,
}

impl<S> Clone for CommandApi<S> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            auth: self.auth.clone(),
        }
    }
}

impl<S> FromRef<CommandApi<S>> for Arc<AuthConfig> {
    fn from_ref(api: &CommandApi<S>) -> Self {
        api.auth.clone()
    }
}

/// The command routes, to be nested or merged into the service's router.
pub fn router<S: EventStore>(api: CommandApi<S>) -> Router {
    Router::new()
        .route("/api/v1/purchases", post(routes::record_purchase::<S>))
        .route(
            "/api/v1/devices/{device_id}/activations",
            post(routes::record_activation::<S>),
        )
        .route("/api/v1/reminders/{id}/offer", post(routes::offer::<S>))
        .route("/api/v1/reminders/{id}/accept", post(routes::accept::<S>))
        .route("/api/v1/reminders/{id}/decline", post(routes::decline::<S>))
        .route("/api/v1/reminders/{id}/snooze", post(routes::snooze::<S>))
        .route(
            "/api/v1/orders/{id}/confirm",
            post(routes::confirm_order::<S>),
        )
        .route(
            "/api/v1/orders/{id}/cancel",
            post(routes::cancel_order::<S>),
        )
        .route("/api/v1/workouts", post(routes::start_workout::<S>))
        .route(
            "/api/v1/workouts/{id}/updates",
            post(routes::update_workout::<S>),
        )
        .route(
            "/api/v1/workouts/{id}/pause",
            post(routes::pause_workout::<S>),
        )
        .route(
            "/api/v1/workouts/{id}/resume",
            post(routes::resume_workout::<S>),
        )
        .route(
            "/api/v1/workouts/{id}/complete",
            post(routes::complete_workout::<S>),
        )
        .route(
            "/api/v1/workouts/{id}/cancel",
            post(routes::cancel_workout::<S>),
        )
        .route("/api/v1/catalog/prices", post(routes::set_price::<S>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}
