//! A scripted scenario written through the real command side, and helpers.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use eventfold_commands::{CommandContext, CommandService, Principal};
use eventfold_domain::consumables::ConsumablePolicy;
use eventfold_domain::slotting::SlotPlanner;
use eventfold_domain::workout::WorkoutCommand;
use eventfold_event_log::EventStore;
use eventfold_event_schemas::catalogue::{
    DeviceActivated, GeoPoint, PriceChanged, PurchaseRecorded,
};
use uuid::Uuid;

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .expect("time")
}

fn ctx() -> CommandContext {
    CommandContext::new(Principal::service("scenario"))
}

fn purchase(user: &str, sku: &str, category: &str, price: i64, days_ago: i64) -> PurchaseRecorded {
    PurchaseRecorded {
        user_id: user.into(),
        sku: sku.into(),
        title: format!("{sku} title"),
        category: category.into(),
        quantity: 2,
        unit_price: price,
        currency: "RUB".into(),
        purchased_at: now() - Duration::days(days_ago),
    }
}

/// What the scenario did, to compare read models against.
pub struct Scenario {
    pub accepted_reminder: Uuid,
    pub declined_reminder: Uuid,
    pub order_id: Uuid,
    pub workouts: Vec<Uuid>,
}

/// u1 re-orders coffee at a new price; u2 declines cat food; u3 trains twice and
/// abandons a third workout.
pub async fn run_scenario<S: EventStore>(store: S) -> anyhow::Result<Scenario> {
    let service = CommandService::with(
        store,
        ConsumablePolicy::default(),
        SlotPlanner::default(),
        Arc::new(now),
    );
    let c = ctx();
    service
        .set_price(
            &c,
            PriceChanged {
                sku: "SKU-CAPS".into(),
                title: "Capsules".into(),
                unit_price: 1200,
                currency: "RUB".into(),
                available: true,
                delivery_days: 2,
                changed_at: now() - Duration::days(1),
            },
        )
        .await?;
    for h in [8, 8, 9] {
        service
            .record_activation(
                &c,
                DeviceActivated {
                    device_id: "spk-1".into(),
                    user_id: "u1".into(),
                    activated_at: now() - Duration::days(2) + Duration::hours(h - 12),
                    utc_offset_minutes: 180,
                },
            )
            .await?;
    }
    service
        .record_purchase(&c, purchase("u1", "SKU-CAPS", "coffee", 1000, 60))
        .await?;
    let second = service
        .record_purchase(&c, purchase("u1", "SKU-CAPS", "coffee", 1000, 30))
        .await?;
    let accepted_reminder = second
        .reminder
        .map(|r| r.reminder_id)
        .ok_or_else(|| anyhow::anyhow!("no reminder for u1"))?;
    service
        .offer(&c, accepted_reminder, Some("spk-1".into()))
        .await?;
    let accepted = service.accept(&c, accepted_reminder).await?;
    service.confirm_order(&c, accepted.order_id).await?;

    let cat = service
        .record_purchase(&c, purchase("u2", "SKU-CATFOOD", "pet_food", 1890, 10))
        .await?;
    let declined_reminder = cat
        .reminder
        .map(|r| r.reminder_id)
        .ok_or_else(|| anyhow::anyhow!("no reminder for u2"))?;
    service.offer(&c, declined_reminder, None).await?;
    service.decline(&c, declined_reminder).await?;

    let mut workouts = Vec::new();
    for (i, km) in [(0u128, 5.0), (1, 10.0), (2, 1.0)] {
        let id = Uuid::from_u128(0xfeed_0000 + i);
        service
            .start_workout(&c, id, "u3".into(), "running".into(), Some(5000.0))
            .await?;
        let point = |lat: f64| GeoPoint {
            lat,
            lon: 37.6,
            at: now(),
        };
        service
            .workout_command(&c, id, |at| WorkoutCommand::Update {
                distance_m: Some(km * 500.0),
                heart_rate: Some(150),
                speed_mps: Some(3.0),
                points: vec![point(55.70), point(55.71)],
                at,
            })
            .await?;
        if i == 2 {
            service
                .workout_command(&c, id, |at| WorkoutCommand::Cancel { reason: None, at })
                .await?;
        } else {
            service
                .workout_command(&c, id, |at| WorkoutCommand::Pause { at })
                .await?;
            service
                .workout_command(&c, id, |at| WorkoutCommand::Resume { at })
                .await?;
            service
                .workout_command(&c, id, |at| WorkoutCommand::Complete {
                    distance_m: Some(km * 1000.0),
                    at,
                })
                .await?;
        }
        workouts.push(id);
    }
    Ok(Scenario {
        accepted_reminder,
        declined_reminder,
        order_id: accepted.order_id,
        workouts,
    })
}

/// Appends one `ReminderScheduled` for user `u{user % 3}` (sku `SKU-1`, due
/// 2026-11-03 09:00), straight to the log.
pub async fn schedule_reminder<S: EventStore>(store: &S, user: u32) -> anyhow::Result<()> {
    use eventfold_event_schemas::catalogue::ReminderScheduled;
    use eventfold_event_schemas::{DomainEvent, EventMetadata, ExpectedVersion, StreamId};
    let reminder_id = Uuid::new_v4();
    let event: DomainEvent = ReminderScheduled {
        reminder_id,
        user_id: format!("u{}", user % 3),
        sku: "SKU-1".into(),
        title: "Coffee".into(),
        quantity: 1,
        last_unit_price: 1000,
        currency: "RUB".into(),
        due_at: Utc
            .with_ymd_and_hms(2026, 11, 3, 9, 0, 0)
            .single()
            .unwrap_or_default(),
        slot: 0,
    }
    .into();
    let new = event.to_new_event(Uuid::new_v4(), EventMetadata::default());
    store
        .append(
            &StreamId::new(format!("reminder-{reminder_id}"))?,
            ExpectedVersion::Any,
            &[new],
        )
        .await?;
    Ok(())
}

/// Appends `workouts` completed 1 km runs spread over `users` users, straight to the log.
pub async fn append_completed_workouts<S: EventStore>(
    store: &S,
    workouts: usize,
    users: usize,
) -> anyhow::Result<()> {
    use eventfold_event_schemas::catalogue::{WorkoutCompleted, WorkoutStarted};
    use eventfold_event_schemas::{DomainEvent, EventMetadata, ExpectedVersion, StreamId};
    for i in 0..workouts {
        let id = Uuid::new_v4();
        let user = format!("runner{}", i % users);
        let events: Vec<DomainEvent> = vec![
            WorkoutStarted {
                workout_id: id,
                user_id: user.clone(),
                sport: "running".into(),
                goal_distance_m: None,
                started_at: now(),
            }
            .into(),
            WorkoutCompleted {
                workout_id: id,
                user_id: user,
                sport: "running".into(),
                distance_m: 1000.0,
                active_seconds: 300,
                avg_speed_mps: 3.33,
                max_heart_rate: None,
                completed_at: now(),
            }
            .into(),
        ];
        let new: Vec<_> = events
            .iter()
            .map(|e| e.to_new_event(Uuid::new_v4(), EventMetadata::default()))
            .collect();
        store
            .append(
                &StreamId::from_parts("workout", id)?,
                ExpectedVersion::NoStream,
                &new,
            )
            .await?;
    }
    Ok(())
}

/// Deletes every Redis key under `prefix`.
pub async fn clear_redis(client: &redis::Client, prefix: &str) -> anyhow::Result<()> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
    }
    Ok(())
}
