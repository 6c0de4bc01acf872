use chrono::{Duration, TimeZone};

use super::*;
use crate::testing::given;

fn t(min: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 7, 0, 0)
        .single()
        .expect("time")
        + Duration::minutes(min)
}

fn id() -> Uuid {
    Uuid::from_u128(7)
}

fn started() -> DomainEvent {
    WorkoutStarted {
        workout_id: id(),
        user_id: "u1".into(),
        sport: "running".into(),
        goal_distance_m: None,
        started_at: t(0),
    }
    .into()
}

fn paused(min: i64) -> DomainEvent {
    WorkoutPaused {
        workout_id: id(),
        paused_at: t(min),
    }
    .into()
}

fn resumed(min: i64) -> DomainEvent {
    WorkoutResumed {
        workout_id: id(),
        resumed_at: t(min),
    }
    .into()
}

fn completed() -> DomainEvent {
    WorkoutCompleted {
        workout_id: id(),
        user_id: "u1".into(),
        sport: "running".into(),
        distance_m: 0.0,
        active_seconds: 60,
        avg_speed_mps: 0.0,
        max_heart_rate: None,
        completed_at: t(1),
    }
    .into()
}

fn cancelled() -> DomainEvent {
    WorkoutCancelled {
        workout_id: id(),
        reason: None,
        cancelled_at: t(1),
    }
    .into()
}

fn update(min: i64) -> WorkoutCommand {
    WorkoutCommand::Update {
        distance_m: Some(100.0),
        heart_rate: Some(120),
        speed_mps: Some(2.0),
        points: vec![],
        at: t(min),
    }
}

#[test]
fn start_begins_a_workout() {
    given::<Workout>([])
        .when(WorkoutCommand::Start {
            workout_id: id(),
            user_id: "u1".into(),
            sport: "running".into(),
            goal_distance_m: None,
            at: t(0),
        })
        .then([started()]);
}

#[test]
fn starting_twice_is_refused() {
    given::<Workout>([started()])
        .when(WorkoutCommand::Start {
            workout_id: id(),
            user_id: "u1".into(),
            sport: "running".into(),
            goal_distance_m: None,
            at: t(1),
        })
        .then_err(DomainError::WorkoutAlreadyStarted);
}

#[test]
fn updates_record_progress() {
    given::<Workout>([started()])
        .when(update(5))
        .then([WorkoutUpdated {
            workout_id: id(),
            distance_m: Some(100.0),
            heart_rate: Some(120),
            speed_mps: Some(2.0),
            points: vec![],
            updated_at: t(5),
        }
        .into()]);
}

#[test]
fn updates_are_refused_when_paused_finished_or_unknown() {
    given::<Workout>([started(), paused(1)])
        .when(update(2))
        .then_err(DomainError::WorkoutPaused);
    given::<Workout>([started(), completed()])
        .when(update(2))
        .then_err(DomainError::WorkoutFinished);
    given::<Workout>([started(), cancelled()])
        .when(update(2))
        .then_err(DomainError::WorkoutFinished);
    given::<Workout>([])
        .when(update(2))
        .then_err(DomainError::WorkoutNotFound);
}

#[test]
fn impossible_measurements_and_time_travel_are_invalid() {
    let bad_hr = WorkoutCommand::Update {
        distance_m: None,
        heart_rate: Some(400),
        speed_mps: None,
        points: vec![],
        at: t(1),
    };
    assert!(matches!(
        given::<Workout>([started()]).when(bad_hr).outcome(),
        Err(DomainError::InvalidMeasurement(_))
    ));
    let bad_point = WorkoutCommand::Update {
        distance_m: None,
        heart_rate: None,
        speed_mps: None,
        points: vec![GeoPoint {
            lat: 95.0,
            lon: 0.0,
            at: t(1),
        }],
        at: t(1),
    };
    assert!(matches!(
        given::<Workout>([started()]).when(bad_point).outcome(),
        Err(DomainError::InvalidMeasurement(_))
    ));
    let negative = WorkoutCommand::Update {
        distance_m: Some(-1.0),
        heart_rate: None,
        speed_mps: None,
        points: vec![],
        at: t(1),
    };
    assert!(matches!(
        given::<Workout>([started()]).when(negative).outcome(),
        Err(DomainError::InvalidMeasurement(_))
    ));
    given::<Workout>([started(), paused(10), resumed(12)])
        .when(update(11))
        .then_err(DomainError::TimeTravel(t(11)));
}

#[test]
fn pause_and_resume_alternate() {
    given::<Workout>([started()])
        .when(WorkoutCommand::Pause { at: t(1) })
        .then([paused(1)]);
    given::<Workout>([started(), paused(1)])
        .when(WorkoutCommand::Pause { at: t(2) })
        .then_err(DomainError::WorkoutPaused);
    given::<Workout>([started(), paused(1)])
        .when(WorkoutCommand::Resume { at: t(2) })
        .then([resumed(2)]);
    given::<Workout>([started()])
        .when(WorkoutCommand::Resume { at: t(2) })
        .then_err(DomainError::WorkoutNotPaused);
    given::<Workout>([started(), completed()])
        .when(WorkoutCommand::Resume { at: t(2) })
        .then_err(DomainError::WorkoutFinished);
    given::<Workout>([started(), completed()])
        .when(WorkoutCommand::Pause { at: t(2) })
        .then_err(DomainError::WorkoutFinished);
    given::<Workout>([])
        .when(WorkoutCommand::Pause { at: t(2) })
        .then_err(DomainError::WorkoutNotFound);
    given::<Workout>([])
        .when(WorkoutCommand::Resume { at: t(2) })
        .then_err(DomainError::WorkoutNotFound);
}

#[test]
fn completing_totals_active_time_without_pauses() {
    let history = [
        started(),
        WorkoutUpdated {
            workout_id: id(),
            distance_m: Some(1000.0),
            heart_rate: Some(150),
            speed_mps: None,
            points: vec![],
            updated_at: t(5),
        }
        .into(),
        paused(10),
        resumed(15),
        WorkoutUpdated {
            workout_id: id(),
            distance_m: Some(3000.0),
            heart_rate: Some(165),
            speed_mps: None,
            points: vec![],
            updated_at: t(20),
        }
        .into(),
    ];
    // Active: 0..10 and 15..25 = 20 minutes.
    given::<Workout>(history)
        .when(WorkoutCommand::Complete {
            distance_m: None,
            at: t(25),
        })
        .then([WorkoutCompleted {
            workout_id: id(),
            user_id: "u1".into(),
            sport: "running".into(),
            distance_m: 3000.0,
            active_seconds: 1200,
            avg_speed_mps: 2.5,
            max_heart_rate: Some(165),
            completed_at: t(25),
        }
        .into()]);
}

#[test]
fn a_paused_workout_can_be_completed_or_cancelled() {
    let out = given::<Workout>([started(), paused(10)])
        .when(WorkoutCommand::Complete {
            distance_m: Some(10.0),
            at: t(30),
        })
        .outcome();
    assert!(
        matches!(out.as_deref(), Ok([DomainEvent::WorkoutCompleted(c)]) if c.active_seconds == 600)
    );
    given::<Workout>([started(), paused(10)])
        .when(WorkoutCommand::Cancel {
            reason: None,
            at: t(30),
        })
        .then([WorkoutCancelled {
            workout_id: id(),
            reason: None,
            cancelled_at: t(30),
        }
        .into()]);
}

#[test]
fn finished_workouts_cannot_finish_again() {
    given::<Workout>([started(), completed()])
        .when(WorkoutCommand::Complete {
            distance_m: None,
            at: t(2),
        })
        .then_err(DomainError::WorkoutFinished);
    given::<Workout>([started(), cancelled()])
        .when(WorkoutCommand::Cancel {
            reason: None,
            at: t(2),
        })
        .then_err(DomainError::WorkoutFinished);
    given::<Workout>([])
        .when(WorkoutCommand::Complete {
            distance_m: None,
            at: t(2),
        })
        .then_err(DomainError::WorkoutNotFound);
    given::<Workout>([])
        .when(WorkoutCommand::Cancel {
            reason: None,
            at: t(2),
        })
        .then_err(DomainError::WorkoutNotFound);
}

fn started_with_goal(goal: f64) -> DomainEvent {
    WorkoutStarted {
        workout_id: id(),
        user_id: "u1".into(),
        sport: "running".into(),
        goal_distance_m: Some(goal),
        started_at: t(0),
    }
    .into()
}

fn at_distance(min: i64, distance: f64) -> WorkoutCommand {
    WorkoutCommand::Update {
        distance_m: Some(distance),
        heart_rate: None,
        speed_mps: None,
        points: vec![],
        at: t(min),
    }
}

fn reached(min: i64, goal: f64, distance: f64) -> DomainEvent {
    WorkoutGoalReached {
        workout_id: id(),
        user_id: "u1".into(),
        sport: "running".into(),
        goal_distance_m: goal,
        distance_m: distance,
        reached_at: t(min),
    }
    .into()
}

#[test]
fn the_update_that_meets_the_goal_records_it_once() {
    let below = WorkoutUpdated {
        workout_id: id(),
        distance_m: Some(4_999.0),
        heart_rate: None,
        speed_mps: None,
        points: vec![],
        updated_at: t(5),
    };
    given::<Workout>([started_with_goal(5_000.0)])
        .when(at_distance(5, 4_999.0))
        .then([below.clone().into()]);
    let meets = WorkoutUpdated {
        distance_m: Some(5_000.0),
        updated_at: t(6),
        ..below.clone()
    };
    given::<Workout>([started_with_goal(5_000.0), below.clone().into()])
        .when(at_distance(6, 5_000.0))
        .then([meets.clone().into(), reached(6, 5_000.0, 5_000.0)]);
    // Once: later updates and the completion do not repeat it.
    let history = [
        started_with_goal(5_000.0),
        meets.into(),
        reached(6, 5_000.0, 5_000.0),
    ];
    given::<Workout>(history.clone())
        .when(at_distance(7, 6_000.0))
        .then([WorkoutUpdated {
            distance_m: Some(6_000.0),
            updated_at: t(7),
            ..below
        }
        .into()]);
    let outcome = given::<Workout>(history)
        .when(WorkoutCommand::Complete {
            distance_m: Some(6_500.0),
            at: t(8),
        })
        .outcome()
        .expect("completes");
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0].event_type(), "WorkoutCompleted");
}

#[test]
fn a_completion_that_meets_the_goal_records_it_before_the_totals() {
    let outcome = given::<Workout>([started_with_goal(3_000.0)])
        .when(WorkoutCommand::Complete {
            distance_m: Some(3_200.0),
            at: t(20),
        })
        .outcome()
        .expect("completes");
    let types: Vec<&str> = outcome.iter().map(|e| e.event_type()).collect();
    assert_eq!(types, ["WorkoutGoalReached", "WorkoutCompleted"]);
    assert_eq!(outcome[0], reached(20, 3_000.0, 3_200.0));
    // No goal, or a goal not met: no event.
    for history in [started(), started_with_goal(10_000.0)] {
        let outcome = given::<Workout>([history])
            .when(WorkoutCommand::Complete {
                distance_m: Some(3_200.0),
                at: t(20),
            })
            .outcome()
            .expect("completes");
        assert_eq!(outcome.len(), 1);
    }
}

proptest::proptest! {
    /// Whatever the reported distances, the goal is recorded exactly once if some
    /// distance (reported or final) meets it, never otherwise, and never before.
    #[test]
    fn the_goal_is_reached_exactly_once_iff_a_distance_meets_it(
        goal in 1.0f64..20_000.0,
        distances in proptest::collection::vec(proptest::option::of(0.0f64..25_000.0), 0..12),
        last in proptest::option::of(0.0f64..25_000.0),
    ) {
        let mut state = Workout::evolve(WorkoutState::default(), &started_with_goal(goal));
        let mut events = Vec::new();
        let mut commands: Vec<WorkoutCommand> = distances
            .iter()
            .enumerate()
            .map(|(i, d)| WorkoutCommand::Update {
                distance_m: *d,
                heart_rate: None,
                speed_mps: None,
                points: vec![],
                at: t(i as i64 + 1),
            })
            .collect();
        commands.push(WorkoutCommand::Complete { distance_m: last, at: t(100) });
        for command in commands {
            for event in Workout::decide(&state, command).expect("valid") {
                state = Workout::evolve(state, &event);
                events.push(event);
            }
        }
        let mut latest = 0.0f64;
        let mut met_at = None;
        for (i, d) in distances.iter().enumerate() {
            if let Some(d) = d {
                latest = *d;
                if *d >= goal && met_at.is_none() {
                    met_at = Some(i);
                }
            }
        }
        let final_distance = last.unwrap_or(latest);
        let expected = met_at.is_some() || final_distance >= goal;
        let goals: Vec<&DomainEvent> = events
            .iter()
            .filter(|e| e.event_type() == "WorkoutGoalReached")
            .collect();
        proptest::prop_assert_eq!(goals.len(), usize::from(expected));
        if let Some(DomainEvent::WorkoutGoalReached(g)) = goals.first() {
            proptest::prop_assert!(g.distance_m >= goal);
            let at = g.reached_at;
            let expected_at = met_at.map_or(t(100), |i| t(i as i64 + 1));
            proptest::prop_assert_eq!(at, expected_at);
        }
    }
}
