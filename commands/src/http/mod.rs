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

/// Digests a request that carries an `Idempotency-Key` (method, path, body) for its
/// [`Caller`]'s fingerprint, stored with the events the command appends: a retry with
/// the key and a different request is then refused (422 `idempotency_key_reused`)
/// instead of answered with the first request's result.
async fn digest(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !request.headers().contains_key("idempotency-key") {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
    };
    let digest = eventfold_http::request_digest(parts.method.as_str(), parts.uri.path(), &bytes);
    parts.extensions.insert(digest);
    next.run(axum::extract::Request::from_parts(parts, bytes.into()))
        .await
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

use eventfold_http::openapi::{schema, RouteDoc, SchemaFn};
use routes::{
    ActivationRequest, CancelRequest, CompleteWorkoutRequest, Empty, OfferRequest, PriceRequest,
    PurchaseRequest, SnoozeRequest, StartWorkoutRequest, StartedWorkout, UpdateWorkoutRequest,
};

use crate::{AcceptOutcome, CommandOutcome, PurchaseOutcome};

const ID: &[(&str, SchemaFn)] = &[("id", schema::<uuid::Uuid>)];

/// Every command route with the types it reads and answers, for the OpenAPI document.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc::command(
        "/api/v1/purchases",
        "Record a purchase line; plans a reminder for a consumable",
    )
    .body(schema::<PurchaseRequest>)
    .answers(201, schema::<PurchaseOutcome>),
    RouteDoc::command(
        "/api/v1/devices/{device_id}/activations",
        "A speaker woke up for a user",
    )
    .params(&[("device_id", schema::<eventfold_http::Id>)])
    .body(schema::<ActivationRequest>)
    .answers(201, schema::<CommandOutcome>),
    RouteDoc::command(
        "/api/v1/reminders/{id}/offer",
        "The speaker offers the re-order",
    )
    .params(ID)
    .optional_body(schema::<OfferRequest>)
    .answers(200, schema::<CommandOutcome>),
    RouteDoc::command(
        "/api/v1/reminders/{id}/accept",
        "The user says yes: an order is drafted at the current price",
    )
    .params(ID)
    .optional_body(schema::<Empty>)
    .answers(200, schema::<AcceptOutcome>),
    RouteDoc::command("/api/v1/reminders/{id}/decline", "The user says no")
        .params(ID)
        .optional_body(schema::<Empty>)
        .answers(200, schema::<CommandOutcome>),
    RouteDoc::command("/api/v1/reminders/{id}/snooze", "The user says later")
        .params(ID)
        .body(schema::<SnoozeRequest>)
        .answers(200, schema::<CommandOutcome>),
    RouteDoc::command(
        "/api/v1/orders/{id}/confirm",
        "Final confirmation: place the order and request payment",
    )
    .params(ID)
    .optional_body(schema::<Empty>)
    .answers(200, schema::<CommandOutcome>),
    RouteDoc::command(
        "/api/v1/orders/{id}/cancel",
        "Cancel an order before payment",
    )
    .params(ID)
    .optional_body(schema::<CancelRequest>)
    .answers(200, schema::<CommandOutcome>),
    RouteDoc::command("/api/v1/workouts", "Start a workout")
        .body(schema::<StartWorkoutRequest>)
        .answers(201, schema::<StartedWorkout>),
    RouteDoc::command(
        "/api/v1/workouts/{id}/updates",
        "Report distance, heart rate, speed, GPS points",
    )
    .params(ID)
    .optional_body(schema::<UpdateWorkoutRequest>)
    .answers(200, schema::<CommandOutcome>),
    RouteDoc::command("/api/v1/workouts/{id}/pause", "Pause a workout")
        .params(ID)
        .optional_body(schema::<Empty>)
        .answers(200, schema::<CommandOutcome>),
    RouteDoc::command("/api/v1/workouts/{id}/resume", "Resume a paused workout")
        .params(ID)
        .optional_body(schema::<Empty>)
        .answers(200, schema::<CommandOutcome>),
    RouteDoc::command("/api/v1/workouts/{id}/complete", "Complete a workout")
        .params(ID)
        .optional_body(schema::<CompleteWorkoutRequest>)
        .answers(200, schema::<CommandOutcome>),
    RouteDoc::command("/api/v1/workouts/{id}/cancel", "Cancel a workout")
        .params(ID)
        .optional_body(schema::<CancelRequest>)
        .answers(200, schema::<CommandOutcome>),
    RouteDoc::command(
        "/api/v1/catalog/prices",
        "Set a sku's price and availability (services)",
    )
    .body(schema::<PriceRequest>)
    .answers(201, schema::<CommandOutcome>),
];

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
        .route_layer(axum::middleware::from_fn(digest))
        // No command takes query parameters: one sent is refused, never ignored.
        .route_layer(axum::middleware::from_fn(eventfold_http::no_query))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}
