//! Where the relay publishes: the topic prefix and the Kafka cluster it published the
//! log to, recorded beside its checkpoint and checked whenever it starts, so that a
//! relay pointed elsewhere never goes on from its checkpoint into topics that lack
//! every event before it.

use eventfold_projections::{Error, Result};

use super::RELAY;
use crate::reactions::ReactionProgress;

/// Records `value` as `what` (under the DDL lock), or refuses it with `moved`'s reason
/// when the relay has published to another.
pub(super) async fn claim(
    pool: &sqlx::AnyPool,
    what: Where,
    value: &str,
    moved: impl FnOnce(&Recorded) -> String,
) -> Result<()> {
    let mut tx = eventfold_projections::begin_write(pool).await?;
    let dialect = eventfold_projections::Dialect::of(&tx);
    eventfold_projections::lock_ddl(&mut tx, dialect).await?;
    if let Some(recorded) = record(&mut tx, what, value).await? {
        return Err(Error::InvalidSetting(moved(&recorded)));
    }
    tx.commit().await?;
    Ok(())
}

/// Where the relay has published the log: the topic prefix, kept beside its checkpoint
/// (table `eventfold_relay_destination`). The checkpoint says how far the log went out,
/// not where to: with the prefix changed, the relay would go on from its checkpoint
/// into new topics that lack every event before it, and a worker building a model from
/// them would build it without a word. The first run (or the first since this check)
/// records the prefix; a relay that has published nothing yet may change it; otherwise
/// a different prefix is refused, unless `from_start` republishes the whole log to the
/// new topics (the checkpoint back to 0: the old topics keep what they have, and
/// consumers skip the copies by position).
pub(crate) async fn claim_destination(
    pool: &sqlx::AnyPool,
    prefix: &str,
    from_start: bool,
) -> anyhow::Result<ClaimedDestination> {
    ReactionProgress::new(pool.clone(), RELAY).setup().await?;
    let mut tx = eventfold_projections::begin_write(pool).await?;
    let dialect = eventfold_projections::Dialect::of(&tx);
    eventfold_projections::lock_ddl(&mut tx, dialect).await?;
    let claimed = if from_start {
        let was: i64 = sqlx::query_scalar(
            "SELECT position FROM eventfold_reaction_checkpoints WHERE name = $1",
        )
        .bind(RELAY)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE eventfold_reaction_checkpoints SET position = 0 WHERE name = $1")
            .bind(RELAY)
            .execute(&mut *tx)
            .await?;
        // Whichever cluster it published to, it publishes everything to this one.
        sqlx::query(&CLUSTER.create()).execute(&mut *tx).await?;
        sqlx::query(&format!("DELETE FROM {} WHERE name = $1", CLUSTER.table))
            .bind(RELAY)
            .execute(&mut *tx)
            .await?;
        ClaimedDestination::FromStart { was }
    } else {
        ClaimedDestination::Same
    };
    if let Some(recorded) = record(&mut tx, PREFIX, prefix).await? {
        anyhow::bail!("{}", prefix_moved(&recorded, prefix));
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Why a relay may not publish under `prefix`: it published under another.
pub(super) fn prefix_moved(Recorded { stored, checkpoint }: &Recorded, prefix: &str) -> String {
    format!(
        "the relay has published the log through position {checkpoint} to topics \
         {stored}{{category}}, and the topic prefix is now {prefix:?}: topics under it would \
         lack those {checkpoint} positions. Set EVENTFOLD_KAFKA_TOPIC_PREFIX (or \
         kafka_topic_prefix) back to {stored:?}, or run `eventfold relay --from-start` once \
         to publish the whole log again under the new prefix"
    )
}

/// Why a relay may not publish to the cluster `cluster` of `brokers`: it published to
/// another.
pub(super) fn cluster_moved(
    Recorded { stored, checkpoint }: &Recorded,
    cluster: &str,
    brokers: &str,
) -> String {
    format!(
        "the relay has published the log through position {checkpoint} to the Kafka \
         cluster {stored:?}, and {brokers} is the cluster {cluster:?}: its topics would lack \
         those {checkpoint} positions. Set KAFKA_BROKERS back to the cluster {stored:?}, \
         or run `eventfold relay --from-start` once to publish the whole log to the new one"
    )
}

/// Something the relay records of where it publishes: a table with one row for it.
pub(super) struct Where {
    table: &'static str,
    column: &'static str,
}

impl Where {
    fn create(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, {} TEXT NOT NULL)",
            self.table, self.column
        )
    }
}

/// The topic prefix it publishes under ([`claim_destination`]).
pub(super) const PREFIX: Where = Where {
    table: "eventfold_relay_destination",
    column: "topic_prefix",
};

/// The Kafka cluster it publishes to ([`super::Relay::claim_cluster`]).
pub(super) const CLUSTER: Where = Where {
    table: "eventfold_relay_cluster",
    column: "cluster_id",
};

/// What the relay recorded, when it differs from what it is given now.
pub(super) struct Recorded {
    stored: String,
    checkpoint: i64,
}

/// In `tx` (under the DDL lock): `what` as the relay recorded it against `value`. Another
/// value once the relay has published (checkpoint above 0) is returned and nothing is
/// changed; otherwise `value` is recorded (the first run, or one that published nothing
/// yet, may move).
async fn record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    what: Where,
    value: &str,
) -> std::result::Result<Option<Recorded>, sqlx::Error> {
    sqlx::query(&what.create()).execute(&mut **tx).await?;
    let stored: Option<String> = sqlx::query_scalar(&format!(
        "SELECT {} FROM {} WHERE name = $1",
        what.column, what.table
    ))
    .bind(RELAY)
    .fetch_optional(&mut **tx)
    .await?;
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT position FROM eventfold_reaction_checkpoints WHERE name = $1")
            .bind(RELAY)
            .fetch_one(&mut **tx)
            .await?;
    match stored {
        Some(stored) if stored == value => return Ok(None),
        Some(stored) if checkpoint > 0 => return Ok(Some(Recorded { stored, checkpoint })),
        _ => {}
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (name, {column}) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET {column} = excluded.{column}",
        table = what.table,
        column = what.column
    ))
    .bind(RELAY)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(None)
}

/// What [`claim_destination`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimedDestination {
    /// The prefix is the one the relay published under (or it published nothing yet).
    Same,
    /// The relay starts from the log's start again; it had published through `was`.
    FromStart {
        /// The checkpoint it had.
        was: i64,
    },
}
