//! The Redis read models: the voice answer in one round trip, leaderboards, and
//! surviving a Redis outage.

use std::process::Command;
use std::time::Duration;

use chrono::Duration as Days;
use eventfold_event_log::testing::SqliteTestDb;
use eventfold_event_log::{EventReader, EventStore, EventWriter};
use eventfold_event_schemas::catalogue::{PriceChanged, ReminderScheduled, ReorderAccepted};
use eventfold_event_schemas::{DomainEvent, EventMetadata, ExpectedVersion, StreamId};
use eventfold_projections::models::leaderboard::{self, LeaderboardProjection};
use eventfold_projections::models::voice::{self, Source, VoiceDueProjection};
use eventfold_projections::models::{
    catalog::CatalogProjection, iso_week, reminders::RemindersProjection,
};
use eventfold_projections::{
    ProjectionSet, ReadDb, RedisKeys, RedisSink, RedisTarget, RelationalSink, Runner,
    RunnerOptions, StatusBoard,
};
use uuid::Uuid;

use crate::support::{append_completed_workouts, clear_redis, now};

fn shared_redis() -> anyhow::Result<redis::Client> {
    Ok(redis::Client::open(
        std::env::var("EVENTFOLD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    )?)
}

fn prefix() -> String {
    format!("eftest:{}:", Uuid::new_v4().simple())
}

async fn append(
    store: &impl EventWriter,
    stream: String,
    event: DomainEvent,
) -> anyhow::Result<()> {
    let new = event.to_new_event(Uuid::new_v4(), EventMetadata::default());
    store
        .append(&StreamId::new(stream)?, ExpectedVersion::Any, &[new])
        .await?;
    Ok(())
}

fn scheduled(user: &str, due_hours_ago: i64) -> (Uuid, DomainEvent) {
    let id = Uuid::new_v4();
    let event = ReminderScheduled {
        reminder_id: id,
        user_id: user.into(),
        sku: "SKU-CAPS".into(),
        title: "Coffee capsules".into(),
        quantity: 2,
        last_unit_price: 1000,
        currency: "RUB".into(),
        due_at: now() - Days::hours(due_hours_ago),
        slot: 0,
    };
    (id, event.into())
}

fn price(unit_price: i64) -> DomainEvent {
    PriceChanged {
        sku: "SKU-CAPS".into(),
        title: "Coffee capsules".into(),
        unit_price,
        currency: "RUB".into(),
        available: true,
        delivery_days: 1,
        changed_at: now(),
    }
    .into()
}

async fn catch_up_voice<S: EventStore>(
    store: &S,
    client: &redis::Client,
    keys: &RedisKeys,
    db: &ReadDb,
) -> anyhow::Result<()> {
    let head = Some(store.head().await?);
    let board = StatusBoard::default();
    Runner::new(
        store.clone(),
        RedisSink::new(client.clone(), keys.clone(), VoiceDueProjection),
        RunnerOptions::default(),
        board.clone(),
    )
    .run_until(head)
    .await?;
    Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), RemindersProjection),
        RunnerOptions::default(),
        board.clone(),
    )
    .run_until(head)
    .await?;
    Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), CatalogProjection),
        RunnerOptions::default(),
        board,
    )
    .run_until(head)
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_answer_comes_from_redis_and_matches_the_relational_model() -> anyhow::Result<()>
{
    let db = SqliteTestDb::new().await?;
    let read = ReadDb::connect(&db.url).await?;
    let (client, keys) = (shared_redis()?, RedisKeys::new(prefix()));
    let (older, e1) = scheduled("u1", 5);
    let (newer, e2) = scheduled("u1", 1);
    let (_, future) = scheduled("u1", -48);
    append(&db.store, format!("reminder-{older}"), e1).await?;
    append(&db.store, format!("reminder-{newer}"), e2).await?;
    append(&db.store, "reminder-later".into(), future).await?;
    append(&db.store, "price-SKU-CAPS".into(), price(1150)).await?;
    catch_up_voice(&db.store, &client, &keys, &read).await?;

    let from_redis = voice::due_from_redis(&client, &keys, "u1", now(), 5).await?;
    assert_eq!(
        from_redis.len(),
        2,
        "the one due in two days is not offered yet"
    );
    assert_eq!(
        from_redis[0].reminder_id,
        older.to_string(),
        "oldest due first"
    );
    assert_eq!(from_redis[0].unit_price, 1150, "the current catalog price");
    assert!(
        from_redis[0].text.contains("Coffee capsules") && from_redis[0].text.contains("11.50 RUB"),
        "{}",
        from_redis[0].text
    );
    assert_eq!(
        from_redis,
        voice::due_from_relational(&read, "u1", now(), 5).await?,
        "both models agree"
    );

    append(
        &db.store,
        format!("reminder-{older}"),
        ReorderAccepted {
            reminder_id: older,
            user_id: "u1".into(),
            order_id: Uuid::new_v4(),
            accepted_at: now(),
            quote: None,
        }
        .into(),
    )
    .await?;
    catch_up_voice(&db.store, &client, &keys, &read).await?;
    let after = voice::due_from_redis(&client, &keys, "u1", now(), 5).await?;
    assert_eq!(
        after
            .iter()
            .map(|o| o.reminder_id.clone())
            .collect::<Vec<_>>(),
        vec![newer.to_string()]
    );
    clear_redis(&client, keys.prefix()).await
}

/// The script finds an offer's SKU without decoding the offer where it can; an offer
/// whose JSON holds escapes (here a backslash in the SKU, quotes in the title) is
/// decoded, so it is still priced from the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_with_escaped_text_are_priced_from_the_catalog() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let read = ReadDb::connect(&db.url).await?;
    let (client, keys) = (shared_redis()?, RedisKeys::new(prefix()));
    let sku = "SKU\\TEA";
    let id = Uuid::new_v4();
    let scheduled = ReminderScheduled {
        reminder_id: id,
        user_id: "u1".into(),
        sku: sku.into(),
        title: "Tea \"sku\":\"SKU-CAPS\"".into(),
        quantity: 1,
        last_unit_price: 1000,
        currency: "RUB".into(),
        due_at: now() - Days::hours(1),
        slot: 0,
    };
    append(&db.store, format!("reminder-{id}"), scheduled.into()).await?;
    let tea = PriceChanged {
        sku: sku.into(),
        title: "Tea".into(),
        unit_price: 700,
        currency: "RUB".into(),
        available: true,
        delivery_days: 1,
        changed_at: now(),
    };
    append(&db.store, "price-tea".into(), tea.into()).await?;
    append(&db.store, "price-SKU-CAPS".into(), price(1150)).await?;
    catch_up_voice(&db.store, &client, &keys, &read).await?;
    let offers = voice::due_from_redis(&client, &keys, "u1", now(), 5).await?;
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].sku, sku);
    assert_eq!(offers[0].unit_price, 700, "the tea's catalog price");
    assert_eq!(
        offers,
        voice::due_from_relational(&read, "u1", now(), 5).await?,
        "both models agree"
    );
    clear_redis(&client, keys.prefix()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboards_rank_distance_per_sport_and_week() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let (client, keys) = (shared_redis()?, RedisKeys::new(prefix()));
    append_completed_workouts(&db.store, 9, 3).await?;
    append_completed_workouts(&db.store, 1, 1).await?;
    let head = Some(db.store.head().await?);
    let sink = RedisSink::new(client.clone(), keys.clone(), LeaderboardProjection);
    let fail_point = sink.fail_point();
    fail_point.arm(2);
    let options = RunnerOptions {
        batch_size: 3,
        backoff: Duration::from_millis(1),
        ..RunnerOptions::default()
    };
    Runner::new(db.store.clone(), sink, options, StatusBoard::default())
        .run_until(head)
        .await?;
    assert_eq!(fail_point.fired(), 2, "the fail point did not fire");
    let top = leaderboard::top(&client, &keys, "running", &iso_week(now()), 10).await?;
    assert_eq!(top.len(), 3);
    assert_eq!(
        (top[0].rank, top[0].user_id.as_str(), top[0].distance_m),
        (1, "runner0", 4000.0),
        "no batch applied twice"
    );
    assert_eq!(top[1].distance_m, 3000.0);
    clear_redis(&client, keys.prefix()).await
}

/// A Redis server of the test's own, to kill and restart.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    fn start(port: u16, dir: &std::path::Path) -> anyhow::Result<()> {
        let status = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ])
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .arg("--dir")
            .arg(dir)
            .status()?;
        anyhow::ensure!(status.success(), "redis-server did not start");
        Ok(())
    }

    async fn new() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("eventfold-redis-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Self::start(port, &dir)?;
        let redis = Self { port, dir };
        redis.wait_until_up().await?;
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_until_up(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url())?;
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("redis on {} did not come up", self.port)
    }

    fn kill(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .status();
    }

    async fn restart(&self) -> anyhow::Result<()> {
        Self::start(self.port, &self.dir)?;
        self.wait_until_up().await
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    for _ in 0..200 {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{what} did not happen within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_voice_answer_survives_a_redis_outage_and_redis_converges_after() -> anyhow::Result<()>
{
    let own = OwnRedis::new().await?;
    let db = SqliteTestDb::new().await?;
    let read = ReadDb::connect(&db.url).await?;
    let client = redis::Client::open(own.url())?;
    let keys = RedisKeys::new("ef:");
    let options = RunnerOptions {
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        poll_interval: Duration::from_millis(100),
        ..RunnerOptions::default()
    };
    let set = ProjectionSet::new(
        db.store.clone(),
        read.clone(),
        Some(RedisTarget {
            client: client.clone(),
            keys: keys.clone(),
        }),
        options,
        StatusBoard::default(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut running = set.spawn(stopped);

    let (first, e1) = scheduled("u9", 2);
    append(&db.store, format!("reminder-{first}"), e1).await?;
    let target = Some((&client, &keys));
    eventually("the Redis model to show the first reminder", || async {
        let (offers, source) = voice::due_now(target, None, &read, "u9", now(), 5).await?;
        Ok(source == Source::Redis && offers.len() == 1)
    })
    .await?;

    own.kill();
    let (second, e2) = scheduled("u9", 1);
    append(&db.store, format!("reminder-{second}"), e2).await?;
    eventually(
        "the relational fallback to answer with both reminders",
        || async {
            let (offers, source) = voice::due_now(target, None, &read, "u9", now(), 5).await?;
            Ok(source == Source::Relational && offers.len() == 2)
        },
    )
    .await?;

    own.restart().await?;
    let converged = eventually("the Redis model to converge after the restart", || async {
        let offers = voice::due_from_redis(&client, &keys, "u9", now(), 5).await?;
        Ok(offers.len() == 2)
    })
    .await;
    if converged.is_err() {
        eprintln!("{:#?}", set.board().statuses());
    }
    converged?;
    let (offers, source) = voice::due_now(target, None, &read, "u9", now(), 5).await?;
    assert_eq!((source, offers.len()), (Source::Redis, 2));

    stop.send(true)?;
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(())
}
