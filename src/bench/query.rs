//! `eventfold bench query`: the voice route under fixed request rates, its saturation
//! throughput beside the same server's `/healthz` ceiling, the lag from a command's
//! answer to its effect in the Redis voice model, and raw Redis GETs as the baseline —
//! in one run.
//!
//! The load comes from other processes, so that the client's work is not counted in
//! the server's: the fixed rates from `eventfold bench load` (an open-loop client: a
//! request is due every 1/rate s whether or not earlier ones answered, latency counted
//! from when it was due), the saturation from `wrk` (Debian's package) when installed.
//! Client and server still share this machine's cores.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use eventfold_event_log::EventWriter;
use eventfold_event_schemas::catalogue::ReminderScheduled;
use eventfold_event_schemas::{DomainEvent, EventMetadata, ExpectedVersion, StreamId};
use redis::AsyncCommands;
use uuid::Uuid;

use super::report::{taking_turns, Measured};
use super::{admin_url, parse_duration, ScratchDb};
use crate::app;
use crate::config::Config;

const KEY: &str = "bench-key";
/// The voice route, `{user}` standing for the user.
const VOICE: &str = "/api/v1/users/{user}/reminders/due";

#[derive(Debug, Args)]
pub(crate) struct QueryBenchArgs {
    /// Request rates to hold, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u32>,
    /// How long each rate is held.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Users with a due reminder.
    #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
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
    /// How long `wrk` saturates each route (0 skips it).
    #[arg(long, default_value = "5s", value_parser = super::parse_duration_or_zero)]
    saturate: Duration,
    /// `wrk` connections (at most 10,000: each is a socket of `wrk`'s and the server's).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Slices the saturation time is cut into, `/healthz` and the voice route taking
    /// turns, so that both meet the same moments of a shared machine.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

/// `eventfold bench load`: one fixed rate against a running server.
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long, value_parser = server_base)]
    base: String,
    /// Users `u0..uN` to spread the requests over.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    users: usize,
    /// Requests per second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// How long.
    #[arg(long, value_parser = parse_duration)]
    duration: Duration,
    /// The route; `{user}` is replaced by `u0..uN` in turn.
    #[arg(long, default_value = VOICE, value_parser = route_path)]
    path: String,
    /// Most requests in flight, each on a kept-alive connection of its own, as a
    /// gateway in front of the API would hold them; a request due while all are busy
    /// waits for one, and its wait counts in its latency.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    connections: usize,
}

/// A server's base address: `http://` or `https://`, a host, no path (the route is
/// `--path`).
fn server_base(text: &str) -> Result<String, String> {
    match reqwest::Url::parse(text) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && matches!(url.path(), "" | "/")
                && url.query().is_none() =>
        {
            Ok(text.trim_end_matches('/').to_owned())
        }
        _ => Err(format!(
            "{text:?} is not a server's address: use e.g. http://127.0.0.1:8080"
        )),
    }
}

/// A route's path: from `/`, with no spaces.
fn route_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') && !text.chars().any(char::is_whitespace) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a route's path: use e.g. {VOICE}"))
    }
}

/// Runs in its own process: prints `{"achieved", "ok", "errors", "p50_ms", "p99_ms", "max_ms"}`.
pub(crate) async fn load(args: LoadArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if args.rate == 0 || args.users == 0 || args.connections == 0 {
        anyhow::bail!("--rate, --users and --connections must be >= 1");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let (measured, errors) = hold_rate(
        &client,
        &args.base,
        &args.path,
        args.connections,
        args.users,
        args.rate,
        args.duration,
    )
    .await?;
    writeln!(
        out,
        "{}",
        serde_json::json!({
            "achieved": measured.per_second(),
            "ok": measured.events,
            "errors": errors,
            "p50_ms": ms(measured.percentile(0.5)),
            "p99_ms": ms(measured.percentile(0.99)),
            "max_ms": ms(measured.percentile(1.0)),
        })
    )?;
    Ok(())
}

/// Runs `eventfold bench load` as a child process.
async fn load_in_child(
    base: &str,
    path: &str,
    users: usize,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let args = [
        "bench".to_owned(),
        "load".to_owned(),
        "--base".to_owned(),
        base.to_owned(),
        "--users".to_owned(),
        users.to_string(),
        "--rate".to_owned(),
        rate.to_string(),
        "--duration".to_owned(),
        format!("{}ms", duration.as_millis()),
        "--path".to_owned(),
        path.to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await??;
    if !output.status.success() {
        anyhow::bail!("the load generator failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the load generator printed no result")?;
    Ok(serde_json::from_str(line)?)
}

/// What `wrk --latency` measured.
#[derive(Debug, Default)]
struct Saturation {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// `12.5us`, `1.20ms`, `2.00s` in milliseconds.
fn wrk_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

impl Saturation {
    /// Slices of equal length as one: the mean rate and p50, the worst p99, all errors.
    fn combine(slices: &[Saturation]) -> Saturation {
        let n = slices.len().max(1) as f64;
        Saturation {
            per_second: slices.iter().map(|s| s.per_second).sum::<f64>() / n,
            p50_ms: slices.iter().map(|s| s.p50_ms).sum::<f64>() / n,
            p99_ms: slices.iter().map(|s| s.p99_ms).fold(0.0, f64::max),
            errors: slices.iter().map(|s| s.errors).sum(),
        }
    }
}

fn parse_wrk(output: &str) -> Saturation {
    let mut s = Saturation::default();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => s.per_second = n.parse().unwrap_or(0.0),
            ["50%", v] => s.p50_ms = wrk_ms(v).unwrap_or(0.0),
            ["99%", v] => s.p99_ms = wrk_ms(v).unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => s.errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                s.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    s
}

/// `wrk` against `path` (the voice route spread over the users by a Lua script).
async fn saturate(
    base: &str,
    path: &str,
    users: usize,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Saturation> {
    let script = std::env::temp_dir().join(format!("eventfold-wrk-{}.lua", Uuid::new_v4()));
    std::fs::write(
        &script,
        format!(
            "local n = 0\nrequest = function()\n  n = n + 1\n  local path = string.gsub(\"{path}\", \"{{user}}\", \"u\" .. (n % {users}))\n  return wrk.format(\"GET\", path, {{[\"x-api-key\"] = \"{KEY}\"}})\nend\n"
        ),
    )?;
    let args = vec![
        "-t2".to_owned(),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".to_owned(),
        "-s".to_owned(),
        script.display().to_string(),
        base.to_owned(),
    ];
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(args).output())
            .await?;
    let _ = std::fs::remove_file(&script);
    let output = output.context("cannot run wrk")?;
    if !output.status.success() {
        anyhow::bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(parse_wrk(&String::from_utf8_lossy(&output.stdout)))
}

fn have_wrk() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
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
    let redis = super::ScratchRedis::new(&args.redis);
    let result = run_in(&scratch.url, &redis.prefix, &args, out).await;
    // Redis unreachable: nothing of ours is there to delete (the bench said so).
    let _ = redis.remove().await;
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
    let mut projectors = app.projections.spawn(stopped.clone());
    let mut reactions = app.spawn_reactions(stopped);
    let listener = crate::serve::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = app.router.clone();
    // The server `serve` runs, with its bounds.
    let server = tokio::spawn(eventfold_http::serve(
        listener,
        router,
        eventfold_http::ServeOptions::default(),
        std::future::pending(),
    ));

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
        .pool_max_idle_per_host(64)
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
        "fixed rates (open loop, from `eventfold bench load` in its own process):"
    )?;
    writeln!(
        out,
        "{:<9} {:>8} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>12}",
        "route",
        "target/s",
        "achieved/s",
        "ok",
        "errors",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p50 / raw"
    )?;
    // Each rate against the voice route, then against `/healthz` at the same rate: the
    // second row is what this machine, the client and the HTTP stack add to any route.
    for &rate in &args.rates {
        for (route, path) in [("voice", VOICE), ("/healthz", "/healthz")] {
            let r = load_in_child(&base, path, args.users, rate, args.duration).await?;
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            writeln!(
                out,
                "{route:<9} {rate:>8} {:>10.0} {:>8} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>12.1}",
                f("achieved"),
                r["ok"].as_u64().unwrap_or(0),
                r["errors"].as_u64().unwrap_or(0),
                f("p50_ms"),
                f("p99_ms"),
                f("max_ms"),
                f("p50_ms") / ms(raw.percentile(0.5)).max(1e-9),
            )?;
            out.flush()?;
        }
    }
    if args.saturate.is_zero() {
        writeln!(out, "saturation: skipped (--saturate 0)")?;
    } else if !have_wrk() {
        writeln!(
            out,
            "saturation: skipped, `wrk` is not installed (apt-get install wrk)"
        )?;
    } else {
        writeln!(
            out,
            "saturation (wrk -t2 -c{} for {:?} a route, its own process; p50 the mean, p99 the \
             worst of the rounds):",
            args.connections, args.saturate
        )?;
        writeln!(
            out,
            "{:<40} {:>10} {:>9} {:>9} {:>7}",
            "route", "req/s", "p50 ms", "p99 ms", "errors"
        )?;
        let rounds = args.rounds.max(1);
        let slice = (args.saturate / rounds).max(Duration::from_secs(1));
        let (mut healthz, mut voice) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for health_turn in taking_turns(round) {
                if health_turn {
                    healthz.push(saturate(&base, "/healthz", 1, args.connections, slice).await?);
                } else {
                    voice.push(saturate(&base, VOICE, args.users, args.connections, slice).await?);
                }
            }
        }
        let ratios: Vec<String> = voice
            .iter()
            .zip(&healthz)
            .map(|(v, h)| format!("{:.2}", v.per_second / h.per_second.max(1e-9)))
            .collect();
        let (healthz, voice) = (Saturation::combine(&healthz), Saturation::combine(&voice));
        for (route, s) in [
            ("GET /healthz (the server's ceiling)", &healthz),
            ("GET /api/v1/users/{id}/reminders/due", &voice),
        ] {
            writeln!(
                out,
                "{route:<40} {:>10.0} {:>9.2} {:>9.2} {:>7}",
                s.per_second, s.p50_ms, s.p99_ms, s.errors
            )?;
        }
        writeln!(
            out,
            "voice / healthz: {:.2}x ({rounds} rounds of {:?} each, taking turns; per round: {})",
            voice.per_second / healthz.per_second.max(1e-9),
            slice,
            ratios.join(", ")
        )?;
    }

    // Command answered → visible in the Redis voice model.
    let mut lag = Measured::default();
    let mut answer_times = Measured::default();
    let started = Instant::now();
    for i in 0..args.lag_samples {
        let user = format!("lag{i}");
        let body = serde_json::json!({"user_id": user, "sku": "SKU-LAG", "title": "tea", "category": "tea", "quantity": 1, "unit_price": 100,
                                      "purchased_at": (now - chrono::Duration::days(60)).to_rfc3339()});
        let sent = Instant::now();
        let answer: serde_json::Value = client
            .post(format!("{base}/api/v1/purchases"))
            .header("x-api-key", KEY)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let answered = Instant::now();
        answer_times.latencies.push(answered - sent);
        answer_times.events += 1;
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
        lag.latencies.push(sent.elapsed());
        lag.events += 1;
    }
    let lag = Measured::merge(vec![lag], started.elapsed());
    let answer_times = Measured::merge(vec![answer_times], started.elapsed());
    writeln!(out, "purchase answered, its reminder planned by the reaction ({} samples): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms", args.lag_samples, ms(answer_times.percentile(0.5)), ms(answer_times.percentile(0.99)), ms(answer_times.percentile(1.0)))?;
    writeln!(out, "purchase sent → its reminder visible in the Redis voice model: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms", ms(lag.percentile(0.5)), ms(lag.percentile(0.99)), ms(lag.percentile(1.0)))?;

    stop.send(true).ok();
    while projectors.join_next().await.is_some() {}
    while reactions.join_next().await.is_some() {}
    server.abort();
    // The server's tasks, then the app's leases, gone before the scratch database is:
    // their keeper ends with its connection instead of warning that it lost it.
    let _ = server.await;
    drop(app);
    Ok(())
}

/// Open-loop load: a request is due every 1/rate seconds whether or not earlier ones
/// have answered; latency counts from when it was due (no coordinated omission). The
/// requests are released by an OS thread sleeping to each due time (tokio's timer
/// rounds to milliseconds, which would add up to 1 ms to every latency). At most
/// `connections` requests are in flight: without a bound, a moment's slowdown made the
/// client open hundreds of connections at once, overflow the server's listen queue and
/// wait out the kernel's one-second SYN retry, which measured the client's storm rather
/// than the route. A request due while all are busy waits in the releasing thread, not
/// as a task of its own, so the client holds at most `connections` requests whatever the
/// rate (a task per request due grew it by ~200 MB a second at a rate far above the
/// server's). Whatever the server does, the run ends once twice the duration has
/// passed: the requests not sent or not answered by then count as errors (a server that
/// accepted connections and never answered held the client forever).
async fn hold_rate(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    connections: usize,
    users: usize,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<(Measured, u64)> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = (duration.as_secs_f64() * f64::from(rate)) as u64;
    let runtime = tokio::runtime::Handle::current();
    let (sent, mut tasks) = tokio::sync::mpsc::unbounded_channel();
    let (client, base, path) = (client.clone(), base.to_owned(), path.to_owned());
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(connections));
    let started = Instant::now();
    let give_up = started + duration.saturating_mul(2);
    let dispatcher = std::thread::spawn(move || {
        for i in 0..total {
            let due = started + interval.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let free = runtime.block_on(async {
                tokio::time::timeout_at(give_up.into(), in_flight.clone().acquire_owned()).await
            });
            let Ok(Ok(permit)) = free else {
                return total - i;
            };
            if Instant::now() > give_up {
                return total - i;
            }
            let url = match path.split_once("{user}") {
                Some((head, tail)) => format!("{base}{head}u{}{tail}", i as usize % users),
                None => format!("{base}{path}"),
            };
            let client = client.clone();
            let task = runtime.spawn(async move {
                let _permit = permit;
                // The whole answer, body included: the latency of an answer the caller
                // can use, and a connection hyper may reuse (one dropped mid-body is
                // closed).
                let ok = match client.get(url).header("x-api-key", KEY).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                (due.elapsed(), ok)
            });
            if sent.send(task).is_err() {
                return total - i - 1;
            }
        }
        0
    });
    let mut measured = Measured::default();
    let mut errors = 0;
    while let Some(mut task) = tasks.recv().await {
        let answered = tokio::time::timeout_at(give_up.into(), &mut task).await;
        if answered.is_err() {
            task.abort();
        }
        match answered {
            Ok(Ok((latency, true))) => {
                measured.latencies.push(latency);
                measured.events += 1;
            }
            _ => errors += 1,
        }
    }
    // Requests never sent: the server fell too far behind.
    errors += dispatcher
        .join()
        .map_err(|_| anyhow::anyhow!("the thread releasing the requests panicked"))?;
    Ok((Measured::merge(vec![measured], started.elapsed()), errors))
}
