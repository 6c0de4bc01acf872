//! `eventfold demo`: the event log at work on the embedded default, in a few seconds.
//!
//! Several writers record purchases and workouts concurrently while a live subscriber
//! tails the log; then the demo shows a version conflict and an idempotent retry, and
//! checks that the subscriber saw every event exactly once.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use eventfold_event_log::schemas::{ExpectedVersion, NewEvent, StreamId};
use eventfold_event_log::{
    AnyEventStore, Error, EventReader, EventStore, EventWriter, SubscriptionOptions,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Where the demo writes when no DATABASE_URL is given (recreated on every run).
const DEMO_FILE: &str = "eventfold-demo.db";

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Simulated users.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Seed of the random population.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const SKUS: [(&str, &str, &str, i64); 4] = [
    ("SKU-CAPS-50", "Coffee capsules, 50 pcs", "coffee", 1299),
    ("SKU-CATFOOD-2KG", "Cat food, 2 kg", "pet_food", 1890),
    (
        "SKU-FILTER-3",
        "Water filter cartridges, 3 pcs",
        "filters",
        990,
    ),
    ("SKU-DIAPERS-M", "Diapers, size M, 64 pcs", "diapers", 1750),
];

pub(crate) async fn run(
    database_url: Option<&str>,
    args: DemoArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let url = match database_url {
        Some(url) => url.to_owned(),
        None => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{DEMO_FILE}{suffix}"));
            }
            format!("sqlite://{DEMO_FILE}")
        }
    };
    let store = AnyEventStore::open(&url).await?;
    let start_head = store.head().await?;
    writeln!(
        out,
        "Eventfold demo — event log on {} ({url})\n",
        store.backend()
    )?;

    // A live subscriber, started before any writer.
    let mut subscription = store.subscribe(start_head, SubscriptionOptions::default());

    writeln!(
        out,
        "1. {} users buy consumables and train, written by 8 concurrent writers…",
        args.users
    )?;
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let (users, seed) = (args.users, args.seed);
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(w));
            let mut ids = Vec::new();
            for user in (w as usize..users).step_by(8) {
                let events = user_history(&mut rng, user);
                for (stream, batch) in events {
                    store.append(&stream, ExpectedVersion::Any, &batch).await?;
                    ids.extend(batch.iter().map(|e| e.event_id));
                }
            }
            anyhow::Ok(ids)
        }));
    }
    let mut appended = HashSet::new();
    for w in writers {
        appended.extend(w.await??);
    }
    let elapsed = started.elapsed();
    writeln!(
        out,
        "   {} events appended in {:.2} s ({:.0} events/s)",
        appended.len(),
        elapsed.as_secs_f64(),
        appended.len() as f64 / elapsed.as_secs_f64()
    )?;

    writeln!(out, "\n2. The live subscriber tails the log:")?;
    let mut seen = HashSet::new();
    while seen.len() < appended.len() {
        let batch =
            tokio::time::timeout(Duration::from_secs(10), subscription.next_batch(1000)).await??;
        for event in batch {
            if seen.len() < 3 {
                writeln!(
                    out,
                    "   #{:<5} {:<24} {:<18} {}",
                    event.global_position, event.stream_id, event.event_type, event.data
                )?;
            }
            seen.insert(event.event_id);
        }
    }
    writeln!(
        out,
        "   … it received {} events; every appended event exactly once: {}",
        seen.len(),
        seen == appended
    )?;

    writeln!(
        out,
        "\n3. Optimistic concurrency: two deciders both saw order-demo at version 0"
    )?;
    let order = StreamId::new(format!("order-demo{}", args.seed))?;
    store
        .append(
            &order,
            ExpectedVersion::NoStream,
            &[NewEvent::new("OrderDrafted", json!({"sku": "SKU-CAPS-50"}))],
        )
        .await?;
    let confirm = NewEvent::new("OrderConfirmed", json!({}));
    let first = store
        .append(
            &order,
            ExpectedVersion::Exact(0),
            std::slice::from_ref(&confirm),
        )
        .await?;
    writeln!(
        out,
        "   the first confirms: version {}, position {}",
        first.last_version, first.last_position
    )?;
    match store
        .append(
            &order,
            ExpectedVersion::Exact(0),
            &[NewEvent::new("OrderCancelled", json!({}))],
        )
        .await
    {
        Err(error @ Error::WrongExpectedVersion { .. }) => {
            writeln!(out, "   the second is refused: {error}")?
        }
        other => writeln!(out, "   unexpected: {other:?}")?,
    }

    writeln!(
        out,
        "\n4. Idempotency: the speaker resends the same confirmation"
    )?;
    let again = store
        .append(&order, ExpectedVersion::Exact(0), &[confirm])
        .await?;
    writeln!(
        out,
        "   same result, nothing written twice: {} (position {})",
        again == first,
        again.last_position
    )?;

    let head = store.head().await?;
    writeln!(out, "\nThe log's head is at position {head}. Look around:")?;
    writeln!(
        out,
        "   DATABASE_URL=sqlite://{DEMO_FILE} eventfold streams read {order}"
    )?;
    writeln!(
        out,
        "   DATABASE_URL=sqlite://{DEMO_FILE} eventfold streams tail --category workout --limit 5"
    )?;
    Ok(())
}

/// A user's purchases (a few repeats of one consumable) and a workout.
fn user_history(rng: &mut impl Rng, user: usize) -> Vec<(StreamId, Vec<NewEvent>)> {
    let mut out = Vec::new();
    let (sku, title, category, price) = SKUS[rng.random_range(0..SKUS.len())];
    let purchases: Vec<NewEvent> = (0..rng.random_range(2..6))
        .map(|i| {
            NewEvent::new(
                "PurchaseRecorded",
                json!({
                    "user_id": format!("u{user}"), "sku": sku, "title": title,
                    "category": category, "quantity": 1, "unit_price": price,
                    "purchased_at": format!("2026-{:02}-{:02}T10:00:00Z", 1 + i * 2, 1 + rng.random_range(0..28)),
                }),
            )
        })
        .collect();
    if let Ok(stream) = StreamId::new(format!("purchases-u{user}")) {
        out.push((stream, purchases));
    }
    let km: f64 = rng.random_range(2.0..15.0);
    let workout = vec![
        NewEvent::new(
            "WorkoutStarted",
            json!({"user_id": format!("u{user}"), "sport": "running"}),
        ),
        NewEvent::new(
            "WorkoutUpdated",
            json!({"distance_km": km / 2.0, "heart_rate": 140}),
        ),
        NewEvent::new(
            "WorkoutCompleted",
            json!({"distance_km": km, "duration_s": (km * 330.0) as i64}),
        ),
    ];
    if let Ok(stream) = StreamId::new(format!("workout-u{user}w1")) {
        out.push((stream, workout));
    }
    out
}
