//! The Postgres server that holds the service databases: connecting, creating, migrating,
//! cloning test templates, dropping.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

use super::DatabaseDef;
use super::migrate::apply_migrations;
use crate::error::{ErrCode, Error};

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
    #[error(
        "migration {file} of database `{database}` is in {folder} but not in this release build \
         of the app: cargo rebuilds when an embedded migration changes, not when a new file \
         appears (debug builds read the folder). Build again after touching the file that \
         declares `database!(\"{database}\")`"
    )]
    MigrationNotBuilt {
        database: String,
        file: String,
        folder: String,
    },
    #[error("the migrations of database `{database}` in {folder}: {message}")]
    MigrationsFolder {
        database: String,
        folder: String,
        message: String,
    },
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

    /// This server with commits that return before they are flushed to disk
    /// (`synchronous_commit = off`), for databases that are thrown away anyway: a crash of the
    /// server may lose the last few hundred milliseconds of commits, never corrupt a database.
    /// Tests use it; apps never do.
    pub fn throwaway(mut self) -> PgServer {
        self.options = self.options.options([("synchronous_commit", "off")]);
        self
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
        // Fails before any template is chosen, should the migrations folder be unreadable.
        def.current_migrations()?;
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

    /// Takes one of the spare copies of `def`'s current template ([`PgServer::make_spares`])
    /// as `database`, by renaming it: a catalog update, where a copy has the server write the
    /// whole database. `false` when none is left.
    pub(crate) async fn claim_spare(
        &self,
        def: &DatabaseDef,
        database: &str,
    ) -> Result<bool, SetupError> {
        let prefix = spare_prefix(def);
        let mut conn = self.maintenance().await?;
        let spares: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)
             ORDER BY random() LIMIT 4",
        )
        .bind(&prefix)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        let mut claimed = false;
        for spare in spares {
            // Another process may rename it first: this one then fails, and tries the next.
            let rename = format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(&spare),
                quote_ident(database)
            );
            if conn.execute(rename.as_str()).await.is_ok() {
                claimed = true;
                break;
            }
        }
        let _ = conn.close().await;
        Ok(claimed)
    }

    /// Copies `def`'s current template until `count` spares are ready to claim, and drops the
    /// spares of its earlier schemas, which no test can use.
    pub(crate) async fn make_spares(
        &self,
        def: &DatabaseDef,
        count: usize,
    ) -> Result<(), SetupError> {
        let current = spare_prefix(def);
        let other = |source| SetupError::Other {
            database: current.clone(),
            source,
        };
        let mut ready = 0;
        for name in self.databases_with_prefix("ovs_").await.map_err(other)? {
            // Only the spares of this database: other names are left alone, whatever they are.
            if spare_of(&name).is_some_and(|(of, _)| of == def.name) {
                if name.starts_with(&current) {
                    ready += 1;
                } else {
                    let _ = self.drop_database(&name).await;
                }
            }
        }
        for _ in ready..count {
            let name = format!("{current}{:08x}", rand::random::<u32>());
            self.clone_from_template(def, &name).await?;
        }
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

/// The start of the names of `def`'s spare test databases: `ovs_<name>_<schema hash>_`,
/// then a random suffix.
fn spare_prefix(def: &DatabaseDef) -> String {
    format!("ovs_{}_{}_", def.name, def.schema_hash())
}

/// The database name and schema hash of the spare `name`, if it is one (`ovs_` + name, `_`,
/// 12 hex digits, `_`, 8 hex digits).
fn spare_of(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("ovs_")?;
    let (rest, suffix) = rest.rsplit_once('_')?;
    let (database, hash) = rest.rsplit_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(suffix, 8) && hex(hash, 12) && !database.is_empty()).then_some((database, hash))
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

impl From<SetupError> for Error {
    fn from(e: SetupError) -> Self {
        Error::new(ErrCode::Internal, "database set-up failed").with_source(e)
    }
}

/// Quotes an identifier for Postgres.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::spare_of;

    #[test]
    fn spare_names_are_recognised_and_nothing_else() {
        assert_eq!(
            spare_of("ovs_users_0123456789ab_deadbeef"),
            Some(("users", "0123456789ab"))
        );
        assert_eq!(
            spare_of("ovs_ovation_pubsub_0123456789ab_deadbeef"),
            Some(("ovation_pubsub", "0123456789ab"))
        );
        for other in [
            "ovs_users",
            "ovs_users_0123456789ab",
            "ovs__0123456789ab_deadbeef",
            "ovs_users_0123456789ab_deadbeefff",
            "ovs_users_xyz3456789ab_deadbeef",
            "ovt_1_2_users",
            "users",
        ] {
            assert_eq!(spare_of(other), None, "{other}");
        }
    }
}
