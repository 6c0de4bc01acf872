//! `eventfold demo`: the whole loop on the embedded default, in well under a minute.
//!
//! A seeded population buys consumables and trains for months (through the real command
//! side, so the consumable policy and reminder planning run), the projectors fold the log
//! into the read models, and then the voice re-order flow is walked through the real
//! HTTP API, request by request.

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Datelike, Duration, Utc};
use clap::Args;
use eventfold_commands::{CommandContext, CommandService, Principal};
use eventfold_domain::workout::WorkoutCommand;
use eventfold_event_log::{AnyEventStore, EventReader};
use eventfold_event_schemas::catalogue::{
    DeviceActivated, GeoPoint, PriceChanged, PurchaseRecorded,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

use crate::app;
use crate::config::Config;

/// Where the demo writes when no DATABASE_URL is given (recreated on every run).
const DEMO_FILE: &str = "eventfold-demo.db";
const DEMO_KEY: &str = "demo-service-key";

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Simulated users (1 to 1,000,000).
    #[arg(long, default_value_t = 300,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    users: usize,
    /// Seed of the random population.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// (sku, title, category, price in kopecks)
const CATALOG: [(&str, &str, &str, i64); 6] = [
    (
        "SKU-CAPS-50",
        "coffee capsules, 50 pieces",
        "coffee",
        129_900,
    ),
    ("SKU-CATFOOD-2KG", "cat food, 2 kg", "pet_food", 189_000),
    (
        "SKU-FILTER-3",
        "water filter cartridges, 3 pieces",
        "filters",
        99_000,
    ),
    (
        "SKU-DIAPERS-M",
        "diapers, size M, 64 pieces",
        "diapers",
        175_000,
    ),
    ("SKU-TEA-100", "green tea, 100 bags", "tea", 45_000),
    (
        "SKU-VITAMIN-D",
        "vitamin D, 90 capsules",
        "vitamins",
        69_000,
    ),
];

/// A clock the simulation moves.
#[derive(Clone)]
struct SimClock(Arc<AtomicI64>);

impl SimClock {
    fn set(&self, at: DateTime<Utc>) {
        self.0.store(at.timestamp_millis(), Ordering::SeqCst);
    }
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap_or_default()
    }
}

pub(crate) async fn run(
    database_url: Option<&str>,
    args: DemoArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let url = match database_url {
        Some(url) => url.to_owned(),
        None => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{DEMO_FILE}{suffix}"));
            }
            format!("sqlite://{DEMO_FILE}")
        }
    };
    let mut config = Config::load(None)?;
    config.api_keys = Some(format!("{DEMO_KEY}=service:demo"));
    if database_url.is_none() {
        fresh_analytics(&mut config).await?;
    }
    let app = app::build(&config, &url).await?;
    writeln!(out, "Eventfold demo\n==============")?;
    for line in &app.report {
        writeln!(out, "  {line}")?;
    }

    let real_now = Utc::now();
    let clock = SimClock(Arc::new(AtomicI64::new(real_now.timestamp_millis())));
    let service_clock = clock.clone();
    let service = Arc::new(
        app::command_service(
            app.store.clone(),
            app.planner,
            &app.read_pool,
            Arc::new(move || service_clock.now()),
        )
        .await?,
    );

    writeln!(
        out,
        "\n1. {} users buy consumables and train for six months (seed {})…",
        args.users, args.seed
    )?;
    let ctx = CommandContext::new(Principal::service("demo"));
    for (sku, title, _, price) in CATALOG {
        service
            .set_price(
                &ctx,
                price_entry(sku, title, price, real_now - Duration::days(200)),
            )
            .await?;
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    for user in 0..args.users {
        simulate_user(&service, &clock, &ctx, &mut rng, user, real_now).await?;
        if (user + 1) % 100 == 0 || user + 1 == args.users {
            writeln!(out, "   … {}/{} users", user + 1, args.users)?;
            out.flush()?;
        }
    }
    clock.set(real_now);
    let head = app.store.head().await?;
    writeln!(
        out,
        "   {} events in the log after {:.1} s",
        head,
        started.elapsed().as_secs_f64()
    )?;

    writeln!(
        out,
        "\n2. The projectors fold the log into the read models…"
    )?;
    let fold = Instant::now();
    app.projections.catch_up().await?;
    writeln!(
        out,
        "   {} projections at position {head} in {:.1} s: {}",
        app.projections.names().len(),
        fold.elapsed().as_secs_f64(),
        app.projections.names().join(", ")
    )?;

    walk_through(&app, &service, out).await?;
    summary(&app, out).await?;
    if config.clickhouse_url.is_some() {
        analytics(&app, out).await?;
    }
    writeln!(
        out,
        "\nDone in {:.1} s. The log is in {url}; try:",
        started.elapsed().as_secs_f64()
    )?;
    writeln!(out, "   DATABASE_URL={url} eventfold projections status")?;
    writeln!(
        out,
        "   DATABASE_URL={url} EVENTFOLD_API_KEYS=key=service:me eventfold serve"
    )?;
    Ok(())
}

/// The demo recreates its log, so its ClickHouse models start empty too: a database of
/// their own (`eventfold_demo` unless `EVENTFOLD_CLICKHOUSE_DATABASE` names one), dropped
/// first. Checkpoints left by an earlier run would otherwise be ahead of the new log.
async fn fresh_analytics(config: &mut Config) -> anyhow::Result<()> {
    let Some(url) = &config.clickhouse_url else {
        return Ok(());
    };
    let database = config
        .clickhouse_database
        .get_or_insert_with(|| "eventfold_demo".to_owned());
    let target = eventfold_projections::ClickHouseTarget::new(url, database)?;
    target
        .ensure()
        .await
        .map_err(|e| anyhow::anyhow!("CLICKHOUSE_URL={url}: {e}"))?;
    target.drop_database().await?;
    Ok(())
}

/// With `CLICKHOUSE_URL` set: a few answers of the analytics models, through the API.
async fn analytics(app: &app::App, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "\n5. Analytics in ClickHouse, through the HTTP API")?;
    let funnel = call(app, out, "GET", "/api/v1/analytics/funnel", None, None).await?;
    // Per category over every slot hour: (scheduled, offered, accepted, placed).
    let mut categories: Vec<(String, [u64; 4])> = Vec::new();
    for row in funnel["items"].as_array().into_iter().flatten() {
        let category = row["category"].as_str().unwrap_or("?").to_owned();
        let stages =
            ["scheduled", "offered", "accepted", "placed"].map(|k| row[k].as_u64().unwrap_or(0));
        match categories.iter_mut().find(|(c, _)| *c == category) {
            Some((_, sums)) => {
                for (sum, n) in sums.iter_mut().zip(stages) {
                    *sum += n;
                }
            }
            None => categories.push((category, stages)),
        }
    }
    writeln!(
        out,
        "   the re-order funnel by category: scheduled → offered → accepted → placed"
    )?;
    for (category, [scheduled, offered, accepted, placed]) in &categories {
        writeln!(
            out,
            "     {category:<10} {scheduled:>5} → {offered} → {accepted} → {placed}"
        )?;
    }
    let week = (Utc::now() - Duration::days(7)).iso_week();
    let week = format!("{:04}-W{:02}", week.year(), week.week());
    let board = call(
        app,
        out,
        "GET",
        &format!("/api/v1/analytics/leaderboards/running/weeks/{week}?by=distance&limit=3"),
        None,
        None,
    )
    .await?;
    writeln!(out, "   running, last week ({week}), by distance:")?;
    let top = board["top"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if top.is_empty() {
        writeln!(out, "     (nobody ran that week)")?;
    }
    for (i, place) in top.iter().enumerate() {
        writeln!(
            out,
            "     #{} {}: {:.1} km in {} workouts, {} min moving",
            i + 1,
            place["user_id"].as_str().unwrap_or("?"),
            place["distance_m"].as_f64().unwrap_or(0.0) / 1000.0,
            place["workouts"],
            place["duration_s"].as_i64().unwrap_or(0) / 60
        )?;
    }
    if let Some(user) = top.first().and_then(|p| p["user_id"].as_str()) {
        let weeks = call(
            app,
            out,
            "GET",
            &format!("/api/v1/analytics/users/{user}/weekly-activity"),
            None,
            None,
        )
        .await?;
        let weeks: Vec<String> = weeks["items"]
            .as_array()
            .into_iter()
            .flatten()
            .take(4)
            .map(|w| {
                format!(
                    "{} {:.1} km",
                    w["week"].as_str().unwrap_or("?"),
                    w["distance_m"].as_f64().unwrap_or(0.0) / 1000.0
                )
            })
            .collect();
        writeln!(out, "   {user}'s recent weeks: {}", weeks.join(", "))?;
    }
    Ok(())
}

fn price_entry(sku: &str, title: &str, unit_price: i64, at: DateTime<Utc>) -> PriceChanged {
    PriceChanged {
        sku: sku.into(),
        title: title.into(),
        unit_price,
        currency: "RUB".into(),
        available: true,
        delivery_days: 2,
        changed_at: at,
    }
}

async fn simulate_user(
    service: &CommandService<AnyEventStore>,
    clock: &SimClock,
    ctx: &CommandContext,
    rng: &mut StdRng,
    user: usize,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let user_id = format!("u{user}");
    let offset = [180, 180, 180, 300, 420][user % 5];
    let hour = rng.random_range(7..22);
    for _ in 0..4 {
        let at = now - Duration::days(rng.random_range(1..60)) + Duration::hours(hour - 12)
            - Duration::minutes(i64::from(offset));
        clock.set(at);
        service
            .record_activation(
                ctx,
                DeviceActivated {
                    device_id: format!("spk-{user_id}"),
                    user_id: user_id.clone(),
                    activated_at: at,
                    utc_offset_minutes: offset,
                },
            )
            .await?;
    }
    clock.set(now);
    let (sku, title, category, price) = CATALOG[rng.random_range(0..CATALOG.len())];
    let interval = rng.random_range(14..40);
    // Most users are due about now; some bought recently.
    let mut at = now - Duration::days(interval * 5 + rng.random_range(-3..12));
    while at < now - Duration::days(2) {
        service
            .record_purchase(
                ctx,
                PurchaseRecorded {
                    user_id: user_id.clone(),
                    sku: sku.into(),
                    title: title.into(),
                    category: category.into(),
                    quantity: rng.random_range(1..3),
                    unit_price: price,
                    currency: "RUB".into(),
                    purchased_at: at,
                },
            )
            .await?;
        at += Duration::days(interval + rng.random_range(-3..4));
    }
    for _ in 0..rng.random_range(1..4) {
        let start = now
            - Duration::days(rng.random_range(1..56))
            - Duration::hours(rng.random_range(0..12));
        let workout = Uuid::from_u64_pair(user as u64, rng.random());
        let km: f64 = rng.random_range(3.0..15.0);
        let sport = if rng.random_bool(0.7) {
            "running"
        } else {
            "cycling"
        };
        clock.set(start);
        service
            .start_workout(ctx, workout, user_id.clone(), sport.into(), None)
            .await?;
        for step in 1..=3 {
            clock.set(start + Duration::minutes(step * 10));
            let points = vec![GeoPoint {
                lat: 55.75 + step as f64 * 0.002,
                lon: 37.61 + km * 0.0005,
                at: clock.now(),
            }];
            service
                .workout_command(ctx, workout, |at| WorkoutCommand::Update {
                    distance_m: Some(km * 1000.0 * step as f64 / 3.0),
                    heart_rate: Some(130 + 10 * step as u32),
                    speed_mps: Some(3.0),
                    points: points.clone(),
                    at,
                })
                .await?;
        }
        clock.set(start + Duration::minutes((km * 6.0) as i64));
        service
            .workout_command(ctx, workout, |at| WorkoutCommand::Complete {
                distance_m: Some(km * 1000.0),
                at,
            })
            .await?;
    }
    Ok(())
}

/// One request through the real router, printed.
async fn call(
    app: &app::App,
    out: &mut impl Write,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> anyhow::Result<Value> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", DEMO_KEY)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = app
        .router
        .clone()
        .oneshot(request.body(Body::from(body))?)
        .await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    writeln!(out, "   {method} {path} → {}", status.as_u16())?;
    if !status.is_success() {
        anyhow::bail!("{method} {path} answered {status}: {value}");
    }
    Ok(value)
}

async fn walk_through(
    app: &app::App,
    service: &CommandService<AnyEventStore>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    writeln!(out, "\n3. The voice re-order flow, through the HTTP API")?;
    // The user whose reminder comes up next.
    let row: Option<(String, String, i64, String)> = sqlx::query_as(
        "SELECT user_id, reminder_id, due_at, sku FROM rm_reminders WHERE status = 'scheduled' \
         ORDER BY due_at, reminder_id LIMIT 1",
    )
    .fetch_optional(app.projections.db().pool())
    .await?;
    let Some((user, reminder, due_ms, sku)) = row else {
        writeln!(
            out,
            "   (no reminder is scheduled in this population: try more --users)"
        )?;
        return Ok(());
    };
    // It got dearer since the user last bought it: the offer must say so.
    if let Some((sku, title, _, price)) = CATALOG.iter().find(|c| c.0 == sku) {
        let ctx = CommandContext::new(Principal::service("catalog"));
        service
            .set_price(&ctx, price_entry(sku, title, price + 10_000, Utc::now()))
            .await?;
        app.projections.catch_up().await?;
        writeln!(
            out,
            "   (the catalog raised the price of {title} by 100.00 RUB a moment ago)"
        )?;
    }
    let due = DateTime::from_timestamp_millis(due_ms).unwrap_or_default();
    writeln!(
        out,
        "\n   The speaker of {user} wakes up at {due} and asks what is due:"
    )?;
    let answer = call(
        app,
        out,
        "GET",
        &format!(
            "/api/v1/users/{user}/reminders/due?at={}",
            due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .replace('+', "%2B")
        ),
        None,
        None,
    )
    .await?;
    let offer = &answer["offers"][0];
    writeln!(
        out,
        "   (answered from {}) 🔊 \"{}\"",
        answer["source"].as_str().unwrap_or("?"),
        offer["text"].as_str().unwrap_or("?")
    )?;
    call(
        app,
        out,
        "POST",
        &format!("/api/v1/reminders/{reminder}/offer"),
        Some(json!({"device_id": format!("spk-{user}")})),
        None,
    )
    .await?;
    writeln!(out, "\n   The user says \"yes\":")?;
    let yes = call(
        app,
        out,
        "POST",
        &format!("/api/v1/reminders/{reminder}/accept"),
        None,
        Some("yes-1"),
    )
    .await?;
    let order = yes["order_id"].as_str().unwrap_or_default().to_owned();
    writeln!(
        out,
        "   order {order} drafted at the refreshed price: {} kopecks a unit (was {}), total {}, delivery in {} days",
        yes["lines"][0]["unit_price"], yes["repriced_from"], yes["total"], yes["delivery_days"]
    )?;
    writeln!(
        out,
        "\n   The speaker did not hear back and resends the same \"yes\":"
    )?;
    let again = call(
        app,
        out,
        "POST",
        &format!("/api/v1/reminders/{reminder}/accept"),
        None,
        Some("yes-1"),
    )
    .await?;
    writeln!(
        out,
        "   same order {} ({}): no second order",
        again["order_id"].as_str().unwrap_or("?"),
        if again == yes {
            "the answer is the first one, field for field"
        } else {
            "a different answer!"
        }
    )?;
    writeln!(out, "\n   The final confirmation:")?;
    let placed = call(
        app,
        out,
        "POST",
        &format!("/api/v1/orders/{order}/confirm"),
        None,
        None,
    )
    .await?;
    let types: Vec<&str> = placed["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["event_type"].as_str()).collect())
        .unwrap_or_default();
    writeln!(
        out,
        "   events: {}; consistency token {}",
        types.join(" → "),
        placed["consistency_token"]
    )?;
    // The read model catches up in the background of `serve`; here we fold now.
    app.projections.catch_up().await?;
    let view = call(
        app,
        out,
        "GET",
        &format!(
            "/api/v1/orders/{order}?after={}",
            placed["consistency_token"]
        ),
        None,
        None,
    )
    .await?;
    writeln!(
        out,
        "   the order read model says: status {}, payment push requested: {}",
        view["status"], view["payment_requested"]
    )?;
    Ok(())
}

async fn summary(app: &app::App, out: &mut impl Write) -> anyhow::Result<()> {
    let pool = app.projections.db().pool();
    writeln!(out, "\n4. The read models")?;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM rm_reminders GROUP BY status ORDER BY status")
            .fetch_all(pool)
            .await?;
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
    writeln!(out, "   reminders: {}", statuses.join(", "))?;
    let consumables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_consumables")
        .fetch_one(pool)
        .await?;
    let purchases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_purchases")
        .fetch_one(pool)
        .await?;
    writeln!(
        out,
        "   purchases: {purchases} lines, {consumables} consumables detected"
    )?;
    let busiest: Option<(i64, i64)> = sqlx::query_as(
        "SELECT slot, COUNT(*) AS n FROM rm_reminders GROUP BY slot ORDER BY n DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    if let Some((_, n)) = busiest {
        writeln!(
            out,
            "   reminder slots: the busiest 30-minute slot holds {n} reminders (capacity {})",
            app.planner.capacity
        )?;
    }
    let workouts: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM rm_workouts WHERE status = 'completed'")
            .fetch_one(pool)
            .await?;
    writeln!(out, "   workouts: {workouts} completed")?;
    let top: Vec<(String, f64, i64)> = sqlx::query_as(
        "SELECT user_id, SUM(distance_m) AS distance, COUNT(*) AS workouts FROM rm_workouts \
         WHERE status = 'completed' GROUP BY user_id ORDER BY distance DESC, user_id LIMIT 3",
    )
    .fetch_all(pool)
    .await?;
    for (i, (user, distance, n)) in top.iter().enumerate() {
        writeln!(
            out,
            "   #{} {user}: {:.1} km in {n} workouts",
            i + 1,
            distance / 1000.0
        )?;
    }
    Ok(())
}
