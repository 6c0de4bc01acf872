use std::collections::BTreeMap;
use std::time::Duration;

use eventfold_commands::{steps, CommandContext, Planning, Principal, SlotBook};
use eventfold_domain::consumables::ConsumablePolicy;
use eventfold_domain::slotting::SlotPlanner;
use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::EventReader;
use eventfold_event_schemas::catalogue::PurchaseRecorded;
use eventfold_projections::{ReadDb, Runner, RunnerOptions, StatusBoard};

use super::*;

const USERS: usize = 3;

/// A fresh process's planner: its own service and slot book handle on the shared
/// tables; requests do not plan (the reaction does).
async fn process(
    db: &PgTestDb,
    read: &ReadDb,
) -> ServiceReaction<eventfold_event_log::PgEventStore> {
    let planner = SlotPlanner::default();
    let slots = SlotBook::shared(planner, read.pool().clone())
        .await
        .expect("slot book");
    let service = CommandService::with(
        db.store.clone(),
        ConsumablePolicy::default(),
        planner,
        Arc::new(chrono::Utc::now),
    )
    .with_slot_book(slots)
    .with_planning(Planning::Reaction {
        progress: Arc::new(|| Position(i64::MAX)),
        wait: Duration::ZERO,
    });
    ServiceReaction::planner(Arc::new(service), read.pool().clone())
}

fn runner(
    store: eventfold_event_log::PgEventStore,
    planner: ServiceReaction<eventfold_event_log::PgEventStore>,
) -> Runner<eventfold_event_log::PgEventStore, ServiceReaction<eventfold_event_log::PgEventStore>> {
    let options = RunnerOptions {
        backoff: Duration::from_millis(20),
        poison: eventfold_projections::PoisonPolicy::Skip,
        ..RunnerOptions::default()
    };
    Runner::new(store, planner, options, StatusBoard::default())
}

async fn buy(
    planner: &ServiceReaction<eventfold_event_log::PgEventStore>,
    user: &str,
    days_ago: i64,
) {
    buy_n(planner, user, days_ago, 1).await;
}

async fn buy_n(
    planner: &ServiceReaction<eventfold_event_log::PgEventStore>,
    user: &str,
    days_ago: i64,
    quantity: u32,
) {
    let ctx = CommandContext {
        principal: Principal::service("test"),
        idempotency_key: Some(format!("buy-{user}-{days_ago}")),
        request_fingerprint: None,
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
    };
    planner
        .service
        .record_purchase(
            &ctx,
            PurchaseRecorded {
                user_id: user.to_owned(),
                sku: "CAPS".into(),
                title: "Capsules".into(),
                category: "coffee".into(),
                quantity,
                unit_price: 500,
                currency: "RUB".into(),
                purchased_at: chrono::Utc::now() - chrono::Duration::days(days_ago),
            },
        )
        .await
        .expect("purchase");
}

/// For every step between a purchase's append and its reminder's (and the supersede
/// of the one before, and the reaction's checkpoint), a planner that dies there —
/// its task aborted while the step's failure is pending — and a new process that
/// takes over leave exactly one reminder for each user's latest purchase, the
/// previous one superseded once, and one slot reservation per reminder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_dying_at_any_step_leaves_exactly_one_reminder_per_purchase() {
    let points: [Option<&'static str>; 5] = [
        None, // the reaction's own fail point: before planning
        Some(steps::RESERVED),
        Some(steps::APPENDED),
        Some(steps::SUPERSEDED),
        Some(steps::BEFORE_CHECKPOINT),
    ];
    for point in points {
        let what = point.unwrap_or("before planning");
        let db = PgTestDb::new().await.expect("test database");
        let read = ReadDb::connect(&db.url()).await.expect("read db");
        // The first purchases, planned by a healthy planner.
        let first = process(&db, &read).await;
        for u in 0..USERS {
            buy(&first, &format!("u{u}"), 40).await;
        }
        let head = db.store.head().await.expect("head");
        runner(db.store.clone(), first)
            .run_until(Some(head))
            .await
            .expect("plan");
        // The second purchases; the planner dies at the step.
        let doomed = process(&db, &read).await;
        for u in 0..USERS {
            buy(&doomed, &format!("u{u}"), 10).await;
        }
        let (fail_steps, fail_point) = (doomed.service.fail_steps(), doomed.fail_point());
        match point {
            Some(step) => fail_steps.arm(step, u32::MAX),
            None => fail_point.arm(u32::MAX),
        }
        let head = db.store.head().await.expect("head");
        let store = db.store.clone();
        let dying = tokio::spawn(async move { runner(store, doomed).run_until(Some(head)).await });
        for _ in 0..500 {
            if fail_steps.fired() + fail_point.fired() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            fail_steps.fired() + fail_point.fired() > 0,
            "{what}: never reached"
        );
        dying.abort();
        let _ = dying.await;
        // Another process takes over from the stored checkpoint.
        let heir = process(&db, &read).await;
        runner(db.store.clone(), heir)
            .run_until(Some(head))
            .await
            .expect("heal");

        let events = db
            .store
            .read_all(Position::START, None, 10_000)
            .await
            .expect("read");
        let mut scheduled = BTreeMap::<String, usize>::new();
        let mut superseded = BTreeMap::<String, usize>::new();
        for e in &events {
            let id = e.data.to_value().expect("json")["reminder_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match e.event_type.as_str() {
                "ReminderScheduled" => *scheduled.entry(id).or_default() += 1,
                "ReminderSuperseded" => *superseded.entry(id).or_default() += 1,
                _ => {}
            }
        }
        assert_eq!(
            scheduled.len(),
            2 * USERS,
            "{what}: a reminder per purchase"
        );
        assert!(scheduled.values().all(|n| *n == 1), "{what}: {scheduled:?}");
        assert_eq!(superseded.len(), USERS, "{what}: the first ones superseded");
        assert!(
            superseded.values().all(|n| *n == 1),
            "{what}: {superseded:?}"
        );
        let reservations: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM eventfold_slot_reservations")
                .fetch_one(read.pool())
                .await
                .expect("count");
        let load: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(load), 0) AS BIGINT) FROM eventfold_slot_loads",
        )
        .fetch_one(read.pool())
        .await
        .expect("sum");
        assert_eq!(
            (reservations, load),
            (2 * USERS as i64, 2 * USERS as i64),
            "{what}"
        );
    }
}

fn ctx(key: &str) -> CommandContext {
    CommandContext {
        principal: Principal::service("test"),
        idempotency_key: Some(key.to_owned()),
        request_fingerprint: None,
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
    }
}

async fn set_price(
    service: &CommandService<eventfold_event_log::PgEventStore>,
    unit_price: i64,
    available: bool,
) {
    service
        .set_price(
            &ctx(&format!("price-{unit_price}-{available}")),
            eventfold_event_schemas::catalogue::PriceChanged {
                sku: "CAPS".into(),
                title: "Capsules".into(),
                unit_price,
                currency: "RUB".into(),
                available,
                delivery_days: 1,
                changed_at: chrono::Utc::now(),
            },
        )
        .await
        .expect("price");
}

/// A user who bought `quantity` capsules twice, at `unit_price` in the catalog, and
/// was offered the re-order: the service and the reminder.
async fn offered_reminder(
    db: &PgTestDb,
    read: &ReadDb,
    quantity: u32,
    unit_price: i64,
) -> (
    Arc<CommandService<eventfold_event_log::PgEventStore>>,
    uuid::Uuid,
) {
    let planner = process(db, read).await;
    let service = planner.service.clone();
    set_price(&service, unit_price, true).await;
    buy_n(&planner, "u0", 40, quantity).await;
    buy_n(&planner, "u0", 10, quantity).await;
    let head = db.store.head().await.expect("head");
    runner(db.store.clone(), planner)
        .run_until(Some(head))
        .await
        .expect("plan");
    let reminder = all_events(db)
        .await
        .iter()
        .rev()
        .find(|e| e.event_type == "ReminderScheduled")
        .and_then(|e| e.data.to_value().ok())
        .and_then(|v| v["reminder_id"].as_str().map(str::to_owned))
        .and_then(|id| uuid::Uuid::parse_str(&id).ok())
        .expect("a reminder");
    service
        .offer(&ctx("offer"), reminder, None)
        .await
        .expect("offer");
    (service, reminder)
}

async fn all_events(db: &PgTestDb) -> Vec<eventfold_event_schemas::RecordedEvent> {
    db.store
        .read_all(Position::START, None, 10_000)
        .await
        .expect("read")
}

/// The log's purchases, in order.
async fn purchases_in(db: &PgTestDb) -> Vec<eventfold_event_schemas::RecordedEvent> {
    all_events(db)
        .await
        .into_iter()
        .filter(|e| e.event_type == "PurchaseRecorded")
        .collect()
}

fn of_type(
    events: &[eventfold_event_schemas::RecordedEvent],
    event_type: &str,
) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .map(|e| e.data.to_value().expect("json"))
        .collect()
}

/// A "yes" whose request dies between the reminder's acceptance and its order's
/// draft (fail point `reorder.accepted`) leaves an accepted reminder with no order;
/// the order drafter drafts it — once, the order the "yes" accepted, even though the
/// sku has since gone up and out of stock — without the speaker saying "yes" again,
/// and a later "yes" (a resend) drafts no second order. (Before acceptances recorded
/// their order, the drafter drafted at the catalog's price when it ran: here it
/// refused the unavailable sku, and the accepted reminder never got an order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yes_that_dies_before_its_order_is_drafted_gets_its_order_from_the_drafter() {
    let db = PgTestDb::new().await.expect("test database");
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let (service, reminder) = offered_reminder(&db, &read, 1, 550).await;

    // The "yes" dies after the acceptance.
    service.fail_steps().arm(steps::ACCEPTED, 1);
    let died = service.accept(&ctx("yes"), reminder).await;
    assert!(
        matches!(died, Err(CommandError::Injected(steps::ACCEPTED))),
        "{died:?}"
    );
    assert!(
        of_type(&all_events(&db).await, "OrderDrafted").is_empty(),
        "drafted before the drafter ran"
    );
    // Meanwhile the catalog moves: dearer, and out of stock.
    set_price(&service, 990, false).await;

    let head = db.store.head().await.expect("head");
    let drafter = ServiceReaction::drafter(service.clone(), read.pool().clone());
    let board = StatusBoard::default();
    Runner::new(
        db.store.clone(),
        drafter,
        RunnerOptions::default(),
        board.clone(),
    )
    .run_until(Some(head))
    .await
    .expect("draft");
    let drafted = of_type(&all_events(&db).await, "OrderDrafted");
    assert_eq!(drafted.len(), 1, "{drafted:?}");
    assert_eq!(drafted[0]["lines"][0]["unit_price"], 550, "{drafted:?}");
    let parked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM eventfold_reaction_parked")
        .fetch_one(read.pool())
        .await
        .expect("parked");
    assert_eq!(parked, 0, "the drafter parked the acceptance");

    // The speaker resends the "yes": the same order, no second draft.
    let again = service.accept(&ctx("yes again"), reminder).await;
    assert!(
        matches!(
            again,
            Err(CommandError::Domain(
                eventfold_domain::DomainError::ReminderAlreadyAccepted(_)
            ))
        ),
        "{again:?}"
    );
    assert_eq!(of_type(&all_events(&db).await, "OrderDrafted").len(), 1);
}

/// A "yes" whose order the order's own rules refuse (two units at a price whose
/// total money cannot hold) is refused whole: no acceptance is stored, the reminder
/// stays offered, and once the price is one an order can hold, "yes" drafts it.
/// Before, the acceptance was stored and the order refused after it: the user heard
/// a 422, the reminder said "accepted" with an order that never came, and the order
/// drafter parked the acceptance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yes_whose_order_would_be_refused_stores_nothing() {
    let db = PgTestDb::new().await.expect("test database");
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let (service, reminder) =
        offered_reminder(&db, &read, 2, eventfold_domain::money::MAX_AMOUNT).await;
    let head = db.store.head().await.expect("head");
    let refused = service.accept(&ctx("yes"), reminder).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Domain(
                eventfold_domain::DomainError::InvalidOrder(_)
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(
        db.store.head().await.expect("head"),
        head,
        "a refused yes appended"
    );
    assert!(of_type(&all_events(&db).await, "ReorderAccepted").is_empty());
    // The reminder is still offered: a "yes" once the price is sane is accepted.
    set_price(&service, 550, true).await;
    let accepted = service
        .accept(&ctx("yes later"), reminder)
        .await
        .expect("accepted");
    assert_eq!(accepted.total, 1100);
}

/// A purchase whose planning step runs after a later purchase's of the same sku
/// (racing requests, a planner taken over mid-step) plans nothing: its reminder
/// would stay open beside the later one's, superseded by nobody. Its answer is
/// still decided as of the purchase (a keyed retry answers what was stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_planned_after_a_later_one_plans_nothing() {
    let db = PgTestDb::new().await.expect("test database");
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let planner = process(&db, &read).await;
    buy(&planner, "u1", 10).await;
    buy(&planner, "u1", 2).await;
    let purchases = purchases_in(&db).await;
    assert_eq!(purchases.len(), 2);
    // The later purchase's step first, then the earlier one's.
    let later = planner
        .service
        .plan_after(&purchases[1])
        .await
        .expect("plan the later");
    assert!(later.is_some());
    let earlier = planner
        .service
        .plan_after(&purchases[0])
        .await
        .expect("plan the earlier");
    assert!(earlier.is_none(), "{earlier:?}");
    let events = all_events(&db).await;
    assert_eq!(
        of_type(&events, "ReminderScheduled").len(),
        1,
        "a reminder for the overtaken purchase"
    );
    assert!(of_type(&events, "ReminderSuperseded").is_empty());
}

/// The reminder a purchase plans supersedes the newest reminder of an earlier
/// purchase, walking past purchases that planned none: here the middle purchase
/// was overtaken before its step ran. Before, only the previous purchase's
/// reminder (never planned) was looked at, and the first purchase's reminder stayed
/// open beside the last one's (found by scripts/stateful-load's invariant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_supersedes_the_newest_earlier_one_past_purchases_that_planned_none() {
    let db = PgTestDb::new().await.expect("test database");
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let planner = process(&db, &read).await;
    buy(&planner, "u1", 10).await;
    let first = purchases_in(&db).await;
    let planned = planner.service.plan_after(&first[0]).await.expect("plan");
    let first_reminder = planned.expect("a reminder").reminder_id;
    buy(&planner, "u1", 5).await;
    buy(&planner, "u1", 2).await;
    let all = purchases_in(&db).await;
    assert!(
        planner
            .service
            .plan_after(&all[1])
            .await
            .expect("overtaken")
            .is_none(),
        "the overtaken purchase planned"
    );
    let last = planner
        .service
        .plan_after(&all[2])
        .await
        .expect("plan the last")
        .expect("a reminder");
    let events = all_events(&db).await;
    assert_eq!(of_type(&events, "ReminderScheduled").len(), 2);
    let superseded = of_type(&events, "ReminderSuperseded");
    assert_eq!(superseded.len(), 1, "{superseded:?}");
    assert_eq!(
        superseded[0]["reminder_id"],
        first_reminder.to_string(),
        "{superseded:?}"
    );
    assert_eq!(superseded[0]["by"], last.reminder_id.to_string());
}

/// A planner that died between a purchase's reminder and the supersede of the one
/// before, run again after a later purchase was stored (so the purchase is
/// overtaken), still supersedes: before, the overtaken step planned nothing and
/// returned, the later purchase's reminder superseded only the dead step's, and
/// the oldest stayed open (found by scripts/stateful-load under kill -9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_rerun_after_dying_before_the_supersede_supersedes_though_overtaken() {
    let db = PgTestDb::new().await.expect("test database");
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let planner = process(&db, &read).await;
    buy(&planner, "u1", 20).await;
    let first = purchases_in(&db).await;
    planner.service.plan_after(&first[0]).await.expect("plan");
    buy(&planner, "u1", 10).await;
    let second = purchases_in(&db).await;
    planner.service.fail_steps().arm(steps::APPENDED, 1);
    let died = planner.service.plan_after(&second[1]).await;
    assert!(
        matches!(died, Err(CommandError::Injected(steps::APPENDED))),
        "{died:?}"
    );
    buy(&planner, "u1", 2).await;
    let all = purchases_in(&db).await;
    planner.service.plan_after(&all[1]).await.expect("again");
    planner.service.plan_after(&all[2]).await.expect("the last");
    let events = all_events(&db).await;
    assert_eq!(of_type(&events, "ReminderScheduled").len(), 3);
    assert_eq!(
        of_type(&events, "ReminderSuperseded").len(),
        2,
        "every reminder but the last superseded"
    );
}
