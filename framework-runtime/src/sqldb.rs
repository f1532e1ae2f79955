//! Per-service Postgres databases: declaration, creation, migrations, pools.
//!
//! ```ignore
//! static DB: ovation::Database = ovation::database!("users", migrations = "./migrations");
//!
//! let user = sqlx::query_as::<_, User>("SELECT ... WHERE id = $1")
//!     .bind(id)
//!     .fetch_one(DB.pool())
//!     .await?;
//! ```
//!
//! `database!` embeds the migration files at compile time (`<n>_<name>.up.sql`, beside the
//! declaring file), so the binary carries its schema. At start-up each database the process
//! needs is created on the server if missing and its pending migrations run, each in its own
//! transaction, recorded in the table `_ovation_migrations` of that database. A migration that
//! was changed after it was applied, or that fails, stops start-up with the file name.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, Postgres, Transaction};

use crate::error::{ErrCode, Error};
use crate::runtime::service_of;

/// One migration file, embedded by [`database!`](crate::database).
#[derive(Debug)]
pub struct Migration {
    /// The number the file name starts with.
    pub version: i64,
    /// The file name, e.g. `1_create_users.up.sql`.
    pub file: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// What `database!` declares: the name and the migrations.
#[doc(hidden)]
#[derive(Debug)]
pub struct DatabaseDef {
    pub name: &'static str,
    pub module: &'static str,
    pub migrations: &'static [Migration],
}

impl DatabaseDef {
    /// The service that declares this database.
    pub fn service(&self) -> &'static str {
        service_of(self.module)
    }

    /// A hash of the migrations: names a test template, so a changed migration makes a new one.
    pub(crate) fn schema_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(OUTBOX_SCHEMA.as_bytes());
        for m in self.migrations {
            h.update(m.file.as_bytes());
            h.update([0]);
            h.update(m.sql.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..6])
    }
}

#[doc(hidden)]
#[derive(Debug)]
pub struct DatabaseEntry(pub &'static DatabaseDef);
inventory::collect!(DatabaseEntry);

/// Every database declared in the app, sorted by name, one entry per name.
pub fn declared() -> Vec<&'static DatabaseDef> {
    let mut by_name: BTreeMap<&str, &'static DatabaseDef> = BTreeMap::new();
    for entry in inventory::iter::<DatabaseEntry> {
        by_name.entry(entry.0.name).or_insert(entry.0);
    }
    by_name.into_values().collect()
}

/// A service's database, declared as a static with [`database!`](crate::database).
pub struct Database {
    def: &'static DatabaseDef,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.def.name)
            .finish()
    }
}

impl Database {
    #[doc(hidden)]
    pub const fn __new(def: &'static DatabaseDef) -> Self {
        Database { def }
    }

    /// The database's name.
    pub fn name(&self) -> &'static str {
        self.def.name
    }

    /// The connection pool of this database in the current app (or test).
    ///
    /// # Panics
    ///
    /// Outside an Ovation app or test: in a `main` that did not call [`crate::run`], or in a
    /// task spawned with `tokio::spawn` from a test (the test's context does not follow
    /// spawned tasks; spawn with [`crate::spawn`] instead). [`Database::try_pool`] returns the
    /// error instead.
    pub fn pool(&self) -> &'static PgPool {
        match self.try_pool() {
            Ok(pool) => pool,
            Err(e) => panic!("{e}"),
        }
    }

    /// The connection pool, or why there is none here.
    pub fn try_pool(&self) -> Result<&'static PgPool, Error> {
        let rt = crate::runtime::current()?;
        rt.pool(self.def.name).ok_or_else(|| {
            Error::internal(format!(
                "database `{}` is not available in this process: it belongs to service `{}`, \
                 which is not hosted here",
                self.def.name,
                self.def.service()
            ))
        })
    }

    /// Begins a transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, Error> {
        Ok(self.try_pool()?.begin().await?)
    }
}

/// Where databases live: a Postgres server, and how to connect to a database on it.
#[derive(Clone)]
pub struct PgServer {
    options: PgConnectOptions,
    /// SHA-256 of the URL the server was made from: the root of [`PgServer::derive_secret`].
    url_digest: [u8; 32],
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A database-level failure at start-up: creating a database or running its migrations.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("cannot connect to the Postgres server at {server}: {source}")]
    Connect { server: String, source: sqlx::Error },
    #[error("cannot create database `{database}`: {source}")]
    Create {
        database: String,
        source: sqlx::Error,
    },
    #[error("migration {file} of database `{database}` failed: {message}")]
    Migration {
        database: String,
        file: String,
        message: String,
    },
    #[error(
        "migration {file} of database `{database}` was changed after it was applied; \
         add a new migration instead of editing an applied one"
    )]
    MigrationChanged { database: String, file: String },
    #[error("database `{database}`: {source}")]
    Other {
        database: String,
        source: sqlx::Error,
    },
}

impl PgServer {
    /// A server from a URL such as `postgres://user:pw@host:5432/any`; the database part of
    /// the URL is replaced by each service database's name.
    pub fn from_url(url: &str) -> Result<PgServer, SetupError> {
        let options: PgConnectOptions = url.parse().map_err(SetupError::BadUrl)?;
        // Each finished statement is a `sqlx::query` event: DEBUG, or WARN past a second.
        // The log filter shows only the slow ones; tracing makes a span of every one.
        use sha2::Digest;
        Ok(PgServer {
            url_digest: sha2::Sha256::digest(url.as_bytes()).into(),
            options: options
                .log_statements(log::LevelFilter::Debug)
                .log_slow_statements(log::LevelFilter::Warn, std::time::Duration::from_secs(1)),
        })
    }

    /// A secret for `purpose`, derived from the server's URL (its credentials included): the
    /// same for every process that reaches the server with the same URL, and unknown to any
    /// that does not. The dashboard's read-only role takes its password from it.
    pub fn derive_secret(&self, purpose: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.url_digest)
            .expect("HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.options.get_host(), self.options.get_port())
    }

    /// Connect options for `database` on this server.
    pub fn options(&self, database: &str) -> PgConnectOptions {
        self.options.clone().database(database)
    }

    async fn maintenance(&self) -> Result<PgConnection, SetupError> {
        PgConnection::connect_with(&self.options("postgres"))
            .await
            .map_err(|source| SetupError::Connect {
                server: self.describe(),
                source,
            })
    }

    /// Creates `database` unless it exists.
    pub async fn create_database(&self, database: &str) -> Result<(), SetupError> {
        let mut conn = self.maintenance().await?;
        let create = |source| SetupError::Create {
            database: database.to_owned(),
            source,
        };
        // Two processes creating the same database at once make Postgres fail one of them
        // with a unique violation on pg_database; take turns instead.
        sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
            .bind(format!("ovation create {database}"))
            .execute(&mut conn)
            .await
            .map_err(create)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut conn)
                .await
                .map_err(create)?;
        let result = if exists {
            Ok(())
        } else {
            match conn
                .execute(format!("CREATE DATABASE {}", quote_ident(database)).as_str())
                .await
            {
                Ok(_) => Ok(()),
                // Created by a process that does not take our lock (an older Ovation).
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04" | "23505")) =>
                {
                    Ok(())
                }
                Err(e) => Err(create(e)),
            }
        };
        let _ = conn.close().await;
        result
    }

    /// Creates the database if needed, applies pending migrations, returns a pool.
    pub async fn open(
        &self,
        def: &DatabaseDef,
        max_connections: u32,
    ) -> Result<PgPool, SetupError> {
        self.create_database(def.name).await?;
        self.migrate(def.name, def).await?;
        Ok(pool_options(max_connections).connect_lazy_with(self.options(def.name)))
    }

    /// Applies the pending migrations of `def` to the database `database` on this server.
    pub async fn migrate(&self, database: &str, def: &DatabaseDef) -> Result<(), SetupError> {
        let other = |source| SetupError::Other {
            database: database.to_owned(),
            source,
        };
        let mut conn = PgConnection::connect_with(&self.options(database))
            .await
            .map_err(|source| SetupError::Connect {
                server: self.describe(),
                source,
            })?;
        // One migrator at a time per database, across processes.
        conn.execute("SELECT pg_advisory_lock(7249812391)")
            .await
            .map_err(other)?;
        let result = apply_migrations(&mut conn, database, def).await;
        let _ = conn.execute("SELECT pg_advisory_unlock(7249812391)").await;
        let _ = conn.close().await;
        result
    }

    /// Drops `database` if it exists, ending its sessions.
    pub async fn drop_database(&self, database: &str) -> Result<(), sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.options("postgres")).await?;
        conn.execute(
            format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(database)
            )
            .as_str(),
        )
        .await?;
        conn.close().await
    }

    /// Makes `database` a copy of `def`'s migrated schema, through a template database that is
    /// created (and migrated) once per distinct set of migrations.
    pub async fn clone_from_template(
        &self,
        def: &DatabaseDef,
        database: &str,
    ) -> Result<(), SetupError> {
        let template = format!("ovation_tpl_{}_{}", def.name, def.schema_hash());
        let other = |source| SetupError::Other {
            database: template.clone(),
            source,
        };
        let mut conn = self.maintenance().await?;
        // Serialise template creation across test processes; cloning needs no lock.
        let key = i64::from_str_radix(&def.schema_hash()[..12], 16).unwrap_or(1);
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut conn)
            .await
            .map_err(other)?;
        let ready: Option<Option<String>> = sqlx::query_scalar(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        )
        .bind(&template)
        .fetch_optional(&mut conn)
        .await
        .map_err(other)?;
        let result = async {
            if ready.as_ref().and_then(|c| c.as_deref()) != Some("ovation template ready") {
                // Missing, or left half-made by a crashed process.
                conn.execute(
                    format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&template)
                    )
                    .as_str(),
                )
                .await
                .map_err(other)?;
                conn.execute(format!("CREATE DATABASE {}", quote_ident(&template)).as_str())
                    .await
                    .map_err(other)?;
                self.migrate(&template, def).await?;
                conn.execute(
                    format!(
                        "COMMENT ON DATABASE {} IS 'ovation template ready'",
                        quote_ident(&template)
                    )
                    .as_str(),
                )
                .await
                .map_err(other)?;
            }
            Ok::<_, SetupError>(())
        }
        .await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut conn)
            .await;
        result?;
        conn.execute(
            format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_ident(database),
                quote_ident(&template)
            )
            .as_str(),
        )
        .await
        .map_err(|source| SetupError::Create {
            database: database.to_owned(),
            source,
        })?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Names of the databases on this server other than Postgres' own (`postgres`,
    /// `template0`, `template1`).
    pub async fn databases(&self) -> Result<Vec<String>, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.options("postgres")).await?;
        let names = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database
             WHERE datname NOT IN ('postgres', 'template0', 'template1') ORDER BY datname",
        )
        .fetch_all(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(names)
    }

    /// Names of the databases on this server that start with `prefix`.
    pub(crate) async fn databases_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.options("postgres")).await?;
        let names =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
                .bind(prefix)
                .fetch_all(&mut conn)
                .await?;
        let _ = conn.close().await;
        Ok(names)
    }
}

/// A pooled connection idle for longer than this is checked with a round trip before it is
/// handed out; one used more recently is handed out as it is.
///
/// sqlx checks every connection on every acquire (`test_before_acquire`): one more round trip
/// to Postgres per query outside a transaction, and per transaction — under load about a
/// quarter of all the round trips the shop's `POST /orders` makes, each waking a Postgres
/// backend. A connection that was fine a second ago is almost always fine now; one that is
/// not (the server restarted in that second) fails the one statement run on it, and sqlx
/// closes it. PgBouncer makes the same trade (`server_check_delay`, 30 s by default).
const CHECK_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < CHECK_IDLE_AFTER {
                    return Ok(true);
                }
                // `false` closes it quietly, and the pool hands out (or opens) another.
                Ok(conn.ping().await.is_ok())
            })
        })
}

async fn apply_migrations(
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
    for m in def.migrations {
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
                sqlx::Error::Database(db) => db.message().to_owned(),
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

/// Quotes an identifier for Postgres.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl From<SetupError> for Error {
    fn from(e: SetupError) -> Self {
        Error::new(ErrCode::Internal, "database set-up failed").with_source(e)
    }
}
