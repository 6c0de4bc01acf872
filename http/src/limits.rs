//! Rate limits and deadlines per route class, and CORS.
//!
//! Every `/api/v1` route belongs to one [`RouteClass`]: the command routes, the voice
//! route (`GET …/reminders/due`) and the other queries. Each class has a rate limit per
//! caller (a GCRA bucket from `governor`, keyed by the authenticated principal, never
//! by a header a client could forge) and a deadline. Over its rate a caller gets 429
//! with `Retry-After`; past its deadline a request gets 503 `deadline_exceeded`, both
//! in the error shape. The operations routes (`/healthz`, `/readyz`, `/metrics`, the
//! OpenAPI document) are neither limited nor timed.
//!
//! A command cut by its deadline may or may not have been appended (the append's
//! transaction commits or not, atomically): retry it with the same `Idempotency-Key`,
//! which answers with the first result if it was.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;

use crate::auth::Authenticated;
use crate::{ApiError, AuthConfig};

/// What kind of route a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// Anything but GET under `/api/v1`: the command routes.
    Commands,
    /// `GET /api/v1/users/{user_id}/reminders/due`, the voice answer.
    Voice,
    /// The other `GET /api/v1/…` routes.
    Queries,
    /// `/healthz`, `/readyz`, `/metrics`, `/api/v1/openapi.json`: not limited.
    Operations,
}

impl RouteClass {
    /// The class of a request.
    pub fn of(method: &Method, path: &str) -> Self {
        if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
            Self::Operations
        } else if method != Method::GET && method != Method::HEAD {
            Self::Commands
        } else if path.ends_with("/reminders/due") {
            Self::Voice
        } else {
            Self::Queries
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Commands => "commands",
            Self::Voice => "voice",
            Self::Queries => "queries",
            Self::Operations => "operations",
        }
    }
}

/// The limits of one route class. `0` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassLimits {
    /// Sustained requests per second per caller.
    pub per_second: u32,
    /// Requests a caller may send at once above the sustained rate (default: one
    /// second's worth).
    pub burst: Option<u32>,
    /// Longest time a request of this class may take, in milliseconds.
    pub timeout_ms: u64,
}

/// The limits of every route class: `[limits.commands]`, `[limits.voice]` and
/// `[limits.queries]` in the TOML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// The command routes.
    pub commands: ClassLimits,
    /// The voice route. Its deadline is the voice assistant's budget, well inside its
    /// 300 ms: the route gives Redis part of it and answers from the relational model,
    /// or 503, in time.
    pub voice: ClassLimits,
    /// The other query routes. Their deadline must exceed the read-your-writes wait.
    pub queries: ClassLimits,
}

impl Default for EdgeLimits {
    /// Generous enough that a well-behaved client never meets them.
    fn default() -> Self {
        Self {
            commands: ClassLimits {
                per_second: 300,
                burst: Some(600),
                timeout_ms: 10_000,
            },
            voice: ClassLimits {
                per_second: 1_000,
                burst: Some(2_000),
                timeout_ms: 150,
            },
            queries: ClassLimits {
                per_second: 1_000,
                burst: Some(2_000),
                timeout_ms: 5_000,
            },
        }
    }
}

impl EdgeLimits {
    /// The limits of `class` (`None` for the operations routes).
    pub fn class(&self, class: RouteClass) -> Option<&ClassLimits> {
        match class {
            RouteClass::Commands => Some(&self.commands),
            RouteClass::Voice => Some(&self.voice),
            RouteClass::Queries => Some(&self.queries),
            RouteClass::Operations => None,
        }
    }

    /// Mutable access, for the environment's overrides.
    pub fn class_mut(&mut self, class: RouteClass) -> Option<&mut ClassLimits> {
        match class {
            RouteClass::Commands => Some(&mut self.commands),
            RouteClass::Voice => Some(&mut self.voice),
            RouteClass::Queries => Some(&mut self.queries),
            RouteClass::Operations => None,
        }
    }

    /// Every limit off: for benches and load tests that measure the server itself.
    pub fn off() -> Self {
        let off = ClassLimits {
            per_second: 0,
            burst: None,
            timeout_ms: 0,
        };
        Self {
            commands: off,
            voice: off,
            queries: off,
        }
    }

    /// The voice route's deadline, if any.
    pub fn voice_deadline(&self) -> Option<Duration> {
        (self.voice.timeout_ms > 0).then(|| Duration::from_millis(self.voice.timeout_ms))
    }
}

/// One class's bucket and deadline.
struct Class {
    bucket: Option<DefaultKeyedRateLimiter<String>>,
    deadline: Option<Duration>,
}

impl Class {
    fn new(limits: &ClassLimits) -> Self {
        let bucket = NonZeroU32::new(limits.per_second).map(|rate| {
            let burst = limits
                .burst
                .and_then(NonZeroU32::new)
                .unwrap_or(rate)
                .max(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            bucket,
            deadline: (limits.timeout_ms > 0).then(|| Duration::from_millis(limits.timeout_ms)),
        }
    }
}

/// The state of [`limit`]: one bucket per class and caller.
pub struct Limiter {
    auth: Arc<AuthConfig>,
    commands: Class,
    voice: Class,
    queries: Class,
    checks: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

/// How many checks pass between two sweeps of idle callers' buckets.
const SWEEP_EVERY: u64 = 1 << 14;

impl Limiter {
    /// Limits from `limits`, callers identified by `auth`.
    pub fn new(limits: &EdgeLimits, auth: Arc<AuthConfig>) -> Self {
        Self {
            auth,
            commands: Class::new(&limits.commands),
            voice: Class::new(&limits.voice),
            queries: Class::new(&limits.queries),
            checks: AtomicU64::new(0),
        }
    }

    fn class(&self, class: RouteClass) -> Option<&Class> {
        match class {
            RouteClass::Commands => Some(&self.commands),
            RouteClass::Voice => Some(&self.voice),
            RouteClass::Queries => Some(&self.queries),
            RouteClass::Operations => None,
        }
    }

    /// `Err(wait)` when `caller` is over the rate of `class`.
    fn check(&self, class: &Class, caller: &String) -> Result<(), Duration> {
        let Some(bucket) = &class.bucket else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for class in [&self.commands, &self.voice, &self.queries] {
                if let Some(bucket) = &class.bucket {
                    bucket.retain_recent();
                    bucket.shrink_to_fit();
                }
            }
        }
        bucket
            .check_key(caller)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1).
fn too_many(class: RouteClass, wait: Duration) -> Response {
    metrics::counter!("eventfold_http_rate_limited_total", "class" => class.label()).increment(1);
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many {} requests from this caller; retry in {seconds} s",
            class.label()
        ),
    )
    .with_details(json!({ "class": class.label(), "retry_after_seconds": seconds }))
    .into_response();
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Middleware: the caller's rate limit and the deadline of the request's class.
///
/// The caller is authenticated here once (the handlers' `Caller` extractor reuses the
/// result); a request that does not authenticate shares one anonymous bucket and gets
/// its 401 from the route.
pub async fn limit(
    State(limiter): State<Arc<Limiter>>,
    mut request: Request,
    next: Next,
) -> Response {
    let class = RouteClass::of(request.method(), request.uri().path());
    let Some(limits) = limiter.class(class) else {
        return next.run(request).await;
    };
    if limits.bucket.is_some() {
        let caller = match limiter.auth.authenticate_headers(request.headers()) {
            Ok(principal) => {
                let key = format!("{:?}:{}", principal.role, principal.subject);
                request.extensions_mut().insert(Authenticated(principal));
                key
            }
            Err(_) => String::new(),
        };
        if let Err(wait) = limiter.check(limits, &caller) {
            return too_many(class, wait);
        }
    }
    let Some(deadline) = limits.deadline else {
        return next.run(request).await;
    };
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("eventfold_http_deadline_exceeded_total", "class" => class.label())
                .increment(1);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "deadline_exceeded",
                format!(
                    "the request took longer than its {} ms deadline; retry (with the same Idempotency-Key for a command)",
                    deadline.as_millis()
                ),
            )
            .with_details(json!({ "class": class.label(), "deadline_ms": deadline.as_millis() as u64 }))
            // `Retry-After: 1`, as every 503 in the shape.
            .into_response()
        }
    }
}

/// Cross-origin access: off by default; `*` or a list of origins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers: browsers on other origins cannot call the API.
    #[default]
    Off,
    /// Any origin (credentials are never allowed with `*`).
    Any,
    /// These origins, exactly (`https://app.example.com`).
    Origins(Vec<String>),
}

impl Cors {
    /// Parses `off`, `*` or `https://a.example,https://b.example`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.is_empty() || spec.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        if spec == "*" {
            return Ok(Self::Any);
        }
        let origins: Vec<String> = spec
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        for origin in &origins {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && HeaderValue::from_str(origin).is_ok()
                && !origin.ends_with('/');
            if !valid {
                return Err(format!(
                    "CORS origin {origin:?} must look like https://app.example.com (scheme, host, optional port, no path)"
                ));
            }
        }
        Ok(Self::Origins(origins))
    }

    /// The layer, when on.
    pub fn layer(&self) -> Option<tower_http::cors::CorsLayer> {
        use axum::http::header;
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origin = match self {
            Self::Off => return None,
            Self::Any => AllowOrigin::any(),
            Self::Origins(list) => AllowOrigin::list(
                list.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            ),
        };
        let custom = |name: &'static str| header::HeaderName::from_static(name);
        Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    custom("x-api-key"),
                    custom("idempotency-key"),
                    custom("x-correlation-id"),
                    custom("x-causation-id"),
                    custom("x-consistency-token"),
                ])
                .expose_headers([
                    custom("x-consistency-token"),
                    custom("x-correlation-id"),
                    header::RETRY_AFTER,
                ])
                .max_age(Duration::from_secs(600)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_into_their_classes() {
        let of = RouteClass::of;
        assert_eq!(of(&Method::POST, "/api/v1/purchases"), RouteClass::Commands);
        assert_eq!(
            of(&Method::GET, "/api/v1/users/u1/reminders/due"),
            RouteClass::Voice
        );
        assert_eq!(
            of(&Method::GET, "/api/v1/users/u1/reminders"),
            RouteClass::Queries
        );
        assert_eq!(of(&Method::GET, "/healthz"), RouteClass::Operations);
        assert_eq!(
            of(&Method::GET, "/api/v1/openapi.json"),
            RouteClass::Operations
        );
    }

    #[test]
    fn cors_specs_parse_or_say_why_not() {
        assert_eq!(Cors::parse("off"), Ok(Cors::Off));
        assert_eq!(Cors::parse(""), Ok(Cors::Off));
        assert_eq!(Cors::parse("*"), Ok(Cors::Any));
        assert_eq!(
            Cors::parse("https://a.example, http://localhost:3000"),
            Ok(Cors::Origins(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ]))
        );
        assert!(Cors::parse("a.example").is_err());
        assert!(Cors::parse("https://a.example/").is_err());
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_gets_503_in_time_and_others_are_not_cut() {
        use tower::ServiceExt;
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }
        let limits = EdgeLimits {
            voice: ClassLimits {
                per_second: 0,
                burst: None,
                timeout_ms: 50,
            },
            ..EdgeLimits::off()
        };
        let config = crate::EdgeConfig {
            limits,
            cors: Cors::Off,
            auth: Arc::new(AuthConfig::default()),
        };
        let app = crate::harden_with(
            axum::Router::new()
                .route("/api/v1/users/{id}/reminders/due", axum::routing::get(slow))
                .route(
                    "/api/v1/users/{id}/reminders",
                    axum::routing::get(|| async { "ok" }),
                ),
            &config,
        );
        let request = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let started = std::time::Instant::now();
        let response = app
            .clone()
            .oneshot(request("/api/v1/users/u1/reminders/due"))
            .await
            .expect("infallible");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("the error shape");
        assert_eq!(body["error"], "deadline_exceeded");
        assert_eq!(body["details"]["deadline_ms"], 50);
        let response = app
            .oneshot(request("/api/v1/users/u1/reminders"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn a_caller_over_its_rate_waits_and_others_do_not() {
        let limits = EdgeLimits {
            commands: ClassLimits {
                per_second: 1,
                burst: Some(2),
                timeout_ms: 0,
            },
            ..EdgeLimits::off()
        };
        let limiter = Limiter::new(&limits, Arc::new(AuthConfig::default()));
        let class = &limiter.commands;
        assert!(limiter.check(class, &"a".to_owned()).is_ok());
        assert!(limiter.check(class, &"a".to_owned()).is_ok());
        let wait = limiter.check(class, &"a".to_owned()).err();
        assert!(wait.is_some_and(|w| w <= Duration::from_secs(1)));
        assert!(limiter.check(class, &"b".to_owned()).is_ok());
        // Off: never limited.
        assert!((0..10_000).all(|_| limiter.check(&limiter.queries, &"a".to_owned()).is_ok()));
    }
}
