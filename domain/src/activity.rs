//! A user's activity history: speaker activations. Stream `activity-{user_id}`.
//! Active hours for reminder slotting are learnt from it.

use eventfold_event_schemas::catalogue::DeviceActivated;

use crate::{Aggregate, DomainError, DomainEvent};

/// Activations seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityState {
    /// How many.
    pub activations: u64,
}

/// Record one activation.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordActivation(pub DeviceActivated);

/// The activity aggregate.
#[derive(Debug)]
pub struct Activity;

impl Aggregate for Activity {
    type State = ActivityState;
    type Command = RecordActivation;

    fn decide(
        _: &ActivityState,
        RecordActivation(a): RecordActivation,
    ) -> Result<Vec<DomainEvent>, DomainError> {
        if a.device_id.trim().is_empty() || !(-840..=840).contains(&a.utc_offset_minutes) {
            return Err(DomainError::InvalidMeasurement(
                "device_id is required and utc_offset_minutes must be within -840..=840".into(),
            ));
        }
        Ok(vec![a.into()])
    }

    fn evolve(mut state: ActivityState, event: &DomainEvent) -> ActivityState {
        if let DomainEvent::DeviceActivated(_) = event {
            state.activations += 1;
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::testing::given;

    fn activation(device: &str, offset: i32) -> DeviceActivated {
        DeviceActivated {
            device_id: device.into(),
            user_id: "u1".into(),
            activated_at: Utc
                .with_ymd_and_hms(2026, 1, 1, 8, 0, 0)
                .single()
                .expect("time"),
            utc_offset_minutes: offset,
        }
    }

    #[test]
    fn activations_are_recorded_and_validated() {
        given::<Activity>([])
            .when(RecordActivation(activation("spk", 180)))
            .then([activation("spk", 180).into()]);
        assert!(given::<Activity>([])
            .when(RecordActivation(activation("", 0)))
            .outcome()
            .is_err());
        assert!(given::<Activity>([])
            .when(RecordActivation(activation("spk", 2000)))
            .outcome()
            .is_err());
    }
}
