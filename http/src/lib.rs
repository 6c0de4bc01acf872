//! What the command routes and the query routes share, so that neither side's crate
//! depends on the other's: the [`Principal`] and its [`Role`], authentication
//! ([`AuthConfig`]: HS256 bearer tokens or API keys, and the [`Caller`] extractor), and
//! the one error shape of the API ([`ApiError`]: `{"error", "message", "code",
//! "details"}`), and the edge every route shares ([`harden`]: control characters refused
//! in paths, queries and JSON strings, bodies that are JSON objects, [`Timestamp`]s in
//! years 1970–9999, every error status in the error shape, panics answered with 500),
//! and the server loop ([`serve`]: connections bounded in number, in the time a request
//! head may take and in how long a shutdown waits for them).

mod auth;
mod edge;
mod error;
mod headers;
mod input;
mod limits;
pub mod openapi;
mod principal;
mod server;

pub use auth::{request_digest, AuthConfig, Caller, Claims, RequestDigest};
pub use edge::{
    check_json, check_text, edge, harden, harden_with, json_body, no_query, panic_answer,
    EdgeConfig, Timestamp, MAX_HEADER_BYTES, MAX_URI_BYTES, YEARS,
};
pub use error::{ApiError, ErrorBody, ErrorCause};
pub use headers::{correlation_header, single_header, text_header, uuid_header};
pub use input::{
    uuid_path, Amount, Bounded, Currency, Id, IsoWeek, Name, Text, Title, MAX_SAFE_INTEGER,
};
pub use limits::{limit, ClassLimits, Cors, EdgeLimits, Limiter, RouteClass};
pub use principal::{Principal, Role};
pub use server::{
    connection_budget, serve, Budget, ServeOptions, Stopped, DEFAULT_GRACE, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, FILES_KEPT,
};

/// A random (v4) UUID from the thread's fast generator, not a `getrandom` system call
/// per id: correlation and trace ids are made on every request.
pub fn fresh_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}
