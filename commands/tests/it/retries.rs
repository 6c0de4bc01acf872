//! Every command route, sent twice with one Idempotency-Key — one after the other, both
//! at once, and again after everything else was done (the streams moved on: the
//! reminder offered and answered, the user buying the same thing again, the workout
//! over) — answers the identical status, body (server-stamped times and slots
//! included) and consistency token, and appends once.

use axum::Router;
use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::EventReader;
use serde_json::{json, Value};

use crate::support::{call, Answer, As};

#[derive(Clone, Copy, PartialEq)]
enum Retry {
    /// The second attempt right after the first.
    Next,
    /// Both at once.
    Race,
    /// The second attempt after the whole flow.
    Late,
}

/// The first answers of a flow, and (`Late`) the requests to send again at its end.
struct Twice<'a> {
    app: &'a Router,
    retry: Retry,
    pending: Vec<(As, String, Value, String, Answer)>,
}

impl Twice<'_> {
    async fn same(&mut self, who: As, path: &str, body: Value, key: &str) -> Answer {
        if self.retry == Retry::Late {
            let first = call(self.app, who.clone(), path, body.clone(), Some(key)).await;
            assert!(
                first.status.is_success(),
                "{path}: {} {}",
                first.status,
                first.body
            );
            self.pending
                .push((who, path.to_owned(), body, key.to_owned(), first.clone()));
            return first;
        }
        let race = self.retry == Retry::Race;
        let (first, second) = if race {
            let (a, b) = tokio::join!(
                call(self.app, who.clone(), path, body.clone(), Some(key)),
                call(self.app, who.clone(), path, body.clone(), Some(key))
            );
            (a, b)
        } else {
            let a = call(self.app, who.clone(), path, body.clone(), Some(key)).await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let b = call(self.app, who, path, body, Some(key)).await;
            (a, b)
        };
        assert!(
            first.status.is_success(),
            "{path}: {} {}",
            first.status,
            first.body
        );
        assert_same(path, &first, &second);
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

    /// `Late`: every request of the flow again, each answering its first answer.
    async fn again(&mut self) {
        for (who, path, body, key, first) in std::mem::take(&mut self.pending) {
            let second = call(self.app, who, &path, body, Some(&key)).await;
            assert_same(&path, &first, &second);
            assert!(second.replayed, "{path}: Idempotent-Replayed");
        }
    }
}

fn assert_same(path: &str, first: &Answer, second: &Answer) {
    assert_eq!(first.status, second.status, "{path}");
    assert_eq!(
        first.body, second.body,
        "{path}: the retry answered another body"
    );
    assert_eq!(
        first.token, second.token,
        "{path}: another consistency token"
    );
}

async fn every_route_twice(retry: Retry) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = crate::support::app(db.store.clone());
    let mut twice = Twice {
        app: &app,
        retry,
        pending: Vec::new(),
    };
    let tag = match retry {
        Retry::Next => "seq",
        Retry::Race => "race",
        Retry::Late => "late",
    };
    let k = |name: &str| format!("{tag}-{name}");
    let user = |n: u8| -> &'static str {
        match (retry, n) {
            (Retry::Next, 1) => "s1",
            (Retry::Next, 2) => "s2",
            (Retry::Next, 3) => "s3",
            (Retry::Next, _) => "s4",
            (Retry::Race, 1) => "r1",
            (Retry::Race, 2) => "r2",
            (Retry::Race, 3) => "r3",
            (Retry::Race, _) => "r4",
            (Retry::Late, 1) => "l1",
            (Retry::Late, 2) => "l2",
            (Retry::Late, 3) => "l3",
            (Retry::Late, _) => "l4",
        }
    };
    twice.same(
        As::Service,
        "/api/v1/catalog/prices",
        json!({"sku": format!("CAPS-{tag}"), "title": "Capsules", "unit_price": 1200, "delivery_days": 2}),
        &k("price"),
    )
    .await;
    let mut reminders = Vec::new();
    for n in 1..=4 {
        let u = user(n);
        twice
            .same(
                As::User(u),
                &format!("/api/v1/devices/spk-{u}/activations"),
                json!({"user_id": u}),
                &k(&format!("act-{u}")),
            )
            .await;
        let purchase = twice.same(
            As::User(u),
            "/api/v1/purchases",
            json!({"user_id": u, "sku": format!("CAPS-{tag}"), "title": "Capsules", "category": "coffee",
                   "quantity": 2, "unit_price": 1000}),
            &k(&format!("buy-{u}")),
        )
        .await;
        let reminder = purchase.body["reminder"]["reminder_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no reminder: {}", purchase.body))?;
        twice
            .same(
                As::User(u),
                &format!("/api/v1/reminders/{reminder}/offer"),
                json!({"device_id": format!("spk-{u}")}),
                &k(&format!("offer-{u}")),
            )
            .await;
        reminders.push((u, reminder));
    }
    // u1 says yes and confirms; u2 says later; u3 says yes and cancels; u4 says no.
    let (u1, r1) = &reminders[0];
    let yes = twice
        .same(
            As::User(u1),
            &format!("/api/v1/reminders/{r1}/accept"),
            json!({}),
            &k("yes-1"),
        )
        .await;
    let order = yes.body["order_id"].as_str().unwrap_or_default().to_owned();
    twice
        .same(
            As::User(u1),
            &format!("/api/v1/orders/{order}/confirm"),
            json!({}),
            &k("confirm-1"),
        )
        .await;
    let (u2, r2) = &reminders[1];
    twice
        .same(
            As::User(u2),
            &format!("/api/v1/reminders/{r2}/snooze"),
            json!({"until": "2099-01-01T09:00:00Z"}),
            &k("later-2"),
        )
        .await;
    let (u4, r4) = &reminders[3];
    twice
        .same(
            As::User(u4),
            &format!("/api/v1/reminders/{r4}/decline"),
            json!({}),
            &k("no-4"),
        )
        .await;
    let (u3, r3) = &reminders[2];
    let yes = twice
        .same(
            As::User(u3),
            &format!("/api/v1/reminders/{r3}/accept"),
            json!({}),
            &k("yes-3"),
        )
        .await;
    let order = yes.body["order_id"].as_str().unwrap_or_default().to_owned();
    twice
        .same(
            As::User(u3),
            &format!("/api/v1/orders/{order}/cancel"),
            json!({"reason": "changed my mind"}),
            &k("cancel-3"),
        )
        .await;
    // Workouts: one through to its end, one cancelled.
    let start = twice
        .same(
            As::User(u1),
            "/api/v1/workouts",
            json!({"user_id": u1, "sport": "running", "goal_distance_m": 5000.0}),
            &k("run"),
        )
        .await;
    let w = start.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    twice.same(As::User(u1), &format!("/api/v1/workouts/{w}/updates"),
        json!({"distance_m": 1200.0, "heart_rate": 140, "points": [{"lat": 55.75, "lon": 37.61, "at": "2026-12-01T07:00:00Z"}]}),
        &k("update")).await;
    twice
        .same(
            As::User(u1),
            &format!("/api/v1/workouts/{w}/pause"),
            json!({}),
            &k("pause"),
        )
        .await;
    twice
        .same(
            As::User(u1),
            &format!("/api/v1/workouts/{w}/resume"),
            json!({}),
            &k("resume"),
        )
        .await;
    twice
        .same(
            As::User(u1),
            &format!("/api/v1/workouts/{w}/complete"),
            json!({"distance_m": 5100.0}),
            &k("done"),
        )
        .await;
    let other = twice
        .same(
            As::User(u2),
            "/api/v1/workouts",
            json!({"user_id": u2, "sport": "cycling"}),
            &k("ride"),
        )
        .await;
    let w2 = other.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    twice
        .same(
            As::User(u2),
            &format!("/api/v1/workouts/{w2}/cancel"),
            json!({"reason": "rain"}),
            &k("rain"),
        )
        .await;

    // Each user buys the same thing again (an hour on: purchases within one second
    // share a reminder): a purchase retried after this answers the reminder it
    // planned, not "none" (its history has a later purchase now).
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for n in 1..=4 {
        let u = user(n);
        twice
            .same(
                As::User(u),
                "/api/v1/purchases",
                json!({"user_id": u, "sku": format!("CAPS-{tag}"), "title": "Capsules", "category": "coffee",
                       "quantity": 1, "unit_price": 1100, "purchased_at": later}),
                &k(&format!("again-{u}")),
            )
            .await;
    }
    twice.again().await;

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
    assert_eq!(schedules, 8, "one reminder per consumable purchase");
    Ok(())
}

#[tokio::test]
async fn every_command_route_retried_answers_the_first_answer_exactly() -> anyhow::Result<()> {
    every_route_twice(Retry::Next).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_route_raced_with_one_key_answers_one_answer() -> anyhow::Result<()> {
    every_route_twice(Retry::Race).await
}

#[tokio::test]
async fn every_command_route_retried_after_the_flow_moved_on_answers_its_first_answer(
) -> anyhow::Result<()> {
    every_route_twice(Retry::Late).await
}
