//! The catalogue's contract tests: checked-in JSON Schemas are current, and every
//! historical payload (golden fixtures) still decodes.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use super::*;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn at(h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, 0, 0)
        .single()
        .expect("valid time")
}

/// One example of every event type, in its current shape.
fn samples() -> Vec<DomainEvent> {
    let (reminder_id, order_id, workout_id) = (
        Uuid::from_u128(0x1111),
        Uuid::from_u128(0x2222),
        Uuid::from_u128(0x3333),
    );
    let user = || "u42".to_owned();
    vec![
        PurchaseRecorded {
            user_id: user(),
            sku: "SKU-CAPS-50".into(),
            title: "Coffee capsules, 50 pcs".into(),
            category: "coffee".into(),
            quantity: 2,
            unit_price: 129_900,
            currency: "RUB".into(),
            purchased_at: at(9),
        }
        .into(),
        ConsumableDetected {
            user_id: user(),
            sku: "SKU-CAPS-50".into(),
            title: "Coffee capsules, 50 pcs".into(),
            category: "coffee".into(),
            reason: "category_prior".into(),
            interval_days: 30,
            detected_at: at(9),
        }
        .into(),
        RepurchaseIntervalEstimated {
            user_id: user(),
            sku: "SKU-CAPS-50".into(),
            interval_days: 28,
            gaps: 3,
            estimated_at: at(9),
        }
        .into(),
        DeviceActivated {
            device_id: "speaker-1".into(),
            user_id: user(),
            activated_at: at(8),
            utc_offset_minutes: 180,
        }
        .into(),
        PriceChanged {
            sku: "SKU-CAPS-50".into(),
            title: "Coffee capsules, 50 pcs".into(),
            unit_price: 134_900,
            currency: "RUB".into(),
            available: true,
            delivery_days: 2,
            changed_at: at(7),
        }
        .into(),
        ReminderScheduled {
            reminder_id,
            user_id: user(),
            sku: "SKU-CAPS-50".into(),
            title: "Coffee capsules, 50 pcs".into(),
            quantity: 2,
            last_unit_price: 129_900,
            currency: "RUB".into(),
            due_at: at(18),
            slot: 11_818_728,
        }
        .into(),
        ReminderOffered {
            reminder_id,
            user_id: user(),
            device_id: Some("speaker-1".into()),
            offered_at: at(18),
        }
        .into(),
        ReorderAccepted {
            reminder_id,
            user_id: user(),
            order_id,
            accepted_at: at(18),
            quote: Some(OrderQuote {
                lines: vec![OrderLine {
                    sku: "SKU-CAPS".into(),
                    title: "Capsules".into(),
                    quantity: 2,
                    unit_price: 1100,
                }],
                currency: "RUB".into(),
                delivery_days: 2,
                repriced_from: Some(1000),
            }),
        }
        .into(),
        ReminderDeclined {
            reminder_id,
            user_id: user(),
            declined_at: at(18),
        }
        .into(),
        ReminderSnoozed {
            reminder_id,
            user_id: user(),
            until: at(20),
            snoozed_at: at(18),
        }
        .into(),
        ReminderSuperseded {
            reminder_id,
            user_id: user(),
            by: Uuid::from_u128(0x4444),
            superseded_at: at(19),
        }
        .into(),
        OrderDrafted {
            order_id,
            user_id: user(),
            reminder_id: Some(reminder_id),
            lines: vec![OrderLine {
                sku: "SKU-CAPS-50".into(),
                title: "Coffee capsules, 50 pcs".into(),
                quantity: 2,
                unit_price: 134_900,
            }],
            total: 269_800,
            currency: "RUB".into(),
            delivery_days: 2,
            repriced_from: Some(129_900),
            drafted_at: at(18),
        }
        .into(),
        OrderConfirmed {
            order_id,
            confirmed_at: at(18),
        }
        .into(),
        OrderPlaced {
            order_id,
            user_id: user(),
            total: 269_800,
            currency: "RUB".into(),
            placed_at: at(18),
        }
        .into(),
        PaymentPushRequested {
            order_id,
            user_id: user(),
            amount: 269_800,
            currency: "RUB".into(),
            requested_at: at(18),
        }
        .into(),
        OrderCancelled {
            order_id,
            reason: "changed my mind".into(),
            cancelled_at: at(19),
        }
        .into(),
        WorkoutStarted {
            workout_id,
            user_id: user(),
            sport: "running".into(),
            goal_distance_m: Some(5000.0),
            started_at: at(7),
        }
        .into(),
        WorkoutUpdated {
            workout_id,
            distance_m: Some(1200.5),
            heart_rate: Some(142),
            speed_mps: Some(3.1),
            points: vec![GeoPoint {
                lat: 55.7558,
                lon: 37.6173,
                at: at(7),
            }],
            updated_at: at(7),
        }
        .into(),
        WorkoutPaused {
            workout_id,
            paused_at: at(7),
        }
        .into(),
        WorkoutResumed {
            workout_id,
            resumed_at: at(7),
        }
        .into(),
        WorkoutCompleted {
            workout_id,
            user_id: user(),
            sport: "running".into(),
            distance_m: 5000.0,
            active_seconds: 1800,
            avg_speed_mps: 2.78,
            max_heart_rate: Some(171),
            completed_at: at(8),
        }
        .into(),
        WorkoutCancelled {
            workout_id,
            reason: None,
            cancelled_at: at(8),
        }
        .into(),
        WorkoutGoalReached {
            workout_id,
            user_id: user(),
            sport: "running".into(),
            goal_distance_m: 5000.0,
            distance_m: 5012.5,
            reached_at: at(7),
        }
        .into(),
    ]
}

#[test]
fn every_event_type_has_a_sample() {
    let sampled: Vec<&str> = samples().iter().map(|e| e.event_type()).collect();
    let all: Vec<&str> = EVENT_TYPES.iter().map(|(name, _)| *name).collect();
    assert_eq!(sampled, all);
}

/// Regenerate with `UPDATE_SCHEMAS=1 cargo test -p eventfold-event-schemas`.
#[test]
fn checked_in_json_schemas_are_current() {
    let dir = dir("schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut expected_files = Vec::new();
    for (file, schema) in DomainEvent::json_schemas() {
        let text = serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n";
        let path = dir.join(&file);
        if update {
            std::fs::create_dir_all(&dir).expect("create schemas dir");
            std::fs::write(&path, &text).expect("write schema");
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == text,
            "{} is stale or missing: run UPDATE_SCHEMAS=1 cargo test -p eventfold-event-schemas",
            path.display()
        );
        expected_files.push(file);
    }
    for entry in std::fs::read_dir(&dir).expect("schemas dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            expected_files.contains(&name),
            "schemas/{name} describes no current event type"
        );
    }
}

/// Every stored shape ever written must keep decoding. `fixtures/` holds one payload per
/// (event type, schema version); write the current version's with
/// `UPDATE_FIXTURES=1` — existing files are never overwritten: they are history.
#[test]
fn every_historical_payload_still_decodes() {
    let dir = dir("fixtures");
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(&dir).expect("create fixtures dir");
        for event in samples() {
            let path = dir.join(format!(
                "{}.v{}.json",
                event.event_type(),
                event.schema_version()
            ));
            if !path.exists() {
                let text = serde_json::to_string_pretty(&event.to_data()).expect("json") + "\n";
                std::fs::write(path, text).expect("write fixture");
            }
        }
    }
    let mut current_seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let (event_type, version) = name
            .strip_suffix(".json")
            .and_then(|stem| stem.rsplit_once(".v"))
            .and_then(|(t, v)| Some((t.to_owned(), v.parse::<i32>().ok()?)))
            .unwrap_or_else(|| panic!("fixture {name} is not named Type.vN.json"));
        let data: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let decoded = DomainEvent::decode(&event_type, version, &data)
            .unwrap_or_else(|e| panic!("{name} no longer decodes: {e}"))
            .unwrap_or_else(|| panic!("{name}: event type {event_type} left the catalogue"));
        // Read from the stored text (as the log hands it over), it decodes alike.
        let text = std::fs::read_to_string(&path).expect("read");
        let from_text = DomainEvent::decode_json(&event_type, version, &text)
            .unwrap_or_else(|e| panic!("{name} no longer decodes from its text: {e}"));
        assert_eq!(
            from_text.as_ref(),
            Some(&decoded),
            "{name}: text and tree differ"
        );
        if decoded.schema_version() == version {
            assert_eq!(decoded.to_data(), data, "{name} does not round-trip");
            current_seen.push(event_type);
        }
    }
    for (event_type, version) in EVENT_TYPES {
        assert!(
            current_seen.iter().any(|t| t == event_type),
            "no fixture for {event_type} v{version}: run UPDATE_FIXTURES=1 cargo test -p eventfold-event-schemas"
        );
    }
}

#[test]
fn a_v1_acceptance_is_upcast_without_a_quote() {
    let v1 = serde_json::json!({
        "reminder_id": "00000000-0000-0000-0000-000000001111",
        "order_id": "00000000-0000-0000-0000-000000002222",
        "user_id": "u42", "accepted_at": "2026-11-23T18:00:00Z",
    });
    let Ok(Some(DomainEvent::ReorderAccepted(accepted))) =
        DomainEvent::decode("ReorderAccepted", 1, &v1)
    else {
        panic!("a v1 acceptance no longer decodes")
    };
    assert_eq!(accepted.quote, None);
    assert_eq!(accepted.user_id, "u42");
}

#[test]
fn a_v1_purchase_is_upcast_to_minor_units_and_a_currency() {
    let v1 = serde_json::json!({
        "user_id": "u1", "sku": "S", "title": "T", "category": "coffee",
        "quantity": 1, "price": 1299.5, "purchased_at": "2025-01-01T10:00:00Z"
    });
    let Some(DomainEvent::PurchaseRecorded(p)) =
        DomainEvent::decode("PurchaseRecorded", 1, &v1).expect("decodes")
    else {
        panic!("wrong type")
    };
    assert_eq!((p.unit_price, p.currency.as_str()), (129_950, "RUB"));
}

#[test]
fn unknown_types_are_none_and_future_versions_are_errors() {
    assert!(
        DomainEvent::decode("SomethingElse", 1, &serde_json::json!({}))
            .expect("no error")
            .is_none()
    );
    assert!(matches!(
        DomainEvent::decode("OrderPlaced", 9, &serde_json::json!({})),
        Err(DecodeError::FutureVersion { current: 1, .. })
    ));
    assert!(matches!(
        DomainEvent::decode("OrderPlaced", 1, &serde_json::json!({"order_id": 1})),
        Err(DecodeError::Invalid { .. })
    ));
    assert!(DomainEvent::decode_json("SomethingElse", 1, "{}")
        .expect("no error")
        .is_none());
    assert!(matches!(
        DomainEvent::decode_json("OrderPlaced", 9, "{}"),
        Err(DecodeError::FutureVersion { current: 1, .. })
    ));
    for text in [r#"{"order_id": 1}"#, "{", "[]", ""] {
        assert!(
            matches!(
                DomainEvent::decode_json("OrderPlaced", 1, text),
                Err(DecodeError::Invalid { .. })
            ),
            "{text}"
        );
    }
    // An older version given as text that is not JSON is an error, not a panic.
    assert!(matches!(
        DomainEvent::decode_json("PurchaseRecorded", 1, "{"),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn every_event_belongs_in_a_stream_of_the_domain() {
    let mut seen = std::collections::BTreeSet::new();
    for event in samples() {
        let stream = event
            .stream()
            .unwrap_or_else(|e| panic!("{}: {e}", event.event_type()));
        assert!(
            DOMAIN_CATEGORIES.contains(&stream.category()),
            "{}: {stream}",
            event.event_type()
        );
        seen.insert(stream.category().to_owned());
    }
    let all: std::collections::BTreeSet<String> =
        DOMAIN_CATEGORIES.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(
        seen, all,
        "a category of the domain holds none of its events"
    );
}
