//! Helpers for tests against the real ClickHouse (`scripts/setup` starts it).

use crate::ClickHouseTarget;

/// A ClickHouse database of the test's own on 127.0.0.1:8123 (or `CLICKHOUSE_URL`),
/// dropped at the end.
#[derive(Debug)]
pub struct ClickHouseTestDb {
    /// The target in it.
    pub target: ClickHouseTarget,
    /// The server's URL.
    pub url: String,
}

impl ClickHouseTestDb {
    /// Creates the database.
    pub async fn new() -> crate::Result<Self> {
        let url = std::env::var("EVENTFOLD_TEST_CLICKHOUSE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8123".to_owned());
        Self::on(&url).await
    }

    /// Creates a database on the server at `url`.
    pub async fn on(url: &str) -> crate::Result<Self> {
        let name = format!("eventfold_test_{}", uuid::Uuid::new_v4().simple());
        let target = ClickHouseTarget::new(url, &name)?;
        target.ensure().await?;
        Ok(Self {
            target,
            url: url.to_owned(),
        })
    }
}

impl Drop for ClickHouseTestDb {
    fn drop(&mut self) {
        let (url, database) = (self.url.clone(), self.target.database().to_owned());
        // Drop cannot await: a runtime of its own, on a thread of its own, and a client
        // of its own. (A clone of the test's would reuse a pooled connection whose task
        // runs on the test's runtime, which this join blocks when that runtime has one
        // thread: the drop then waited forever.)
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(target) = ClickHouseTarget::new(&url, &database) {
                        let _ = target.drop_database().await;
                    }
                });
            }
        })
        .join();
    }
}
