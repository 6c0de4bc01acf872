//! Read-your-writes: wait until a read model has applied a command's events.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use eventfold_event_schemas::Position;
use eventfold_http::ApiError;
use eventfold_projections::StatusBoard;
use serde_json::json;

/// The token a query asks to see: `?after=` wins over the `X-Consistency-Token` header.
pub(crate) fn requested(
    after: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<Position>, ApiError> {
    let header = eventfold_http::text_header(headers, "x-consistency-token")?;
    let raw = after.or(header);
    raw.map(|r| {
        r.parse::<Position>()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", e.to_string()))
    })
    .transpose()
}

/// Waits until every projection in `names` has passed `token`, at most `limit`.
pub(crate) async fn wait_for(
    board: &StatusBoard,
    names: &[&str],
    token: Option<Position>,
    limit: Duration,
) -> Result<(), ApiError> {
    let Some(token) = token else { return Ok(()) };
    let started = Instant::now();
    loop {
        let behind: Vec<(&str, Position)> = names
            .iter()
            .map(|n| (*n, board.checkpoint_of(n)))
            .filter(|(_, checkpoint)| *checkpoint < token)
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        // A process standing by for these reads the owner's progress from the store
        // while someone waits on it.
        for (name, _) in &behind {
            board.want(name);
        }
        if started.elapsed() >= limit {
            let details: serde_json::Map<String, serde_json::Value> = behind
                .iter()
                .map(|(n, c)| {
                    (
                        (*n).to_owned(),
                        json!({"checkpoint": c, "behind_by": token.0 - c.0}),
                    )
                })
                .collect();
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_caught_up",
                format!(
                    "the read model has not reached position {token} within {} ms; retry",
                    limit.as_millis()
                ),
            )
            .with_details(json!({ "token": token, "projections": details })));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
