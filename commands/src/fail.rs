//! Named steps where a test makes a multi-step operation fail, to prove that a crash
//! between any two of its writes is healed (crash-in-the-middle tests).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::CommandError;

/// Steps of reminder planning, in order.
pub mod steps {
    /// The slot is reserved in the shared slot book; the reminder is not appended.
    pub const RESERVED: &str = "reminder.reserved";
    /// The reminder is appended; the previous one is not superseded yet.
    pub const APPENDED: &str = "reminder.appended";
    /// The previous reminder is superseded; the planner has not answered yet.
    pub const SUPERSEDED: &str = "reminder.superseded";
    /// The reminder is accepted (the "yes" appended); its order is not drafted yet.
    pub const ACCEPTED: &str = "reorder.accepted";
    /// The reaction's effects are done; its checkpoint has not moved.
    pub const BEFORE_CHECKPOINT: &str = "reaction.before_checkpoint";
}

/// Fail points keyed by step name; disarmed (free) unless a test arms one.
#[derive(Debug, Clone, Default)]
pub struct FailSteps {
    armed: Arc<Mutex<Option<(&'static str, u32)>>>,
    fired: Arc<AtomicU32>,
}

impl FailSteps {
    /// Makes the next `times` passes through `step` fail.
    pub fn arm(&self, step: &'static str, times: u32) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((step, times));
    }

    /// How many times an armed step failed.
    pub fn fired(&self) -> u32 {
        self.fired.load(Ordering::SeqCst)
    }

    /// Fails if `step` is armed.
    pub fn trip(&self, step: &'static str) -> Result<(), CommandError> {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        match armed.as_mut() {
            Some((armed_step, left)) if *armed_step == step && *left > 0 => {
                *left -= 1;
                self.fired.fetch_add(1, Ordering::SeqCst);
                Err(CommandError::Injected(step))
            }
            _ => Ok(()),
        }
    }
}
