//! Every command route, sent twice with one Idempotency-Key — one after the other, and
//! both at once — answers the identical status, body (server-stamped times and slots
//! included) and consistency token, and appends once.

use axum::Router;
use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::EventReader;
use serde_json::{json, Value};

use crate::support::{call, Answer, As};

async fn same(app: &Router, who: As, path: &str, body: Value, key: &str, race: bool) -> Answer {
    let (first, second) = if race {
        let (a, b) = tokio::join!(
            call(app, who.clone(), path, body.clone(), Some(key)),
            call(app, who.clone(), path, body.clone(), Some(key))
        );
        (a, b)
    } else {
        let a = call(app, who.clone(), path, body.clone(), Some(key)).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let b = call(app, who, path, body, Some(key)).await;
        (a, b)
    };
    assert!(
        first.status.is_success(),
        "{path}: {} {}",
        first.status,
        first.body
    );
    assert_eq!(first.status, second.status, "{path}");
    assert_eq!(
        first.body, second.body,
        "{path}: the retry answered another body"
    );
    assert_eq!(
        first.token, second.token,
        "{path}: another consistency token"
    );
    // One after the other, the second says it is a replay. Racing, the loser may
    // instead re-append the very same events, which the log takes as a no-op: then
    // neither says so, and the answers are still the one answer.
    if race {
        assert!(!(first.replayed && second.replayed), "{path}: both replays");
    } else {
        assert!(
            !first.replayed && second.replayed,
            "{path}: Idempotent-Replayed"
        );
    }
    first
}

async fn every_route_twice(race: bool) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = crate::support::app(db.store.clone());
    let tag = if race { "race" } else { "seq" };
    let k = |name: &str| format!("{tag}-{name}");
    let user = |n: u8| -> &'static str {
        match (race, n) {
            (false, 1) => "s1",
            (false, 2) => "s2",
            (false, 3) => "s3",
            (false, _) => "s4",
            (true, 1) => "r1",
            (true, 2) => "r2",
            (true, 3) => "r3",
            (true, _) => "r4",
        }
    };
    same(
        &app,
        As::Service,
        "/api/v1/catalog/prices",
        json!({"sku": format!("CAPS-{tag}"), "title": "Capsules", "unit_price": 1200, "delivery_days": 2}),
        &k("price"),
        race,
    )
    .await;
    let mut reminders = Vec::new();
    for n in 1..=4 {
        let u = user(n);
        same(
            &app,
            As::User(u),
            &format!("/api/v1/devices/spk-{u}/activations"),
            json!({"user_id": u}),
            &k(&format!("act-{u}")),
            race,
        )
        .await;
        let purchase = same(
            &app,
            As::User(u),
            "/api/v1/purchases",
            json!({"user_id": u, "sku": format!("CAPS-{tag}"), "title": "Capsules", "category": "coffee",
                   "quantity": 2, "unit_price": 1000}),
            &k(&format!("buy-{u}")),
            race,
        )
        .await;
        let reminder = purchase.body["reminder"]["reminder_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no reminder: {}", purchase.body))?;
        same(
            &app,
            As::User(u),
            &format!("/api/v1/reminders/{reminder}/offer"),
            json!({"device_id": format!("spk-{u}")}),
            &k(&format!("offer-{u}")),
            race,
        )
        .await;
        reminders.push((u, reminder));
    }
    // u1 says yes and confirms; u2 says later; u3 says yes and cancels; u4 says no.
    let (u1, r1) = &reminders[0];
    let yes = same(
        &app,
        As::User(u1),
        &format!("/api/v1/reminders/{r1}/accept"),
        json!({}),
        &k("yes-1"),
        race,
    )
    .await;
    let order = yes.body["order_id"].as_str().unwrap_or_default().to_owned();
    same(
        &app,
        As::User(u1),
        &format!("/api/v1/orders/{order}/confirm"),
        json!({}),
        &k("confirm-1"),
        race,
    )
    .await;
    let (u2, r2) = &reminders[1];
    same(
        &app,
        As::User(u2),
        &format!("/api/v1/reminders/{r2}/snooze"),
        json!({"until": "2099-01-01T09:00:00Z"}),
        &k("later-2"),
        race,
    )
    .await;
    let (u4, r4) = &reminders[3];
    same(
        &app,
        As::User(u4),
        &format!("/api/v1/reminders/{r4}/decline"),
        json!({}),
        &k("no-4"),
        race,
    )
    .await;
    let (u3, r3) = &reminders[2];
    let yes = same(
        &app,
        As::User(u3),
        &format!("/api/v1/reminders/{r3}/accept"),
        json!({}),
        &k("yes-3"),
        race,
    )
    .await;
    let order = yes.body["order_id"].as_str().unwrap_or_default().to_owned();
    same(
        &app,
        As::User(u3),
        &format!("/api/v1/orders/{order}/cancel"),
        json!({"reason": "changed my mind"}),
        &k("cancel-3"),
        race,
    )
    .await;
    // Workouts: one through to its end, one cancelled.
    let start = same(
        &app,
        As::User(u1),
        "/api/v1/workouts",
        json!({"user_id": u1, "sport": "running", "goal_distance_m": 5000.0}),
        &k("run"),
        race,
    )
    .await;
    let w = start.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    same(&app, As::User(u1), &format!("/api/v1/workouts/{w}/updates"),
        json!({"distance_m": 1200.0, "heart_rate": 140, "points": [{"lat": 55.75, "lon": 37.61, "at": "2026-12-01T07:00:00Z"}]}),
        &k("update"), race).await;
    same(
        &app,
        As::User(u1),
        &format!("/api/v1/workouts/{w}/pause"),
        json!({}),
        &k("pause"),
        race,
    )
    .await;
    same(
        &app,
        As::User(u1),
        &format!("/api/v1/workouts/{w}/resume"),
        json!({}),
        &k("resume"),
        race,
    )
    .await;
    same(
        &app,
        As::User(u1),
        &format!("/api/v1/workouts/{w}/complete"),
        json!({"distance_m": 5100.0}),
        &k("done"),
        race,
    )
    .await;
    let other = same(
        &app,
        As::User(u2),
        "/api/v1/workouts",
        json!({"user_id": u2, "sport": "cycling"}),
        &k("ride"),
        race,
    )
    .await;
    let w2 = other.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    same(
        &app,
        As::User(u2),
        &format!("/api/v1/workouts/{w2}/cancel"),
        json!({"reason": "rain"}),
        &k("rain"),
        race,
    )
    .await;

    // Every event was appended once: one stream version per event id.
    let events = db
        .store
        .read_all(eventfold_event_schemas::Position::START, None, 10_000)
        .await?;
    let mut ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total);
    let schedules = events
        .iter()
        .filter(|e| e.event_type == "ReminderScheduled")
        .count();
    assert_eq!(schedules, 4, "one reminder per consumable purchase");
    Ok(())
}

#[tokio::test]
async fn every_command_route_retried_answers_the_first_answer_exactly() -> anyhow::Result<()> {
    every_route_twice(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_route_raced_with_one_key_answers_one_answer() -> anyhow::Result<()> {
    every_route_twice(true).await
}
