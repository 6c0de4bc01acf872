//! Version bumps at `serve` start-up.
//!
//! A projection's name carries its version (`reminders.v1`). When a build ships
//! `reminders.v2` and the read store still holds a checkpoint of `reminders.v1`, the
//! tables (or keys) hold the old version's data. `serve` detects
//! this before it creates anything, reports it, and rebuilds the new version with the
//! replay machinery — shadow tables from position 0, then a swap — while every other
//! projection and the API run. Until the swap `/readyz` answers 503 (the projection is
//! `rebuilding`) and queries of that model are answered from the old version's tables;
//! after it, the old version's checkpoint is removed and the projection follows the log.

use std::time::{Duration, Instant};

use eventfold_event_log::AnyEventStore;
use eventfold_projections::{ProjectionSet, ProjectionState, VersionBump};
use eventfold_replay::{Progress, Target};

/// Rebuilds a bumped projection, then runs it until `shutdown`.
///
/// With several processes on one database only the lease holder rebuilds; the others
/// stand by, and one that gets the lease later finds the bump done (or resumes the
/// shadow build the dead holder left).
pub(crate) async fn upgrade(
    set: ProjectionSet<AnyEventStore>,
    bump: VersionBump,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    leases: eventfold_projections::Leases,
) -> anyhow::Result<()> {
    let name = bump.name;
    let board = set.board().clone();
    let mut held = leases.want(name);
    // Until this process holds the lease the bump is done elsewhere, or not yet: not
    // ready (`rebuilding`) while it is still pending, standing by once it is done —
    // never `standby` for a model whose tables still hold the old version.
    let waiting = format!(
        "version bump from {}: waiting for its lease (another process may be rebuilding it)",
        bump.previous.join(", ")
    );
    board.set_state(name, ProjectionState::Rebuilding, Some(waiting.clone()));
    loop {
        // Decided here, awaited below: the select's outcome holds a (non-`Send`) watch
        // guard until the statement ends.
        let tick = tokio::select! {
            _ = held.wait_for(|held| *held) => false,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => true,
        };
        if !tick {
            break;
        }
        let pending = match set.version_bumps().await {
            Ok(bumps) => bumps.iter().any(|b| b.name == name),
            // Cannot tell: stay not ready.
            Err(_) => true,
        };
        if pending {
            board.set_state(name, ProjectionState::Rebuilding, Some(waiting.clone()));
        } else {
            board.set_state(name, ProjectionState::Standby, None);
        }
    }
    drop(held);
    if !set.version_bumps().await?.iter().any(|b| b.name == name) {
        // Another process finished it while this one stood by.
        set.run_leased(name, shutdown.clone(), &leases).await?;
        return Ok(());
    }
    let why = format!(
        "version bump from {}: rebuilding from the log",
        bump.previous.join(", ")
    );
    board.set_state(name, ProjectionState::Rebuilding, Some(why.clone()));
    tracing::warn!(projection = name, previous = ?bump.previous, "{why}");
    let started = Instant::now();
    let last = std::sync::Mutex::new(Instant::now());
    let progress = |p: Progress| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            tracing::info!(
                projection = name,
                position = p.position.0,
                target = p.target.0,
                rate = p.rate as u64,
                eta_s = p.eta.as_secs(),
                "rebuilding after a version bump"
            );
        }
    };
    let stop = {
        let mut shutdown = shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    };
    let result =
        crate::replay::rebuild_named(&set, name, Target::Swap { keep_old: false }, progress, stop)
            .await;
    match result {
        Ok(report) => {
            set.forget_previous(&bump).await?;
            tracing::info!(
                projection = name,
                position = report.map(|r| r.position),
                seconds = started.elapsed().as_secs_f64(),
                "version bump rebuilt and swapped in; following the log"
            );
            board.set_state(name, ProjectionState::Running, None);
            set.run_leased(name, shutdown.clone(), &leases).await?;
            Ok(())
        }
        // Shut down mid-way: the next start resumes the shadow build.
        Err(eventfold_replay::Error::Interrupted(at)) => {
            tracing::info!(
                projection = name,
                position = at,
                "rebuild interrupted by shutdown; it resumes at the next start"
            );
            let _ = shutdown.wait_for(|stop| *stop).await;
            Ok(())
        }
        Err(error) => {
            tracing::error!(projection = name, %error, "rebuilding after a version bump failed; the projection stays stopped");
            board.set_state(name, ProjectionState::Stopped, Some(error.to_string()));
            Err(anyhow::Error::new(error)
                .context(format!("rebuilding {name} after a version bump")))
        }
    }
}
