//! `leaderboards.v1`: distance tops per sport and ISO week, as Redis sorted sets
//! `lb:{sport}:{week}` (member user id, score metres).

use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use redis::{AsyncCommands, Pipeline};
use serde::Serialize;

use super::iso_week;
use crate::redis_sink::{RedisKeys, RedisProjection};
use crate::runtime::Projection;
use crate::Result;

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaderboardProjection;

impl Projection for LeaderboardProjection {
    fn name(&self) -> &'static str {
        "leaderboards.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "WorkoutCompleted"
    }
}

impl RedisProjection for LeaderboardProjection {
    fn key_families(&self) -> &'static [&'static str] {
        &["lb:"]
    }

    fn apply(
        &self,
        pipe: &mut Pipeline,
        keys: &RedisKeys,
        event: &DomainEvent,
        _record: &RecordedEvent,
    ) -> Result<()> {
        if let DomainEvent::WorkoutCompleted(e) = event {
            let key = keys.key(format!("lb:{}:{}", e.sport, iso_week(e.completed_at)));
            pipe.zincr(key, &e.user_id, e.distance_m).ignore();
        }
        Ok(())
    }
}

/// One place on a leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Place {
    /// 1-based.
    pub rank: usize,
    /// The athlete.
    pub user_id: String,
    /// Metres that week.
    pub distance_m: f64,
}

/// The top `n` of `sport` in `week` (e.g. `2026-W48`).
pub async fn top(
    client: &redis::Client,
    keys: &RedisKeys,
    sport: &str,
    week: &str,
    n: isize,
) -> Result<Vec<Place>> {
    let key = keys.key(format!("lb:{sport}:{week}"));
    let entries: Vec<(String, f64)> = crate::redis_sink::query(client, |mut conn| {
        let key = &key;
        async move { conn.zrevrange_withscores(key, 0, n - 1).await }
    })
    .await?;
    Ok(entries
        .into_iter()
        .enumerate()
        .map(|(i, (user_id, distance_m))| Place {
            rank: i + 1,
            user_id,
            distance_m,
        })
        .collect())
}
