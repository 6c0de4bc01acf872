//! The query and operations routes as the OpenAPI document describes them: each
//! route's parameters and answer are the schemas of the types its handler reads and
//! serializes ([`eventfold_http::openapi`]).

use eventfold_http::openapi::{inline, schema, RouteDoc, SchemaFn};
use eventfold_http::Name;
use eventfold_projections::models::analytics as facts;
use eventfold_projections::models::{orders, purchases, reminders, workouts};

use crate::analytics;
use uuid::Uuid;

use crate::routes::{
    AfterQuery, DueAnswer, DueQuery, Items, LeaderboardAnswer, LeaderboardQuery, PageQuery, Paged,
    ProjectionItem, RouteAnswer, StatsAnswer, WorkoutsQuery,
};

const USER: &[(&str, SchemaFn)] = &[("user_id", schema::<eventfold_http::Id>)];
const ORDER: &[(&str, SchemaFn)] = &[("order_id", schema::<Uuid>)];
const WORKOUT: &[(&str, SchemaFn)] = &[("workout_id", schema::<Uuid>)];

/// Every query and operations route with the types it reads and answers.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc::query_route(
        "/api/v1/users/{user_id}/reminders/due",
        "The voice answer: what to offer now",
    )
    .params(USER)
    .query(inline::<DueQuery>)
    .answers(200, schema::<DueAnswer>),
    RouteDoc::query_route(
        "/api/v1/users/{user_id}/reminders",
        "A user's reminders (paged)",
    )
    .params(USER)
    .query(inline::<PageQuery>)
    .answers(200, schema::<Paged<reminders::ReminderView>>),
    RouteDoc::query_route("/api/v1/users/{user_id}/orders", "A user's orders (paged)")
        .params(USER)
        .query(inline::<PageQuery>)
        .answers(200, schema::<Paged<orders::OrderView>>),
    RouteDoc::query_route("/api/v1/orders/{order_id}", "One order with its lines")
        .params(ORDER)
        .query(inline::<AfterQuery>)
        .answers(200, schema::<orders::OrderView>),
    RouteDoc::query_route(
        "/api/v1/users/{user_id}/consumables",
        "A user's consumables",
    )
    .params(USER)
    .query(inline::<AfterQuery>)
    .answers(200, schema::<Items<purchases::ConsumableView>>),
    RouteDoc::query_route(
        "/api/v1/users/{user_id}/purchases",
        "A user's purchases (paged)",
    )
    .params(USER)
    .query(inline::<PageQuery>)
    .answers(200, schema::<Paged<purchases::PurchaseView>>),
    RouteDoc::query_route(
        "/api/v1/users/{user_id}/workouts",
        "A user's workouts started in [from, to) (paged)",
    )
    .params(USER)
    .query(inline::<WorkoutsQuery>)
    .answers(200, schema::<Paged<workouts::WorkoutView>>),
    RouteDoc::query_route(
        "/api/v1/workouts/{workout_id}",
        "One workout's summary and details",
    )
    .params(WORKOUT)
    .query(inline::<AfterQuery>)
    .answers(200, schema::<workouts::WorkoutView>),
    RouteDoc::query_route(
        "/api/v1/workouts/{workout_id}/route",
        "A workout's route points",
    )
    .params(WORKOUT)
    .query(inline::<AfterQuery>)
    .answers(200, schema::<RouteAnswer>),
    RouteDoc::query_route(
        "/api/v1/users/{user_id}/workout-stats",
        "Totals, records and weekly activity",
    )
    .params(USER)
    .query(inline::<AfterQuery>)
    .answers(200, schema::<StatsAnswer>),
    RouteDoc::query_route(
        "/api/v1/leaderboards/{sport}",
        "Distance top for a sport and ISO week",
    )
    .params(&[("sport", schema::<Name>)])
    .query(inline::<LeaderboardQuery>)
    .answers(200, schema::<LeaderboardAnswer>),
    RouteDoc::query_route(
        "/api/v1/analytics/users/{user_id}/weekly-activity",
        "A user's completed workouts per ISO week (ClickHouse)",
    )
    .params(USER)
    .query(inline::<analytics::WeeksQuery>)
    .answers(200, schema::<analytics::UserRows<facts::WeekActivity>>),
    RouteDoc::query_route(
        "/api/v1/analytics/users/{user_id}/workouts",
        "A user's workout facts, newest first (ClickHouse)",
    )
    .params(USER)
    .query(inline::<analytics::LimitQuery>)
    .answers(200, schema::<analytics::UserRows<facts::WorkoutFact>>),
    RouteDoc::query_route(
        "/api/v1/analytics/users/{user_id}/purchases",
        "A user's purchases per month and category (ClickHouse)",
    )
    .params(USER)
    .query(inline::<AfterQuery>)
    .answers(200, schema::<analytics::UserRows<facts::PurchaseMonth>>),
    RouteDoc::query_route(
        "/api/v1/analytics/workouts/{workout_id}/route",
        "A workout's route points, kept six months (ClickHouse)",
    )
    .params(WORKOUT)
    .query(inline::<AfterQuery>)
    .answers(200, schema::<analytics::RoutePoints>),
    RouteDoc::query_route(
        "/api/v1/analytics/leaderboards/{sport}/weeks/{week}",
        "Any past week's leaderboard of a sport, by distance or duration (ClickHouse)",
    )
    .params(&[("sport", schema::<Name>), ("week", schema::<eventfold_http::IsoWeek>)])
    .query(inline::<analytics::WeekBoardQuery>)
    .answers(200, schema::<analytics::WeekBoard>),
    RouteDoc::query_route(
        "/api/v1/analytics/funnel",
        "Reminders scheduled, offered, accepted, orders placed by category and slot hour (ClickHouse; services)",
    )
    .query(inline::<AfterQuery>)
    .answers(200, schema::<Items<facts::FunnelRow>>),
    RouteDoc::new(
        "GET",
        "/api/v1/projections",
        "Projection checkpoints, state and lag",
        "operations",
    )
    .authenticated()
    .errors(&[400, 401, 429, 503])
    .answers(200, schema::<Items<ProjectionItem>>),
    RouteDoc::new("GET", "/healthz", "Liveness", "operations")
        .answers(200, schema::<serde_json::Value>),
    RouteDoc::new(
        "GET",
        "/readyz",
        "Readiness: stores reachable, projections running (503 with the same body when not)",
        "operations",
    )
    .answers(200, schema::<serde_json::Value>)
    .same_body_on(&[503]),
    RouteDoc::new("GET", "/metrics", "Prometheus metrics", "operations"),
];
