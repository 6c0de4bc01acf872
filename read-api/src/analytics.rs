//! `/api/v1/analytics/…`: the ClickHouse read models. Users read their own data;
//! the funnel is for services; leaderboards for anyone authenticated. ClickHouse not
//! configured or down: 503 in the error shape, and nothing else is affected.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use eventfold_event_log::EventStore;
use eventfold_http::{ApiError, Bounded, Caller, Name};
use eventfold_projections::models::analytics::{
    self, FunnelRow, PurchaseMonth, RankBy, RoutePoint, WeekActivity, WeekPlace, WorkoutFact,
};
use eventfold_projections::ClickHouseTarget;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::routes::{authorize, consistent, user, Items, Params};
use crate::QueryApi;

type Answer<T> = Result<Json<T>, ApiError>;

fn clickhouse<L>(api: &QueryApi<L>) -> Result<&ClickHouseTarget, ApiError> {
    api.clickhouse.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "analytics need ClickHouse, which is not configured (CLICKHOUSE_URL)",
        )
    })
}

fn unavailable(error: eventfold_projections::Error) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "ClickHouse is unavailable; retry later",
    )
    .with_cause(&error)
}

/// `?weeks=&after=`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeeksQuery {
    /// Weeks at most, newest first (1-520, default 12).
    weeks: Option<Bounded<1, 520>>,
    /// A command's consistency token: wait (bounded) until the read model has applied it.
    #[schemars(with = "Option<i64>", range(min = 0))]
    after: Option<String>,
}

/// `?limit=&after=`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitQuery {
    /// Rows at most (1-1000, default 100).
    limit: Option<Bounded<1, 1000>>,
    /// A command's consistency token: wait (bounded) until the read model has applied it.
    #[schemars(with = "Option<i64>", range(min = 0))]
    after: Option<String>,
}

/// `?by=&limit=&after=`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeekBoardQuery {
    /// Rank by total `distance` (default) or `duration`.
    by: Option<RankBy>,
    /// Places at most (1-100, default 10).
    limit: Option<Bounded<1, 100>>,
    /// A command's consistency token: wait (bounded) until the read model has applied it.
    #[schemars(with = "Option<i64>", range(min = 0))]
    after: Option<String>,
}

/// A user's rows.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct UserRows<T> {
    /// The user.
    user_id: String,
    /// The rows.
    items: Vec<T>,
}

/// One week's leaderboard of one sport.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WeekBoard {
    /// The sport.
    sport: String,
    /// The ISO week.
    week: String,
    /// What it ranks by.
    by: RankBy,
    /// The places, best first.
    top: Vec<WeekPlace>,
}

/// A workout's route points.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RoutePoints {
    /// The workout.
    workout_id: String,
    /// The points, in order.
    points: Vec<RoutePoint>,
}

pub(crate) async fn weekly<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<WeeksQuery>,
    headers: HeaderMap,
) -> Answer<UserRows<WeekActivity>> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    let target = clickhouse(&api)?;
    consistent(&api, &["workout_facts.v1"], q.after.as_deref(), &headers).await?;
    let items = analytics::weekly_activity(target, &user_id, Bounded::or(q.weeks, 12u32))
        .await
        .map_err(unavailable)?;
    Ok(Json(UserRows { user_id, items }))
}

pub(crate) async fn workouts<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<LimitQuery>,
    headers: HeaderMap,
) -> Answer<UserRows<WorkoutFact>> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    let target = clickhouse(&api)?;
    consistent(&api, &["workout_facts.v1"], q.after.as_deref(), &headers).await?;
    let items = analytics::workout_facts(target, &user_id, Bounded::or(q.limit, 100u32))
        .await
        .map_err(unavailable)?;
    Ok(Json(UserRows { user_id, items }))
}

pub(crate) async fn purchases<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<crate::routes::AfterQuery>,
    headers: HeaderMap,
) -> Answer<UserRows<PurchaseMonth>> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    let target = clickhouse(&api)?;
    consistent(&api, &["purchase_facts.v1"], q.after(), &headers).await?;
    let items = analytics::purchases_by_month(target, &user_id)
        .await
        .map_err(unavailable)?;
    Ok(Json(UserRows { user_id, items }))
}

pub(crate) async fn route<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(workout_id): Path<String>,
    Params(q): Params<crate::routes::AfterQuery>,
    headers: HeaderMap,
) -> Answer<RoutePoints> {
    let workout_id = eventfold_http::uuid_path("workout_id", &workout_id)?.to_string();
    let target = clickhouse(&api)?;
    consistent(&api, &["route_points.v1"], q.after(), &headers).await?;
    let (owner, points) = analytics::route(target, &workout_id)
        .await
        .map_err(unavailable)?;
    let Some(owner) = owner else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no workout {workout_id} in the analytics"),
        ));
    };
    authorize(&principal, &owner)?;
    Ok(Json(RoutePoints { workout_id, points }))
}

pub(crate) async fn leaderboard<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    _: Caller,
    Path((sport, week)): Path<(String, String)>,
    Params(q): Params<WeekBoardQuery>,
    headers: HeaderMap,
) -> Answer<WeekBoard> {
    let sport = Name::from_path("sport", sport)?.into_inner();
    let week = eventfold_http::IsoWeek::parse("week", week)?.into_inner();
    let target = clickhouse(&api)?;
    consistent(&api, &["workout_facts.v1"], q.after.as_deref(), &headers).await?;
    let by = q.by.unwrap_or(RankBy::Distance);
    let top = analytics::leaderboard_week(target, &sport, &week, by, Bounded::or(q.limit, 10u32))
        .await
        .map_err(unavailable)?;
    Ok(Json(WeekBoard {
        sport,
        week,
        by,
        top,
    }))
}

pub(crate) async fn funnel<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Params(q): Params<crate::routes::AfterQuery>,
    headers: HeaderMap,
) -> Answer<Items<FunnelRow>> {
    if principal.role != eventfold_http::Role::Service {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the re-order funnel is for services",
        ));
    }
    let target = clickhouse(&api)?;
    consistent(&api, &["reorder_funnel.v1"], q.after(), &headers).await?;
    let items = analytics::funnel(target).await.map_err(unavailable)?;
    Ok(Json(Items { items }))
}
