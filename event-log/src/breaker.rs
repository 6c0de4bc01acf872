//! A circuit breaker in front of a PostgreSQL server: when the server stops answering,
//! callers are told so at once instead of each waiting out the pool's acquire timeout.
//!
//! sqlx's pool retries a refused connection until its acquire timeout
//! ([`crate::ACQUIRE_TIMEOUT`]), so without a breaker every request made while the
//! server is down waits that long for its 503, holds its client that long, and a readiness probe (which asks every store) takes
//! longer than any orchestrator waits. With it:
//!
//! - **closed** (the normal state): every operation goes through;
//! - an operation fails with an error that may mean the server is gone (I/O, pool
//!   timeout, TLS, protocol, or SQLSTATE classes 08 and 57P), or is still waiting
//!   after [`SLOW`]: the breaker is
//!   **suspected** and one probe runs at once, out of band — a fresh connection of its
//!   own (not the pool, whose connect retries), bounded by [`PROBE_TIMEOUT`];
//! - the probe fails the same way: the breaker is **open**. Operations fail at once
//!   with [`Open`] (callers answer 503 with `Retry-After`) and the probe repeats every
//!   [`PROBE_INTERVAL`];
//! - a probe connects: the breaker closes, and the next operation goes to the pool.
//!
//! Only new operations are refused: one already waiting on the pool is left to finish
//! or time out (cutting an append in flight would make its outcome unknown). A probe
//! the server answers with any other error (too many clients, a password refused)
//! counts as up: the server is there, and failing fast would only hide its answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

/// How long a probe waits for a connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an open breaker probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The breaker is open: the server did not answer the last probe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{store} is unreachable ({reason}); failing fast until it answers again (probed every {} ms)", PROBE_INTERVAL.as_millis())]
pub struct Open {
    /// Which store (`the event log`, `the read store`).
    pub store: &'static str,
    /// The last probe's error.
    pub reason: String,
}

type Probe = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ProbeResult> + Send>> + Send + Sync>;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The server answered (a connection, or an error only a live server gives).
    Up,
    /// The server did not answer: why.
    Down(String),
}

/// A circuit breaker for one server (cheap to clone; clones share the state).
#[derive(Clone)]
pub struct Breaker {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    store: &'static str,
    open: AtomicBool,
    probing: AtomicBool,
    reason: std::sync::Mutex<String>,
    probe: Probe,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("store", &self.shared.as_ref().map(|s| s.store))
            .field("open", &self.is_open())
            .finish()
    }
}

impl Breaker {
    /// A breaker that never opens (an embedded store: there is no server to lose).
    pub fn never() -> Self {
        Self { shared: None }
    }

    /// A breaker for the PostgreSQL server `options` connect to; `store` names it in
    /// errors and logs.
    pub fn postgres(store: &'static str, options: PgConnectOptions) -> Self {
        let options = Arc::new(options);
        Self::with_probe(store, move || {
            let options = Arc::clone(&options);
            Box::pin(async move { probe_postgres(&options).await })
        })
    }

    /// A breaker whose probe is `probe` (tests, other servers).
    pub fn with_probe<F>(store: &'static str, probe: F) -> Self
    where
        F: Fn() -> Pin<Box<dyn Future<Output = ProbeResult> + Send>> + Send + Sync + 'static,
    {
        Self {
            shared: Some(Arc::new(Shared {
                store,
                open: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                reason: std::sync::Mutex::new(String::new()),
                probe: Box::new(probe),
            })),
        }
    }

    /// Whether operations are being refused.
    pub fn is_open(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.open.load(Ordering::Acquire))
    }

    /// `Ok` when an operation may go to the server; [`Open`] when it would only wait.
    pub fn admit(&self) -> Result<(), Open> {
        match &self.shared {
            Some(s) if s.open.load(Ordering::Acquire) => Err(Open {
                store: s.store,
                reason: s
                    .reason
                    .lock()
                    .map(|r| r.clone())
                    .unwrap_or_else(|p| p.into_inner().clone()),
            }),
            _ => Ok(()),
        }
    }

    /// Runs `op` behind the breaker: refused at once with [`Open`] while the breaker is
    /// open; a failure that `database_error` finds a connection error in, or an
    /// operation still waiting after [`SLOW`], has the server probed.
    pub async fn run<T, E>(
        &self,
        op: impl Future<Output = Result<T, E>>,
        database_error: impl Fn(&E) -> Option<&sqlx::Error>,
    ) -> Result<T, E>
    where
        E: From<Open>,
    {
        self.run_with(op, |error| {
            database_error(error).is_some_and(is_connection_error)
        })
        .await
    }

    /// [`run`](Self::run) for any server: `gone` says which failures may mean the
    /// server is gone.
    pub async fn run_with<T, E>(
        &self,
        op: impl Future<Output = Result<T, E>>,
        gone: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        E: From<Open>,
    {
        self.admit()?;
        let outcome = if self.shared.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            // On the heap: a store's operation can be a large future, and with it
            // inline beside the timer a debug build overflowed a test thread's stack
            // (every_registered_model_conforms_on_postgres).
            let mut op = Box::pin(op);
            tokio::select! {
                biased;
                outcome = &mut op => outcome,
                () = tokio::time::sleep(SLOW) => {
                    // Still waiting: a pool retrying a refused connect waits out its
                    // whole acquire timeout. Probe now, so that the requests arriving
                    // meanwhile fail fast; this one is left to finish (cutting an
                    // append in flight would make its outcome unknown).
                    self.suspect();
                    op.await
                }
            }
        } else {
            op.await
        };
        if outcome.as_ref().err().is_some_and(gone) {
            self.suspect();
        }
        outcome
    }

    /// An operation failed with `error`: probes the server when the error may mean it
    /// is gone.
    pub fn failed(&self, error: &sqlx::Error) {
        if is_connection_error(error) {
            self.suspect();
        }
    }

    /// Probes the server now (out of band; at most one probe loop at a time). Outside a
    /// Tokio runtime this does nothing.
    pub fn suspect(&self) {
        let Some(shared) = &self.shared else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if shared.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(probe_loop(Arc::downgrade(shared)));
    }
}

/// How long an operation may wait before the server is probed (a pool waiting on a
/// dead server waits its whole acquire timeout; a live one answers well inside this).
pub const SLOW: Duration = Duration::from_millis(500);

/// Probes until the server answers; ends early when every breaker handle is dropped.
async fn probe_loop(shared: Weak<Shared>) {
    loop {
        let Some(probe) = shared.upgrade().map(|s| (s.probe)()) else {
            return;
        };
        let result = probe.await;
        let Some(s) = shared.upgrade() else { return };
        match result {
            ProbeResult::Up => {
                if s.open.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        store = s.store,
                        "reachable again: the circuit breaker closed"
                    );
                }
                s.probing.store(false, Ordering::Release);
                return;
            }
            ProbeResult::Down(reason) => {
                if let Ok(mut r) = s.reason.lock() {
                    r.clone_from(&reason);
                }
                if !s.open.swap(true, Ordering::AcqRel) {
                    tracing::error!(store = s.store, %reason, "unreachable: the circuit breaker opened; requests fail fast until it answers");
                }
            }
        }
        drop(s);
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Waits up to `within` for the server to take a connection, as sqlx's pool does for
/// its first one (a server still starting refuses, and is retried), but answers with
/// the server's own error: the pool would say only "pool timed out while waiting for
/// an open connection", after which a user does not know whether the host, the port,
/// or the server is at fault. Errors other than a refusal are returned at once.
pub async fn first_connection(
    options: &PgConnectOptions,
    within: Duration,
) -> Result<(), sqlx::Error> {
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let error = match connect_within(options, left).await {
            Some(Ok(())) => return Ok(()),
            Some(Err(error)) => error,
            None => {
                return Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer from {}:{} within {} s",
                        options.get_host(),
                        options.get_port(),
                        within.as_secs()
                    ),
                )))
            }
        };
        let refused = matches!(&error, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
        if !refused || tokio::time::Instant::now() + backoff >= deadline {
            return Err(error);
        }
        if backoff == Duration::from_millis(50) {
            tracing::warn!(
                host = options.get_host(),
                port = options.get_port(),
                "PostgreSQL refused the connection; retrying for up to {} s in case it is starting",
                within.as_secs()
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// One probe: a connection of its own, bounded by [`PROBE_TIMEOUT`].
async fn probe_postgres(options: &PgConnectOptions) -> ProbeResult {
    match connect_within(options, PROBE_TIMEOUT).await {
        None => ProbeResult::Down(format!(
            "no connection within {} ms",
            PROBE_TIMEOUT.as_millis()
        )),
        Some(Err(error)) if is_connection_error(&error) => ProbeResult::Down(error.to_string()),
        Some(_) => ProbeResult::Up,
    }
}

/// One connection of its own, opened and closed again; `None` when none came within
/// `within`.
async fn connect_within(
    options: &PgConnectOptions,
    within: Duration,
) -> Option<Result<(), sqlx::Error>> {
    match tokio::time::timeout(within, PgConnection::connect_with(options)).await {
        Err(_) => None,
        Ok(Err(error)) => Some(Err(error)),
        Ok(Ok(conn)) => {
            // Closing politely may itself stall on a dying server: bounded, and
            // dropping the connection is enough if it does.
            drop(tokio::time::timeout(PROBE_TIMEOUT, conn.close()).await);
            Some(Ok(()))
        }
    }
}

/// Whether `error` may mean the server is gone (rather than refusing one statement):
/// I/O, TLS and protocol errors, a pool timeout, a crashed worker, and the SQLSTATE
/// classes 08 (connection exception) and 57P (the server shutting down or starting).
pub fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| server_gone(&code)),
        _ => false,
    }
}

/// PostgreSQL's SQLSTATE classes of a server going away: 08 (connection exception)
/// and 57P (shutting down, starting up).
fn server_gone(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P")
}

/// Whether a database error code says the server, not the statement, failed:
/// PostgreSQL's SQLSTATE classes 08 (connection), 57P (shutting down, starting up), 53
/// (no room: connections, memory, disk) and 58 (I/O), and 25006 (the server only
/// reads: a standby after a failover, `default_transaction_read_only`); SQLite's
/// primary codes BUSY, LOCKED, READONLY, IOERR and FULL (its codes are numbers below 5
/// digits, extended ones carrying the primary in their low byte). Counted against an
/// event, a server that only read for a while used up the event's attempts and parked
/// it.
pub fn server_unavailable(code: &str) -> bool {
    if code.len() < 5 {
        return code
            .parse::<u32>()
            .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 8 | 10 | 13));
    }
    server_gone(code) || code.starts_with("53") || code.starts_with("58") || code == "25006"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A breaker whose probe finds the server as `up` says, counting its probes.
    fn scripted(up: bool) -> (Breaker, Arc<AtomicBool>, Arc<AtomicUsize>) {
        let (up, probes) = (Arc::new(AtomicBool::new(up)), Arc::new(AtomicUsize::new(0)));
        let (server, count) = (Arc::clone(&up), Arc::clone(&probes));
        let breaker = Breaker::with_probe("the test store", move || {
            let (up, probes) = (Arc::clone(&server), Arc::clone(&count));
            Box::pin(async move {
                probes.fetch_add(1, Ordering::SeqCst);
                if up.load(Ordering::SeqCst) {
                    ProbeResult::Up
                } else {
                    ProbeResult::Down("refused".into())
                }
            })
        });
        (breaker, up, probes)
    }

    /// Options for a port nobody listens on.
    fn refused() -> PgConnectOptions {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        drop(listener);
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
    }

    async fn until(what: impl Fn() -> bool) {
        for _ in 0..200 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 2 s");
    }

    #[tokio::test]
    async fn opens_when_the_probe_fails_and_closes_when_it_succeeds() {
        let (breaker, up, _) = scripted(false);
        assert!(breaker.admit().is_ok(), "closed until something fails");
        breaker.suspect();
        until(|| breaker.is_open()).await;
        let open = breaker.admit().expect_err("open: fail fast");
        assert!(open.to_string().contains("refused"), "{open}");
        up.store(true, Ordering::SeqCst);
        until(|| !breaker.is_open()).await;
        assert!(breaker.admit().is_ok());
    }

    #[tokio::test]
    async fn a_suspicion_the_probe_clears_never_opens_it() {
        let (breaker, _, probes) = scripted(true);
        breaker.suspect();
        until(|| probes.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!breaker.is_open());
        assert_eq!(probes.load(Ordering::SeqCst), 1, "one probe, then done");
    }

    #[tokio::test]
    async fn many_suspicions_run_one_probe_loop() {
        let (breaker, _, probes) = scripted(false);
        for _ in 0..100 {
            breaker.suspect();
        }
        until(|| breaker.is_open()).await;
        tokio::time::sleep(PROBE_INTERVAL / 2).await;
        assert_eq!(probes.load(Ordering::SeqCst), 1, "one loop, not a hundred");
    }

    #[tokio::test]
    async fn run_refuses_while_open_and_probes_while_an_operation_waits() {
        let (breaker, _, probes) = scripted(false);
        fn none(_: &Open) -> Option<&sqlx::Error> {
            None
        }
        // Abandoned quickly (a client gone): no probe.
        let quick = breaker.run(std::future::pending::<Result<(), Open>>(), none);
        assert!(tokio::time::timeout(Duration::from_millis(10), quick)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(probes.load(Ordering::SeqCst), 0);
        // Still waiting after `SLOW` (a pool retrying a dead server): the server is
        // probed and found down while the operation still waits, so that the requests
        // arriving meanwhile fail fast.
        let waiting = tokio::spawn({
            let breaker = breaker.clone();
            async move {
                breaker
                    .run(std::future::pending::<Result<(), Open>>(), none)
                    .await
            }
        });
        until(|| breaker.is_open()).await;
        let ran = Arc::new(AtomicBool::new(false));
        let refused = breaker
            .run(
                async {
                    ran.store(true, Ordering::SeqCst);
                    Ok::<_, Open>(())
                },
                none,
            )
            .await;
        assert!(refused.is_err(), "open: refused");
        assert!(!ran.load(Ordering::SeqCst), "and not run");
        assert!(
            !waiting.is_finished(),
            "the waiting operation is left to finish"
        );
        waiting.abort();
    }

    #[tokio::test]
    async fn a_refused_port_is_down_and_a_live_server_is_up() {
        let refused = refused();
        assert!(matches!(
            probe_postgres(&refused).await,
            ProbeResult::Down(_)
        ));
        let url = std::env::var("EVENTFOLD_TEST_POSTGRES").unwrap_or_else(|_| {
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_owned()
        });
        let live: PgConnectOptions = url.parse().expect("the test server's URL");
        assert_eq!(probe_postgres(&live).await, ProbeResult::Up);
        // A database that does not exist: the server answered, so it is up.
        assert_eq!(
            probe_postgres(&live.database("eventfold_no_such_database")).await,
            ProbeResult::Up
        );
    }

    #[tokio::test]
    async fn a_first_connection_names_the_server_s_own_error() {
        let refused = refused();
        let started = std::time::Instant::now();
        let error = first_connection(&refused, Duration::from_millis(400))
            .await
            .expect_err("nobody listens");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            error.to_string().to_lowercase().contains("refused"),
            "{error}"
        );
    }

    #[test]
    fn codes_that_mean_the_server_not_the_event() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "53100", "58030", "25006", "5", "517",
            "6", "8", "1032", "10", "13",
        ] {
            assert!(server_unavailable(code), "{code}");
        }
        // A constraint, a syntax error, a type error: the event's (or the model's) fault.
        for code in ["23505", "42601", "22P02", "40001", "1", "19", "2067"] {
            assert!(!server_unavailable(code), "{code}");
        }
    }

    #[test]
    fn what_counts_as_the_server_being_gone() {
        assert!(is_connection_error(&sqlx::Error::PoolTimedOut));
        assert!(is_connection_error(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_connection_error(&sqlx::Error::RowNotFound));
        assert!(!is_connection_error(&sqlx::Error::ColumnNotFound(
            "x".into()
        )));
        assert!(breaker_never_opens());
    }

    fn breaker_never_opens() -> bool {
        let b = Breaker::never();
        b.suspect();
        b.admit().is_ok() && !b.is_open()
    }
}
