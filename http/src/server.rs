//! Serving a router over HTTP/1 with the bounds a server facing the open network needs,
//! which `axum::serve` leaves out: how many connections are held at once, how long a
//! client may take to send a request's head (and how long an idle kept-alive connection
//! stays open), and how long a shutdown waits for the requests under way.
//!
//! Without them a client that opens connections and never finishes a request holds
//! each one forever: enough of them use up the process's open files — and then the
//! database pools cannot open a connection either — and a graceful shutdown waits for
//! them without end.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The bounds of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Connections held at once; past it the server stops accepting (new connections
    /// wait in the kernel's listen queue) until one closes.
    pub max_connections: usize,
    /// How long a client may take to send a request's whole head; the same bound
    /// closes a kept-alive connection that stays idle that long (hyper times both from
    /// the moment it starts waiting for a head).
    pub header_timeout: Duration,
    /// How long a shutdown waits for the requests under way before it closes the
    /// connections still open.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            grace: DEFAULT_GRACE,
        }
    }
}

/// [`ServeOptions::max_connections`] by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// [`ServeOptions::header_timeout`] by default (hyper's own default, which it applies
/// only when given a timer — `axum::serve` gives none).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// [`ServeOptions::grace`] by default: inside the 30 s an orchestrator (Kubernetes'
/// `terminationGracePeriodSeconds`) waits before it kills, leaving the projectors time
/// to commit their last batch.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

/// Open files kept for everything but client connections (database and Redis pools,
/// NATS, Kafka, files) when [`connection_budget`] fits the limit of connections to the
/// process's limit of open files.
pub const FILES_KEPT: u64 = 256;

/// What [`connection_budget`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The connections to hold at most.
    pub max_connections: usize,
    /// The process's limit of open files (after raising it).
    pub open_files: u64,
    /// The limit asked for did not fit under the open files, less [`FILES_KEPT`].
    pub lowered: bool,
}

/// Raises the process's limit of open files to its hard limit (as Go's runtime does at
/// start), and fits `wanted` connections under it with [`FILES_KEPT`] to spare (at
/// least 16 connections, however low the limit).
pub fn connection_budget(wanted: usize) -> Budget {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let below_hard = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    // `None` is no limit at all.
    let open_files = limit.current.unwrap_or(u64::MAX);
    fit(wanted, open_files)
}

fn fit(wanted: usize, open_files: u64) -> Budget {
    let room = usize::try_from(open_files.saturating_sub(FILES_KEPT))
        .unwrap_or(usize::MAX)
        .max(16);
    Budget {
        max_connections: wanted.min(room),
        open_files,
        lowered: wanted > room,
    }
}

/// How a [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stopped {
    /// Connections still open when the grace ran out, closed without their answer.
    pub cut: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting,
/// lets every connection finish the request it is answering (an idle one closes at
/// once) for at most [`ServeOptions::grace`], and closes those still open.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Stopped {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (closing, closed) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Finished connections leave the set as they go.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        // Answers are written whole; nothing is gained by waiting to fill a segment.
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let mut closed = closed.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "connection ended");
                    }
                }
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    // Every connection: finish the request under way, then close.
    drop(closing);
    let drained = tokio::time::timeout(options.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    let cut = if drained.is_err() {
        connections.len()
    } else {
        0
    };
    if cut > 0 {
        tracing::warn!(
            connections = cut,
            grace_ms = options.grace.as_millis() as u64,
            "connections still open when the shutdown's grace ran out were closed"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Stopped { cut }
}

/// An accept that failed: a connection reset before it was taken is nothing; running
/// out of open files (or memory) is waited out for a moment rather than spun on.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_fits_under_the_open_files() {
        assert_eq!(
            fit(10_000, 1024),
            Budget {
                max_connections: 768,
                open_files: 1024,
                lowered: true
            }
        );
        assert_eq!(fit(10_000, 1_048_576).max_connections, 10_000);
        assert!(!fit(10_000, 1_048_576).lowered);
        assert_eq!(fit(10_000, 100).max_connections, 16);
        assert_eq!(fit(10_000, u64::MAX).max_connections, 10_000);
    }
}
