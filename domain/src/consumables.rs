//! Which skus are consumables for a user, and how often they are re-bought.

use chrono::{DateTime, Utc};

/// The consumable policy's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumablePolicy {
    /// Categories known to be consumables, with their default re-purchase interval in days.
    pub priors: Vec<(String, u32)>,
    /// Purchases of one sku that confirm a consumable outside the prior categories.
    pub repeats_to_confirm: usize,
    /// Shortest interval an estimate may give, days.
    pub min_interval_days: u32,
    /// Longest interval an estimate may give, days.
    pub max_interval_days: u32,
}

impl Default for ConsumablePolicy {
    fn default() -> Self {
        let priors = [
            ("coffee", 30),
            ("tea", 45),
            ("pet_food", 30),
            ("filters", 60),
            ("diapers", 14),
            ("baby_food", 14),
            ("cleaning", 45),
            ("personal_care", 40),
            ("vitamins", 30),
        ];
        Self {
            priors: priors.iter().map(|(c, d)| ((*c).to_owned(), *d)).collect(),
            repeats_to_confirm: 3,
            min_interval_days: 3,
            max_interval_days: 180,
        }
    }
}

/// Why a sku counts as a consumable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumableReason {
    /// Its category is a known consumable category.
    CategoryPrior,
    /// The user bought it repeatedly.
    RepeatedPurchases,
}

impl ConsumableReason {
    /// The wire name used in `ConsumableDetected.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumableReason::CategoryPrior => "category_prior",
            ConsumableReason::RepeatedPurchases => "repeated_purchases",
        }
    }
}

impl ConsumablePolicy {
    /// The category's default interval, if it is a consumable category.
    pub fn prior(&self, category: &str) -> Option<u32> {
        self.priors
            .iter()
            .find(|(c, _)| c == category)
            .map(|(_, d)| *d)
    }

    /// Whether a sku of `category` bought `purchases` times is a consumable.
    pub fn classify(&self, category: &str, purchases: usize) -> Option<ConsumableReason> {
        if self.prior(category).is_some() {
            Some(ConsumableReason::CategoryPrior)
        } else if purchases >= self.repeats_to_confirm {
            Some(ConsumableReason::RepeatedPurchases)
        } else {
            None
        }
    }

    /// The re-purchase interval from purchase times: the median of the gaps between
    /// consecutive purchases, in whole days, bounded to
    /// `[min_interval_days, max_interval_days]`. Gaps under a day (the same basket
    /// split into lines) are ignored. `None` without any gap; `Some((days, gaps))`.
    pub fn estimate_interval(&self, purchases: &[DateTime<Utc>]) -> Option<(u32, u32)> {
        let mut times = purchases.to_vec();
        times.sort_unstable();
        let mut gaps: Vec<i64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).num_days())
            .filter(|&days| days >= 1)
            .collect();
        if gaps.is_empty() {
            return None;
        }
        gaps.sort_unstable();
        let n = gaps.len();
        let median = if n % 2 == 1 {
            gaps[n / 2]
        } else {
            (gaps[n / 2 - 1] + gaps[n / 2]) / 2
        };
        let bounded = median.clamp(
            i64::from(self.min_interval_days),
            i64::from(self.max_interval_days),
        );
        Some((
            u32::try_from(bounded).unwrap_or(self.max_interval_days),
            n as u32,
        ))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    use super::*;

    fn day(n: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0)
            .single()
            .expect("time")
            + Duration::days(n)
    }

    #[test]
    fn categories_give_a_prior_and_repeats_confirm_the_rest() {
        let p = ConsumablePolicy::default();
        assert_eq!(
            p.classify("coffee", 1),
            Some(ConsumableReason::CategoryPrior)
        );
        assert_eq!(p.classify("books", 2), None);
        assert_eq!(
            p.classify("books", 3),
            Some(ConsumableReason::RepeatedPurchases)
        );
    }

    #[test]
    fn the_median_shrugs_off_one_odd_gap() {
        let p = ConsumablePolicy::default();
        let times = [day(0), day(30), day(61), day(200), day(229)];
        // Gaps 30, 31, 139, 29 -> median of [29, 30, 31, 139] = 30.
        assert_eq!(p.estimate_interval(&times), Some((30, 4)));
        assert_eq!(p.estimate_interval(&[day(0)]), None);
        assert_eq!(p.estimate_interval(&[day(0), day(0)]), None);
    }

    proptest! {
        #[test]
        fn the_estimate_is_bounded_and_order_free(offsets in prop::collection::vec(0i64..2000, 2..30)) {
            let p = ConsumablePolicy::default();
            let mut times: Vec<_> = offsets.iter().map(|&d| day(d)).collect();
            let forward = p.estimate_interval(&times);
            times.reverse();
            prop_assert_eq!(p.estimate_interval(&times), forward);
            if let Some((days, gaps)) = forward {
                prop_assert!((p.min_interval_days..=p.max_interval_days).contains(&days));
                prop_assert!(gaps >= 1 && (gaps as usize) < offsets.len());
            }
        }

        #[test]
        fn regular_purchases_give_their_period(period in 3i64..=180, n in 2usize..20) {
            let p = ConsumablePolicy::default();
            let times: Vec<_> = (0..n as i64).map(|i| day(i * period)).collect();
            prop_assert_eq!(p.estimate_interval(&times), Some((period as u32, n as u32 - 1)));
        }

        #[test]
        fn a_minority_of_outliers_does_not_move_it(period in 7i64..=90, n in 5usize..15, outlier in 200i64..400) {
            let p = ConsumablePolicy::default();
            let mut times: Vec<_> = (0..n as i64).map(|i| day(i * period)).collect();
            // One long pause (a holiday) in the middle.
            let last = times[n - 1];
            times.push(last + Duration::days(outlier));
            times.push(last + Duration::days(outlier + period));
            prop_assert_eq!(p.estimate_interval(&times).map(|e| e.0), Some(period as u32));
        }
    }
}
