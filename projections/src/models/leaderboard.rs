//! `leaderboards.v2`: distance tops per sport and ISO week, as Redis sorted sets
//! `lb:{sport}:{week}` (member user id, score whole millimetres).
//!
//! Whole millimetres, not metres (v1): a sum of whole numbers is the same in any order,
//! and the order is not fixed — projector workers fed from Kafka apply the events of
//! different partitions in another interleaving than the log's. v1's float sums of
//! metres then differed from the log-fed model's in their last digits (found by
//! `scripts/stateful-load --kafka`).

use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use redis::{AsyncCommands, Pipeline};
use serde::Serialize;

use super::iso_week;
use crate::redis_sink::{RedisKeys, RedisProjection};
use crate::runtime::Projection;
use crate::Result;

/// The projection's versioned name.
pub const NAME: &str = "leaderboards.v2";

/// Largest distance one workout adds: a million kilometres (beyond any real workout;
/// it keeps every sum a whole number a double holds exactly).
const MAX_MILLIMETRES: f64 = 1e12;

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaderboardProjection;

/// `metres` as whole millimetres, within `0..=MAX_MILLIMETRES` (a distance the log
/// should never hold — negative, not finite — adds nothing).
fn millimetres(metres: f64) -> i64 {
    let mm = (metres * 1000.0).round();
    if mm.is_finite() && mm > 0.0 {
        // In range: the cast is exact.
        mm.min(MAX_MILLIMETRES) as i64
    } else {
        0
    }
}

impl Projection for LeaderboardProjection {
    fn name(&self) -> &'static str {
        NAME
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
            pipe.zincr(key, &e.user_id, millimetres(e.distance_m))
                .ignore();
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
    // Read as doubles, as Redis keeps them: a sum past 1e17 would be written with an
    // exponent, which an integer parse refuses.
    let entries: Vec<(String, f64)> = crate::redis_sink::query(client, |mut conn| {
        let key = &key;
        async move { conn.zrevrange_withscores(key, 0, n - 1).await }
    })
    .await?;
    Ok(entries
        .into_iter()
        .enumerate()
        .map(|(i, (user_id, millimetres))| Place {
            rank: i + 1,
            user_id,
            distance_m: millimetres / 1000.0,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_millimetres_do_not_depend_on_the_order() {
        let distances = [
            10_945.922_699_897_38,
            3_648.640_899_965_794,
            0.1,
            0.2,
            42_195.3,
        ];
        let metres = |order: &[usize]| order.iter().map(|&i| distances[i]).sum::<f64>();
        assert_ne!(
            metres(&[0, 1, 2, 3, 4]),
            metres(&[4, 3, 2, 1, 0]),
            "metres summed in two orders differ (what v1 stored)"
        );
        let mm = |order: &[usize]| {
            order
                .iter()
                .map(|&i| millimetres(distances[i]) as f64)
                .sum::<f64>()
        };
        assert_eq!(mm(&[0, 1, 2, 3, 4]), mm(&[4, 3, 2, 1, 0]));
    }

    #[test]
    fn distances_the_log_should_never_hold_add_nothing_or_the_most() {
        assert_eq!(millimetres(1.2345), 1_235);
        assert_eq!(millimetres(-1.0), 0);
        assert_eq!(millimetres(f64::NAN), 0);
        assert_eq!(millimetres(f64::NEG_INFINITY), 0);
        assert_eq!(millimetres(f64::INFINITY), 0);
        assert_eq!(millimetres(1e300), 1_000_000_000_000);
    }
}
