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
    let rows = sqlx::query(&format!("SELECT * FROM {table}"))
        .fetch_all(&mut *conn)
        .await?;
    let mut sum = 0u64;
    for row in &rows {
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
    Ok(TableChecksum {
        rows: rows.len() as u64,
        sum,
    })
}
