//! The OpenAPI 3.1 document, built from the Rust types the routes read and answer.
//!
//! Each router crate describes its routes in a table of [`RouteDoc`]s next to its
//! router; a route's parameters, body and answer are the JSON Schemas (`schemars`) of
//! the very types its handler parses and serializes, so the document cannot drift from
//! what the code does. [`document`] assembles the tables; tests check every table
//! against its router (every route documented, every documented route served).

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// Makes the schema of one type (a reference into `components/schemas` for named
/// types).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, as a reference where `T` is named.
pub fn schema<T: JsonSchema + ?Sized>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The schema of `T` itself (for query-string structs, whose properties become
/// parameters).
pub fn inline<T: JsonSchema + ?Sized>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

/// The error statuses of a command route.
pub const COMMAND_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 413, 415, 422, 429, 503];
/// The error statuses of a query route.
pub const QUERY_ERRORS: &[u16] = &[400, 401, 403, 404, 422, 429, 503];

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, with `{placeholders}` named as the router names them.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// `commands`, `queries` or `operations`.
    pub tag: &'static str,
    /// Whether it needs a bearer token or an API key.
    pub auth: bool,
    /// The path parameters and their schemas.
    pub path_params: &'static [(&'static str, SchemaFn)],
    /// The query string's struct ([`inline`]).
    pub query: Option<SchemaFn>,
    /// The JSON body, and whether it may be left out.
    pub body: Option<(SchemaFn, bool)>,
    /// The success status.
    pub status: u16,
    /// The success body (`None`: not JSON, e.g. Prometheus text).
    pub response: Option<SchemaFn>,
    /// The error statuses it can answer.
    pub errors: &'static [u16],
    /// Other statuses answered with the success body (`/readyz`'s 503).
    pub same_body: &'static [u16],
}

impl RouteDoc {
    /// A route that answers `200` with no documented body yet.
    pub const fn new(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        tag: &'static str,
    ) -> Self {
        Self {
            method,
            path,
            summary,
            tag,
            auth: false,
            path_params: &[],
            query: None,
            body: None,
            status: 200,
            response: None,
            errors: &[],
            same_body: &[],
        }
    }

    /// A command route: POST, authenticated, an `Idempotency-Key`.
    pub const fn command(path: &'static str, summary: &'static str) -> Self {
        Self::new("POST", path, summary, "commands")
            .authenticated()
            .errors(COMMAND_ERRORS)
    }

    /// A query route: GET, authenticated, `?after=` for read-your-writes.
    pub const fn query_route(path: &'static str, summary: &'static str) -> Self {
        Self::new("GET", path, summary, "queries")
            .authenticated()
            .errors(QUERY_ERRORS)
    }

    /// Needs a bearer token or an API key.
    pub const fn authenticated(mut self) -> Self {
        self.auth = true;
        self
    }

    /// Path parameters.
    pub const fn params(mut self, params: &'static [(&'static str, SchemaFn)]) -> Self {
        self.path_params = params;
        self
    }

    /// The query string.
    pub const fn query(mut self, query: SchemaFn) -> Self {
        self.query = Some(query);
        self
    }

    /// A required JSON body.
    pub const fn body(mut self, body: SchemaFn) -> Self {
        self.body = Some((body, true));
        self
    }

    /// A JSON body that may be left out (an empty body reads as `{}`).
    pub const fn optional_body(mut self, body: SchemaFn) -> Self {
        self.body = Some((body, false));
        self
    }

    /// The success status and body.
    pub const fn answers(mut self, status: u16, response: SchemaFn) -> Self {
        self.status = status;
        self.response = Some(response);
        self
    }

    /// Statuses answered with the success body.
    pub const fn same_body_on(mut self, statuses: &'static [u16]) -> Self {
        self.same_body = statuses;
        self
    }

    /// The error statuses.
    pub const fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }
}

/// The routes the document itself adds.
pub const ROUTES: &[RouteDoc] =
    &[
        RouteDoc::new("GET", "/api/v1/openapi.json", "This document", "operations")
            .errors(&[400])
            .answers(200, schema::<serde_json::Value>),
    ];

/// `{"type": ["x", "null"]}` and `anyOf [x, null]` as `x`: a query parameter is
/// present or absent, never `null`.
fn without_null(schema: Value) -> Value {
    let mut schema = schema;
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            schema["type"] = only;
        }
    }
    if let Some(Value::Array(any)) = schema.get("anyOf").cloned() {
        let rest: Vec<Value> = any
            .into_iter()
            .filter(|s| s != &json!({"type": "null"}))
            .collect();
        if rest.len() == 1 {
            let mut inner = rest[0].clone();
            if let (Some(target), Value::Object(outer)) = (inner.as_object_mut(), &schema) {
                for (key, value) in outer {
                    if key != "anyOf" {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
            return inner;
        }
    }
    schema
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Malformed or invalid input",
        401 => "Not authenticated",
        403 => "Not allowed for this caller",
        404 => "Unknown aggregate or record",
        409 => "Illegal transition or conflict",
        413 => "Body too large",
        415 => "The body is not sent as application/json",
        422 => "Semantic validation failed",
        429 => "Over the caller's rate limit (see Retry-After)",
        503 => "Store unavailable, the append's outcome unknown, read model not caught up, or the deadline passed",
        _ => "See the error shape",
    }
}

/// The document of `routes`.
pub fn document(title: &str, version: &str, description: &str, routes: &[&[RouteDoc]]) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let error = schema::<crate::ErrorBody<'static>>(&mut generator).to_value();
    let mut paths = Map::new();
    for route in routes.iter().flat_map(|r| r.iter()) {
        let mut parameters: Vec<Value> = route
            .path_params
            .iter()
            .map(|(name, schema)| {
                json!({"name": name, "in": "path", "required": true, "schema": schema(&mut generator).to_value()})
            })
            .collect();
        if let Some(query) = route.query {
            let object = query(&mut generator).to_value();
            let required: Vec<Value> = object
                .get("required")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(Value::Object(properties)) = object.get("properties") {
                for (name, property) in properties {
                    let mut parameter = json!({
                        "name": name, "in": "query",
                        "required": required.contains(&json!(name)),
                        "schema": without_null(property.clone()),
                    });
                    if let Some(description) = property.get("description") {
                        parameter["description"] = description.clone();
                    }
                    parameters.push(parameter);
                }
            }
        }
        if route.tag == "commands" {
            parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[\\x21-\\x7E]+$"},
                "description": "Retrying with the same key returns the first result instead of acting twice."}));
        }
        let mut responses = Map::new();
        let mut ok = json!({"description": reason(route.status)});
        match route.response {
            Some(response) => {
                ok["content"] =
                    json!({"application/json": {"schema": response(&mut generator).to_value()}});
            }
            None => {
                ok["content"] = json!({"text/plain": {"schema": {"type": "string"}}});
            }
        }
        for status in route.same_body {
            let mut same = ok.clone();
            same["description"] = json!(reason(*status));
            responses.insert(status.to_string(), same);
        }
        responses.insert(route.status.to_string(), ok);
        for status in route.errors {
            let mut answer = json!({"description": reason(*status), "content": {"application/json": {"schema": error}}});
            if matches!(*status, 429 | 503) {
                answer["headers"] = json!({"Retry-After": {
                    "description": "Seconds to wait before retrying",
                    "required": true,
                    "schema": {"type": "integer", "minimum": 1}}});
            }
            responses.insert(status.to_string(), answer);
        }
        let mut operation = json!({
            "summary": route.summary,
            "operationId": operation_id(route),
            "tags": [route.tag],
            "parameters": parameters,
            "responses": responses,
        });
        if route.auth {
            operation["security"] = json!([{"bearer": []}, {"apiKey": []}]);
        }
        if let Some((body, required)) = route.body {
            operation["requestBody"] = json!({"required": required,
                "content": {"application/json": {"schema": body(&mut generator).to_value()}}});
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256; claims sub, role, exp)"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
            },
            "schemas": generator.take_definitions(true),
        }
    })
}

/// `post_api_v1_reminders_id_offer` and the like: unique per method and path.
fn operation_id(route: &RouteDoc) -> String {
    let path: String = route
        .path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut id = format!("{}{}", route.method.to_lowercase(), path);
    while id.contains("__") {
        id = id.replace("__", "_");
    }
    id.trim_end_matches('_').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_query_parameters_are_never_null() {
        assert_eq!(
            without_null(json!({"type": ["integer", "null"], "minimum": 1})),
            json!({"type": "integer", "minimum": 1})
        );
        assert_eq!(
            without_null(json!({"anyOf": [{"$ref": "#/x"}, {"type": "null"}], "description": "d"})),
            json!({"$ref": "#/x", "description": "d"})
        );
    }
}
