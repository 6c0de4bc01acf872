//! The edge, over every command route: control characters in any string or path id,
//! timestamps outside 1970–9999, bodies that are not JSON objects, bodies not sent as
//! JSON, wrong methods and unknown paths — each a 4xx in the error shape, and nothing
//! appended.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::EventReader;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::{app, call, call_raw, As, SERVICE_KEY};

pub(crate) const ID: &str = "7f3c0a4e-1111-4222-8333-944455556666";

/// Every command route with a body that is valid in shape.
pub(crate) fn routes() -> Vec<(String, Value)> {
    let at = "2026-11-02T07:00:00Z";
    vec![
        (
            "/api/v1/purchases".into(),
            json!({"user_id": "u1", "sku": "S", "title": "T", "category": "coffee", "quantity": 1, "unit_price": 100, "purchased_at": at}),
        ),
        (
            "/api/v1/devices/spk-1/activations".into(),
            json!({"user_id": "u1", "activated_at": at}),
        ),
        (
            format!("/api/v1/reminders/{ID}/offer"),
            json!({"device_id": "spk-1"}),
        ),
        (format!("/api/v1/reminders/{ID}/accept"), json!({})),
        (format!("/api/v1/reminders/{ID}/decline"), json!({})),
        (
            format!("/api/v1/reminders/{ID}/snooze"),
            json!({"until": at}),
        ),
        (format!("/api/v1/orders/{ID}/confirm"), json!({})),
        (
            format!("/api/v1/orders/{ID}/cancel"),
            json!({"reason": "r"}),
        ),
        (
            "/api/v1/workouts".into(),
            json!({"user_id": "u1", "sport": "running"}),
        ),
        (
            format!("/api/v1/workouts/{ID}/updates"),
            json!({"distance_m": 10.0}),
        ),
        (format!("/api/v1/workouts/{ID}/pause"), json!({})),
        (format!("/api/v1/workouts/{ID}/resume"), json!({})),
        (format!("/api/v1/workouts/{ID}/complete"), json!({})),
        (
            format!("/api/v1/workouts/{ID}/cancel"),
            json!({"reason": "r"}),
        ),
        (
            "/api/v1/catalog/prices".into(),
            json!({"sku": "S", "title": "T", "unit_price": 100, "changed_at": at}),
        ),
    ]
}

/// The body with one string replaced by `value` — for each string field in turn.
fn each_string(body: &Value, value: &str) -> Vec<(String, Value)> {
    let Value::Object(map) = body else {
        return Vec::new();
    };
    map.iter()
        .filter(|(_, v)| v.is_string())
        .map(|(k, _)| {
            let mut changed = body.clone();
            changed[k.as_str()] = json!(value);
            (k.clone(), changed)
        })
        .collect()
}

fn assert_shaped(status: StatusCode, body: &Value, what: &str) {
    assert!(status.is_client_error(), "{what}: {status} {body}");
    assert_eq!(
        body["code"],
        status.as_u16(),
        "{what}: not the error shape: {body}"
    );
    assert!(
        body["error"].is_string() && body["message"].is_string(),
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_any_string_are_refused_and_nothing_is_appended() -> anyhow::Result<()>
{
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    let mut checked = 0;
    for (path, body) in routes() {
        for bad in ["a\u{0}b", "a\u{1}b", "\u{7f}"] {
            for (field, changed) in each_string(&body, bad) {
                let a = call(&app, As::Service, &path, changed, None).await;
                assert_shaped(a.status, &a.body, &format!("{path} {field}={bad:?}"));
                assert_eq!(
                    a.status,
                    StatusCode::BAD_REQUEST,
                    "{path} {field}: {}",
                    a.body
                );
                checked += 1;
            }
        }
        // In a path id (the device id is free text; the others must be UUIDs).
        let in_path = path.replacen("spk-1", "sp%00k", 1).replacen(ID, "%00", 1);
        if in_path == path {
            continue;
        }
        let a = call(&app, As::Service, &in_path, body.clone(), None).await;
        assert_shaped(a.status, &a.body, &in_path);
    }
    assert!(checked > 20, "only {checked} fields were tried");
    assert_eq!(db.store.head().await?.0, 0, "a refused request appended");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_outside_the_accepted_years_are_refused() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    for (path, body) in routes() {
        let Value::Object(map) = &body else { continue };
        for field in map.keys().filter(|k| k.ends_with("_at") || *k == "until") {
            for bad in [
                "+262142-12-31T23:59:59Z",
                "-000001-01-01T00:00:00Z",
                "1969-12-31T23:59:59Z",
            ] {
                let mut changed = body.clone();
                changed[field.as_str()] = json!(bad);
                let a = call(&app, As::Service, &path, changed, None).await;
                assert_shaped(a.status, &a.body, &format!("{path} {field}={bad}"));
            }
        }
    }
    assert_eq!(db.store.head().await?.0, 0, "a refused request appended");
    // The last accepted instant is accepted, and nothing panics after it.
    let end = "9999-12-31T23:59:59Z";
    for _ in 0..3 {
        let a = call(
            &app,
            As::Service,
            "/api/v1/devices/spk-9/activations",
            json!({"user_id": "u9", "activated_at": end, "utc_offset_minutes": 840}),
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let p = call(
        &app,
        As::Service,
        "/api/v1/purchases",
        json!({"user_id": "u9", "sku": "S", "title": "T", "category": "coffee", "quantity": 1, "unit_price": 100, "purchased_at": end}),
        None,
    )
    .await;
    assert!(
        p.status.is_success() || p.status.is_client_error(),
        "{} {}",
        p.status,
        p.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_json_objects_sent_as_json() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    for (path, body) in routes() {
        for raw in ["[10,70,3]", "3", "\"text\"", "null", "true"] {
            let a = call_raw(&app, As::Service, &path, raw.as_bytes().to_vec(), None).await;
            assert_shaped(a.status, &a.body, &format!("{path} {raw}"));
        }
        for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
            let request = Request::post(path.as_str())
                .header("content-type", content_type)
                .header("x-api-key", SERVICE_KEY)
                .body(Body::from(body.to_string()))?;
            let response = app.clone().oneshot(request).await?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type}"
            );
            assert_shaped(status, &answer, &path);
        }
    }
    assert_eq!(db.store.head().await?.0, 0, "a refused request appended");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_unknown_paths_answer_in_the_error_shape() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    for (path, _) in routes() {
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            let request = Request::builder()
                .method(method)
                .uri(path.as_str())
                .header("x-api-key", SERVICE_KEY)
                .body(Body::empty())?;
            let response = app.clone().oneshot(request).await?;
            let status = response.status();
            let allow = response.headers().get("allow").cloned();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_shaped(status, &body, &format!("{method} {path}"));
            let allow = allow.and_then(|a| a.to_str().ok().map(str::to_owned));
            assert!(
                allow.as_deref().is_some_and(|a| a.contains("POST")),
                "{method} {path}: Allow {allow:?}"
            );
        }
    }
    let request = Request::get("/api/v1/nowhere").body(Body::empty())?;
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_shaped(status, &body, "unknown path");
    Ok(())
}

#[tokio::test]
async fn the_longest_accepted_ids_make_valid_streams() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    let user = "u".repeat(200);
    let answer = call(
        &app,
        As::Service,
        "/api/v1/purchases",
        json!({"user_id": user, "sku": "S".repeat(200), "title": "T", "category": "coffee",
               "quantity": 1, "unit_price": 100}),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    Ok(())
}
