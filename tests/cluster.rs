//! Several `serve` processes on one PostgreSQL (or one SQLite file): each projection and
//! reaction runs in one of them at a time (a lease), and another takes over within 5 s
//! when that one dies.

mod support;

use std::sync::RwLock;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use support::*;

/// Every projection and reaction as `/api/v1/projections` of `server` lists them.
async fn runners(client: &Client, server: &Server) -> Vec<Value> {
    let (_, body) = get(client, server, "/api/v1/projections", "service").await;
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Waits (at most `limit`) until `server` says every runner is in `state` with an owner
/// naming `pid`; the time it took.
async fn wait_until_all(
    client: &Client,
    server: &Server,
    state: &str,
    pid: u32,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let owner = format!("pid {pid}");
    let mut last = Vec::new();
    while started.elapsed() < limit {
        last = runners(client, server).await;
        let all = last.len() >= 6
            && last.iter().all(|r| {
                r["state"] == state && r["owner"].as_str().is_some_and(|o| o.ends_with(&owner))
            });
        if all {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not every runner became {state} owned by {owner} within {limit:?}: {last:#?}");
}

/// The same commands every run: purchases with explicit times, one voice re-order to
/// its end, workouts with explicit ids. `round` tells the keys apart.
async fn commands(client: &Client, base: &RwLock<String>, round: usize) {
    for u in 0..6 {
        let user = format!("c{round}-{u}");
        let bought = format!("2026-11-{:02}T10:00:00Z", 1 + u);
        let purchase = post_until_answered(
            client,
            base,
            "/api/v1/purchases",
            &user,
            &format!("buy-{user}"),
            &json!({"user_id": user, "sku": "CAPS", "title": "Capsules", "category": "coffee",
                    "quantity": 1, "unit_price": 500, "purchased_at": bought}),
        )
        .await;
        if u == 0 {
            let reminder = purchase["reminder"]["reminder_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{user}: no reminder in {purchase}"))
                .to_owned();
            for step in ["offer", "accept"] {
                post_until_answered(
                    client,
                    base,
                    &format!("/api/v1/reminders/{reminder}/{step}"),
                    &user,
                    &format!("{step}-{user}"),
                    &json!({}),
                )
                .await;
            }
        }
        let workout = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, user.as_bytes());
        post_until_answered(
            client,
            base,
            "/api/v1/workouts",
            &user,
            &format!("start-{user}"),
            &json!({"workout_id": workout, "user_id": user, "sport": "running", "goal_distance_m": 2000}),
        )
        .await;
        for (n, distance) in [800, 2500].iter().enumerate() {
            post_until_answered(
                client,
                base,
                &format!("/api/v1/workouts/{workout}/updates"),
                &user,
                &format!("update-{user}-{n}"),
                &json!({"distance_m": distance}),
            )
            .await;
        }
    }
}

/// What the read models say, without what the server stamps (times, positions).
async fn content(url: &str) -> Vec<Vec<String>> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let queries = [
        "SELECT user_id || ' ' || sku || ' ' || quantity || ' ' || unit_price || ' ' || purchased_at FROM rm_purchases ORDER BY 1",
        "SELECT user_id || ' ' || sku || ' ' || category || ' ' || interval_days FROM rm_consumables ORDER BY 1",
        "SELECT reminder_id || ' ' || user_id || ' ' || status || ' ' || due_at || ' ' || COALESCE(order_id, '-') FROM rm_reminders ORDER BY 1",
        "SELECT order_id || ' ' || user_id || ' ' || status || ' ' || total FROM rm_orders ORDER BY 1",
        "SELECT workout_id || ' ' || user_id || ' ' || status || ' ' || distance_m || ' ' || updates FROM rm_workouts ORDER BY 1",
        "SELECT sku || ' ' || unit_price FROM rm_prices ORDER BY 1",
    ];
    let mut out = Vec::new();
    for q in queries {
        out.push(
            sqlx::query_scalar::<_, String>(q)
                .fetch_all(&pool)
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}")),
        );
    }
    out
}

async fn price(client: &Client, server: &Server) {
    let (s, _, _) = post(
        client,
        server,
        "/api/v1/catalog/prices",
        "service",
        json!({"sku": "CAPS", "title": "Capsules", "unit_price": 550, "delivery_days": 1}),
    )
    .await;
    assert!(s.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_s_projections_resume_in_the_other_serve_within_5_s() {
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let client = Client::new();
    let mut a = Server::start(Some(db.url()));
    let a_pid = a.child.id();
    wait_until_all(&client, &a, "running", a_pid, Duration::from_secs(10)).await;
    let b = Server::start(Some(db.url()));
    assert!(
        b.startup
            .iter()
            .any(|l| l.starts_with("leases: each projection")),
        "{:?}",
        b.startup
    );
    // B stands by for everything A runs, and says who runs it.
    wait_until_all(&client, &b, "standby", a_pid, Duration::from_secs(10)).await;
    price(&client, &a).await;

    // Commands through both; queries on the standby still read their writes.
    let via_a = RwLock::new(a.base.clone());
    let via_b = RwLock::new(b.base.clone());
    commands(&client, &via_a, 0).await;
    commands(&client, &via_b, 1).await;
    let (_, body, token) = post(
        &client,
        &b,
        "/api/v1/devices/spk-b/activations",
        "c1-1",
        json!({"user_id": "c1-1"}),
    )
    .await;
    let token = token.unwrap_or_else(|| panic!("no token: {body}"));
    let (status, reminders) = get(
        &client,
        &b,
        &format!("/api/v1/users/c1-1/reminders?after={token}"),
        "c1-1",
    )
    .await;
    assert!(status.is_success(), "{reminders}");
    assert_eq!(reminders["items"].as_array().map(Vec::len), Some(1));

    // A dies: B runs everything within 5 s.
    let _ = a.child.kill();
    let _ = a.child.wait();
    let took = wait_until_all(&client, &b, "running", b.child.id(), Duration::from_secs(5)).await;
    eprintln!("takeover after the kill: {took:?}");
    commands(&client, &via_b, 2).await;

    // The read models equal a single process's run of the same commands.
    let head = {
        use eventfold_event_log::EventReader;
        db.store.head().await.expect("head")
    };
    for _ in 0..100 {
        if runners(&client, &b)
            .await
            .iter()
            .all(|r| r["checkpoint"].as_i64() >= Some(head.0))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let single = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let one = Server::start(Some(single.url()));
    price(&client, &one).await;
    let via_one = RwLock::new(one.base.clone());
    for round in 0..3 {
        commands(&client, &via_one, round).await;
    }
    let single_head = {
        use eventfold_event_log::EventReader;
        single.store.head().await.expect("head")
    };
    for _ in 0..100 {
        if runners(&client, &one)
            .await
            .iter()
            .all(|r| r["checkpoint"].as_i64() >= Some(single_head.0))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(content(&db.url()).await, content(&single.url()).await);
    drop((b, one));
}

/// Two `serve` on one SQLite file: the one holding the file's lease lock runs every
/// projection and reaction, the other stands by (naming the owner) and takes over within
/// 5 s of its death. Before, both ran everything side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_sqlite_file_one_serve_runs_and_the_other_takes_over_within_5_s() {
    let dir = std::env::temp_dir().join(format!("eventfold-lease-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let client = Client::new();
    let mut a = Server::start(Some(url.clone()));
    let a_pid = a.child.id();
    wait_until_all(&client, &a, "running", a_pid, Duration::from_secs(10)).await;
    let b = Server::start(Some(url.clone()));
    assert!(
        b.startup
            .iter()
            .any(|l| l.starts_with("leases: one serve at a time")),
        "{:?}",
        b.startup
    );
    wait_until_all(&client, &b, "standby", a_pid, Duration::from_secs(10)).await;
    price(&client, &a).await;
    // Commands through the standby are projected by the owner.
    let via_b = RwLock::new(b.base.clone());
    commands(&client, &via_b, 0).await;

    let _ = a.child.kill();
    let _ = a.child.wait();
    let took = wait_until_all(&client, &b, "running", b.child.id(), Duration::from_secs(5)).await;
    eprintln!("takeover after the kill: {took:?}");
    // The planner now runs in B: a purchase's answer carries its reminder again.
    commands(&client, &via_b, 1).await;
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
