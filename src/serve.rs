//! `eventfold serve`: the HTTP API and the projectors in one process.

use std::io::Write;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::app;
use crate::config::Config;

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Connections the kernel may hold for the server before it accepts them. Tokio's
/// default (1024) overflowed under a burst of new connections (an open-loop client
/// opening hundreds at once when answers slowed for a moment): the kernel then drops the
/// SYNs and the clients retry after a second, which no deadline of ours can shorten.
/// The kernel caps it at `net.core.somaxconn` (4096 on current kernels).
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` (`host:port`, the first address it resolves to) with
/// [`LISTEN_BACKLOG`].
pub(crate) async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr).await? {
        let socket = if resolved.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(resolved) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

pub(crate) async fn run(
    config: Config,
    database_url: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut options = config.serve_options()?;
    let budget = eventfold_http::connection_budget(options.max_connections);
    if budget.lowered {
        tracing::warn!(
            asked = options.max_connections,
            held = budget.max_connections,
            open_files = budget.open_files,
            "the connection limit was lowered to fit the open-files limit (raise `ulimit -n`)"
        );
    }
    options.max_connections = budget.max_connections;
    let app = app::build(&config, database_url).await?;
    let listen = config
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let bumped: Vec<&str> = app.bumps.iter().map(|b| b.name).collect();
    let mut projectors = app
        .projections
        .spawn_leased(stopped.clone(), &bumped, &app.leases);
    let mut reactions = app.spawn_reactions(stopped.clone());
    let retention = app.spawn_retention(stopped.clone());
    let mut upgrades = tokio::task::JoinSet::new();
    for bump in app.bumps.clone() {
        let (set, stopped) = (app.projections.clone(), stopped.clone());
        upgrades.spawn(crate::upgrade::upgrade(
            set,
            bump,
            stopped,
            app.leases.clone(),
        ));
    }
    for line in &app.report {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "projections: {}", app.projections.names().join(", "))?;
    writeln!(out, "reactions: {}", app.reaction_names().join(", "))?;
    writeln!(
        out,
        "connections: at most {}{}, request heads within {} ms (idle connections closed after as long), shutdown grace {} ms",
        options.max_connections,
        if budget.lowered { " (lowered to fit the open-files limit)" } else { "" },
        options.header_timeout.as_millis(),
        options.grace.as_millis()
    )?;
    writeln!(out, "listening on http://{}", listener.local_addr()?)?;
    out.flush()?;
    let stopped = eventfold_http::serve(listener, app.router, options, shutdown_signal()).await;
    // From here on output is best effort: a closed stdout (the reader of a pipe gone)
    // must not cut the projectors' stop short.
    if stopped.cut > 0 {
        let _ = writeln!(
            out,
            "shutting down: {} connection(s) still answering after {} ms were closed",
            stopped.cut,
            options.grace.as_millis()
        );
    }
    // In-flight requests have finished; let the projectors finish their batch (each
    // commits its checkpoint with its writes) and stop.
    let _ = writeln!(out, "shutting down: stopping projectors");
    let _ = out.flush();
    stop.send(true).ok();
    while let Some(done) = projectors.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "a projector stopped with an error"),
            Err(error) => tracing::error!(%error, "a projector panicked"),
        }
    }
    while let Some(done) = reactions.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "a reaction stopped with an error"),
            Err(error) => tracing::error!(%error, "a reaction panicked"),
        }
    }
    while let Some(done) = upgrades.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(
                error = format!("{error:#}"),
                "a version-bump rebuild failed"
            ),
            Err(error) => tracing::error!(%error, "a version-bump rebuild panicked"),
        }
    }
    if let Some(retention) = retention {
        let _ = retention.await;
    }
    let _ = writeln!(out, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_a_free_port_and_refuses_an_address_it_cannot_use() {
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let taken = listener.local_addr().expect("address");
        assert_ne!(taken.port(), 0);
        // Taken by the listener above: a clear error, not a second listener.
        assert!(bind(&taken.to_string()).await.is_err());
        assert!(bind("no port here").await.is_err());
    }
}
