//! Handlers: parse, authenticate, call the service, answer with the consistency token.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use eventfold_domain::workout::WorkoutCommand;
use eventfold_event_log::EventStore;
use eventfold_event_schemas::catalogue::{
    DeviceActivated, GeoPoint, PriceChanged, PurchaseRecorded,
};
use eventfold_event_schemas::Position;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use eventfold_http::Timestamp;

use super::{ApiError, CommandApi, Ctx};
use crate::CommandOutcome;

/// A JSON body; an empty body reads as `{}`. Rejections use the API's error shape.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload_too_large"
                } else {
                    "bad_request"
                };
                ApiError::new(status, error, rejection.body_text())
            })?;
        // One place for every command body: JSON, an object, no control characters.
        let value = eventfold_http::json_body(content_type.as_deref(), &bytes)?;
        serde_json::from_value(value).map(Body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                format!("the body does not fit: {e}"),
            )
        })
    }
}

/// An aggregate id from the path.
pub(crate) struct Id(pub(crate) Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        Uuid::parse_str(&raw).map(Id).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                format!("{raw:?} is not a UUID"),
            )
        })
    }
}

/// An answer carrying a consistency token.
fn accepted(status: StatusCode, token: Position, body: impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&token.to_string()) {
        response.headers_mut().insert("x-consistency-token", value);
    }
    response
}

fn outcome(o: CommandOutcome) -> Result<Response, ApiError> {
    Ok(accepted(StatusCode::OK, o.consistency_token, o))
}

fn default_currency() -> String {
    "RUB".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurchaseRequest {
    user_id: String,
    sku: String,
    title: String,
    category: String,
    quantity: u32,
    unit_price: i64,
    #[serde(default = "default_currency")]
    currency: String,
    purchased_at: Option<Timestamp>,
}

pub(crate) async fn record_purchase<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Body(r): Body<PurchaseRequest>,
) -> Result<Response, ApiError> {
    let purchase = PurchaseRecorded {
        user_id: r.user_id,
        sku: r.sku,
        title: r.title,
        category: r.category,
        quantity: r.quantity,
        unit_price: r.unit_price,
        currency: r.currency,
        purchased_at: r.purchased_at.map_or_else(Utc::now, |t| t.0),
    };
    let result = api.service.record_purchase(&ctx, purchase).await?;
    let token = result
        .reminder
        .as_ref()
        .map_or(result.purchase.consistency_token, |r| {
            r.outcome
                .consistency_token
                .max(result.purchase.consistency_token)
        });
    Ok(accepted(StatusCode::CREATED, token, result))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivationRequest {
    user_id: String,
    activated_at: Option<Timestamp>,
    #[serde(default)]
    utc_offset_minutes: i32,
}

pub(crate) async fn record_activation<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Path(device_id): Path<String>,
    Body(r): Body<ActivationRequest>,
) -> Result<Response, ApiError> {
    if !(-840..=840).contains(&r.utc_offset_minutes) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "utc_offset_minutes must be between -840 and 840 (UTC-14:00 to UTC+14:00)",
        ));
    }
    let activation = DeviceActivated {
        device_id,
        user_id: r.user_id,
        activated_at: r.activated_at.map_or_else(Utc::now, |t| t.0),
        utc_offset_minutes: r.utc_offset_minutes,
    };
    let o = api.service.record_activation(&ctx, activation).await?;
    Ok(accepted(StatusCode::CREATED, o.consistency_token, o))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct OfferRequest {
    device_id: Option<String>,
}

pub(crate) async fn offer<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(r): Body<OfferRequest>,
) -> Result<Response, ApiError> {
    outcome(api.service.offer(&ctx, id, r.device_id).await?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

pub(crate) async fn accept<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    let result = api.service.accept(&ctx, id).await?;
    let token = result
        .order
        .consistency_token
        .max(result.reminder.consistency_token);
    Ok(accepted(StatusCode::OK, token, result))
}

pub(crate) async fn decline<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    outcome(api.service.decline(&ctx, id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnoozeRequest {
    until: Timestamp,
}

pub(crate) async fn snooze<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(r): Body<SnoozeRequest>,
) -> Result<Response, ApiError> {
    outcome(api.service.snooze(&ctx, id, r.until.0).await?)
}

pub(crate) async fn confirm_order<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    outcome(api.service.confirm_order(&ctx, id).await?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelRequest {
    reason: Option<String>,
}

pub(crate) async fn cancel_order<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(r): Body<CancelRequest>,
) -> Result<Response, ApiError> {
    let reason = r
        .reason
        .unwrap_or_else(|| "cancelled by the user".to_owned());
    outcome(api.service.cancel_order(&ctx, id, reason).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartWorkoutRequest {
    workout_id: Option<Uuid>,
    user_id: String,
    sport: String,
    goal_distance_m: Option<f64>,
}

#[derive(Serialize)]
struct StartedWorkout {
    workout_id: Uuid,
    #[serde(flatten)]
    outcome: CommandOutcome,
}

pub(crate) async fn start_workout<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Body(r): Body<StartWorkoutRequest>,
) -> Result<Response, ApiError> {
    // Without an explicit id, a retried request (same key) must reach the same workout.
    let workout_id = r.workout_id.unwrap_or_else(|| match &ctx.idempotency_key {
        Some(key) => Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("workout\u{0}{}\u{0}{key}", ctx.principal.subject).as_bytes(),
        ),
        None => Uuid::new_v4(),
    });
    let o = api
        .service
        .start_workout(&ctx, workout_id, r.user_id, r.sport, r.goal_distance_m)
        .await?;
    Ok(accepted(
        StatusCode::CREATED,
        o.consistency_token,
        StartedWorkout {
            workout_id,
            outcome: o,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateWorkoutRequest {
    distance_m: Option<f64>,
    heart_rate: Option<u32>,
    speed_mps: Option<f64>,
    #[serde(default)]
    points: Vec<GeoPoint>,
}

pub(crate) async fn update_workout<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(r): Body<UpdateWorkoutRequest>,
) -> Result<Response, ApiError> {
    outcome(
        api.service
            .workout_command(&ctx, id, |at| WorkoutCommand::Update {
                distance_m: r.distance_m,
                heart_rate: r.heart_rate,
                speed_mps: r.speed_mps,
                points: r.points.clone(),
                at,
            })
            .await?,
    )
}

pub(crate) async fn pause_workout<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    outcome(
        api.service
            .workout_command(&ctx, id, |at| WorkoutCommand::Pause { at })
            .await?,
    )
}

pub(crate) async fn resume_workout<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    outcome(
        api.service
            .workout_command(&ctx, id, |at| WorkoutCommand::Resume { at })
            .await?,
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteWorkoutRequest {
    distance_m: Option<f64>,
}

pub(crate) async fn complete_workout<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(r): Body<CompleteWorkoutRequest>,
) -> Result<Response, ApiError> {
    outcome(
        api.service
            .workout_command(&ctx, id, |at| WorkoutCommand::Complete {
                distance_m: r.distance_m,
                at,
            })
            .await?,
    )
}

pub(crate) async fn cancel_workout<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(r): Body<CancelRequest>,
) -> Result<Response, ApiError> {
    outcome(
        api.service
            .workout_command(&ctx, id, |at| WorkoutCommand::Cancel {
                reason: r.reason.clone(),
                at,
            })
            .await?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceRequest {
    sku: String,
    title: String,
    unit_price: i64,
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default = "yes")]
    available: bool,
    #[serde(default)]
    delivery_days: u32,
    changed_at: Option<Timestamp>,
}

fn yes() -> bool {
    true
}

pub(crate) async fn set_price<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Body(r): Body<PriceRequest>,
) -> Result<Response, ApiError> {
    let price = PriceChanged {
        sku: r.sku,
        title: r.title,
        unit_price: r.unit_price,
        currency: r.currency,
        available: r.available,
        delivery_days: r.delivery_days,
        changed_at: r.changed_at.map_or_else(Utc::now, |t| t.0),
    };
    let o = api.service.set_price(&ctx, price).await?;
    Ok(accepted(StatusCode::CREATED, o.consistency_token, o))
}
