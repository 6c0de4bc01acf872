//! The OpenAPI 3.1 document of every command and query route.
//!
//! Generated from [`ROUTES`], one table the tests check against the routers, so a
//! route cannot be added without being documented. Request and response bodies are
//! described by example and prose, not by full JSON Schemas (a known gap).

use axum::Json;
use serde_json::{json, Map, Value};

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path with `{placeholders}`.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// `commands`, `queries` or `operations`.
    pub tag: &'static str,
    /// Whether it needs a bearer token or API key.
    pub auth: bool,
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    auth: bool,
) -> Route {
    Route {
        method,
        path,
        summary,
        tag,
        auth,
    }
}

/// Every route of `eventfold serve`.
pub const ROUTES: &[Route] = &[
    r(
        "POST",
        "/api/v1/purchases",
        "Record a purchase line; plans a reminder for a consumable",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/devices/{device_id}/activations",
        "A speaker woke up for a user",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/reminders/{id}/offer",
        "The speaker offers the re-order",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/reminders/{id}/accept",
        "The user says yes: an order is drafted at the current price",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/reminders/{id}/decline",
        "The user says no",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/reminders/{id}/snooze",
        "The user says later (body: until)",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/orders/{id}/confirm",
        "Final confirmation: place the order and request payment",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/orders/{id}/cancel",
        "Cancel an order before payment",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/workouts",
        "Start a workout",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/workouts/{id}/updates",
        "Report distance, heart rate, speed, GPS points",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/workouts/{id}/pause",
        "Pause a workout",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/workouts/{id}/resume",
        "Resume a paused workout",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/workouts/{id}/complete",
        "Complete a workout",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/workouts/{id}/cancel",
        "Cancel a workout",
        "commands",
        true,
    ),
    r(
        "POST",
        "/api/v1/catalog/prices",
        "Set a sku's price and availability (services)",
        "commands",
        true,
    ),
    r(
        "GET",
        "/api/v1/users/{user_id}/reminders/due",
        "The voice answer: what to offer now",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/users/{user_id}/reminders",
        "A user's reminders (paged)",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/users/{user_id}/orders",
        "A user's orders (paged)",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/orders/{order_id}",
        "One order with its lines",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/users/{user_id}/consumables",
        "A user's consumables",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/users/{user_id}/purchases",
        "A user's purchases (paged)",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/users/{user_id}/workouts",
        "A user's workouts in [from, to) (paged)",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/workouts/{workout_id}",
        "One workout's summary and details",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/workouts/{workout_id}/route",
        "A workout's route points",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/users/{user_id}/workout-stats",
        "Totals, records and weekly activity",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/leaderboards/{sport}",
        "Distance top for a sport and ISO week (?week=2026-W48)",
        "queries",
        true,
    ),
    r(
        "GET",
        "/api/v1/projections",
        "Projection checkpoints, state and lag",
        "operations",
        true,
    ),
    r(
        "GET",
        "/api/v1/openapi.json",
        "This document",
        "operations",
        false,
    ),
    r("GET", "/healthz", "Liveness", "operations", false),
    r(
        "GET",
        "/readyz",
        "Readiness: stores reachable, projections running",
        "operations",
        false,
    ),
    r("GET", "/metrics", "Prometheus metrics", "operations", false),
];

fn parameters(route: &Route) -> Vec<Value> {
    let mut params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if route.method == "POST" && route.tag == "commands" {
        params.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 200},
            "description": "Retrying with the same key returns the first result instead of acting twice."}));
    }
    if route.tag == "queries" {
        params.push(json!({"name": "after", "in": "query", "required": false, "schema": {"type": "integer"},
            "description": "A command's consistency token: wait (bounded) until the read model has applied it."}));
    }
    params
}

/// The document.
pub fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let mut paths = Map::new();
    for route in ROUTES {
        let mut responses = Map::new();
        responses.insert(
            if route.path == "/api/v1/purchases" || route.path.ends_with("/activations") {
                "201"
            } else {
                "200"
            }
            .into(),
            json!({"description": "OK"}),
        );
        for (code, what) in [
            ("400", "Malformed or invalid input"),
            ("401", "Not authenticated"),
            ("403", "Not allowed for this caller"),
            ("404", "Unknown aggregate"),
            ("409", "Illegal transition or conflict"),
            ("413", "Body too large"),
            ("422", "Semantic validation failed"),
            ("503", "Store unavailable or read model not caught up"),
        ] {
            if route.auth || code == "503" {
                responses.insert(code.into(), json!({"description": what, "content": {"application/json": {"schema": error}}}));
            }
        }
        let mut operation = json!({
            "summary": route.summary, "tags": [route.tag], "parameters": parameters(route), "responses": responses,
        });
        if route.auth {
            operation["security"] = json!([{"bearer": []}, {"apiKey": []}]);
        }
        if route.method == "POST" {
            operation["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Eventfold", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Commands append events; queries answer from read models. Errors: {error, message, code, details}."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256; claims sub, role, exp)"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
            },
            "schemas": {"Error": {"type": "object", "required": ["error", "message", "code", "details"], "properties": {
                "error": {"type": "string"}, "message": {"type": "string"}, "code": {"type": "integer"}, "details": {"type": "object"}}}}
        }
    })
}

pub(crate) async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::ROUTES;

    /// Every `.route("…")` registered in the routers is documented, and vice versa.
    #[test]
    fn every_registered_route_is_documented() {
        let sources = [
            include_str!("lib.rs"),
            include_str!("../../commands/src/http/mod.rs"),
        ];
        let mut registered: Vec<&str> = sources
            .iter()
            .flat_map(|s| s.split(".route(").skip(1))
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .collect();
        registered.sort_unstable();
        registered.dedup();
        let mut documented: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
        documented.sort_unstable();
        documented.dedup();
        // Path parameter names may differ between router and document; compare shapes.
        let shape = |p: &&str| {
            p.split('/')
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .collect::<Vec<_>>()
                .join("/")
        };
        let mut registered: Vec<String> = registered.iter().map(shape).collect();
        let mut documented: Vec<String> = documented.iter().map(shape).collect();
        registered.sort();
        documented.sort();
        assert_eq!(registered, documented);
    }
}
