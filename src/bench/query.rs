//! `eventfold bench query`: the voice route under a fixed request rate, the lag from a
//! command's answer to its effect in the Redis voice model, and raw Redis GETs as the
//! baseline — in one run.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use eventfold_event_log::EventWriter;
use eventfold_event_schemas::catalogue::ReminderScheduled;
use eventfold_event_schemas::{DomainEvent, EventMetadata, ExpectedVersion, StreamId};
use redis::AsyncCommands;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::report::Measured;
use super::{admin_url, parse_duration, ScratchDb};
use crate::app;
use crate::config::Config;

const KEY: &str = "bench-key";

#[derive(Debug, Args)]
pub(crate) struct QueryBenchArgs {
    /// Request rates to hold, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u32>,
    /// How long each rate is held.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Users with a due reminder.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Commands timed for the command→Redis lag.
    #[arg(long, default_value_t = 200)]
    lag_samples: usize,
    /// PostgreSQL server for the log and relational models (a scratch database).
    #[arg(long, env = "EVENTFOLD_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Redis for the voice model.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) async fn run(
    database_url: &str,
    args: QueryBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if args.rates.contains(&0) || args.users == 0 {
        anyhow::bail!("--rates and --users must be >= 1");
    }
    let scratch = ScratchDb::create(&admin_url(args.postgres.as_deref(), database_url)).await?;
    let prefix = format!("eventfold-bench:{}:", Uuid::new_v4().simple());
    let result = run_in(&scratch.url, &prefix, &args, out).await;
    if let Ok(client) = redis::Client::open(args.redis.as_str()) {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _: redis::RedisResult<i64> =
                    redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
            }
        }
    }
    scratch.remove().await?;
    result
}

async fn run_in(
    url: &str,
    prefix: &str,
    args: &QueryBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let redis_client = redis::Client::open(args.redis.as_str())?;
    let mut redis_conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| {
            format!(
                "cannot reach Redis at {} (the voice model needs it)",
                args.redis
            )
        })?;
    let config = Config {
        redis_url: Some(args.redis.clone()),
        redis_prefix: Some(prefix.to_owned()),
        api_keys: Some(format!("{KEY}=service:bench")),
        // The bench measures the server, not its limits: one caller far above them.
        limits: crate::config::LimitsFile::off(),
        ..Config::default()
    };
    let app = app::build(&config, url).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut projectors = app.projections.spawn(stopped);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = app.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    // Every user has a reminder due now.
    let now = chrono::Utc::now();
    for u in 0..args.users {
        let reminder_id = Uuid::new_v4();
        let event: DomainEvent = ReminderScheduled {
            reminder_id,
            user_id: format!("u{u}"),
            sku: format!("SKU-{}", u % 50),
            title: "coffee capsules".into(),
            quantity: 1,
            last_unit_price: 129_900,
            currency: "RUB".into(),
            due_at: now - chrono::Duration::hours(1),
            slot: 0,
        }
        .into();
        let new = event.to_new_event(Uuid::new_v4(), EventMetadata::default());
        app.store
            .append(
                &StreamId::from_parts("reminder", reminder_id)?,
                ExpectedVersion::NoStream,
                &[new],
            )
            .await?;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    // Wait until the voice model has every user.
    let last = format!("{base}/api/v1/users/u{}/reminders/due", args.users - 1);
    for _ in 0..600 {
        let body: serde_json::Value = client
            .get(&last)
            .header("x-api-key", KEY)
            .send()
            .await?
            .json()
            .await?;
        if body["source"] == "redis" && body["offers"].as_array().is_some_and(|o| !o.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writeln!(out, "bench query: GET /api/v1/users/{{id}}/reminders/due over {} users, {:?} per rate; client and server on this machine", args.users, args.duration)?;

    // Raw Redis GET baseline.
    let key = format!("{prefix}baseline");
    let _: () = redis_conn.set(&key, "x".repeat(200)).await?;
    let mut raw = Measured::default();
    let started = Instant::now();
    for _ in 0..5000 {
        let t0 = Instant::now();
        let _: String = redis_conn.get(&key).await?;
        raw.latencies.push(t0.elapsed());
        raw.events += 1;
    }
    let raw = Measured::merge(vec![raw], started.elapsed());
    writeln!(
        out,
        "raw Redis GET (one connection, sequential): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(raw.percentile(0.5)),
        ms(raw.percentile(0.99)),
        ms(raw.percentile(1.0))
    )?;

    writeln!(
        out,
        "{:>8} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>12}",
        "target/s", "achieved/s", "ok", "errors", "p50 ms", "p99 ms", "max ms", "p50 / raw"
    )?;
    for &rate in &args.rates {
        let (measured, errors) = hold_rate(&client, &base, args.users, rate, args.duration).await;
        writeln!(
            out,
            "{rate:>8} {:>10.0} {:>8} {errors:>7} {:>9.2} {:>9.2} {:>9.2} {:>12.1}",
            measured.per_second(),
            measured.events,
            ms(measured.percentile(0.5)),
            ms(measured.percentile(0.99)),
            ms(measured.percentile(1.0)),
            measured.percentile(0.5).as_secs_f64() / raw.percentile(0.5).as_secs_f64().max(1e-9),
        )?;
        out.flush()?;
    }

    // Command answered → visible in the Redis voice model.
    let mut lag = Measured::default();
    let started = Instant::now();
    for i in 0..args.lag_samples {
        let user = format!("lag{i}");
        let body = serde_json::json!({"user_id": user, "sku": "SKU-LAG", "title": "tea", "category": "tea", "quantity": 1, "unit_price": 100,
                                      "purchased_at": (now - chrono::Duration::days(60)).to_rfc3339()});
        let answer: serde_json::Value = client
            .post(format!("{base}/api/v1/purchases"))
            .header("x-api-key", KEY)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let answered = Instant::now();
        let reminder = answer["reminder"]["reminder_id"]
            .as_str()
            .context("no reminder planned")?
            .to_owned();
        let due_key = format!("{prefix}due:{user}");
        loop {
            let score: Option<f64> = redis_conn.zscore(&due_key, &reminder).await?;
            if score.is_some() {
                break;
            }
            if answered.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("reminder {reminder} never reached the Redis voice model");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lag.latencies.push(answered.elapsed());
        lag.events += 1;
    }
    let lag = Measured::merge(vec![lag], started.elapsed());
    writeln!(out, "command answered → visible in the Redis voice model ({} samples): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms", args.lag_samples, ms(lag.percentile(0.5)), ms(lag.percentile(0.99)), ms(lag.percentile(1.0)))?;

    stop.send(true).ok();
    while projectors.join_next().await.is_some() {}
    server.abort();
    Ok(())
}

/// Open-loop load: a request is due every 1/rate seconds whether or not earlier ones
/// have answered; latency counts from when it was due (no coordinated omission).
async fn hold_rate(
    client: &reqwest::Client,
    base: &str,
    users: usize,
    rate: u32,
    duration: Duration,
) -> (Measured, u64) {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = (duration.as_secs_f64() * f64::from(rate)) as u64;
    let in_flight = Arc::new(Semaphore::new(1024));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await;
        let (client, url) = (
            client.clone(),
            format!("{base}/api/v1/users/u{}/reminders/due", i as usize % users),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let ok = matches!(client.get(url).header("x-api-key", KEY).send().await, Ok(r) if r.status().is_success());
            (due.elapsed(), ok)
        }));
    }
    let mut measured = Measured::default();
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((latency, true)) => {
                measured.latencies.push(latency);
                measured.events += 1;
            }
            _ => errors += 1,
        }
    }
    (Measured::merge(vec![measured], started.elapsed()), errors)
}
