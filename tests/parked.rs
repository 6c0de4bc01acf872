//! Parked events, from the command line: `projections parked` lists what projections and
//! reactions gave up on, `projections retry` runs a reaction's step again once the cause
//! is gone.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("REDIS_URL")
        .env_remove("CLICKHOUSE_URL")
        .output()
        .expect("run eventfold")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn append(url: &str, stream: &str, event_type: &str, data: Value, version: Option<&str>) {
    let data = data.to_string();
    let mut args = vec![
        "streams", "append", stream, "--type", event_type, "--data", &data,
    ];
    if let Some(version) = version {
        args.extend(["--schema-version", version]);
    }
    let o = run(url, &args);
    assert!(o.status.success(), "{}", text(&o));
}

fn price(url: &str, unit_price: i64, changed_at: &str) {
    append(
        url,
        "price-BIG",
        "PriceChanged",
        json!({"sku": "BIG", "title": "Big pack", "unit_price": unit_price, "currency": "RUB",
               "available": true, "delivery_days": 1, "changed_at": changed_at}),
        None,
    );
}

/// A "yes" stored before acceptances recorded their order (a v1 `ReorderAccepted`, no
/// quote) for two units of a sku whose price money cannot hold twice: the order drafter
/// parks it under a running `serve`. `projections parked` lists it with why; a retry
/// while the price is unchanged fails again and says so (exit non-zero); once the price
/// is one an order can hold, the retry drafts the order and the event is forgotten.
#[test]
fn a_parked_acceptance_is_listed_and_its_order_drafted_by_a_retry_once_its_cause_is_gone() {
    let mut server = Server::start(None);
    let url = format!("sqlite://{}", server.dir.join("log.db").display());
    let (reminder, order) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let stream = format!("reminder-{reminder}");
    price(&url, 9_007_199_254_740_991, "2026-01-01T00:00:00Z");
    append(
        &url,
        &stream,
        "ReminderScheduled",
        json!({"reminder_id": reminder, "user_id": "u1", "sku": "BIG", "title": "Big pack",
               "quantity": 2, "last_unit_price": 1, "currency": "RUB",
               "due_at": "2026-01-01T00:00:00Z", "slot": 1}),
        None,
    );
    append(
        &url,
        &stream,
        "ReminderOffered",
        json!({"reminder_id": reminder, "user_id": "u1", "device_id": null,
               "offered_at": "2026-01-01T00:00:00Z"}),
        None,
    );
    append(
        &url,
        &stream,
        "ReorderAccepted",
        json!({"reminder_id": reminder, "user_id": "u1", "order_id": order,
               "accepted_at": "2026-01-01T00:01:00Z"}),
        Some("1"),
    );

    // The drafter tries, then parks it.
    let started = Instant::now();
    let listed = loop {
        let o = run(
            &url,
            &["projections", "parked", "order_drafter.v1", "--json"],
        );
        assert!(o.status.success(), "{}", text(&o));
        let rows: Value = serde_json::from_slice(&o.stdout).expect("json");
        if rows.as_array().is_some_and(|r| !r.is_empty()) {
            break rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing parked: {}",
            std::fs::read_to_string(server.dir.join("stderr.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(listed[0]["event_type"], "ReorderAccepted", "{listed}");
    assert!(
        listed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("order is invalid")),
        "{listed}"
    );
    let table = run(&url, &["projections", "parked"]);
    assert!(
        text(&table).contains("order_drafter.v1") && text(&table).contains("ReorderAccepted"),
        "{}",
        text(&table)
    );

    // A restarted `serve` still counts it (before, its board started from 0).
    assert!(server.terminate().success());
    let mut server = Server::start(Some(url.clone()));
    let metrics = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            reqwest::get(format!("{}/metrics", server.base))
                .await?
                .text()
                .await
        })
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "eventfold_projection_parked_events{projection=\"order_drafter.v1\"} 1"),
        "{metrics}"
    );

    // Nothing changed: the retry fails again, keeps it parked and says so.
    let again = run(&url, &["projections", "retry", "order_drafter.v1"]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("still parked"), "{}", text(&again));

    // The price comes down: the retry drafts the order (at the price now: a v1
    // acceptance recorded none) and forgets the event.
    price(&url, 700, "2026-01-02T00:00:00Z");
    let retried = run(&url, &["projections", "retry", "order_drafter.v1"]);
    assert!(retried.status.success(), "{}", text(&retried));
    assert!(
        text(&retried).contains("retried: done"),
        "{}",
        text(&retried)
    );
    let none = run(&url, &["projections", "parked", "order_drafter.v1"]);
    assert!(text(&none).contains("no parked events"), "{}", text(&none));
    let drafted = run(&url, &["streams", "read", &format!("order-{order}")]);
    assert!(drafted.status.success(), "{}", text(&drafted));
    assert!(
        text(&drafted).contains("OrderDrafted") && text(&drafted).contains("\"unit_price\":700"),
        "{}",
        text(&drafted)
    );

    // A read model's parked events are not retried out of order; unknown names are
    // refused.
    let model = run(&url, &["projections", "retry", "workouts.v2"]);
    assert!(!model.status.success());
    assert!(
        text(&model).contains("eventfold replay workouts.v2"),
        "{}",
        text(&model)
    );
    let unknown = run(&url, &["projections", "parked", "nope.v1"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("unknown projection or reaction"),
        "{}",
        text(&unknown)
    );
    assert!(server.terminate().success());
}
