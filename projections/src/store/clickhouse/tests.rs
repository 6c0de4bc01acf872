//! The ClickHouse target and store: names it takes, and its catalogue against the real
//! server (`scripts/setup` starts it).

use super::*;

/// The catalogue is read while other tables come and go (another model's swap, a
/// reset, a test's database dropped): 18.16 failed a `system.tables` query for a
/// table dropped while it was listed ("Code: 60 … Table … doesn't exist"), and a
/// `replay` that met it stopped.
// (Two threads: the looks and the drops overlap; on one they mostly take turns.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_is_read_while_other_tables_are_dropped() -> anyhow::Result<()> {
    let db = crate::testing::ClickHouseTestDb::new().await?;
    let target = db.target.clone();
    target
        .run("CREATE TABLE kept (x UInt8) ENGINE = ReplacingMergeTree ORDER BY x")
        .await?;
    target
        .run("CREATE TABLE retired_0badf00d_kept (x UInt8) ENGINE = MergeTree ORDER BY x")
        .await?;
    let churn = {
        let target = target.clone();
        tokio::spawn(async move {
            for n in 0..150 {
                let table = format!("churn_{n}");
                target
                    .run(&format!(
                        "CREATE TABLE {table} (x UInt8) ENGINE = MergeTree ORDER BY x"
                    ))
                    .await?;
                target.run(&format!("DROP TABLE {table}")).await?;
            }
            Ok::<_, Error>(())
        })
    };
    let store = ClickHouseStore::new(target.clone());
    let kept = vec!["kept".to_owned()];
    let mut looks = 0;
    while !churn.is_finished() {
        assert!(target.exists("kept").await?, "look {looks}");
        assert!(!target.exists("churn_none").await?, "look {looks}");
        assert_eq!(store.retired(&kept).await?.len(), 1, "look {looks}");
        assert_eq!(store.checksum("kept").await?.0, 0, "look {looks}");
        looks += 1;
    }
    churn.await??;
    assert!(looks > 10, "only {looks} looks while the tables churned");
    Ok(())
}

#[test]
fn the_database_is_a_plain_identifier_of_eventfolds_own() {
    let url = "http://127.0.0.1:8123";
    for good in ["eventfold", "_x", "analytics_2", &"a".repeat(100)] {
        assert!(ClickHouseTarget::new(url, good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "1abc",
        "a b",
        "x`y",
        "bad;name",
        "é",
        "system",
        "SYSTEM",
        "information_schema",
        "INFORMATION_SCHEMA",
        &"a".repeat(101),
    ] {
        assert!(
            matches!(
                ClickHouseTarget::new(url, bad),
                Err(Error::InvalidSetting(_))
            ),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn error_codes_are_read_whole_in_both_servers_messages() {
    let old = "Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist., e.what() = DB::Exception";
    let current = "Code: 60. DB::Exception: Table x.y does not exist. (UNKNOWN_TABLE)";
    for message in [old, current] {
        assert!(has_code(message, &["60"]), "{message}");
        assert!(!has_code(message, &["6", "16"]), "{message}");
    }
    assert!(!has_code("Code: 600. DB::Exception: …", &["60"]));
    assert!(!has_code("no code at all", &["60"]));
}
