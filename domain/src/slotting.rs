//! When to remind: inside the user's usual active hours, spread over time slots so that
//! no slot gets a spike.
//!
//! # The bound
//!
//! Time is cut into slots (30 minutes by default). A reminder goes to the least-loaded
//! slot inside the user's active window on its due day whose load is below
//! `capacity`; if that day is full it moves to the next day, up to
//! `max_postpone_days`. Hence **no slot ever holds more than `capacity` reminders**
//! unless a placement reports `overflow` (every window slot full for
//! `max_postpone_days` days — a sign the capacity is too small for the population;
//! then it goes to the least-loaded window slot). Set `capacity` to
//! `ceil(headroom × expected reminders per slot)` — [`SlotPlanner::capacity_for`] — and
//! the busiest slot stays within `headroom` (default 1.25) of the mean, plus one for
//! rounding. Within one window, greedy least-loaded placement keeps the loads of the
//! window's slots within one of each other while capacity does not bind.

use chrono::{DateTime, Duration, NaiveTime, Timelike, Utc};

use crate::time::plus;

/// The part of the day a user usually talks to their speaker, in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveWindow {
    /// Start, minutes after local midnight (0..1440).
    pub start_minute: u32,
    /// End (exclusive), minutes after local midnight (0..1440). Smaller than the start
    /// when the window spans midnight.
    pub end_minute: u32,
    /// The user's offset from UTC, minutes.
    pub utc_offset_minutes: i32,
}

impl ActiveWindow {
    /// The window used while too little is known: 18:00–21:00 local.
    pub fn evening(utc_offset_minutes: i32) -> Self {
        Self {
            start_minute: 18 * 60,
            end_minute: 21 * 60,
            utc_offset_minutes,
        }
    }

    /// Learns the window from speaker activations: the `hours`-long span of the day
    /// (wrapping midnight) that holds the most activations. With fewer than
    /// `min_samples` activations, the evening default.
    pub fn learn(activations: &[(DateTime<Utc>, i32)], hours: u32, min_samples: usize) -> Self {
        let offset = activations.last().map_or(0, |a| a.1);
        if activations.len() < min_samples || hours == 0 || hours >= 24 {
            return Self::evening(offset);
        }
        let mut per_hour = [0usize; 24];
        for (at, off) in activations {
            let local = plus(*at, Duration::minutes(i64::from(*off)));
            per_hour[local.hour() as usize] += 1;
        }
        let best = (0..24)
            .max_by_key(|&start| {
                let count: usize = (0..hours)
                    .map(|h| per_hour[((start + h) % 24) as usize])
                    .sum();
                // Ties go to the earliest start.
                (count, std::cmp::Reverse(start))
            })
            .unwrap_or(18);
        Self {
            start_minute: best * 60,
            end_minute: ((best + hours) % 24) * 60,
            utc_offset_minutes: offset,
        }
    }

    /// Whether the local time of `at` falls inside the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = plus(at, Duration::minutes(i64::from(self.utc_offset_minutes)));
        let minute = local.hour() * 60 + local.minute();
        if self.start_minute < self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }

    fn length_minutes(&self) -> i64 {
        let len = i64::from(self.end_minute) - i64::from(self.start_minute);
        if len <= 0 {
            len + 1440
        } else {
            len
        }
    }
}

/// Where a reminder was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Slot index: slots since the Unix epoch.
    pub slot: i64,
    /// Start of the slot: when the reminder becomes due.
    pub due_at: DateTime<Utc>,
    /// Days after the earliest due day.
    pub postponed_days: i64,
    /// Every candidate slot was full: the capacity was exceeded.
    pub overflow: bool,
}

/// Places reminders into slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPlanner {
    /// Slot length, minutes (divides a day).
    pub slot_minutes: i64,
    /// Most reminders one slot takes before placement moves on.
    pub capacity: u32,
    /// How many days a reminder may be postponed to respect the capacity.
    pub max_postpone_days: i64,
}

impl Default for SlotPlanner {
    fn default() -> Self {
        Self {
            slot_minutes: 30,
            capacity: 100,
            max_postpone_days: 14,
        }
    }
}

impl SlotPlanner {
    /// The capacity that keeps the busiest slot within `headroom` of the mean, for
    /// `reminders_per_day` spread over `slots_per_day` slots.
    pub fn capacity_for(reminders_per_day: u64, slots_per_day: u64, headroom: f64) -> u32 {
        let mean = reminders_per_day as f64 / slots_per_day.max(1) as f64;
        ((mean * headroom).ceil() as u32).max(1)
    }

    fn slot_seconds(&self) -> i64 {
        self.slot_minutes.max(1) * 60
    }

    /// The slot `at` falls in.
    pub fn slot_of(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(self.slot_seconds())
    }

    /// The start of a slot.
    pub fn slot_start(&self, slot: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(slot.saturating_mul(self.slot_seconds()), 0).unwrap_or_default()
    }

    /// Candidate slots of local day `day` (0 = the day of `earliest`), in time order.
    fn candidates(&self, earliest: DateTime<Utc>, window: &ActiveWindow, day: i64) -> Vec<i64> {
        let offset = Duration::minutes(i64::from(window.utc_offset_minutes));
        let local_midnight = plus(earliest, offset)
            .date_naive()
            .and_time(NaiveTime::MIN)
            .and_utc();
        let start = plus(
            plus(
                plus(local_midnight, Duration::days(day)),
                Duration::minutes(i64::from(window.start_minute)),
            ),
            -offset,
        );
        let end = plus(start, Duration::minutes(window.length_minutes()));
        let secs = self.slot_seconds();
        let first =
            start.timestamp().div_euclid(secs) + i64::from(start.timestamp().rem_euclid(secs) != 0);
        let last = (end.timestamp() - 1).div_euclid(secs);
        (first..=last)
            .filter(|&slot| self.slot_start(slot) >= earliest)
            .collect()
    }

    /// Places a reminder due no earlier than `earliest` into `window`, given the current
    /// `load` of each slot.
    pub fn place(
        &self,
        earliest: DateTime<Utc>,
        window: &ActiveWindow,
        load: impl Fn(i64) -> u32,
    ) -> Placement {
        let mut fallback: Option<(u32, i64, i64)> = None;
        // Day -1 covers a window that spans midnight and started the evening before.
        for day in -1..=self.max_postpone_days {
            let best = self
                .candidates(earliest, window, day)
                .into_iter()
                .map(|slot| (load(slot), slot))
                .min();
            if let Some((l, slot)) = best {
                if l < self.capacity {
                    return Placement {
                        slot,
                        due_at: self.slot_start(slot),
                        postponed_days: day.max(0),
                        overflow: false,
                    };
                }
                if fallback.is_none_or(|(fl, _, _)| l < fl) {
                    fallback = Some((l, slot, day.max(0)));
                }
            }
        }
        let (_, slot, postponed_days) = fallback.unwrap_or((0, self.slot_of(earliest), 0));
        Placement {
            slot,
            due_at: self.slot_start(slot),
            postponed_days,
            overflow: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn base() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn the_ends_of_the_calendar_never_panic() {
        for at in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
            let window = ActiveWindow::learn(&[(at, 840), (at, 840), (at, -840)], 3, 1);
            let _ = window.contains(at);
            let planner = SlotPlanner::default();
            let _ = planner.place(at, &window, |_| 0);
            let _ = planner.place(at, &ActiveWindow::evening(-840), |_| u32::MAX);
        }
    }

    #[test]
    fn learns_the_busiest_hours() {
        let at = |h: u32| (base() + Duration::hours(i64::from(h)), 180);
        // 07:00-09:00 UTC = 10:00-12:00 at +03:00.
        let acts: Vec<_> = [7, 7, 8, 8, 8, 20].into_iter().map(at).collect();
        let w = ActiveWindow::learn(&acts, 2, 3);
        assert_eq!(
            (w.start_minute, w.end_minute, w.utc_offset_minutes),
            (600, 720, 180)
        );
        assert_eq!(
            ActiveWindow::learn(&acts[..2], 2, 3),
            ActiveWindow::evening(180)
        );
    }

    #[test]
    fn places_in_the_window_after_the_due_time_and_moves_on_when_full() {
        let planner = SlotPlanner {
            capacity: 1,
            ..SlotPlanner::default()
        };
        let window = ActiveWindow::evening(0);
        let earliest = base() + Duration::hours(19);
        let first = planner.place(earliest, &window, |_| 0);
        assert_eq!(first.due_at, base() + Duration::hours(19));
        let loads: HashMap<i64, u32> = planner
            .candidates(earliest, &window, 0)
            .into_iter()
            .map(|s| (s, 1))
            .collect();
        let next = planner.place(earliest, &window, |s| loads.get(&s).copied().unwrap_or(0));
        assert_eq!(next.postponed_days, 1);
        assert_eq!(
            next.due_at,
            base() + Duration::days(1) + Duration::hours(18)
        );
        assert!(!next.overflow);
    }

    fn window_strategy() -> impl Strategy<Value = ActiveWindow> {
        (
            0u32..24,
            1u32..8,
            prop::sample::select(vec![-300, 0, 180, 330, 600]),
        )
            .prop_map(|(start, len, offset)| ActiveWindow {
                start_minute: start * 60,
                end_minute: ((start + len) % 24) * 60,
                utc_offset_minutes: offset,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// For any population: every reminder lands inside its user's window, no earlier
        /// than due, and no slot exceeds the capacity unless an overflow was reported.
        #[test]
        fn no_slot_exceeds_the_capacity(
            users in prop::collection::vec((window_strategy(), 0i64..72 * 60), 1..800),
            capacity in 1u32..20,
        ) {
            let planner = SlotPlanner { capacity, ..SlotPlanner::default() };
            let mut loads: HashMap<i64, u32> = HashMap::new();
            let mut overflowed = false;
            for (window, minutes) in &users {
                let earliest = base() + Duration::minutes(*minutes);
                let p = planner.place(earliest, window, |s| loads.get(&s).copied().unwrap_or(0));
                prop_assert!(window.contains(p.due_at), "{p:?} outside {window:?}");
                prop_assert!(p.due_at >= earliest);
                overflowed |= p.overflow;
                *loads.entry(p.slot).or_default() += 1;
            }
            let busiest = loads.values().copied().max().unwrap_or(0);
            prop_assert!(overflowed || busiest <= capacity, "busiest {busiest} > capacity {capacity}");
        }

        /// With the capacity from `capacity_for`, a population sharing one window keeps
        /// the busiest slot within the headroom of the mean (+1), and greedy placement
        /// keeps the window's slots within one of each other.
        #[test]
        fn a_shared_window_is_filled_evenly(n in 1u64..3000, start in 0u32..20, len in 1u32..4) {
            let window = ActiveWindow { start_minute: start * 60, end_minute: (start + len) * 60, utc_offset_minutes: 0 };
            let slots_per_day = u64::from(len) * 2;
            let capacity = SlotPlanner::capacity_for(n, slots_per_day, 1.25);
            let planner = SlotPlanner { capacity, ..SlotPlanner::default() };
            let mut loads: HashMap<i64, u32> = HashMap::new();
            for _ in 0..n {
                let p = planner.place(base(), &window, |s| loads.get(&s).copied().unwrap_or(0));
                prop_assert!(!p.overflow);
                *loads.entry(p.slot).or_default() += 1;
            }
            let mean = n as f64 / slots_per_day as f64;
            let busiest = loads.values().copied().max().unwrap_or(0);
            prop_assert!(f64::from(busiest) <= (mean * 1.25).ceil() + 1.0, "busiest {busiest}, mean {mean}");
            let day0: Vec<u32> = planner.candidates(base(), &window, 0).iter().map(|s| loads.get(s).copied().unwrap_or(0)).collect();
            let (lo, hi) = (day0.iter().min().copied().unwrap_or(0), day0.iter().max().copied().unwrap_or(0));
            prop_assert!(hi - lo <= 1, "uneven day: {day0:?}");
        }
    }
}
