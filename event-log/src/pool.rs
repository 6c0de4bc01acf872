//! Pool settings shared by the log's and the read side's connection pools.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::pool::PoolConnectionMetadata;

/// How long a PostgreSQL pool waits for a connection before it answers
/// `PoolTimedOut` (a 503 `unavailable`): below the command routes' default deadline
/// (10 s), so that a request caught waiting when the server went away is told that the
/// store is unavailable — nothing was written — rather than that its deadline passed
/// (outcome unknown). The circuit breaker has meanwhile probed the server (after
/// [`crate::breaker::SLOW`]) and refuses the requests that follow at once.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection idle this long is pinged before it is handed out.
pub(crate) const IDLE_PING: Duration = Duration::from_secs(1);

/// sqlx's `before_acquire` hook in place of its ping on every acquire (a round trip
/// each time, a sixth of a single append's time): a connection idle for less than
/// a second is handed out as it is; one idle for longer is pinged first. A
/// connection that died meanwhile fails the statement that uses it, which callers
/// treat like any broken connection. Use with `.test_before_acquire(false)`.
pub fn ping_when_idle<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    meta: PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if meta.idle_for >= IDLE_PING {
            sqlx::Connection::ping(conn).await?;
        }
        Ok(true)
    })
}
