//! Analytical read models in ClickHouse, and the queries over them.
//!
//! | projection | tables | serves |
//! | --- | --- | --- |
//! | `workout_facts.v1` | `ch_workout_facts` (one row per completed workout) | workout facts, weekly activity per user, leaderboard history per sport and week |
//! | `route_points.v1` | `ch_route_points` (monthly partitions), `ch_route_workouts` | route points kept six months (a scheduled partition drop) |
//! | `purchase_facts.v1` | `ch_purchase_facts` | purchases per month and category |
//! | `reorder_funnel.v1` | `ch_funnel`, `ch_funnel_skus` | reminders scheduled → offered → accepted → orders placed, by category and slot hour |
//!
//! Leaderboards and weekly activity are aggregations of the facts at query time
//! (ClickHouse's strength) rather than tables of their own, so any past week of any
//! sport can be asked for. Every table is a `ReplacingMergeTree` versioned by the
//! event's position: re-applying a batch changes no answer.

use chrono::{DateTime, Datelike, Timelike, Utc};
use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use serde::{Deserialize, Serialize};

use crate::runtime::Projection;
use crate::store::{ChTables, ClickHouseProjection, ClickHouseTarget};
use crate::Result;

fn secs(at: DateTime<Utc>) -> u32 {
    u32::try_from(at.timestamp().max(0)).unwrap_or(u32::MAX)
}

fn version(record: &RecordedEvent) -> u64 {
    u64::try_from(record.global_position.0).unwrap_or(0)
}

async fn insert_rows<T: clickhouse::RowOwned + clickhouse::RowWrite>(
    tables: ChTables<'_>,
    table: &str,
    rows: &[T],
) -> Result<()> {
    crate::store::insert_rows(tables.client, &tables.table(table), rows).await
}

/// One completed workout.
#[derive(
    Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct WorkoutFact {
    /// The workout.
    pub workout_id: String,
    /// The athlete.
    pub user_id: String,
    /// The sport.
    pub sport: String,
    /// ISO week of its completion, `2026-W48`.
    pub week: String,
    /// When it was completed (Unix seconds).
    pub completed_at: u32,
    /// Seconds moving.
    pub duration_s: i64,
    /// Metres.
    pub distance_m: f64,
    /// Kilocalories, when a device reported them (none of the reference domain's
    /// events carry them yet).
    pub calories: Option<f64>,
    /// Metres per second.
    pub avg_speed_mps: f64,
    /// The completion's position in the log.
    pub version: u64,
}

/// `workout_facts.v1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkoutFactsProjection;

impl Projection for WorkoutFactsProjection {
    fn name(&self) -> &'static str {
        "workout_facts.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "WorkoutCompleted"
    }
}

#[async_trait::async_trait]
impl ClickHouseProjection for WorkoutFactsProjection {
    fn schema(&self) -> &'static [&'static str] {
        &["CREATE TABLE IF NOT EXISTS ch_workout_facts (workout_id String, user_id String, sport String, week String, \
           completed_at DateTime, duration_s Int64, distance_m Float64, calories Nullable(Float64), avg_speed_mps Float64, \
           version UInt64) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(completed_at) ORDER BY workout_id"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["ch_workout_facts"]
    }

    async fn insert(
        &self,
        tables: ChTables<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()> {
        let rows: Vec<WorkoutFact> = events
            .iter()
            .filter_map(|(record, event)| match event {
                DomainEvent::WorkoutCompleted(e) => Some(WorkoutFact {
                    workout_id: e.workout_id.to_string(),
                    user_id: e.user_id.clone(),
                    sport: e.sport.clone(),
                    week: super::iso_week(e.completed_at),
                    completed_at: secs(e.completed_at),
                    duration_s: e.active_seconds,
                    distance_m: e.distance_m,
                    calories: None,
                    avg_speed_mps: e.avg_speed_mps,
                    version: version(record),
                }),
                _ => None,
            })
            .collect();
        insert_rows::<WorkoutFact>(tables, "ch_workout_facts", &rows).await
    }
}

/// A GPS fix of a workout.
#[derive(
    Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct RoutePoint {
    /// The workout.
    pub workout_id: String,
    /// The update's position in the log.
    pub position: i64,
    /// The fix's place in its update.
    pub idx: u32,
    /// Degrees.
    pub lat: f64,
    /// Degrees.
    pub lon: f64,
    /// When it was taken (Unix seconds).
    pub at: u32,
    /// The update's position in the log (as `position`).
    pub version: u64,
}

/// The route points an event adds (a `WorkoutUpdated`'s GPS fixes).
pub fn route_points_of(record: &RecordedEvent, event: &DomainEvent) -> Vec<RoutePoint> {
    let DomainEvent::WorkoutUpdated(e) = event else {
        return Vec::new();
    };
    e.points
        .iter()
        .enumerate()
        .map(|(idx, p)| RoutePoint {
            workout_id: e.workout_id.to_string(),
            position: record.global_position.0,
            idx: u32::try_from(idx).unwrap_or(u32::MAX),
            lat: p.lat,
            lon: p.lon,
            at: secs(p.at),
            version: version(record),
        })
        .collect()
}

/// Whose a workout's route is (the owner check of the route query).
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct RouteWorkout {
    /// The workout.
    pub workout_id: String,
    /// Its athlete.
    pub user_id: String,
    /// Unix seconds.
    pub started_at: u32,
    /// The event's position.
    pub version: u64,
}

/// The rows `route_points.v1` writes for `events`: workouts (owners) and points.
pub fn route_rows_of(
    events: &[(&RecordedEvent, &DomainEvent)],
) -> (Vec<RouteWorkout>, Vec<RoutePoint>) {
    let mut points = Vec::new();
    let mut workouts = Vec::new();
    for (record, event) in events {
        match event {
            DomainEvent::WorkoutStarted(e) => workouts.push(RouteWorkout {
                workout_id: e.workout_id.to_string(),
                user_id: e.user_id.clone(),
                started_at: secs(e.started_at),
                version: version(record),
            }),
            _ => points.extend(route_points_of(record, event)),
        }
    }
    (workouts, points)
}

/// `route_points.v1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutePointsProjection;

impl Projection for RoutePointsProjection {
    fn name(&self) -> &'static str {
        "route_points.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        matches!(event_type, "WorkoutStarted" | "WorkoutUpdated")
    }
}

#[async_trait::async_trait]
impl ClickHouseProjection for RoutePointsProjection {
    fn schema(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS ch_route_points (workout_id String, position Int64, idx UInt32, lat Float64, \
             lon Float64, at DateTime, version UInt64) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(at) \
             ORDER BY (workout_id, position, idx)",
            "CREATE TABLE IF NOT EXISTS ch_route_workouts (workout_id String, user_id String, started_at DateTime, \
             version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY workout_id",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["ch_route_points", "ch_route_workouts"]
    }

    async fn insert(
        &self,
        tables: ChTables<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()> {
        let (workouts, points) = route_rows_of(events);
        // Two tables, two inserts at once: both are acknowledged before the checkpoint.
        let (owners, points) = tokio::join!(
            insert_rows::<RouteWorkout>(tables, "ch_route_workouts", &workouts),
            insert_rows::<RoutePoint>(tables, "ch_route_points", &points)
        );
        owners.and(points)
    }
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct PurchaseFact {
    position: i64,
    user_id: String,
    sku: String,
    category: String,
    quantity: u32,
    unit_price: i64,
    currency: String,
    purchased_at: u32,
    month: String,
    version: u64,
}

/// `purchase_facts.v1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PurchaseFactsProjection;

impl Projection for PurchaseFactsProjection {
    fn name(&self) -> &'static str {
        "purchase_facts.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "PurchaseRecorded"
    }
}

#[async_trait::async_trait]
impl ClickHouseProjection for PurchaseFactsProjection {
    fn schema(&self) -> &'static [&'static str] {
        &["CREATE TABLE IF NOT EXISTS ch_purchase_facts (position Int64, user_id String, sku String, category String, \
           quantity UInt32, unit_price Int64, currency String, purchased_at DateTime, month String, version UInt64) \
           ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(purchased_at) ORDER BY (user_id, position)"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["ch_purchase_facts"]
    }

    async fn insert(
        &self,
        tables: ChTables<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()> {
        let rows: Vec<PurchaseFact> = events
            .iter()
            .filter_map(|(record, event)| match event {
                DomainEvent::PurchaseRecorded(e) => Some(PurchaseFact {
                    position: record.global_position.0,
                    user_id: e.user_id.clone(),
                    sku: e.sku.clone(),
                    category: e.category.clone(),
                    quantity: e.quantity,
                    unit_price: e.unit_price,
                    currency: e.currency.clone(),
                    purchased_at: secs(e.purchased_at),
                    month: format!("{:04}-{:02}", e.purchased_at.year(), e.purchased_at.month()),
                    version: version(record),
                }),
                _ => None,
            })
            .collect();
        insert_rows::<PurchaseFact>(tables, "ch_purchase_facts", &rows).await
    }
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct FunnelStage {
    key: String,
    stage: String,
    user_id: String,
    sku: String,
    slot_hour: u8,
    order_id: String,
    at: u32,
    version: u64,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct FunnelSku {
    user_id: String,
    sku: String,
    category: String,
    version: u64,
}

/// `reorder_funnel.v1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReorderFunnelProjection;

impl Projection for ReorderFunnelProjection {
    fn name(&self) -> &'static str {
        "reorder_funnel.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "ReminderScheduled"
                | "ReminderOffered"
                | "ReorderAccepted"
                | "OrderPlaced"
                | "PurchaseRecorded"
        )
    }
}

#[async_trait::async_trait]
impl ClickHouseProjection for ReorderFunnelProjection {
    fn schema(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS ch_funnel (key String, stage String, user_id String, sku String, slot_hour UInt8, \
             order_id String, at DateTime, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY (key, stage)",
            "CREATE TABLE IF NOT EXISTS ch_funnel_skus (user_id String, sku String, category String, version UInt64) \
             ENGINE = ReplacingMergeTree(version) ORDER BY (user_id, sku)",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["ch_funnel", "ch_funnel_skus"]
    }

    async fn insert(
        &self,
        tables: ChTables<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()> {
        let mut stages = Vec::new();
        let mut skus = Vec::new();
        for (record, event) in events {
            let stage = |key: String, stage: &str, at: DateTime<Utc>| FunnelStage {
                key,
                stage: stage.to_owned(),
                user_id: String::new(),
                sku: String::new(),
                slot_hour: 0,
                order_id: String::new(),
                at: secs(at),
                version: version(record),
            };
            match event {
                DomainEvent::ReminderScheduled(e) => stages.push(FunnelStage {
                    user_id: e.user_id.clone(),
                    sku: e.sku.clone(),
                    slot_hour: u8::try_from(e.due_at.hour()).unwrap_or(0),
                    ..stage(e.reminder_id.to_string(), "scheduled", e.due_at)
                }),
                DomainEvent::ReminderOffered(e) => {
                    stages.push(stage(e.reminder_id.to_string(), "offered", e.offered_at));
                }
                DomainEvent::ReorderAccepted(e) => stages.push(FunnelStage {
                    order_id: e.order_id.to_string(),
                    ..stage(e.reminder_id.to_string(), "accepted", e.accepted_at)
                }),
                DomainEvent::OrderPlaced(e) => {
                    stages.push(stage(e.order_id.to_string(), "placed", e.placed_at));
                }
                DomainEvent::PurchaseRecorded(e) => skus.push(FunnelSku {
                    user_id: e.user_id.clone(),
                    sku: e.sku.clone(),
                    category: e.category.clone(),
                    version: version(record),
                }),
                _ => {}
            }
        }
        insert_rows::<FunnelSku>(tables, "ch_funnel_skus", &skus).await?;
        insert_rows::<FunnelStage>(tables, "ch_funnel", &stages).await
    }
}

// ----- queries ---------------------------------------------------------------------

/// One ISO week of a user's completed workouts.
#[derive(
    Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct WeekActivity {
    /// `2026-W48`.
    pub week: String,
    /// Workouts completed.
    pub workouts: u64,
    /// Metres.
    pub distance_m: f64,
    /// Seconds moving.
    pub duration_s: i64,
}

/// A user's activity per ISO week, newest first.
pub async fn weekly_activity(
    target: &ClickHouseTarget,
    user_id: &str,
    weeks: u32,
) -> Result<Vec<WeekActivity>> {
    target
        .client()
        .query(
            "SELECT week, count() AS workouts, sum(distance_m) AS distance_m, sum(duration_s) AS duration_s \
             FROM ch_workout_facts FINAL WHERE user_id = ? GROUP BY week ORDER BY week DESC LIMIT ?",
        )
        .bind(user_id)
        .bind(weeks)
        .fetch_all()
        .await
        .map_err(crate::store::ch)
}

/// A user's completed workouts, newest first.
pub async fn workout_facts(
    target: &ClickHouseTarget,
    user_id: &str,
    limit: u32,
) -> Result<Vec<WorkoutFact>> {
    target
        .client()
        .query(
            "SELECT workout_id, user_id, sport, week, completed_at, duration_s, distance_m, calories, avg_speed_mps, version \
             FROM ch_workout_facts FINAL WHERE user_id = ? ORDER BY completed_at DESC, workout_id LIMIT ?",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(crate::store::ch)
}

/// What a leaderboard ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    /// Total metres.
    Distance,
    /// Total seconds moving.
    Duration,
}

/// A place on a week's leaderboard.
#[derive(
    Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct WeekPlace {
    /// The athlete.
    pub user_id: String,
    /// Metres that week.
    pub distance_m: f64,
    /// Seconds moving that week.
    pub duration_s: i64,
    /// Workouts that week.
    pub workouts: u64,
}

/// The top `limit` of `sport` in ISO week `week`, by distance or duration (ties by
/// user id).
pub async fn leaderboard_week(
    target: &ClickHouseTarget,
    sport: &str,
    week: &str,
    by: RankBy,
    limit: u32,
) -> Result<Vec<WeekPlace>> {
    let order = match by {
        RankBy::Distance => "distance_m DESC, user_id",
        RankBy::Duration => "duration_s DESC, user_id",
    };
    target
        .client()
        .query(&format!(
            "SELECT user_id, sum(distance_m) AS distance_m, sum(duration_s) AS duration_s, count() AS workouts \
             FROM ch_workout_facts FINAL WHERE sport = ? AND week = ? GROUP BY user_id ORDER BY {order} LIMIT ?"
        ))
        .bind(sport)
        .bind(week)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(crate::store::ch)
}

/// A user's purchases in one month and category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PurchaseMonth {
    /// `2026-11`.
    pub month: String,
    /// The category.
    pub category: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Purchase lines.
    pub purchases: u64,
    /// Units.
    pub quantity: u64,
    /// Minor units spent: exact, however many purchases (one line is at most 2^53 - 1,
    /// so a month of them can pass what 64 bits hold).
    pub spent: u128,
}

/// [`PurchaseMonth`] as ClickHouse sums it: `spent` in two exact halves, because
/// `sum` of 64-bit integers wraps silently past 2^63 (1,025 lines of the largest
/// amount), and ClickHouse 18.16 has no 128-bit integers.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct PurchaseMonthSums {
    month: String,
    category: String,
    currency: String,
    purchases: u64,
    quantity: u64,
    /// The sum of each line's amount divided by 2^32: each term is below 2^21.
    spent_high: u64,
    /// The sum of each line's amount modulo 2^32: each term is below 2^32.
    spent_low: u64,
}

impl From<PurchaseMonthSums> for PurchaseMonth {
    fn from(sums: PurchaseMonthSums) -> Self {
        Self {
            month: sums.month,
            category: sums.category,
            currency: sums.currency,
            purchases: sums.purchases,
            quantity: sums.quantity,
            spent: (u128::from(sums.spent_high) << 32) + u128::from(sums.spent_low),
        }
    }
}

/// A user's purchases per month and category, newest month first.
pub async fn purchases_by_month(
    target: &ClickHouseTarget,
    user_id: &str,
) -> Result<Vec<PurchaseMonth>> {
    let sums: Vec<PurchaseMonthSums> = target
        .client()
        .query(
            "SELECT month, category, currency, count() AS purchases, sum(q) AS quantity, \
               sum(intDiv(s, 4294967296)) AS spent_high, sum(s % 4294967296) AS spent_low FROM ( \
               SELECT month, category, currency, toUInt64(quantity) AS q, \
                 toUInt64(unit_price) * toUInt64(quantity) AS s \
               FROM ch_purchase_facts FINAL WHERE user_id = ? \
             ) GROUP BY month, category, currency ORDER BY month DESC, category, currency",
        )
        .bind(user_id)
        .fetch_all()
        .await
        .map_err(crate::store::ch)?;
    Ok(sums.into_iter().map(PurchaseMonth::from).collect())
}

/// One row of the re-order funnel.
#[derive(
    Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct FunnelRow {
    /// The purchase category of the reminder's sku.
    pub category: String,
    /// The hour (UTC) of the reminder's slot.
    pub slot_hour: u8,
    /// Reminders scheduled.
    pub scheduled: u64,
    /// Of those, offered.
    pub offered: u64,
    /// Of those, accepted (an order drafted).
    pub accepted: u64,
    /// Of those, orders placed.
    pub placed: u64,
}

/// Reminders scheduled → offered → accepted → orders placed, by category and slot hour.
pub async fn funnel(target: &ClickHouseTarget) -> Result<Vec<FunnelRow>> {
    // One JOIN per SELECT (ClickHouse 18.16): the sku's category, then the placed orders.
    // Every joined subquery has an alias: current ClickHouse (its analyzer, the default
    // since 24.3) refuses a JOIN of subqueries without (code 206, ALIAS_REQUIRED).
    target
        .client()
        .query(
            "SELECT category, slot_hour, count() AS scheduled, sum(o) AS offered, sum(a) AS accepted, sum(p) AS placed FROM ( \
               SELECT category, slot_hour, o, a, p FROM ( \
                 SELECT reminder_id, user_id, sku, slot_hour, o, a, order_id, category FROM ( \
                   SELECT key AS reminder_id, max(stage = 'scheduled') AS s, toUInt64(max(stage = 'offered')) AS o, \
                     toUInt64(max(stage = 'accepted')) AS a, anyIf(order_id, stage = 'accepted') AS order_id, \
                     anyIf(user_id, stage = 'scheduled') AS user_id, anyIf(sku, stage = 'scheduled') AS sku, \
                     maxIf(slot_hour, stage = 'scheduled') AS slot_hour \
                   FROM ch_funnel FINAL WHERE stage != 'placed' GROUP BY key HAVING s = 1 \
                 ) AS reminders ANY LEFT JOIN ( \
                   SELECT user_id, sku, argMax(category, version) AS category FROM ch_funnel_skus FINAL GROUP BY user_id, sku \
                 ) AS skus USING (user_id, sku) \
               ) AS offered ANY LEFT JOIN ( \
                 SELECT key AS order_id, toUInt64(1) AS p FROM ch_funnel FINAL WHERE stage = 'placed' \
               ) AS placed USING (order_id) \
             ) GROUP BY category, slot_hour ORDER BY category, slot_hour",
        )
        .fetch_all()
        .await
        .map_err(crate::store::ch)
}

/// A workout's owner (if known) and its route points in order.
pub async fn route(
    target: &ClickHouseTarget,
    workout_id: &str,
) -> Result<(Option<String>, Vec<RoutePoint>)> {
    let owner: Option<String> = target
        .client()
        .query("SELECT user_id FROM ch_route_workouts FINAL WHERE workout_id = ?")
        .bind(workout_id)
        .fetch_optional()
        .await
        .map_err(crate::store::ch)?;
    let points = target
        .client()
        .query(
            "SELECT workout_id, position, idx, lat, lon, at, version FROM ch_route_points FINAL \
             WHERE workout_id = ? ORDER BY position, idx",
        )
        .bind(workout_id)
        .fetch_all()
        .await
        .map_err(crate::store::ch)?;
    Ok((owner, points))
}

/// The month partitions (`YYYYMM`) of route points older than `keep_months` before
/// `now`: what the retention drops.
pub fn expired_months(partitions: &[String], keep_months: u32, now: DateTime<Utc>) -> Vec<String> {
    let current = i64::from(now.year()) * 12 + i64::from(now.month0());
    let cutoff = current - i64::from(keep_months);
    partitions
        .iter()
        .filter(|p| {
            p.parse::<i64>()
                .ok()
                .map(|ym| (ym / 100) * 12 + (ym % 100 - 1))
                .is_some_and(|month| month < cutoff)
        })
        .cloned()
        .collect()
}

/// Drops the route-point partitions older than `keep_months` (the seed's retention is
/// six months); returns the partitions dropped.
pub async fn drop_expired_route_points(
    target: &ClickHouseTarget,
    keep_months: u32,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let partitions: Vec<String> = target
        .catalogue(|client| {
            client
                .query(
                    "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = 'ch_route_points' AND active",
                )
                .bind(target.database())
        })
        .await?;
    let expired = expired_months(&partitions, keep_months, now);
    for partition in &expired {
        target
            .run(&format!(
                "ALTER TABLE ch_route_points DROP PARTITION {partition}"
            ))
            .await?;
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn months_older_than_the_retention_expire() {
        let now = Utc
            .with_ymd_and_hms(2026, 12, 3, 0, 0, 0)
            .single()
            .expect("time");
        let parts: Vec<String> = ["202605", "202606", "202607", "202612", "junk"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        // Keeping six months in December 2026 keeps June 2026 onwards.
        assert_eq!(expired_months(&parts, 6, now), vec!["202605".to_owned()]);
        assert_eq!(expired_months(&parts, 0, now).len(), 3);
    }
}
