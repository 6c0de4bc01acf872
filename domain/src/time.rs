//! Date arithmetic that cannot panic: chrono's `DateTime + TimeDelta` panics past the
//! end of its calendar (year ±262143). The edge refuses timestamps outside 1970–9999, so
//! these saturate only on data that slipped in before; a saturated time stays at the
//! calendar's end instead of taking the process down.

use chrono::{DateTime, Duration, Utc};

/// `at + by`, held at the calendar's first or last instant instead of overflowing.
pub fn plus(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(if by > Duration::zero() {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_at_both_ends() {
        assert_eq!(
            plus(DateTime::<Utc>::MAX_UTC, Duration::days(1)),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            plus(DateTime::<Utc>::MIN_UTC, Duration::days(-1)),
            DateTime::<Utc>::MIN_UTC
        );
        let at = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(plus(at, Duration::hours(1)), at + Duration::hours(1));
    }
}
