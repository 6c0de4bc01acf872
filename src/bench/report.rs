//! Latency summaries and the result table.

use std::io::Write;
use std::time::Duration;

/// What one side of a case measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measured {
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
    /// One entry per call (an append or an INSERT statement).
    pub(crate) latencies: Vec<Duration>,
}

impl Measured {
    pub(crate) fn merge(parts: Vec<Measured>, elapsed: Duration) -> Measured {
        let mut all = Measured {
            elapsed,
            ..Measured::default()
        };
        for part in parts {
            all.events += part.events;
            all.latencies.extend(part.latencies);
        }
        all.latencies.sort_unstable();
        all
    }

    /// Slices of one side measured at different times, as one: their events and
    /// latencies together over the sum of their times.
    pub(crate) fn combine(slices: Vec<Measured>) -> Measured {
        let elapsed = slices.iter().map(|m| m.elapsed).sum();
        Measured::merge(slices, elapsed)
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

/// Whose turn it is in a round of two sides taking turns: the first side goes first in
/// even rounds, second in odd ones (first, second; second, first; …), so that a slow
/// drift of a shared machine reaches both sides alike. `true` is the first side's turn.
pub(crate) fn taking_turns(round: u32) -> [bool; 2] {
    let first_leads = round.is_multiple_of(2);
    [first_leads, !first_leads]
}

/// One row: ours beside the baseline.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) backend: &'static str,
    pub(crate) writers: usize,
    pub(crate) batch: usize,
    pub(crate) ours: Measured,
    pub(crate) raw: Measured,
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

pub(crate) fn print_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<14} {:>7} {:>5} | {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9} | {:>6}",
        "backend",
        "writers",
        "batch",
        "eventfold/s",
        "p50 ms",
        "p99 ms",
        "raw/s",
        "p50 ms",
        "p99 ms",
        "ratio"
    )?;
    writeln!(out, "{}", "-".repeat(112))
}

pub(crate) fn print_row(out: &mut impl Write, row: &Row) -> std::io::Result<()> {
    let (ours, raw) = (row.ours.per_second(), row.raw.per_second());
    writeln!(
        out,
        "{:<14} {:>7} {:>5} | {:>12.0} {:>9} {:>9} | {:>12.0} {:>9} {:>9} | {:>6.2}",
        row.backend,
        row.writers,
        row.batch,
        ours,
        ms(row.ours.percentile(0.5)),
        ms(row.ours.percentile(0.99)),
        raw,
        ms(row.raw.percentile(0.5)),
        ms(row.raw.percentile(0.99)),
        ours / raw.max(1e-9)
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::taking_turns;

    #[test]
    fn the_sides_lead_in_turn() {
        let order: Vec<[bool; 2]> = (0..4).map(taking_turns).collect();
        assert_eq!(
            order,
            vec![[true, false], [false, true], [true, false], [false, true]]
        );
    }
}
