//! HTTP behaviour: the voice flow, workouts, auth, and every kind of bad input.

use axum::http::StatusCode;
use eventfold_event_log::testing::SqliteTestDb;
use eventfold_event_log::{EventReader, ReadDirection};
use eventfold_event_schemas::StreamId;
use serde_json::json;

use crate::support::{app, call, call_raw, offered_reminder, As};

#[tokio::test]
async fn the_voice_reorder_flow_drafts_at_the_refreshed_price_places_and_requests_payment(
) -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let app = app(db.store.clone());
    let reminder = offered_reminder(&app, "u1", 1200).await;

    let yes = call(
        &app,
        As::User("u1"),
        &format!("/api/v1/reminders/{reminder}/accept"),
        json!({}),
        Some("k1"),
    )
    .await;
    assert_eq!(yes.status, StatusCode::OK, "{}", yes.body);
    assert_eq!(yes.body["total"], 2400);
    assert_eq!(
        yes.body["repriced_from"], 1000,
        "the new price is reported, not silently ordered"
    );
    assert!(yes.token.is_some(), "a consistency token comes back");
    let order = yes.body["order_id"].as_str().unwrap_or_default().to_owned();

    // The speaker resends the same "yes": same answer, nothing new.
    let again = call(
        &app,
        As::User("u1"),
        &format!("/api/v1/reminders/{reminder}/accept"),
        json!({}),
        Some("k1"),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["order_id"], yes.body["order_id"]);
    assert!(again.replayed, "a replay says so in Idempotent-Replayed");
    assert_eq!(again.body, yes.body, "and answers the first body exactly");

    let confirm = call(
        &app,
        As::User("u1"),
        &format!("/api/v1/orders/{order}/confirm"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let types: Vec<&str> = confirm.body["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["event_type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        types,
        ["OrderConfirmed", "OrderPlaced", "PaymentPushRequested"]
    );
    let twice = call(
        &app,
        As::User("u1"),
        &format!("/api/v1/orders/{order}/confirm"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.body["error"], "order_already_placed");
    assert_eq!(twice.body["code"], 409);

    let events = db
        .store
        .read_stream(
            &StreamId::new(format!("order-{order}"))?,
            ReadDirection::Forwards,
            0,
            100,
        )
        .await?;
    assert_eq!(events.len(), 4);
    assert!(events[0].metadata.correlation_id.is_some());
    assert_eq!(
        events[0].metadata.idempotency_key.as_deref(),
        Some(format!("draft-{order}").as_str())
    );
    Ok(())
}

#[tokio::test]
async fn an_unavailable_sku_is_said_not_ordered() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let app = app(db.store.clone());
    let reminder = offered_reminder(&app, "u2", 1000).await;
    let gone = call(
        &app,
        As::Service,
        "/api/v1/catalog/prices",
        json!({"sku": "SKU-CAPS", "title": "Capsules", "unit_price": 1000, "available": false}),
        None,
    )
    .await;
    assert_eq!(gone.status, StatusCode::CREATED, "{}", gone.body);
    let yes = call(
        &app,
        As::User("u2"),
        &format!("/api/v1/reminders/{reminder}/accept"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(yes.status, StatusCode::CONFLICT, "{}", yes.body);
    assert_eq!(yes.body["error"], "sku_unavailable");
    // The reminder is still open: the user can decline or snooze.
    let later = call(
        &app,
        As::User("u2"),
        &format!("/api/v1/reminders/{reminder}/snooze"),
        json!({"until": "2099-01-01T00:00:00Z"}),
        None,
    )
    .await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
    Ok(())
}

#[tokio::test]
async fn the_workout_flow_and_its_illegal_transitions() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let app = app(db.store.clone());
    let started = call(
        &app,
        As::User("u3"),
        "/api/v1/workouts",
        json!({"user_id": "u3", "sport": "running"}),
        None,
    )
    .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    let w = started.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = |action: &str| format!("/api/v1/workouts/{w}/{action}");
    let update = json!({"distance_m": 1500.0, "heart_rate": 150, "points": [{"lat": 55.75, "lon": 37.61, "at": "2026-11-23T07:00:00Z"}]});
    assert_eq!(
        call(&app, As::User("u3"), &path("updates"), update.clone(), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, As::User("u3"), &path("resume"), json!({}), None)
            .await
            .body["error"],
        "workout_not_paused"
    );
    assert_eq!(
        call(&app, As::User("u3"), &path("pause"), json!({}), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, As::User("u3"), &path("updates"), update.clone(), None)
            .await
            .body["error"],
        "workout_paused"
    );
    assert_eq!(
        call(&app, As::User("u3"), &path("resume"), json!({}), None)
            .await
            .status,
        StatusCode::OK
    );
    let bad = call(
        &app,
        As::User("u3"),
        &path("updates"),
        json!({"heart_rate": 400}),
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let done = call(
        &app,
        As::User("u3"),
        &path("complete"),
        json!({"distance_m": 5000.0}),
        None,
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let after = call(&app, As::User("u3"), &path("updates"), update, None).await;
    assert_eq!(
        (after.status, after.body["error"].as_str()),
        (StatusCode::CONFLICT, Some("workout_finished"))
    );
    Ok(())
}

#[tokio::test]
async fn callers_must_authenticate_and_may_act_only_on_their_own_data() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let app = app(db.store.clone());
    let purchase = json!({"user_id": "u1", "sku": "S", "title": "T", "category": "coffee", "quantity": 1, "unit_price": 10});
    let nobody = call(
        &app,
        As::Nobody,
        "/api/v1/purchases",
        purchase.clone(),
        None,
    )
    .await;
    assert_eq!(
        (nobody.status, nobody.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let forged = call(
        &app,
        As::Raw("authorization", "Bearer not.a.token".into()),
        "/api/v1/purchases",
        purchase.clone(),
        None,
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let bad_key = call(
        &app,
        As::Raw("x-api-key", "nope".into()),
        "/api/v1/purchases",
        purchase.clone(),
        None,
    )
    .await;
    assert_eq!(bad_key.status, StatusCode::UNAUTHORIZED);
    let other = call(
        &app,
        As::User("u2"),
        "/api/v1/purchases",
        purchase.clone(),
        None,
    )
    .await;
    assert_eq!(
        (other.status, other.body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(
        call(&app, As::Service, "/api/v1/purchases", purchase, None)
            .await
            .status,
        StatusCode::CREATED
    );

    let reminder = offered_reminder(&app, "u1", 1000).await;
    let stranger = call(
        &app,
        As::User("u2"),
        &format!("/api/v1/reminders/{reminder}/accept"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(stranger.status, StatusCode::FORBIDDEN);
    let started = call(
        &app,
        As::User("u1"),
        "/api/v1/workouts",
        json!({"user_id": "u1", "sport": "cycling"}),
        None,
    )
    .await;
    let w = started.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        call(
            &app,
            As::User("u2"),
            &format!("/api/v1/workouts/{w}/pause"),
            json!({}),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let price = call(
        &app,
        As::User("u1"),
        "/api/v1/catalog/prices",
        json!({"sku": "S", "title": "T", "unit_price": 1}),
        None,
    )
    .await;
    assert_eq!(
        price.status,
        StatusCode::FORBIDDEN,
        "only services set prices"
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_in_the_error_shape() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let app = app(db.store.clone());
    let malformed = call_raw(
        &app,
        As::User("u1"),
        "/api/v1/purchases",
        b"{\"user_id\": ".to_vec(),
        None,
    )
    .await;
    assert_eq!(
        (malformed.status, malformed.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );
    assert_eq!(malformed.body["code"], 400);
    assert!(malformed.body["message"].is_string() && malformed.body["details"].is_object());
    let wrong_shape = call(
        &app,
        As::User("u1"),
        "/api/v1/purchases",
        json!({"user_id": "u1"}),
        None,
    )
    .await;
    assert_eq!(
        (wrong_shape.status, wrong_shape.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("validation_failed"))
    );
    let unknown_field = call(
        &app,
        As::User("u3"),
        "/api/v1/workouts",
        json!({"user_id": "u3", "sport": "run", "colour": "red"}),
        None,
    )
    .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    let huge = call_raw(
        &app,
        As::User("u1"),
        "/api/v1/purchases",
        vec![b' '; 200 * 1024],
        None,
    )
    .await;
    assert_eq!(
        (huge.status, huge.body["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let semantic = call(&app, As::User("u1"), "/api/v1/purchases", json!({"user_id": "u1", "sku": "S", "title": "T", "category": "coffee", "quantity": 0, "unit_price": 10}), None).await;
    assert_eq!(
        (semantic.status, semantic.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_purchase"))
    );
    let bad_user = call(&app, As::Service, "/api/v1/purchases", json!({"user_id": "no spaces allowed", "sku": "S", "title": "T", "category": "coffee", "quantity": 1, "unit_price": 10}), None).await;
    assert_eq!(
        bad_user.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_user.body
    );

    let unknown = uuid::Uuid::new_v4();
    for (path, error) in [
        (
            format!("/api/v1/reminders/{unknown}/accept"),
            "reminder_not_found",
        ),
        (
            format!("/api/v1/orders/{unknown}/confirm"),
            "order_not_found",
        ),
        (
            format!("/api/v1/workouts/{unknown}/pause"),
            "workout_not_found",
        ),
    ] {
        let a = call(&app, As::User("u1"), &path, json!({}), None).await;
        assert_eq!(
            (a.status, a.body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some(error)),
            "{path}"
        );
    }
    let not_uuid = call(
        &app,
        As::User("u1"),
        "/api/v1/orders/42/confirm",
        json!({}),
        None,
    )
    .await;
    assert_eq!(
        (not_uuid.status, not_uuid.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_path"))
    );
    let no_route = call(&app, As::User("u1"), "/api/v1/nothing", json!({}), None).await;
    assert_eq!(
        (no_route.status, no_route.body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let long_key = "k".repeat(500);
    let key = call(
        &app,
        As::User("u1"),
        "/api/v1/workouts",
        json!({"user_id": "u1", "sport": "run"}),
        Some(&long_key),
    )
    .await;
    assert_eq!(key.status, StatusCode::BAD_REQUEST);
    // Nothing of the above reached the log, but the one valid workout start.
    assert!(db
        .store
        .read_all(
            eventfold_event_schemas::Position::START,
            Some("purchases"),
            10
        )
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn a_reused_idempotency_key_for_another_command_is_refused() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let app = app(db.store.clone());
    let first = call(
        &app,
        As::User("u1"),
        "/api/v1/workouts",
        json!({"user_id": "u1", "sport": "run"}),
        Some("same"),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let replay = call(
        &app,
        As::User("u1"),
        "/api/v1/workouts",
        json!({"user_id": "u1", "sport": "run"}),
        Some("same"),
    )
    .await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.body["workout_id"], first.body["workout_id"]);
    assert!(replay.replayed);
    assert_eq!(replay.body, first.body);

    // The key again on the same workout for another command, for the same command
    // with another body, and from another caller: each refused, nothing appended
    // (not answered with the start's result). (Keys are a caller's own: the service's
    // "same" without an explicit id would start a workout of its own.)
    let workout = first.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let other_requests = [
        (
            As::User("u1"),
            format!("/api/v1/workouts/{workout}/complete"),
            json!({"distance_m": 5000.0}),
        ),
        (
            As::User("u1"),
            "/api/v1/workouts".to_owned(),
            json!({"user_id": "u1", "sport": "swim"}),
        ),
        (
            As::Service,
            "/api/v1/workouts".to_owned(),
            json!({"workout_id": workout, "user_id": "u1", "sport": "run"}),
        ),
    ];
    for (who, path, body) in other_requests {
        let reused = call(&app, who, &path, body, Some("same")).await;
        assert_eq!(
            reused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {:?}",
            reused.body
        );
        assert_eq!(reused.body["error"], "idempotency_key_reused");
        assert!(!reused.replayed);
    }
    let stored = db
        .store
        .read_stream(
            &StreamId::new(format!("workout-{workout}"))?,
            ReadDirection::Forwards,
            0,
            100,
        )
        .await?;
    assert_eq!(stored.len(), 1, "only the start is stored");

    // A retry spelled differently (keys reordered, whitespace, 5000 as 5000.0) is the
    // same request: replayed.
    let completed = call(
        &app,
        As::User("u1"),
        &format!("/api/v1/workouts/{workout}/complete"),
        json!({"distance_m": 5000}),
        Some("done"),
    )
    .await;
    assert_eq!(completed.status, StatusCode::OK, "{:?}", completed.body);
    let respelled = call_raw(
        &app,
        As::User("u1"),
        &format!("/api/v1/workouts/{workout}/complete"),
        b"{ \"distance_m\" : 5000.0 }".to_vec(),
        Some("done"),
    )
    .await;
    assert_eq!(respelled.status, StatusCode::OK, "{:?}", respelled.body);
    assert!(respelled.replayed);
    assert_eq!(respelled.body, completed.body);
    Ok(())
}

#[tokio::test]
async fn an_idempotency_key_the_header_cannot_carry_as_text_is_refused() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let app = app(db.store.clone());
    for key in ["a b", "caf\u{e9}", "tab\tkey", &"k".repeat(201)] {
        let answer = call(
            &app,
            As::User("u1"),
            "/api/v1/workouts",
            json!({"user_id": "u1", "sport": "run"}),
            Some(key),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{key:?}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["error"], "validation_failed");
    }
    assert_eq!(db.store.head().await?.0, 0, "nothing was appended");
    Ok(())
}

#[tokio::test]
async fn a_retried_purchase_answers_the_first_attempts_reminder_and_reserves_nothing_again(
) -> anyhow::Result<()> {
    let db = eventfold_event_log::testing::PgTestDb::new().await?;
    let app = app(db.store.clone());
    // Without `purchased_at` the server stamps the time; with it, the slot is the
    // server's choice. Either way a retry must answer what the first attempt did.
    for (user, body) in [
        (
            "u1",
            json!({"user_id": "u1", "sku": "CAPS", "title": "capsules", "category": "coffee", "quantity": 1, "unit_price": 100}),
        ),
        (
            "u2",
            json!({"user_id": "u2", "sku": "CAPS", "title": "capsules", "category": "coffee", "quantity": 1, "unit_price": 100,
                   "purchased_at": "2026-11-02T07:00:00Z"}),
        ),
    ] {
        let key = format!("buy-{user}");
        let first = call(
            &app,
            As::User(user),
            "/api/v1/purchases",
            body.clone(),
            Some(&key),
        )
        .await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        assert!(
            first.body["reminder"]["reminder_id"].is_string(),
            "{}",
            first.body
        );
        let head = db.store.head().await?;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for _ in 0..3 {
            let retry = call(
                &app,
                As::User(user),
                "/api/v1/purchases",
                body.clone(),
                Some(&key),
            )
            .await;
            assert_eq!(retry.status, first.status);
            assert!(retry.replayed);
            assert_eq!(
                retry.body, first.body,
                "{user}: the retry answered something else"
            );
        }
        assert_eq!(db.store.head().await?, head, "{user}: a retry appended");
    }
    Ok(())
}

/// Two purchases of one sku within one second share their reminder (its id comes
/// from the second): the second answers the first's reminder, schedules nothing new,
/// and the reminder is not superseded by itself (the planner skips that case; before,
/// only the planning's idempotency key happened to turn it into a no-op).
#[tokio::test]
async fn purchases_within_one_second_share_a_reminder_that_stays_scheduled() -> anyhow::Result<()> {
    let db = eventfold_event_log::testing::PgTestDb::new().await?;
    let app = app(db.store.clone());
    let mut reminders = Vec::new();
    for at in ["2026-11-02T07:00:00.100Z", "2026-11-02T07:00:00.900Z"] {
        let answer = call(
            &app,
            As::User("u1"),
            "/api/v1/purchases",
            json!({"user_id": "u1", "sku": "CAPS", "title": "capsules", "category": "coffee",
                   "quantity": 1, "unit_price": 100, "purchased_at": at}),
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        reminders.push(answer.body["reminder"]["reminder_id"].clone());
    }
    assert!(reminders[0].is_string(), "{reminders:?}");
    assert_eq!(reminders[0], reminders[1]);
    let events = db
        .store
        .read_all(eventfold_event_schemas::Position::START, None, 100)
        .await?;
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ReminderScheduled").count(),
        1,
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"ReminderSuperseded"), "{kinds:?}");
    Ok(())
}

/// A stream holding an event the command side cannot decode (written by something
/// else, or by a newer version) answers 500 `unreadable_stream` naming the stream — not
/// 503 "the event log is unavailable; retry later", which a client would retry forever —
/// and the command appends nothing.
#[tokio::test]
async fn a_stream_this_server_cannot_read_is_named_not_reported_as_an_outage() -> anyhow::Result<()>
{
    use eventfold_event_log::EventWriter;
    use eventfold_event_schemas::{ExpectedVersion, NewEvent};

    let db = SqliteTestDb::new().await?;
    let app = app(db.store.clone());
    let stream = StreamId::new("purchases-u9")?;
    db.store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            &[NewEvent::new("PurchaseRecorded", json!({"x": 1}))],
        )
        .await?;
    let workout = StreamId::new(format!("workout-{}", crate::edge::ID))?;
    db.store
        .append(
            &workout,
            ExpectedVersion::NoStream,
            &[NewEvent::new("SomethingElse", json!({}))],
        )
        .await?;
    let buy = call(
        &app,
        As::User("u9"),
        "/api/v1/purchases",
        json!({"user_id": "u9", "sku": "S", "title": "T", "category": "coffee",
               "quantity": 1, "unit_price": 100}),
        None,
    )
    .await;
    assert_eq!(
        buy.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        buy.body
    );
    assert_eq!(buy.body["error"], "unreadable_stream", "{}", buy.body);
    assert_eq!(
        buy.body["details"]["stream"], "purchases-u9",
        "{}",
        buy.body
    );
    let pause = call(
        &app,
        As::Service,
        &format!("/api/v1/workouts/{}/pause", crate::edge::ID),
        json!({}),
        None,
    )
    .await;
    assert_eq!(
        pause.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        pause.body
    );
    assert_eq!(pause.body["error"], "unreadable_stream", "{}", pause.body);
    let stored = db
        .store
        .read_stream(&stream, ReadDirection::Forwards, 0, 10)
        .await?;
    assert_eq!(stored.len(), 1, "nothing appended");
    Ok(())
}
