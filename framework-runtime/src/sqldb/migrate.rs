//! Migrations: the `_ovation_migrations` ledger, checksums of applied files, and the tables
//! Ovation keeps in every service database.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection};

use super::{DatabaseDef, SetupError};

pub(super) async fn apply_migrations(
    conn: &mut PgConnection,
    database: &str,
    def: &DatabaseDef,
) -> Result<(), SetupError> {
    let other = |source| SetupError::Other {
        database: database.to_owned(),
        source,
    };
    // Checked first: `CREATE TABLE IF NOT EXISTS` alone makes Postgres send a notice that
    // would be logged at every start.
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass('_ovation_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(other)?;
    if !has_table {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _ovation_migrations (
            version BIGINT PRIMARY KEY,
            file TEXT NOT NULL,
            checksum TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
        )
        .await
        .map_err(other)?;
    }
    // The outbox of `Topic::publish_in`: messages written in the service's own transactions,
    // moved to the topic by the relay once committed (see `pubsub`).
    let has_outbox: bool = sqlx::query_scalar("SELECT to_regclass('_ovation_outbox') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(other)?;
    if !has_outbox {
        sqlx::raw_sql(OUTBOX_SCHEMA)
            .execute(&mut *conn)
            .await
            .map_err(other)?;
    }
    let applied: BTreeMap<i64, String> =
        sqlx::query_as::<_, (i64, String)>("SELECT version, checksum FROM _ovation_migrations")
            .fetch_all(&mut *conn)
            .await
            .map_err(other)?
            .into_iter()
            .collect();
    for m in def.current_migrations()? {
        let checksum = hex::encode(Sha256::digest(m.sql.as_bytes()));
        if let Some(done) = applied.get(&m.version) {
            if *done != checksum {
                return Err(SetupError::MigrationChanged {
                    database: def.name.to_owned(),
                    file: m.file.to_owned(),
                });
            }
            continue;
        }
        let failed = |e: sqlx::Error| SetupError::Migration {
            database: def.name.to_owned(),
            file: m.file.to_owned(),
            message: match &e {
                sqlx::Error::Database(db) => {
                    let at = db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .and_then(|pg| match pg.position() {
                            Some(sqlx::postgres::PgErrorPosition::Original(at)) => Some(at),
                            _ => None,
                        })
                        .map(|at| line_and_column(m.sql, at))
                        .map(|(line, column)| format!(" (line {line}, column {column})"))
                        .unwrap_or_default();
                    format!("{}{at}", db.message())
                }
                other => other.to_string(),
            },
        };
        let mut tx = conn.begin().await.map_err(other)?;
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO _ovation_migrations (version, file, checksum) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.file)
        .bind(&checksum)
        .execute(&mut *tx)
        .await
        .map_err(other)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(database = def.name, file = m.file, "applied migration");
    }
    Ok(())
}

/// The 1-based line and column of character `at` (1-based, as Postgres counts) of `sql`.
fn line_and_column(sql: &str, at: usize) -> (usize, usize) {
    let before: String = sql.chars().take(at.saturating_sub(1)).collect();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Tables Ovation keeps in every service database, beside the user's migrations. Part of the
/// template hash, so a change here builds new test templates.
pub(crate) const OUTBOX_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS _ovation_outbox (
        seq BIGSERIAL PRIMARY KEY,
        id UUID NOT NULL,
        topic TEXT NOT NULL,
        payload JSONB NOT NULL,
        published_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        traceparent TEXT
    );";
