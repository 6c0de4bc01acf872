//! A property over every command route: arbitrary JSON bodies (whole, or one field of
//! a valid body replaced, or a field added) and arbitrary path ids never get a 5xx or a
//! dropped connection, every refusal is a 4xx in the error shape, and a refused request
//! never appends.

use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::EventReader;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use crate::edge::{routes, ID};
use crate::support::{app, call_raw, As};

/// Strings at the edges: the calendar's ends, NUL, blank, an id.
fn special() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just("u1"),
        Just("2026-11-02T07:00:00Z"),
        Just("+262142-12-31T23:59:59Z"),
        Just("-262143-01-01T00:00:00Z"),
        Just("1969-12-31T23:59:59Z"),
        Just("a\u{0}b"),
        Just("a\u{1b}b"),
        Just(""),
        Just("   "),
        Just("RUB"),
    ]
    .prop_map(Value::from)
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        ".{0,24}".prop_map(Value::from),
        special(),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,14}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    Valid,
    Whole(Value),
    Replace(usize, Value),
    Add(String, Value),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => Just(Body::Valid),
        2 => json().prop_map(Body::Whole),
        3 => (any::<usize>(), json()).prop_map(|(i, v)| Body::Replace(i, v)),
        3 => (any::<usize>(), special()).prop_map(|(i, v)| Body::Replace(i, v)),
        1 => ("[a-z_]{1,14}", json()).prop_map(|(k, v)| Body::Add(k, v)),
    ]
}

fn apply(valid: &Value, body: &Body) -> Value {
    match body {
        Body::Valid => valid.clone(),
        Body::Whole(v) => v.clone(),
        Body::Replace(i, v) => {
            let mut out = valid.clone();
            if let Value::Object(map) = &mut out {
                let keys: Vec<String> = map.keys().cloned().collect();
                if !keys.is_empty() {
                    map.insert(keys[i % keys.len()].clone(), v.clone());
                }
            }
            out
        }
        Body::Add(k, v) => {
            let mut out = valid.clone();
            if let Value::Object(map) = &mut out {
                map.insert(k.clone(), v.clone());
            }
            out
        }
    }
}

#[test]
fn arbitrary_bodies_and_ids_never_get_a_5xx_and_refusals_never_append() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(PgTestDb::new()).expect("test database");
    let app = app(db.store.clone());
    let routes = routes();
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..routes.len(),
        body(),
        proptest::option::weighted(0.3, ".{0,12}"),
    );
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&strategy, |(route, body, id)| {
        let (path, valid) = &routes[route];
        let path = match &id {
            Some(id) => {
                let encoded =
                    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
                        .to_string();
                path.replace(ID, &encoded).replace("spk-1", &encoded)
            }
            None => path.clone(),
        };
        let sent = apply(valid, &body);
        runtime.block_on(async {
            let before = db
                .store
                .head()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let answer = call_raw(
                &app,
                As::Service,
                &path,
                sent.to_string().into_bytes(),
                None,
            )
            .await;
            let after = db
                .store
                .head()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let status = answer.status.as_u16();
            prop_assert!(status < 500, "{path} {sent}: {status} {}", answer.body);
            if status >= 400 {
                prop_assert_eq!(
                    answer.body["code"].as_u64(),
                    Some(u64::from(status)),
                    "{} {}: not the error shape: {}",
                    path,
                    sent,
                    answer.body
                );
                prop_assert!(answer.body["error"].is_string());
                prop_assert_eq!(
                    before,
                    after,
                    "{} {}: refused with {} but appended",
                    path,
                    sent,
                    status
                );
            } else {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // The generator reaches the store too, not only the parsers.
    let accepted = accepted.into_inner();
    assert!(
        accepted > 10,
        "only {accepted} of 400 requests were accepted"
    );
}
