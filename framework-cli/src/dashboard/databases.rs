//! The Databases page: each service database's tables with their columns and types, its
//! applied migrations, the first rows of a table (read-only, paged), and an SQL box that runs
//! one read-only query (a `READ ONLY` transaction with a statement timeout).
//!
//! Only the databases the app declares are reachable, and a table only by a name the
//! database's catalog lists; values never reach SQL text except as the query a developer typed.

use std::fmt::Write as _;
use std::time::Duration;

use ovation::sqlx::{self, Connection, PgConnection};
use serde_json::Value;

use super::esc;

/// Rows per page of a table.
pub const PAGE: i64 = 50;
/// Rows shown of a query's result.
const QUERY_ROWS: i64 = 200;
/// How long a query may run.
const TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(server: &ovation::sqldb::Server, database: &str) -> Result<PgConnection, String> {
    PgConnection::connect_with(&server.options(database))
        .await
        .map_err(|e| format!("cannot connect to {database}: {e}"))
}

/// One table of a database: its columns and their types.
#[derive(Debug)]
pub struct Table {
    pub name: String,
    pub columns: Vec<(String, String, bool)>,
}

/// The tables (public schema, Ovation's own bookkeeping excluded) and applied migrations.
pub async fn describe(
    server: &ovation::sqldb::Server,
    database: &str,
) -> Result<(Vec<Table>, Vec<(i64, String, String)>), String> {
    let mut conn = connect(server, database).await?;
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
           AND c.table_name NOT LIKE '\\_ovation%'
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let mut tables: Vec<Table> = Vec::new();
    for (table, column, kind, nullable) in columns {
        if tables.last().is_none_or(|t| t.name != table) {
            tables.push(Table {
                name: table.clone(),
                columns: Vec::new(),
            });
        }
        let last = tables.last_mut().expect("just pushed");
        last.columns.push((column, kind, nullable == "YES"));
    }
    let migrations: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT version, file, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS') FROM _ovation_migrations ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    let _ = conn.close().await;
    Ok((tables, migrations))
}

/// Rows `page * PAGE ..` of `table` as JSON objects, and whether more follow. `table` must be
/// one [`describe`] listed.
pub async fn rows(
    server: &ovation::sqldb::Server,
    database: &str,
    table: &str,
    page: i64,
) -> Result<(Vec<Value>, bool), String> {
    let mut conn = connect(server, database).await?;
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let sql = format!(
        "SELECT row_to_json(t)::text FROM {quoted} t LIMIT {} OFFSET {}",
        PAGE + 1,
        page.max(0) * PAGE
    );
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    let texts: Vec<String> = sqlx::query_scalar(&sql)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tx.rollback().await;
    let mut rows: Vec<Value> = texts
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect();
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    Ok((rows, more))
}

/// Runs one read-only query; its rows as JSON objects (at most 200).
pub async fn query(
    server: &ovation::sqldb::Server,
    database: &str,
    sql: &str,
) -> Result<Vec<Value>, String> {
    let sql = sql.trim().trim_end_matches(';').trim();
    if sql.is_empty() {
        return Err("the query is empty".into());
    }
    if sql.contains(';') {
        return Err("one statement at a time".into());
    }
    let mut conn = connect(server, database).await?;
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {}",
        TIMEOUT.as_millis()
    ))
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    // A query's rows come back as JSON, one object per row; any other statement runs as is,
    // so Postgres itself says why it cannot (a write in a read-only transaction).
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let result: Result<Vec<String>, sqlx::Error> =
        if matches!(first.as_str(), "SELECT" | "WITH" | "VALUES" | "TABLE") {
            let wrapped = format!("SELECT row_to_json(q)::text FROM ({sql}) q LIMIT {QUERY_ROWS}");
            sqlx::query_scalar(&wrapped).fetch_all(&mut *tx).await
        } else {
            sqlx::query(sql).execute(&mut *tx).await.map(|_| Vec::new())
        };
    let _ = tx.rollback().await;
    match result {
        Ok(texts) => Ok(texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()),
        Err(sqlx::Error::Database(e)) => Err(e.message().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Rows (JSON objects) as an HTML table, columns in the first row's order.
pub fn rows_table(rows: &[Value]) -> String {
    let Some(first) = rows.first().and_then(Value::as_object) else {
        return "<p class=\"muted\">No rows.</p>".into();
    };
    let columns: Vec<&String> = first.keys().collect();
    let mut out = String::from("<div class=\"scroll\"><table class=\"traces rows\"><thead><tr>");
    for c in &columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for c in &columns {
            let v = &row[c.as_str()];
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => "null".into(),
                other => other.to_string(),
            };
            let _ = write!(out, "<td><code>{}</code></td>", esc(&text));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}
