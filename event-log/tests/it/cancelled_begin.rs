//! A transaction whose `BEGIN` is cancelled mid-way (a request past its deadline, a
//! client gone, a task aborted) must not leave its connection inside a transaction
//! when the pool hands that connection out again: the next borrower's statements
//! would run in it, hold its locks, and be lost with it (sqlx 0.8.6 does exactly that:
//! transact-rs/sqlx#4393; the workspace patches `sqlx-postgres`, see
//! `vendor/sqlx-postgres/PATCHED.md`).

use std::time::Duration;

use eventfold_event_log::testing::PgTestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_cancelled_mid_way_leaves_no_transaction_behind() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    // One connection, so the next borrower gets the one the cancelled begin used.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url())
        .await?;
    sqlx::query("CREATE TABLE cancelled_begin (n INT)")
        .execute(&pool)
        .await?;
    for _ in 0..5 {
        // The BEGIN reaches the server; its answer comes only after the future is gone.
        let begun = tokio::time::timeout(
            Duration::from_millis(50),
            pool.begin_with("BEGIN; SELECT pg_sleep(0.2)"),
        )
        .await;
        assert!(
            begun.is_err(),
            "the begin was not cancelled: nothing tested"
        );
        // An autocommitted write by the next borrower, then a look from elsewhere.
        sqlx::query("INSERT INTO cancelled_begin VALUES (1)")
            .execute(&pool)
            .await?;
        // Inside a leftover transaction the INSERT's transaction id is still assigned.
        let in_transaction: bool =
            sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
                .fetch_one(&pool)
                .await?;
        assert!(
            !in_transaction,
            "the pooled connection is still inside the cancelled BEGIN's transaction"
        );
    }
    let elsewhere = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url())
        .await?;
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cancelled_begin")
        .fetch_one(&elsewhere)
        .await?;
    assert_eq!(seen, 5, "autocommitted writes were not committed");
    Ok(())
}

/// The same on SQLite (its driver rolls a cancelled `BEGIN` back itself): a
/// `BEGIN IMMEDIATE` waiting for another writer's lock is cancelled; the writes the
/// pool's next borrower makes are committed, not kept in a stale transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_begin_cancelled_while_waiting_leaves_no_transaction_behind() -> anyhow::Result<()>
{
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr;

    let db = eventfold_event_log::testing::SqliteTestDb::new().await?;
    let options = || -> anyhow::Result<SqliteConnectOptions> {
        Ok(SqliteConnectOptions::from_str(&db.url)?.busy_timeout(Duration::from_secs(5)))
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options()?)
        .await?;
    let holder = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options()?)
        .await?;
    sqlx::query("CREATE TABLE cancelled_begin (n INT)")
        .execute(&pool)
        .await?;
    for _ in 0..3 {
        // Another writer holds the lock: the BEGIN IMMEDIATE waits for it.
        let held = holder.begin_with("BEGIN IMMEDIATE").await?;
        let begun = tokio::time::timeout(
            Duration::from_millis(50),
            pool.begin_with("BEGIN IMMEDIATE"),
        )
        .await;
        assert!(
            begun.is_err(),
            "the begin was not cancelled: nothing tested"
        );
        held.rollback().await?;
        sqlx::query("INSERT INTO cancelled_begin VALUES (1)")
            .execute(&pool)
            .await?;
    }
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cancelled_begin")
        .fetch_one(&holder)
        .await?;
    assert_eq!(seen, 3, "autocommitted writes were not committed");
    Ok(())
}
