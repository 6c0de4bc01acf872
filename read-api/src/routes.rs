//! Query handlers.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{Duration, Utc};
use eventfold_event_log::EventStore;
use eventfold_http::{ApiError, Caller, Principal};
use eventfold_projections::models::{leaderboard, orders, purchases, reminders, voice, workouts};
use eventfold_projections::{measure_lag, ProjectionState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::consistency::{requested, wait_for};
use crate::QueryApi;

/// Query-string parameters; rejections in the API's error shape.
pub(crate) struct Params<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", e.body_text()))
    }
}

type Answer = Result<Json<Value>, ApiError>;

fn store_error(error: eventfold_projections::Error) -> ApiError {
    tracing::error!(%error, "read model query failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the read store is unavailable; retry later",
    )
}

fn authorize(principal: &Principal, user_id: &str) -> Result<(), ApiError> {
    if principal.may_act_for(user_id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} may not read {user_id}'s data", principal.subject),
        ))
    }
}

fn not_found(error: &'static str, what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, error, format!("{what} not found"))
}

/// `limit` (1–500, default 50), `offset` and the consistency token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    after: Option<String>,
}

struct Page {
    limit: i64,
    offset: i64,
}

fn page(limit: Option<i64>, offset: Option<i64>) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(50);
    let offset = offset.unwrap_or(0);
    if !(1..=500).contains(&limit) || offset < 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "limit must be 1-500 and offset >= 0",
        ));
    }
    Ok(Page { limit, offset })
}

fn paged<T: Serialize>(items: Vec<T>, page: &Page) -> Json<Value> {
    let next = (items.len() as i64 == page.limit).then_some(page.offset + page.limit);
    Json(json!({ "items": items, "limit": page.limit, "offset": page.offset, "next_offset": next }))
}

/// Waits for `names` when the caller passed a consistency token.
async fn consistent<L>(
    api: &QueryApi<L>,
    names: &[&str],
    after: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let token = requested(after, headers)?;
    wait_for(&api.board, names, token, api.consistency_wait).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DueQuery {
    limit: Option<usize>,
    at: Option<eventfold_http::Timestamp>,
    after: Option<String>,
}

/// The voice answer.
pub(crate) async fn due<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<DueQuery>,
    headers: HeaderMap,
) -> Answer {
    authorize(&principal, &user_id)?;
    let limit = q.limit.unwrap_or(3).clamp(1, 20);
    let redis_healthy = api.redis.is_some()
        && api
            .board
            .status("voice_due.v1")
            .is_none_or(|s| s.state != ProjectionState::Retrying);
    let names: &[&str] = if redis_healthy {
        &["voice_due.v1"]
    } else {
        &["reminders.v1", "catalog.v1"]
    };
    consistent(&api, names, q.after.as_deref(), &headers).await?;
    let redis = if redis_healthy {
        api.redis.as_ref().map(|r| (&r.client, &r.keys))
    } else {
        None
    };
    let now = q.at.map_or_else(Utc::now, |t| t.0);
    let (offers, source) =
        voice::due_now(redis, api.voice_redis_budget, &api.db, &user_id, now, limit)
            .await
            .map_err(store_error)?;
    if source == voice::Source::Relational && api.redis.is_some() {
        metrics::counter!("eventfold_voice_degraded_total").increment(1);
    }
    Ok(Json(
        json!({ "user_id": user_id, "at": now, "source": source, "offers": offers }),
    ))
}

pub(crate) async fn reminders<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<PageQuery>,
    headers: HeaderMap,
) -> Answer {
    authorize(&principal, &user_id)?;
    let p = page(q.limit, q.offset)?;
    consistent(&api, &["reminders.v1"], q.after.as_deref(), &headers).await?;
    let items = reminders::for_user(&api.db, &user_id, p.limit, p.offset)
        .await
        .map_err(store_error)?;
    Ok(paged(items, &p))
}

pub(crate) async fn user_orders<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<PageQuery>,
    headers: HeaderMap,
) -> Answer {
    authorize(&principal, &user_id)?;
    let p = page(q.limit, q.offset)?;
    consistent(&api, &["orders.v1"], q.after.as_deref(), &headers).await?;
    let items = orders::for_user(&api.db, &user_id, p.limit, p.offset)
        .await
        .map_err(store_error)?;
    Ok(paged(items, &p))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AfterQuery {
    after: Option<String>,
}

pub(crate) async fn order<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(order_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer {
    consistent(&api, &["orders.v1"], q.after.as_deref(), &headers).await?;
    let order = orders::get(&api.db, &order_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("order_not_found", "order"))?;
    authorize(&principal, &order.user_id)?;
    Ok(Json(json!(order)))
}

pub(crate) async fn consumables<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer {
    authorize(&principal, &user_id)?;
    consistent(&api, &["purchases.v1"], q.after.as_deref(), &headers).await?;
    let items = purchases::consumables(&api.db, &user_id)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "items": items })))
}

pub(crate) async fn purchases<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<PageQuery>,
    headers: HeaderMap,
) -> Answer {
    authorize(&principal, &user_id)?;
    let p = page(q.limit, q.offset)?;
    consistent(&api, &["purchases.v1"], q.after.as_deref(), &headers).await?;
    let items = purchases::for_user(&api.db, &user_id, p.limit, p.offset)
        .await
        .map_err(store_error)?;
    Ok(paged(items, &p))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkoutsQuery {
    from: Option<eventfold_http::Timestamp>,
    to: Option<eventfold_http::Timestamp>,
    limit: Option<i64>,
    offset: Option<i64>,
    after: Option<String>,
}

pub(crate) async fn workouts<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<WorkoutsQuery>,
    headers: HeaderMap,
) -> Answer {
    authorize(&principal, &user_id)?;
    let p = page(q.limit, q.offset)?;
    let to = q.to.map_or_else(|| Utc::now() + Duration::days(1), |t| t.0);
    // Inside the accepted years, 30 days back cannot leave the calendar.
    let from = q.from.map_or(to - Duration::days(30), |t| t.0);
    if from >= to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "`from` must be before `to`",
        ));
    }
    consistent(&api, &["workouts.v1"], q.after.as_deref(), &headers).await?;
    let items = workouts::list(&api.db, &user_id, from, to, p.limit, p.offset)
        .await
        .map_err(store_error)?;
    Ok(paged(items, &p))
}

pub(crate) async fn workout<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(workout_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer {
    consistent(&api, &["workouts.v1"], q.after.as_deref(), &headers).await?;
    let w = workouts::get(&api.db, &workout_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("workout_not_found", "workout"))?;
    authorize(&principal, &w.user_id)?;
    Ok(Json(json!(w)))
}

pub(crate) async fn route<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(workout_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer {
    consistent(&api, &["workouts.v1"], q.after.as_deref(), &headers).await?;
    let w = workouts::get(&api.db, &workout_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("workout_not_found", "workout"))?;
    authorize(&principal, &w.user_id)?;
    let points = workouts::route(&api.db, &workout_id)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "workout_id": workout_id, "points": points })))
}

pub(crate) async fn stats<L: EventStore>(
    State(api): State<QueryApi<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer {
    authorize(&principal, &user_id)?;
    consistent(&api, &["workouts.v1"], q.after.as_deref(), &headers).await?;
    let stats = workouts::stats(&api.db, &user_id)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "user_id": user_id, "stats": stats })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaderboardQuery {
    week: Option<String>,
    limit: Option<isize>,
    after: Option<String>,
}

pub(crate) async fn leaderboard<L: EventStore>(
    State(api): State<QueryApi<L>>,
    _: Caller,
    Path(sport): Path<String>,
    Params(q): Params<LeaderboardQuery>,
    headers: HeaderMap,
) -> Answer {
    let Some(redis) = &api.redis else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "leaderboards need Redis, which is not configured (REDIS_URL)",
        ));
    };
    let week = q
        .week
        .unwrap_or_else(|| eventfold_projections::models::iso_week(Utc::now()));
    let valid_week = week.len() == 8 && week.as_bytes()[4] == b'-' && week.as_bytes()[5] == b'W';
    if !valid_week {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "week must look like 2026-W48",
        ));
    }
    consistent(&api, &["leaderboards.v1"], q.after.as_deref(), &headers).await?;
    let top = leaderboard::top(
        &redis.client,
        &redis.keys,
        &sport,
        &week,
        q.limit.unwrap_or(10).clamp(1, 100),
    )
    .await
    .map_err(store_error)?;
    Ok(Json(json!({ "sport": sport, "week": week, "top": top })))
}

pub(crate) async fn projections<L: EventStore>(
    State(api): State<QueryApi<L>>,
    _: Caller,
) -> Answer {
    let mut items = Vec::new();
    for status in api.board.statuses() {
        let lag = measure_lag(&api.log, status.checkpoint)
            .await
            .map_err(store_error)?;
        items.push(json!({
            "name": status.name, "state": status.state, "checkpoint": status.checkpoint, "head": lag.head,
            "lag_events": lag.events, "lag_seconds": lag.seconds, "parked": status.parked, "last_error": status.last_error,
        }));
    }
    Ok(Json(json!({ "items": items })))
}
