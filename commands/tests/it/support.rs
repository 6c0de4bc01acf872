//! A router over a real store, and a tiny client for it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use eventfold_commands::http::{router, AuthConfig, Claims, CommandApi};
use eventfold_commands::{CommandService, Principal};
use eventfold_event_log::EventStore;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const SECRET: &[u8] = b"test-secret";
pub const SERVICE_KEY: &str = "svc-key";

pub fn app<S: EventStore>(store: S) -> Router {
    let auth = AuthConfig::default()
        .with_jwt_secret(SECRET)
        .with_api_key(SERVICE_KEY, Principal::service("ingest"));
    eventfold_http::harden(
        router(CommandApi {
            service: Arc::new(CommandService::new(store)),
            auth: Arc::new(auth),
        })
        .fallback(|| async { eventfold_commands::http::ApiError::no_route() }),
    )
}

pub fn token_for(user: &str) -> String {
    let claims = Claims {
        sub: user.to_owned(),
        role: None,
        exp: (chrono::Utc::now().timestamp() + 3600) as u64,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("token")
}

/// How a request authenticates.
#[derive(Clone)]
pub enum As {
    User(&'static str),
    Service,
    Nobody,
    Raw(&'static str, String),
}

#[derive(Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub token: Option<i64>,
    /// `Idempotent-Replayed: true`.
    pub replayed: bool,
}

pub async fn call(app: &Router, who: As, path: &str, body: Value, key: Option<&str>) -> Answer {
    call_raw(app, who, path, body.to_string().into_bytes(), key).await
}

pub async fn call_raw(
    app: &Router,
    who: As,
    path: &str,
    body: Vec<u8>,
    key: Option<&str>,
) -> Answer {
    let mut request = Request::post(path).header("content-type", "application/json");
    request = match who {
        As::User(user) => request.header("authorization", format!("Bearer {}", token_for(user))),
        As::Service => request.header("x-api-key", SERVICE_KEY),
        As::Nobody => request,
        As::Raw(name, value) => request.header(name, value),
    };
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let token = response
        .headers()
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // Every successful command answer carries its token in the body too, the header's.
    if status.is_success() {
        assert_eq!(
            body["consistency_token"].as_i64(),
            token,
            "{path}: the body's consistency_token is not the header's: {body}"
        );
    }
    Answer {
        status,
        body,
        token,
        replayed,
    }
}

/// A catalog price, a consumable purchase and an offer: returns the offered reminder.
pub async fn offered_reminder(app: &Router, user: &'static str, price: i64) -> String {
    let a = call(
        app,
        As::Service,
        "/api/v1/catalog/prices",
        json!({
            "sku": "SKU-CAPS", "title": "Capsules", "unit_price": price, "delivery_days": 2
        }),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let p = call(
        app,
        As::User(user),
        "/api/v1/purchases",
        json!({
            "user_id": user, "sku": "SKU-CAPS", "title": "Capsules", "category": "coffee",
            "quantity": 2, "unit_price": 1000, "purchased_at": "2026-10-01T09:00:00Z"
        }),
        None,
    )
    .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    let reminder = p.body["reminder"]["reminder_id"]
        .as_str()
        .expect("a reminder was planned")
        .to_owned();
    let o = call(
        app,
        As::User(user),
        &format!("/api/v1/reminders/{reminder}/offer"),
        json!({"device_id": "spk-1"}),
        None,
    )
    .await;
    assert_eq!(o.status, StatusCode::OK, "{}", o.body);
    reminder
}
