//! A process's leases end with it: the keeper's connection, and every lock it held, go
//! once the last `Leases` is dropped.

use std::time::Duration;

use eventfold_event_log::testing::PgTestDb;
use eventfold_projections::{owners, Leases, ReadDb, StatusBoard};

async fn keeper_connections(db: &ReadDb, owner: &str) -> anyhow::Result<i64> {
    let pool = db.native_pg().expect("a PostgreSQL read store");
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(owner)
    .fetch_one(pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_leases_ends_the_keeper_and_releases_its_locks() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    let db = ReadDb::connect(&pg.url()).await?;
    let owner = format!("lease-test-{}", uuid::Uuid::new_v4().simple());
    let leases = Leases::start(&db, owner.clone(), StatusBoard::default());
    let mut held = leases.clone().want("test.v1");
    tokio::time::timeout(Duration::from_secs(10), held.wait_for(|held| *held)).await??;
    assert_eq!(keeper_connections(&db, &owner).await?, 1);
    assert_eq!(
        owners(&db, &["test.v1"]).await?.get("test.v1"),
        Some(&owner)
    );

    drop(leases);
    let mut gone = false;
    for _ in 0..100 {
        if keeper_connections(&db, &owner).await? == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the keeper outlived its leases");
    assert!(owners(&db, &["test.v1"]).await?.is_empty());
    Ok(())
}
