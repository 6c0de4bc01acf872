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

/// Checksums `table`: every column of every row, rendered and hashed. Both sides of a
/// comparison must be checksummed on the same engine (the renderings differ).
pub async fn table_checksum(
    conn: &mut AnyConnection,
    table: &str,
) -> Result<TableChecksum, sqlx::Error> {
    if conn.backend_name() == "PostgreSQL" {
        // In the server: no rows cross the wire, so the live model (held still during
        // a swap) waits less. A row's text renders every column; floats in their
        // shortest exact form.
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, COALESCE(SUM(hashtextextended(t::text, 0)), 0)::TEXT AS s \
             FROM {table} t"
        ))
        .fetch_one(&mut *conn)
        .await?;
        let rows: i64 = row.try_get("n")?;
        let total: String = row.try_get("s")?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        total.hash(&mut hasher);
        return Ok(TableChecksum {
            rows: rows.max(0) as u64,
            sum: hasher.finish(),
        });
    }
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
