//! Per-request observability: correlation ids, tracing spans, latency histograms.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

/// Installs the process-wide Prometheus recorder (once; later calls get `None`).
pub fn install_metrics() -> Option<PrometheusHandle> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &buckets)
        .ok()?
        .install_recorder()
        .ok()
}

/// Middleware: takes `x-correlation-id` (or makes one), runs the request in a span with
/// it and a fresh trace id, records the latency per route, and echoes the id (a
/// gateway's id that is not a UUID as its stable UUID v5, see
/// [`eventfold_http::correlation_header`]).
pub async fn observe(mut request: Request, next: Next) -> Response {
    let correlation_id = match eventfold_http::correlation_header(request.headers()) {
        Ok(given) => given.unwrap_or_else(eventfold_http::fresh_uuid),
        Err(refused) => return refused.into_response(),
    };
    let id_header = HeaderValue::from_str(&correlation_id.to_string()).ok();
    if let Some(value) = &id_header {
        // Handlers (and the events they append) see the same id.
        request
            .headers_mut()
            .insert("x-correlation-id", value.clone());
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method: &'static str = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let trace_id = eventfold_http::fresh_uuid();
    let span = tracing::info_span!("request", %method, %route, %correlation_id, %trace_id);
    let started = Instant::now();
    // A handler that panics is answered here, inside the request's span, so that the
    // panic and the failed request are logged with the route and the ids (the outer
    // panic catcher of `eventfold_http::harden` knows neither).
    let mut response = match AssertUnwindSafe(next.run(request).instrument(span.clone()))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => span.in_scope(|| eventfold_http::panic_answer(panic)),
    };
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status();
    span.in_scope(|| {
        if status.is_server_error() {
            // The request's route and ids as fields of the line itself: the span is at
            // INFO (a WARN span costs every request ~2 µs — 17 % of `/healthz`), so at
            // the default level this line is the one that ties a failure to its request.
            let cause = response
                .extensions()
                .get::<eventfold_http::ErrorCause>()
                .map(|c| c.0.as_str());
            tracing::warn!(
                status = status.as_u16(),
                elapsed_ms = elapsed * 1000.0,
                %method,
                %route,
                %correlation_id,
                %trace_id,
                cause,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                elapsed_ms = elapsed * 1000.0,
                "request"
            );
        }
    });
    metrics::histogram!(
        "eventfold_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => status.as_u16().to_string()
    )
    .record(elapsed);
    if let Some(value) = id_header {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    /// A handler that panics is answered 500 in the error shape by `observe` itself:
    /// the answer carries the request's correlation id and the panic as its cause (what
    /// the "request failed" line logs), where the outer catcher knew neither.
    #[tokio::test]
    async fn a_handler_that_panics_is_answered_and_logged_with_its_request() {
        let app = eventfold_http::harden(
            axum::Router::new()
                .route(
                    "/boom",
                    get(|| async {
                        if true {
                            panic!("the handler broke");
                        }
                        "unreachable"
                    }),
                )
                .route_layer(axum::middleware::from_fn(observe)),
        );
        let response = app
            .oneshot(
                Request::builder()
                    .uri("/boom")
                    .header("x-correlation-id", "7d444840-9dc0-11d1-b245-5ffdce74fad2")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answered");
        assert_eq!(response.status(), 500);
        assert_eq!(
            response
                .headers()
                .get("x-correlation-id")
                .and_then(|v| v.to_str().ok()),
            Some("7d444840-9dc0-11d1-b245-5ffdce74fad2")
        );
        assert_eq!(
            response
                .extensions()
                .get::<eventfold_http::ErrorCause>()
                .map(|c| c.0.as_str()),
            Some("panic: the handler broke")
        );
    }
}
