//! Query handlers.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{Duration, Utc};
use eventfold_event_log::EventStore;
use eventfold_http::{ApiError, Caller, Principal};
use eventfold_http::{Bounded, Name};
use eventfold_projections::models::{leaderboard, orders, purchases, reminders, voice, workouts};
use eventfold_projections::{handed_over_at, measure_lag, ProjectionState};
use schemars::JsonSchema;
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

type Answer<T = Value> = Result<Json<T>, ApiError>;

/// The longest offset a page may start at.
const MAX_OFFSET: i64 = 1_000_000_000;

/// A page of a list that grows.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Paged<T> {
    /// The items.
    items: Vec<T>,
    /// The page size asked for.
    limit: i64,
    /// Where this page starts.
    offset: i64,
    /// Where the next page starts; `null` on the last page.
    next_offset: Option<i64>,
}

/// A whole list.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Items<T> {
    /// The items.
    pub(crate) items: Vec<T>,
}

/// The voice answer.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DueAnswer {
    /// Whose.
    user_id: String,
    /// The time it was asked for.
    at: chrono::DateTime<Utc>,
    /// Where it came from.
    source: voice::Source,
    /// What to offer, most overdue first.
    offers: Vec<voice::DueOffer>,
}

/// A workout's route.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RouteAnswer {
    /// The workout.
    #[schemars(with = "uuid::Uuid")]
    workout_id: String,
    /// Its points in recording order.
    points: Vec<workouts::RoutePoint>,
}

/// A user's workout statistics.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct StatsAnswer {
    /// Whose.
    user_id: String,
    /// `null` before the first completed workout.
    stats: Option<workouts::WorkoutStats>,
}

/// A leaderboard.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct LeaderboardAnswer {
    /// The sport.
    sport: String,
    /// The ISO week.
    week: String,
    /// The places, best first.
    top: Vec<leaderboard::Place>,
}

/// One projection's progress.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ProjectionItem {
    /// Versioned name.
    name: String,
    /// `running`, `retrying`, `rebuilding`, `standby` (another process runs it), ….
    state: String,
    /// The process that runs it (its lease holder): `eventfold HOST pid PID`.
    owner: Option<String>,
    /// The last position applied from the log (for a model fed from Kafka: where the
    /// projector workers took it over).
    checkpoint: i64,
    /// The log's head.
    head: i64,
    /// Events behind; `null` for a model fed from Kafka (its progress is in its
    /// per-partition checkpoints, which the log cannot measure: see the workers).
    lag_events: Option<i64>,
    /// Seconds behind; `null` for a model fed from Kafka.
    lag_seconds: Option<f64>,
    /// Set when projector workers took the model over from the log, at this position
    /// (`projections reset` hands it back).
    fed_from_kafka_since: Option<i64>,
    /// For a model fed from Kafka: each partition's feed (`{topic}#{partition}`) and
    /// the log position it has applied, as the workers stored it; `null` otherwise, or
    /// when the store did not answer within a second.
    partitions: Option<std::collections::BTreeMap<String, i64>>,
    /// Events parked (failed for good, skipped).
    parked: u64,
    /// The last error, if any.
    last_error: Option<String>,
}

impl<L> crate::QueryApi<L> {
    /// A read-model query behind the read store's circuit breaker: refused at once (503
    /// `unavailable`, `Retry-After`) while the store does not answer, rather than
    /// waiting out the pool's timeout; a failure that may mean the store is gone has it
    /// probed.
    pub(crate) async fn read<T>(
        &self,
        query: impl std::future::Future<Output = eventfold_projections::Result<T>>,
    ) -> Result<T, ApiError> {
        self.db
            .breaker()
            .run(query, eventfold_projections::Error::database_error)
            .await
            .map_err(store_error)
    }

    /// A failed read-model query as an answer, the breaker told.
    pub(crate) fn read_failed(&self, error: eventfold_projections::Error) -> ApiError {
        if let Some(db) = error.database_error() {
            self.db.breaker().failed(db);
        }
        store_error(error)
    }
}

fn store_error(error: eventfold_projections::Error) -> ApiError {
    let store = match &error {
        eventfold_projections::Error::Redis(_) => "Redis",
        eventfold_projections::Error::Log(_) => "the event log",
        eventfold_projections::Error::Unavailable { store, .. } => store,
        _ => "the read store",
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{store} is unavailable; retry later"),
    )
    .with_cause(&error)
}

pub(crate) fn authorize(principal: &Principal, user_id: &str) -> Result<(), ApiError> {
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
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// Page size, 1-500 (default 50).
    limit: Option<Bounded<1, 500>>,
    /// Items to skip (default 0).
    offset: Option<Bounded<0, MAX_OFFSET>>,
    /// A command's consistency token: wait (bounded) until the read model has applied it.
    #[schemars(with = "Option<i64>", range(min = 0))]
    after: Option<String>,
}

struct Page {
    limit: i64,
    offset: i64,
}

fn page(limit: Option<Bounded<1, 500>>, offset: Option<Bounded<0, MAX_OFFSET>>) -> Page {
    Page {
        limit: Bounded::or(limit, 50),
        offset: Bounded::or(offset, 0),
    }
}

fn paged<T: Serialize>(items: Vec<T>, page: &Page) -> Json<Paged<T>> {
    let next = (items.len() as i64 == page.limit).then_some(page.offset + page.limit);
    Json(Paged {
        items,
        limit: page.limit,
        offset: page.offset,
        next_offset: next,
    })
}

pub(crate) fn user(raw: String) -> Result<String, ApiError> {
    eventfold_http::Id::from_path("user_id", raw).map(eventfold_http::Id::into_inner)
}

/// Waits for `names` when the caller passed a consistency token.
pub(crate) async fn consistent<L: EventStore>(
    api: &QueryApi<L>,
    names: &[&str],
    after: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    // A model rebuilt for a version bump is not served from until it is swapped in:
    // its tables (or keys) still hold what the previous version built, in that
    // version's shape.
    for name in names {
        if api.board.state_of(name) == ProjectionState::Rebuilding {
            let why = api.board.status(name).and_then(|s| s.last_error);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rebuilding",
                format!("the read model {name} is being rebuilt; retry later"),
            )
            .with_details(json!({ "projection": name, "why": why })));
        }
    }
    let token = requested(after, headers)?;
    if let Some(token) = token {
        // A model projector workers feed from Kafka: its progress is in per-partition
        // checkpoints this process does not follow, so no wait could tell whether it
        // holds the caller's write (before, every such read waited out its bound and
        // answered 503 `not_caught_up`, which invites retries that cannot succeed).
        let fed = names
            .iter()
            .find_map(|name| handed_over_at(api.board.checkpoint_of(name)).map(|at| (*name, at)));
        if let Some((name, at)) = fed {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "fed_from_kafka",
                format!(
                    "the read model {name} is fed from Kafka by projector workers (since position {at}): this process cannot tell whether it holds position {token}; read without `after`"
                ),
            )
            .with_details(json!({ "projection": name, "token": token, "fed_from_kafka_since": at })));
        }
        let behind = names.iter().any(|n| api.board.checkpoint_of(n) < token);
        // Only a position the log has reached was ever answered to a command: a token
        // ahead of the head was not issued by this log, and waiting cannot help.
        if behind {
            let head = api.log.head().await.map_err(|e| store_error(e.into()))?;
            if token > head {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "token_ahead_of_log",
                    format!("consistency token {token} is ahead of the log's head {head}: it was not issued by this log"),
                )
                .with_details(json!({ "token": token, "head": head })));
            }
        }
    }
    wait_for(&api.board, names, token, api.consistency_wait).await
}

/// The voice route's query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DueQuery {
    /// Offers at most (1-20, default 3).
    limit: Option<Bounded<1, 20>>,
    /// As of when (default: now).
    at: Option<eventfold_http::Timestamp>,
    /// A command's consistency token: wait (bounded) until the read model has applied it.
    #[schemars(with = "Option<i64>", range(min = 0))]
    after: Option<String>,
}

/// The voice answer.
pub(crate) async fn due<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<DueQuery>,
    headers: HeaderMap,
) -> Answer<DueAnswer> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    let limit = Bounded::or(q.limit, 3usize);
    // Rebuilt for a version bump, the Redis model's keys hold what the previous
    // version built: answered from the relational models meanwhile. So is a read of
    // one's own write when projector workers feed the Redis model from Kafka (this
    // process cannot tell whether it holds the write; the relational models may).
    let redis_healthy = api.redis.is_some()
        && !matches!(
            api.board.state_of("voice_due.v1"),
            ProjectionState::Retrying | ProjectionState::Rebuilding
        )
        && !(q.after.is_some()
            && handed_over_at(api.board.checkpoint_of("voice_due.v1")).is_some());
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
            .map_err(|error| api.read_failed(error))?;
    if source == voice::Source::Relational && api.redis.is_some() {
        metrics::counter!("eventfold_voice_degraded_total").increment(1);
    }
    Ok(Json(DueAnswer {
        user_id,
        at: now,
        source,
        offers,
    }))
}

pub(crate) async fn reminders<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<PageQuery>,
    headers: HeaderMap,
) -> Answer<Paged<reminders::ReminderView>> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    let p = page(q.limit, q.offset);
    consistent(&api, &["reminders.v1"], q.after.as_deref(), &headers).await?;
    let items = api
        .read(reminders::for_user(&api.db, &user_id, p.limit, p.offset))
        .await?;
    Ok(paged(items, &p))
}

pub(crate) async fn user_orders<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<PageQuery>,
    headers: HeaderMap,
) -> Answer<Paged<orders::OrderView>> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    let p = page(q.limit, q.offset);
    consistent(&api, &["orders.v1"], q.after.as_deref(), &headers).await?;
    let items = api
        .read(orders::for_user(&api.db, &user_id, p.limit, p.offset))
        .await?;
    Ok(paged(items, &p))
}

/// Only the consistency token.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AfterQuery {
    /// A command's consistency token: wait (bounded) until the read model has applied it.
    #[schemars(with = "Option<i64>", range(min = 0))]
    after: Option<String>,
}

impl AfterQuery {
    /// The token, if given.
    pub(crate) fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }
}

pub(crate) async fn order<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(order_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer<orders::OrderView> {
    let order_id = eventfold_http::uuid_path("order_id", &order_id)?.to_string();
    consistent(&api, &["orders.v1"], q.after.as_deref(), &headers).await?;
    let order = api
        .read(orders::get(&api.db, &order_id))
        .await?
        .ok_or_else(|| not_found("order_not_found", "order"))?;
    authorize(&principal, &order.user_id)?;
    Ok(Json(order))
}

pub(crate) async fn consumables<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer<Items<purchases::ConsumableView>> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    consistent(&api, &["purchases.v1"], q.after.as_deref(), &headers).await?;
    let items = api.read(purchases::consumables(&api.db, &user_id)).await?;
    Ok(Json(Items { items }))
}

pub(crate) async fn purchases<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<PageQuery>,
    headers: HeaderMap,
) -> Answer<Paged<purchases::PurchaseView>> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    let p = page(q.limit, q.offset);
    consistent(&api, &["purchases.v1"], q.after.as_deref(), &headers).await?;
    let items = api
        .read(purchases::for_user(&api.db, &user_id, p.limit, p.offset))
        .await?;
    Ok(paged(items, &p))
}

/// A time window and a page.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkoutsQuery {
    /// Started at or after (default: 30 days before `to`).
    from: Option<eventfold_http::Timestamp>,
    /// Started before (default: a day from now). An empty window lists nothing.
    to: Option<eventfold_http::Timestamp>,
    /// Page size, 1-500 (default 50).
    limit: Option<Bounded<1, 500>>,
    /// Items to skip (default 0).
    offset: Option<Bounded<0, MAX_OFFSET>>,
    /// A command's consistency token: wait (bounded) until the read model has applied it.
    #[schemars(with = "Option<i64>", range(min = 0))]
    after: Option<String>,
}

pub(crate) async fn workouts<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<WorkoutsQuery>,
    headers: HeaderMap,
) -> Answer<Paged<workouts::WorkoutView>> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    let p = page(q.limit, q.offset);
    let to = q.to.map_or_else(|| Utc::now() + Duration::days(1), |t| t.0);
    // Inside the accepted years, 30 days back cannot leave the calendar.
    let from = q.from.map_or(to - Duration::days(30), |t| t.0);
    consistent(&api, &["workouts.v2"], q.after.as_deref(), &headers).await?;
    let items = if from < to {
        api.read(workouts::list(
            &api.db, &user_id, from, to, p.limit, p.offset,
        ))
        .await?
    } else {
        Vec::new()
    };
    Ok(paged(items, &p))
}

pub(crate) async fn workout<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(workout_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer<workouts::WorkoutView> {
    let workout_id = eventfold_http::uuid_path("workout_id", &workout_id)?.to_string();
    consistent(&api, &["workouts.v2"], q.after.as_deref(), &headers).await?;
    let w = api
        .read(workouts::get(&api.db, &workout_id))
        .await?
        .ok_or_else(|| not_found("workout_not_found", "workout"))?;
    authorize(&principal, &w.user_id)?;
    Ok(Json(w))
}

pub(crate) async fn route<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(workout_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer<RouteAnswer> {
    let workout_id = eventfold_http::uuid_path("workout_id", &workout_id)?.to_string();
    consistent(&api, &["workouts.v2"], q.after.as_deref(), &headers).await?;
    let w = api
        .read(workouts::get(&api.db, &workout_id))
        .await?
        .ok_or_else(|| not_found("workout_not_found", "workout"))?;
    authorize(&principal, &w.user_id)?;
    let points = api.read(workouts::route(&api.db, &workout_id)).await?;
    Ok(Json(RouteAnswer { workout_id, points }))
}

pub(crate) async fn stats<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    Caller { principal, .. }: Caller,
    Path(user_id): Path<String>,
    Params(q): Params<AfterQuery>,
    headers: HeaderMap,
) -> Answer<StatsAnswer> {
    let user_id = user(user_id)?;
    authorize(&principal, &user_id)?;
    consistent(&api, &["workouts.v2"], q.after.as_deref(), &headers).await?;
    let stats = api.read(workouts::stats(&api.db, &user_id)).await?;
    Ok(Json(StatsAnswer { user_id, stats }))
}

/// Which week, how many places.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaderboardQuery {
    /// ISO week, e.g. `2026-W48` (default: this week).
    #[schemars(with = "Option<eventfold_http::IsoWeek>")]
    week: Option<String>,
    /// Places at most (1-100, default 10).
    limit: Option<Bounded<1, 100>>,
    /// A command's consistency token: wait (bounded) until the read model has applied it.
    #[schemars(with = "Option<i64>", range(min = 0))]
    after: Option<String>,
}

pub(crate) async fn leaderboard<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    _: Caller,
    Path(sport): Path<String>,
    Params(q): Params<LeaderboardQuery>,
    headers: HeaderMap,
) -> Answer<LeaderboardAnswer> {
    let sport = Name::from_path("sport", sport)?.into_inner();
    // Bad input is a 4xx whether or not Redis is configured.
    let week = match q.week {
        Some(raw) => eventfold_http::IsoWeek::parse("week", raw)?.into_inner(),
        None => eventfold_projections::models::iso_week(Utc::now()),
    };
    let Some(redis) = &api.redis else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "leaderboards need Redis, which is not configured (REDIS_URL)",
        ));
    };
    consistent(&api, &[leaderboard::NAME], q.after.as_deref(), &headers).await?;
    let top = leaderboard::top(
        &redis.client,
        &redis.keys,
        &sport,
        &week,
        Bounded::or(q.limit, 10isize),
    )
    .await
    .map_err(store_error)?;
    Ok(Json(LeaderboardAnswer { sport, week, top }))
}

pub(crate) async fn projections<L: EventStore>(
    State(api): State<crate::Shared<L>>,
    _: Caller,
) -> Answer<Items<ProjectionItem>> {
    let mut items = Vec::new();
    for status in api.board.statuses() {
        let kafka = handed_over_at(status.checkpoint);
        let lag = measure_lag(&api.log, kafka.unwrap_or(status.checkpoint))
            .await
            .map_err(store_error)?;
        let state = serde_json::to_value(status.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let partitions = match (&api.feeds, kafka) {
            (Some(feeds), Some(_)) => feeds.of(&status.name).await,
            _ => None,
        };
        items.push(ProjectionItem {
            partitions,
            name: status.name,
            state,
            owner: status.owner,
            checkpoint: kafka.unwrap_or(status.checkpoint).0,
            head: lag.head.0,
            lag_events: kafka.is_none().then_some(lag.events),
            lag_seconds: kafka.is_none().then_some(lag.seconds),
            fed_from_kafka_since: kafka.map(|at| at.0),
            parked: status.parked,
            last_error: status.last_error,
        });
    }
    Ok(Json(Items { items }))
}
