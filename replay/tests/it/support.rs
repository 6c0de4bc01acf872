//! Test data, checksums and a Redis namespace of its own.

use std::sync::Arc;

use chrono::{Duration as Span, Utc};
use eventfold_commands::{CommandContext, CommandService, Principal};
use eventfold_domain::consumables::ConsumablePolicy;
use eventfold_domain::slotting::SlotPlanner;
use eventfold_domain::workout::WorkoutCommand;
use eventfold_event_log::EventStore;
use eventfold_event_schemas::catalogue::{GeoPoint, PriceChanged, PurchaseRecorded};
use eventfold_projections::{ReadDb, RedisKeys, RedisTarget, RelationalProjection};
use eventfold_replay::{table_checksum, TableChecksum};
use uuid::Uuid;

pub(crate) async fn populate<S: EventStore>(
    store: S,
    tag: &str,
    users: usize,
    workouts_each: usize,
) -> anyhow::Result<()> {
    let service = CommandService::with(
        store,
        ConsumablePolicy::default(),
        SlotPlanner::default(),
        Arc::new(Utc::now),
    );
    let ctx = CommandContext::new(Principal::service("test"));
    let now = Utc::now();
    service
        .set_price(
            &ctx,
            PriceChanged {
                sku: "SKU".into(),
                title: "Tea".into(),
                unit_price: 500,
                currency: "RUB".into(),
                available: true,
                delivery_days: 1,
                changed_at: now - Span::days(1),
            },
        )
        .await?;
    for u in 0..users {
        let user = format!("{tag}{u}");
        let mut planned = None;
        for d in [90, 60, 30] {
            let p = PurchaseRecorded {
                user_id: user.clone(),
                sku: "SKU".into(),
                title: "Tea".into(),
                category: "tea".into(),
                quantity: 1,
                unit_price: 450,
                currency: "RUB".into(),
                purchased_at: now - Span::days(d),
            };
            planned = service
                .record_purchase(&ctx, p)
                .await?
                .reminder
                .map(|r| r.reminder_id);
        }
        // Every reminder path: accepted, declined, snoozed, left scheduled.
        match (planned, u % 4) {
            (Some(reminder), 0) => {
                service.offer(&ctx, reminder, None).await?;
                let accepted = service.accept(&ctx, reminder).await?;
                service.confirm_order(&ctx, accepted.order_id).await?;
            }
            (Some(reminder), 1) => {
                service.offer(&ctx, reminder, None).await?;
                service.decline(&ctx, reminder).await?;
            }
            (Some(reminder), 2) => {
                service.offer(&ctx, reminder, None).await?;
                service.snooze(&ctx, reminder, now + Span::days(2)).await?;
            }
            _ => {}
        }
        for i in 0..workouts_each {
            let w = Uuid::new_v4();
            // Goals with and without: NULL and non-NULL doubles in one statement.
            let goal = (i % 2 == 1).then_some(5000.0);
            service
                .start_workout(&ctx, w, user.clone(), "running".into(), goal)
                .await?;
            service
                .workout_command(&ctx, w, |at| WorkoutCommand::Update {
                    distance_m: Some(800.0),
                    heart_rate: Some(140),
                    speed_mps: None,
                    points: vec![
                        GeoPoint {
                            lat: 55.75,
                            lon: 37.61,
                            at,
                        },
                        GeoPoint {
                            lat: 55.76,
                            lon: 37.62,
                            at,
                        },
                    ],
                    at,
                })
                .await?;
            service
                .workout_command(&ctx, w, |at| WorkoutCommand::Update {
                    distance_m: None,
                    heart_rate: Some(150),
                    speed_mps: Some(3.1),
                    points: vec![],
                    at,
                })
                .await?;
            service
                .workout_command(&ctx, w, |at| WorkoutCommand::Complete {
                    distance_m: Some(1000.0),
                    at,
                })
                .await?;
        }
    }
    Ok(())
}

pub(crate) async fn checksums<P: RelationalProjection>(
    db: &ReadDb,
    projection: &P,
) -> anyhow::Result<Vec<TableChecksum>> {
    let mut conn = db.pool().acquire().await?;
    let mut out = Vec::new();
    for table in projection.tables() {
        out.push(table_checksum(&mut conn, table).await?);
    }
    Ok(out)
}

/// Checksums of `projection`'s tables under `prefix`.
pub(crate) async fn prefixed_checksums<P: RelationalProjection>(
    db: &ReadDb,
    projection: &P,
    prefix: &str,
) -> anyhow::Result<Vec<TableChecksum>> {
    let mut conn = db.pool().acquire().await?;
    let mut out = Vec::new();
    for table in projection.tables() {
        out.push(table_checksum(&mut conn, &format!("{prefix}{table}")).await?);
    }
    Ok(out)
}

/// A Redis namespace of its own, deleted when dropped.
pub(crate) struct RedisSpace {
    pub(crate) client: redis::Client,
    pub(crate) keys: RedisKeys,
}

impl RedisSpace {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let url = std::env::var("EVENTFOLD_TEST_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        Ok(Self {
            client: redis::Client::open(url)?,
            keys: RedisKeys::new(format!("replay-test:{}:", Uuid::new_v4().simple())),
        })
    }

    pub(crate) fn target(&self) -> RedisTarget {
        RedisTarget {
            client: self.client.clone(),
            keys: self.keys.clone(),
        }
    }

    pub(crate) async fn conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }

    /// Every key under the namespace.
    pub(crate) async fn all_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("KEYS")
            .arg(format!("{}*", self.keys.prefix()))
            .query_async(&mut conn)
            .await?)
    }
}

impl Drop for RedisSpace {
    fn drop(&mut self) {
        let (client, prefix) = (self.client.clone(), self.keys.prefix().to_owned());
        // Best effort, synchronously: the runtime may be shutting down.
        if let Ok(mut conn) = client.get_connection() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut conn)
                .unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        }
    }
}

/// A full rebuild of `model` from `log`, swapped in over the live model.
pub(crate) async fn rebuild_and_swap<S: EventStore>(
    log: &S,
    store: &dyn eventfold_projections::ReadStore,
    model: &eventfold_projections::Model,
) -> eventfold_replay::Result<Option<eventfold_replay::SwapReport>> {
    eventfold_replay::rebuild_model(
        log,
        store,
        model,
        eventfold_replay::Target::Swap { keep_old: false },
        |_| {},
        std::future::pending(),
    )
    .await
}
