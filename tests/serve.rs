//! `eventfold serve` as a black box: a real server on a random port, driven over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const SECRET: &str = "e2e-secret";
const SERVICE_KEY: &str = "e2e-service";

struct Server {
    child: Child,
    base: String,
    dir: std::path::PathBuf,
    /// What it printed before listening.
    startup: Vec<String>,
}

impl Server {
    fn start(database_url: Option<String>) -> Server {
        let dir = std::env::temp_dir().join(format!("eventfold-serve-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url =
            database_url.unwrap_or_else(|| format!("sqlite://{}", dir.join("log.db").display()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("EVENTFOLD_LISTEN", "127.0.0.1:0")
            .env("EVENTFOLD_JWT_SECRET", SECRET)
            .env(
                "EVENTFOLD_API_KEYS",
                format!("{SERVICE_KEY}=service:ingest"),
            )
            .env("EVENTFOLD_CONSISTENCY_WAIT_MS", "3000")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn eventfold serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut startup = Vec::new();
        let base = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .expect("read stdout");
            if let Some(address) = line.strip_prefix("listening on ") {
                break address.to_owned();
            }
            startup.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            dir,
            startup,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn token(user: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims { sub: user, exp },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

async fn post(
    client: &Client,
    server: &Server,
    path: &str,
    who: &str,
    body: Value,
) -> (StatusCode, Value, Option<String>) {
    let mut request = client.post(server.url(path)).json(&body);
    request = if who == "service" {
        request.header("x-api-key", SERVICE_KEY)
    } else {
        request.bearer_auth(token(who))
    };
    let response = request.send().await.expect("send");
    let status = response.status();
    let token = response
        .headers()
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, response.json().await.unwrap_or(Value::Null), token)
}

async fn get(client: &Client, server: &Server, path: &str, who: &str) -> (StatusCode, Value) {
    let mut request = client.get(server.url(path));
    request = match who {
        "service" => request.header("x-api-key", SERVICE_KEY),
        "nobody" => request,
        user => request.bearer_auth(token(user)),
    };
    let response = request.send().await.expect("send");
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn voice_flow_and_workouts(server: &Server) {
    let client = Client::new();
    let (s, _, _) = post(
        &client,
        server,
        "/api/v1/catalog/prices",
        "service",
        json!({"sku": "SKU-CAPS", "title": "Capsules", "unit_price": 1100, "delivery_days": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    for days in [70, 40] {
        let at = (chrono_like_now() - days * 86_400).to_string();
        let (s, body, _) = post(&client, server, "/api/v1/purchases", "u1", json!({
            "user_id": "u1", "sku": "SKU-CAPS", "title": "Capsules", "category": "coffee", "quantity": 1,
            "unit_price": 1000, "purchased_at": rfc3339(&at)
        }))
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    // Read your writes: the reminder list reflects the last purchase at once.
    let (_, body, token) = post(
        &client,
        server,
        "/api/v1/devices/spk-1/activations",
        "u1",
        json!({"user_id": "u1"}),
    )
    .await;
    assert!(body["consistency_token"].is_number());
    let token = token.expect("token header");
    let (s, reminders) = get(
        &client,
        server,
        &format!("/api/v1/users/u1/reminders?after={token}"),
        "u1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{reminders}");
    let open = reminders["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["status"] == "scheduled")
        .expect("a scheduled reminder")
        .clone();
    let reminder = open["reminder_id"].as_str().expect("id").to_owned();
    let due = open["due_at"].as_str().expect("due").to_owned();

    let (s, answer) = get(
        &client,
        server,
        &format!(
            "/api/v1/users/u1/reminders/due?at={}",
            due.replace('+', "%2B")
        ),
        "u1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["offers"][0]["reminder_id"], reminder.as_str());
    assert_eq!(
        answer["offers"][0]["unit_price"], 1100,
        "the voice answer quotes the current price"
    );
    assert!(answer["offers"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .contains("Capsules"));

    let (s, _, _) = post(
        &client,
        server,
        &format!("/api/v1/reminders/{reminder}/offer"),
        "u1",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, yes, _) = post(
        &client,
        server,
        &format!("/api/v1/reminders/{reminder}/accept"),
        "u1",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{yes}");
    let order = yes["order_id"].as_str().expect("order").to_owned();
    let (s, placed, token) = post(
        &client,
        server,
        &format!("/api/v1/orders/{order}/confirm"),
        "u1",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{placed}");
    let (s, view) = get(
        &client,
        server,
        &format!("/api/v1/orders/{order}?after={}", token.expect("token")),
        "u1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(
        (view["status"].as_str(), view["payment_requested"].as_bool()),
        (Some("placed"), Some(true))
    );
    let (s, _) = get(&client, server, &format!("/api/v1/orders/{order}"), "u2").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "another user may not read it");

    // Workouts: start, update with a point, complete; then details, route, stats, paging.
    let mut last_token = String::new();
    for n in 0..3 {
        let (s, started, _) = post(
            &client,
            server,
            "/api/v1/workouts",
            "u3",
            json!({"user_id": "u3", "sport": "running"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{started}");
        let w = started["workout_id"].as_str().expect("id").to_owned();
        let point =
            json!({"lat": 55.7, "lon": 37.6, "at": rfc3339(&chrono_like_now().to_string())});
        let (s, _, _) = post(
            &client,
            server,
            &format!("/api/v1/workouts/{w}/updates"),
            "u3",
            json!({"distance_m": 500.0, "points": [point]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, token) = post(
            &client,
            server,
            &format!("/api/v1/workouts/{w}/complete"),
            "u3",
            json!({"distance_m": 1000.0 * (n + 1) as f64}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        last_token = token.expect("token");
        if n == 0 {
            let (s, route) = get(
                &client,
                server,
                &format!("/api/v1/workouts/{w}/route?after={last_token}"),
                "u3",
            )
            .await;
            assert_eq!(
                (s, route["points"].as_array().map(Vec::len)),
                (StatusCode::OK, Some(1))
            );
        }
    }
    let (s, stats) = get(
        &client,
        server,
        &format!("/api/v1/users/u3/workout-stats?after={last_token}"),
        "u3",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{stats}");
    assert_eq!(
        (
            stats["stats"]["workouts"].as_i64(),
            stats["stats"]["total_distance_m"].as_f64()
        ),
        (Some(3), Some(6000.0))
    );
    let (_, page1) = get(&client, server, "/api/v1/users/u3/workouts?limit=2", "u3").await;
    assert_eq!(
        (
            page1["items"].as_array().map(Vec::len),
            page1["next_offset"].as_i64()
        ),
        (Some(2), Some(2))
    );
    let (_, page2) = get(
        &client,
        server,
        "/api/v1/users/u3/workouts?limit=2&offset=2",
        "u3",
    )
    .await;
    assert_eq!(
        (
            page2["items"].as_array().map(Vec::len),
            page2["next_offset"].as_i64()
        ),
        (Some(1), None)
    );
    let (s, bad) = get(&client, server, "/api/v1/users/u3/workouts?limit=0", "u3").await;
    assert_eq!(
        (s, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("validation_failed"))
    );
}

/// Seconds since the epoch.
fn chrono_like_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// RFC 3339 of epoch seconds given as text.
fn rfc3339(secs: &str) -> String {
    let secs: i64 = secs.parse().expect("seconds");
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_and_workout_flows_work_end_to_end_on_sqlite() {
    let mut server = Server::start(None);
    voice_flow_and_workouts(&server).await;
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown on SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_and_workout_flows_work_end_to_end_on_postgres() {
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let mut server = Server::start(Some(db.url()));
    voice_flow_and_workouts(&server).await;
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_health_metrics_and_the_openapi_document() {
    let server = Server::start(None);
    let client = Client::new();
    let (s, body) = get(&client, &server, "/api/v1/users/u1/reminders", "nobody").await;
    assert_eq!(
        (s, body["error"].as_str(), body["code"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"), Some(401))
    );
    let (s, _) = get(&client, &server, "/api/v1/users/u1/reminders", "u2").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = get(&client, &server, "/api/v1/users/u1/reminders", "service").await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = get(&client, &server, "/api/v1/leaderboards/running", "u1").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
        "no Redis: said clearly"
    );
    let (s, body) = get(
        &client,
        &server,
        "/api/v1/users/u1/reminders?after=999999",
        "u1",
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_caught_up")),
        "{body}"
    );
    assert!(body["details"]["projections"]["reminders.v1"]["behind_by"].is_number());

    assert_eq!(
        get(&client, &server, "/healthz", "nobody").await.0,
        StatusCode::OK
    );
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        ready = get(&client, &server, "/readyz", "nobody").await.0;
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, StatusCode::OK);
    let response = client
        .get(server.url("/metrics"))
        .header("x-correlation-id", "0b9c2f7e-5a51-4d8e-9a43-1f6d2c9e8b10")
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        response
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some("0b9c2f7e-5a51-4d8e-9a43-1f6d2c9e8b10")
    );
    let text = response.text().await.expect("text");
    assert!(
        text.contains("eventfold_http_request_duration_seconds"),
        "{text}"
    );
    assert!(text.contains("eventfold_projection_lag_events"), "{text}");

    let (s, doc) = get(&client, &server, "/api/v1/openapi.json", "nobody").await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/purchases",
        "/api/v1/reminders/{id}/accept",
        "/api/v1/users/{user_id}/reminders/due",
        "/api/v1/workouts/{workout_id}/route",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    // Every documented route answers (no fallback 404).
    for (path, item) in paths {
        for method in item.as_object().expect("methods").keys() {
            let concrete = path
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{order_id}", "x")
                .replace("{workout_id}", "x")
                .replace("{user_id}", "u1")
                .replace("{device_id}", "d1")
                .replace("{sport}", "running");
            let request = if method == "post" {
                client.post(server.url(&concrete)).json(&json!({}))
            } else {
                client.get(server.url(&concrete))
            };
            let response = request
                .header("x-api-key", SERVICE_KEY)
                .send()
                .await
                .expect("send");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                body["error"] != "not_found"
                    || status != StatusCode::NOT_FOUND
                    || body["message"] != "no such route",
                "{method} {path} is documented but not served"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_is_rebuilt_at_start_up_and_swapped_in() {
    let dir = std::env::temp_dir().join(format!("eventfold-bump-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let demo = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["demo", "--users", "20"])
        .env("DATABASE_URL", &url)
        .env_remove("REDIS_URL")
        .output()
        .expect("run demo");
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    // The stored reminders model was built by an older version, with other contents.
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    sqlx::query(
        "UPDATE eventfold_checkpoints SET name = 'reminders.v0' WHERE name = 'reminders.v1'",
    )
    .execute(&pool)
    .await
    .expect("rename checkpoint");
    sqlx::query("UPDATE rm_reminders SET title = 'built by v0'")
        .execute(&pool)
        .await
        .expect("old contents");
    let status = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["projections", "status", "--json"])
        .env("DATABASE_URL", &url)
        .env_remove("REDIS_URL")
        .output()
        .expect("status");
    let rows: Value = serde_json::from_slice(&status.stdout).expect("json");
    let reminders = rows
        .as_array()
        .and_then(|r| r.iter().find(|p| p["name"] == "reminders.v1"))
        .expect("row")
        .clone();
    assert_eq!(reminders["state"], "version_bump_pending", "{rows}");

    let server = Server::start(Some(url.clone()));
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("version bump: reminders.v1 replaces reminders.v0")),
        "{:?}",
        server.startup
    );
    let client = Client::new();
    let mut ready = false;
    for _ in 0..300 {
        let response = client
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if response.status() == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "never ready after the version-bump rebuild");
    let stale: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM rm_reminders WHERE title = 'built by v0'")
            .fetch_one(&pool)
            .await
            .expect("count");
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_reminders")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(
        total > 0 && stale == 0,
        "{stale} of {total} rows still from v0"
    );
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM eventfold_checkpoints ORDER BY name")
            .fetch_all(&pool)
            .await
            .expect("names");
    assert!(
        names.contains(&"reminders.v1".to_owned())
            && !names
                .iter()
                .any(|n| n == "reminders.v0" || n.starts_with("shadow_")),
        "{names:?}"
    );
    pool.close().await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_routes_refuse_control_characters_and_wrong_methods_in_the_error_shape() {
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let mut server = Server::start(Some(db.url()));
    let client = Client::new();
    for path in [
        "/api/v1/orders/%00",
        "/api/v1/workouts/%00",
        "/api/v1/workouts/%00/route",
        "/api/v1/users/u%001/reminders",
        "/api/v1/users/u%001/reminders/due",
        "/api/v1/users/u1/workouts?from=%00",
        "/api/v1/leaderboards/run%01ning",
    ] {
        let (s, body) = get(&client, &server, path, "service").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["code"], 400, "{path}: not the error shape: {body}");
    }
    for path in [
        "/api/v1/users/u1/workouts?from=%2B262142-12-31T23:59:59Z",
        "/api/v1/users/u1/reminders/due?at=1969-12-31T23:59:59Z",
    ] {
        let (s, body) = get(&client, &server, path, "service").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let response = client
        .delete(server.url("/api/v1/users/u1/reminders"))
        .header("x-api-key", SERVICE_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().contains_key("allow"));
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(server.terminate().success());
}
