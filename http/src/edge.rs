//! What every route gets at the edge, in one place: input hygiene (no control
//! characters in paths, queries or JSON strings; timestamps in a documented range;
//! bodies that are JSON objects), every error status in the error shape, and no panic
//! ever reaching a client as a dropped connection.

use std::any::Any;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::ApiError;

/// The first and last accepted year of a timestamp.
pub const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// Why a text is refused: NUL and other control characters (but tab, line feed and
/// carriage return) have no place in names, ids or titles, and PostgreSQL's `jsonb`
/// rejects `\u0000`.
pub fn check_text(text: &str) -> Result<(), String> {
    match text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        Some(c) => Err(format!(
            "control character U+{:04X} is not allowed",
            c as u32
        )),
        None => Ok(()),
    }
}

/// Every string (and key) of a JSON value is free of control characters; the error
/// names the JSON pointer of the first one that is not.
pub fn check_json(value: &Value) -> Result<(), ApiError> {
    fn walk(value: &Value, at: &mut String) -> Result<(), (String, String)> {
        match value {
            Value::String(s) => check_text(s).map_err(|e| (at.clone(), e)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("/{i}"));
                    walk(item, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let len = at.len();
                    at.push('/');
                    at.push_str(key);
                    check_text(key).map_err(|e| (at.clone(), e))?;
                    walk(item, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(value, &mut String::new()).map_err(|(pointer, why)| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            format!("{pointer}: {why}"),
        )
        .with_details(json!({ "field": pointer }))
    })
}

/// A JSON request body: `Content-Type: application/json` (or `…+json`), an object,
/// no control characters in any string. An empty body reads as `{}`.
pub fn json_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let json = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    // JSON is UTF-8 (RFC 8259 §8.1): a body declared in another charset is refused for
    // what it says, not read as UTF-8 and refused as malformed where its bytes differ.
    let charset = content_type
        .into_iter()
        .flat_map(|t| t.split(';').skip(1))
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"').to_ascii_lowercase());
    if let Some(charset) = charset.filter(|c| c != "utf-8" && c != "utf8") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("JSON is sent in UTF-8, not charset={charset}"),
        ));
    }
    let value = eventfold_event_schemas::json::parse_unique(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "the body must be a JSON object",
        ));
    }
    check_json(&value)?;
    Ok(integral(value))
}

/// JSON has one number type: `102.0` is the integer 102 to JSON Schema, and to us.
/// Whole floats up to [`crate::MAX_SAFE_INTEGER`] become integers, so that an integer
/// field accepts them; any other number is left as it is.
pub(crate) fn integral(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            // Whole, to the precision of its own representation: decimal parsing may
            // land a unit in the last place off (`1883288582563087.0` reads as
            // `…087.2`), which is still the integer the client wrote.
            Some(f)
                if f.abs() <= crate::MAX_SAFE_INTEGER as f64
                    && (f - f.round()).abs() <= f.abs() * f64::EPSILON * 2.0 =>
            {
                json!(f.round() as i64)
            }
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect())
        }
        other => other,
    }
}

/// A point in time from a request, in years 1970–9999 ([`YEARS`]): date arithmetic on
/// it (intervals of years, time zone offsets) stays inside the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// Checks the range.
    pub fn new(at: DateTime<Utc>) -> Result<Self, String> {
        if YEARS.contains(&at.year()) {
            Ok(Self(at))
        } else {
            Err(format!(
                "{at} is outside the accepted years {}-{}",
                YEARS.start(),
                YEARS.end()
            ))
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let at = DateTime::<Utc>::deserialize(deserializer)?;
        Timestamp::new(at).map_err(serde::de::Error::custom)
    }
}

/// The longest request target (path and query) taken: longer is 414 `uri_too_long` in
/// the error shape. (hyper itself refuses a target past 64 KiB, before any route, with
/// an empty 414.)
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header bytes (names and values) taken: more is 431
/// `request_header_fields_too_large` in the error shape. (hyper itself refuses a head
/// past ~400 KiB or 100 headers, before any route, with an empty 431.)
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Middleware for every route: refuses a request target or headers past their limits
/// (414, 431) and control characters or bytes that are not UTF-8 in the path and the
/// query (after percent-decoding) with 400, and gives every error answer that has no
/// body of its own (axum's 404, 405 — its `Allow` header kept —, 413, …) or a body in
/// plain text (an extractor's rejection) the error shape.
pub async fn edge(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the path and query are {target} bytes; the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            format!("the headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"),
        )
        .into_response();
    }
    for (part, raw) in [("path", Some(uri.path())), ("query", uri.query())] {
        let Some(raw) = raw else { continue };
        let error = if part == "path" {
            "invalid_path"
        } else {
            "invalid_query"
        };
        // Bytes that are not UTF-8 once decoded (`%FF`) are refused here for every
        // route: axum's own `Path` answered them in plain text, outside the error shape.
        let checked = match percent_encoding::percent_decode_str(raw).decode_utf8() {
            Ok(decoded) => check_text(&decoded),
            Err(_) => Err(format!("{raw:?} is not UTF-8 once percent-decoded")),
        };
        if let Err(why) = checked {
            return ApiError::new(StatusCode::BAD_REQUEST, error, format!("the {part}: {why}"))
                .into_response();
        }
    }
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    // An error answer with no body of its own, or one in plain text (an extractor's
    // rejection, axum's or a library's): the error shape, with the text as its message.
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let (error, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method (see Allow)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send JSON"),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "the request was refused"),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "the request was refused"),
    };
    // (A server error's text is not the client's to read.)
    let message = if text.is_empty() || status.is_server_error() {
        message.to_owned()
    } else {
        text
    };
    let shaped = ApiError::new(status, error, message).into_response();
    let (shaped_parts, body) = shaped.into_parts();
    for (name, value) in &shaped_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// Middleware for routes that take no query parameters (every command route, the
/// projections' status, the OpenAPI document): a query is refused with 400
/// `invalid_query` naming its first parameter, not ignored — a client that sends
/// `?dry_run=true` or `?idempotency_key=…` to a command must not have it carried out as
/// an ordinary, unkeyed command.
pub async fn no_query(request: Request, next: Next) -> Response {
    match request.uri().query().filter(|q| !q.is_empty()) {
        None => next.run(request).await,
        Some(query) => {
            let first = query.split('&').next().unwrap_or_default();
            let name = first.split('=').next().unwrap_or_default();
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("this route takes no query parameters (got `{name}`)"),
            )
            .with_details(json!({ "parameter": name }))
            .into_response()
        }
    }
}

/// The answer to a handler that panicked: 500 in the error shape; the panic is logged.
/// Use with `tower_http::catch_panic::CatchPanicLayer::custom`.
pub fn panic_answer(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(panic = what, "a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; it has been logged",
    )
    .with_cause(format_args!("panic: {what}"))
    .into_response()
}

/// The edge around a whole router: [`edge`], and panics answered by [`panic_answer`].
pub fn harden(router: axum::Router) -> axum::Router {
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_answer,
        ))
        .layer(axum::middleware::from_fn(edge))
}

/// What the edge of a served API is told.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Rate limits and deadlines per route class.
    pub limits: crate::EdgeLimits,
    /// Cross-origin access.
    pub cors: crate::Cors,
    /// Who the callers are (rate limits are per caller).
    pub auth: std::sync::Arc<crate::AuthConfig>,
}

/// [`harden`] with rate limits, deadlines and CORS. From the outside in: [`edge`]
/// (input hygiene, error shape), CORS (a preflight is answered before anything
/// else), [`crate::limit`], the panic catcher, the routes.
pub fn harden_with(router: axum::Router, config: &EdgeConfig) -> axum::Router {
    let limiter = std::sync::Arc::new(crate::Limiter::new(&config.limits, config.auth.clone()));
    let router = router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_answer,
        ))
        .layer(axum::middleware::from_fn_with_state(limiter, crate::limit));
    let router = match config.cors.layer() {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(axum::middleware::from_fn(edge))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error answer in plain text (an extractor's rejection) leaves the edge in the
    /// error shape with its text as the message; a server error's text is not told.
    #[tokio::test]
    async fn plain_text_errors_leave_in_the_error_shape() {
        use tower::ServiceExt;
        let router = harden(
            axum::Router::new()
                .route(
                    "/refused",
                    axum::routing::get(|| async { (StatusCode::BAD_REQUEST, "Invalid URL: why") }),
                )
                .route(
                    "/failed",
                    axum::routing::get(|| async {
                        (StatusCode::INTERNAL_SERVER_ERROR, "secret detail")
                    }),
                ),
        );
        for (path, status, error, message) in [
            ("/refused", 400, "bad_request", "Invalid URL: why"),
            ("/failed", 500, "internal", "internal error"),
        ] {
            let request = Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("answer");
            assert_eq!(response.status().as_u16(), status, "{path}");
            let bytes = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .expect("body");
            let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            assert_eq!(body["error"], error, "{path}: {body}");
            assert_eq!(body["message"], message, "{path}: {body}");
            assert_eq!(body["code"], status, "{path}: {body}");
        }
    }

    #[test]
    fn control_characters_are_refused_where_they_hide() {
        assert!(check_text("a\u{0}b").is_err());
        assert!(check_text("a\u{7f}b").is_err());
        assert!(check_text("line\nbreak\tand tab").is_ok());
        let bad = json!({"lines": [{"title": "ok"}, {"title": "x\u{1}"}]});
        let error = check_json(&bad).err().map(|e| e.message);
        assert_eq!(
            error.as_deref(),
            Some("/lines/1/title: control character U+0001 is not allowed")
        );
        assert!(check_json(&json!({"k\u{0}": 1})).is_err());
    }

    #[test]
    fn bodies_must_be_json_objects_sent_as_json() {
        let ct = Some("application/json; charset=utf-8");
        assert!(json_body(ct, b"{\"a\":1}").is_ok());
        for declared in [
            "application/json; charset=\"UTF-8\"",
            "application/json;charset=utf8",
        ] {
            assert!(
                json_body(Some(declared), b"{\"a\":1}").is_ok(),
                "{declared}"
            );
        }
        for declared in [
            "application/json; charset=latin1",
            "application/json; Charset=UTF-16",
        ] {
            assert_eq!(
                json_body(Some(declared), b"{\"a\":1}")
                    .err()
                    .map(|e| e.status),
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                "{declared}"
            );
        }
        assert!(json_body(ct, b"  ").is_ok());
        assert_eq!(
            json_body(ct, b"[10,70,3]").err().map(|e| e.status),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            json_body(ct, b"3").err().map(|e| e.status),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            json_body(Some("text/plain"), b"{}").err().map(|e| e.status),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            json_body(None, b"{}").err().map(|e| e.status),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }

    #[test]
    fn a_body_that_repeats_a_key_is_malformed() {
        let error = json_body(Some("application/json"), br#"{"q":1,"q":2}"#).expect_err("repeated");
        assert_eq!(error.error, "malformed_json");
        assert!(
            error.message.contains(r#"the key "q" is repeated"#),
            "{}",
            error.message
        );
    }

    #[test]
    fn whole_floats_read_as_integers() {
        let ct = Some("application/json");
        let body = json_body(
            ct,
            br#"{"quantity": 102.0, "lat": 55.5, "deep": [3.0], "big": 1883288582563087.0}"#,
        );
        let body = body.ok().unwrap_or_default();
        assert_eq!(body["quantity"], json!(102));
        assert!(body["quantity"].is_i64());
        assert_eq!(body["lat"], json!(55.5));
        assert!(body["deep"][0].is_i64());
        assert_eq!(
            body["big"],
            json!(1_883_288_582_563_087_i64),
            "found by api-fuzz"
        );
    }

    #[test]
    fn timestamps_stay_in_the_documented_years() {
        let parse = |s: &str| serde_json::from_value::<Timestamp>(json!(s));
        assert!(parse("2026-12-02T10:00:00Z").is_ok());
        assert!(parse("9999-12-31T23:59:59Z").is_ok());
        assert!(parse("+262142-12-31T23:59:59Z").is_err());
        assert!(parse("1969-12-31T23:59:59Z").is_err());
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_shape() {
        use tower::ServiceExt;
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app = harden(axum::Router::new().route("/boom", axum::routing::get(boom)));
        let request = axum::http::Request::get("/boom")
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&bytes).expect("the error shape");
        assert_eq!(body["error"], "internal");
        assert_eq!(body["code"], 500);
    }

    /// A request target or headers past their limits get 414 and 431 in the error
    /// shape (hyper answers far larger ones itself, with an empty body); at the limit
    /// the route answers.
    #[tokio::test]
    async fn a_long_target_or_large_headers_are_refused_in_the_error_shape() {
        use tower::ServiceExt;
        let app = harden(axum::Router::new().route("/q", axum::routing::get(|| async { "ok" })));
        let send = |uri: String, header: usize| {
            let app = app.clone();
            async move {
                let request = axum::http::Request::get(uri)
                    .header("x-filler", "a".repeat(header))
                    .body(Body::empty())
                    .expect("request");
                let response = app.oneshot(request).await.expect("infallible");
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .expect("body");
                (status, serde_json::from_slice::<Value>(&bytes).ok())
            }
        };
        let at_limit = format!("/q?x={}", "1".repeat(MAX_URI_BYTES - 5));
        assert_eq!(send(at_limit.clone(), 1).await.0, StatusCode::OK);
        let (status, body) = send(format!("{at_limit}1"), 1).await;
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        assert_eq!(body.expect("shape")["error"], "uri_too_long");
        let filler = MAX_HEADER_BYTES - "x-filler".len();
        assert_eq!(send("/q".into(), filler).await.0, StatusCode::OK);
        let (status, body) = send("/q".into(), filler + 1).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body.expect("shape")["code"], 431);
    }
}
