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

use eventfold_http::Id as Key;
use eventfold_http::{Amount, Currency, Name, Text, Timestamp, Title};
use schemars::JsonSchema;

use super::{ApiError, CommandApi, Ctx};
use crate::CommandOutcome;

/// A JSON body; an empty body reads as `{}`. Rejections use the API's error shape.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = eventfold_http::text_header(
            request.headers(),
            axum::http::header::CONTENT_TYPE.as_str(),
        )?
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
        eventfold_http::uuid_path("id", &raw).map(Id)
    }
}

/// An answer carrying a consistency token; `Idempotent-Replayed: true` when it repeats
/// the first attempt's (whose body it is, exactly).
fn accepted(status: StatusCode, token: Position, replayed: bool, body: impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&token.to_string()) {
        response.headers_mut().insert("x-consistency-token", value);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn outcome(o: CommandOutcome) -> Result<Response, ApiError> {
    Ok(accepted(StatusCode::OK, o.consistency_token, o.replayed, o))
}

// The edge's largest amount is the domain's: a price the document accepts is not
// refused by the aggregate (a line's total, quantity × price, is checked there).
const _: () = assert!(eventfold_http::MAX_SAFE_INTEGER == eventfold_domain::money::MAX_AMOUNT);

/// A purchase line.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurchaseRequest {
    /// The buyer.
    user_id: Key,
    /// The product.
    sku: Key,
    /// Its title.
    title: Title,
    /// Its category (`coffee`, `tea`, …): consumable categories get reminders.
    category: Name,
    /// Units bought.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    quantity: u32,
    /// Price per unit in minor units (kopecks).
    unit_price: Amount,
    /// ISO 4217 (default `RUB`).
    #[serde(default)]
    currency: Currency,
    /// When (default: now).
    purchased_at: Option<Timestamp>,
}

pub(crate) async fn record_purchase<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Body(r): Body<PurchaseRequest>,
) -> Result<Response, ApiError> {
    let purchase = PurchaseRecorded {
        user_id: r.user_id.into_inner(),
        sku: r.sku.into_inner(),
        title: r.title.into_inner(),
        category: r.category.into_inner(),
        quantity: r.quantity,
        unit_price: r.unit_price.0,
        currency: r.currency.0,
        purchased_at: r.purchased_at.map_or_else(Utc::now, |t| t.0),
    };
    let result = api.service.record_purchase(&ctx, purchase).await?;
    let (token, replayed) = (result.consistency_token, result.purchase.replayed);
    Ok(accepted(StatusCode::CREATED, token, replayed, result))
}

/// A speaker woke up.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivationRequest {
    /// Whose speaker.
    user_id: Key,
    /// When (default: now).
    activated_at: Option<Timestamp>,
    /// The speaker's UTC offset, minutes (UTC-14:00 to UTC+14:00).
    #[serde(default)]
    #[schemars(range(min = -840, max = 840))]
    utc_offset_minutes: i32,
}

pub(crate) async fn record_activation<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Path(device_id): Path<String>,
    Body(r): Body<ActivationRequest>,
) -> Result<Response, ApiError> {
    let device_id = Key::from_path("device_id", device_id)?.into_inner();
    if !(-840..=840).contains(&r.utc_offset_minutes) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "utc_offset_minutes must be between -840 and 840 (UTC-14:00 to UTC+14:00)",
        ));
    }
    let activation = DeviceActivated {
        device_id,
        user_id: r.user_id.into_inner(),
        activated_at: r.activated_at.map_or_else(Utc::now, |t| t.0),
        utc_offset_minutes: r.utc_offset_minutes,
    };
    let o = api.service.record_activation(&ctx, activation).await?;
    Ok(accepted(
        StatusCode::CREATED,
        o.consistency_token,
        o.replayed,
        o,
    ))
}

/// Which speaker offers.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OfferRequest {
    /// The speaker.
    device_id: Option<Key>,
}

pub(crate) async fn offer<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(r): Body<OfferRequest>,
) -> Result<Response, ApiError> {
    outcome(
        api.service
            .offer(&ctx, id, r.device_id.map(Key::into_inner))
            .await?,
    )
}

/// No fields (an empty body is fine too).
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

pub(crate) async fn accept<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    let result = api.service.accept(&ctx, id).await?;
    let (token, replayed) = (result.consistency_token, result.reminder.replayed);
    Ok(accepted(StatusCode::OK, token, replayed, result))
}

pub(crate) async fn decline<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    outcome(api.service.decline(&ctx, id).await?)
}

/// Later.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnoozeRequest {
    /// Until when (in the future).
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

/// Why.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelRequest {
    /// Free text.
    reason: Option<Title>,
}

pub(crate) async fn cancel_order<S: EventStore>(
    State(api): State<CommandApi<S>>,
    Ctx(ctx): Ctx,
    Id(id): Id,
    Body(r): Body<CancelRequest>,
) -> Result<Response, ApiError> {
    let reason = r
        .reason
        .map_or_else(|| "cancelled by the user".to_owned(), Text::into_inner);
    outcome(api.service.cancel_order(&ctx, id, reason).await?)
}

/// A workout begins.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartWorkoutRequest {
    /// Its id (default: derived from the Idempotency-Key, else random).
    workout_id: Option<Uuid>,
    /// The athlete.
    user_id: Key,
    /// `running`, `cycling`, …
    sport: Name,
    /// A distance goal, metres.
    #[schemars(range(min = 0.0, max = 1_000_000.0))]
    goal_distance_m: Option<f64>,
}

/// A started workout.
#[derive(Serialize, JsonSchema)]
pub(crate) struct StartedWorkout {
    /// Its id.
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
        .start_workout(
            &ctx,
            workout_id,
            r.user_id.into_inner(),
            r.sport.into_inner(),
            r.goal_distance_m,
        )
        .await?;
    Ok(accepted(
        StatusCode::CREATED,
        o.consistency_token,
        o.replayed,
        StartedWorkout {
            workout_id,
            outcome: o,
        },
    ))
}

/// Progress.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateWorkoutRequest {
    /// Metres so far.
    #[schemars(range(min = 0.0, max = 1_000_000.0))]
    distance_m: Option<f64>,
    /// Beats per minute.
    #[schemars(range(min = 20, max = 250))]
    heart_rate: Option<u32>,
    /// Metres per second.
    #[schemars(range(min = 0.0, max = 100.0))]
    speed_mps: Option<f64>,
    /// GPS points (at most 500 per update).
    #[serde(default)]
    #[schemars(length(max = 500))]
    points: Vec<PointRequest>,
}

/// A GPS point.
#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(crate) struct PointRequest {
    /// Latitude, degrees.
    #[schemars(range(min = -90.0, max = 90.0))]
    lat: f64,
    /// Longitude, degrees.
    #[schemars(range(min = -180.0, max = 180.0))]
    lon: f64,
    /// When it was taken.
    at: Timestamp,
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
                points: r
                    .points
                    .iter()
                    .map(|p| GeoPoint {
                        lat: p.lat,
                        lon: p.lon,
                        at: p.at.0,
                    })
                    .collect(),
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

/// The end.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteWorkoutRequest {
    /// Final metres.
    #[schemars(range(min = 0.0, max = 1_000_000.0))]
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
                reason: r.reason.clone().map(Text::into_inner),
                at,
            })
            .await?,
    )
}

/// A sku's price and availability.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceRequest {
    /// The product.
    sku: Key,
    /// Its title.
    title: Title,
    /// Minor units per unit.
    unit_price: Amount,
    /// ISO 4217 (default `RUB`).
    #[serde(default)]
    currency: Currency,
    /// Whether it can be delivered (default true).
    #[serde(default = "yes")]
    available: bool,
    /// Quoted delivery, days.
    #[serde(default)]
    #[schemars(range(max = 4_294_967_295u32))]
    delivery_days: u32,
    /// When (default: now).
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
    let stamped = r.changed_at.is_none();
    let price = PriceChanged {
        sku: r.sku.into_inner(),
        title: r.title.into_inner(),
        unit_price: r.unit_price.0,
        currency: r.currency.0,
        available: r.available,
        delivery_days: r.delivery_days,
        // Stamped by the service when not given (`set_price_now`).
        changed_at: r.changed_at.map_or_else(Utc::now, |t| t.0),
    };
    let o = if stamped {
        api.service.set_price_now(&ctx, price).await?
    } else {
        api.service.set_price(&ctx, price).await?
    };
    Ok(accepted(
        StatusCode::CREATED,
        o.consistency_token,
        o.replayed,
        o,
    ))
}
