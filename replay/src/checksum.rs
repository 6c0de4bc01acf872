//! Order-independent table checksums, for comparing a rebuild with the live model.

use std::hash::{Hash, Hasher};

use sqlx::{AnyConnection, Column, Row};

/// Rows and a checksum of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableChecksum {
    /// Row count.
    pub rows: u64,
    /// Sum of the rows' hashes (independent of row order).
    pub sum: u64,
}

/// Checksums `table`: every column of every row, rendered and hashed.
pub async fn table_checksum(
    conn: &mut AnyConnection,
    table: &str,
) -> Result<TableChecksum, sqlx::Error> {
    let sql = format!("SELECT * FROM {table}");
    // Streamed: a table of millions of rows is checksummed without holding it.
    let mut rows = sqlx::query(&sql).fetch(&mut *conn);
    let mut sum = 0u64;
    let mut count = 0u64;
    while let Some(row) = std::future::poll_fn(|cx| rows.as_mut().poll_next(cx)).await {
        let row = row?;
        count += 1;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (i, column) in row.columns().iter().enumerate() {
            column.name().hash(&mut hasher);
            let value = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                format!("{v:?}")
            } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                // Equal values, whatever the float/int storage class.
                format!(
                    "{:?}",
                    v.map(|f| if f.fract() == 0.0 {
                        format!("{}", f as i64)
                    } else {
                        f.to_string()
                    })
                )
            } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                format!("{v:?}")
            } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
                format!("{v:?}")
            } else {
                "?".to_owned()
            };
            value.hash(&mut hasher);
        }
        sum = sum.wrapping_add(hasher.finish());
    }
    Ok(TableChecksum { rows: count, sum })
}
