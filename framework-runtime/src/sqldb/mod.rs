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
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use crate::error::Error;
use crate::runtime::service_of;

pub(crate) mod liveness;
mod migrate;
pub(crate) mod server;

pub(crate) use migrate::OUTBOX_SCHEMA;
pub(crate) use server::pool_options;
pub(crate) use server::{PgServer, SetupError};

#[doc(hidden)]
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
    /// The migrations folder the files were embedded from (absolute), for
    /// [`DatabaseDef::check_built`]; `None` for the framework's own databases.
    pub folder: Option<&'static str>,
}

impl DatabaseDef {
    /// Fails when the migrations folder, where it still exists (a checkout, not a deployed
    /// image), holds a migration this build did not embed: cargo rebuilds a crate when an
    /// embedded file changes, but not when a file is added to a folder, and the app would
    /// otherwise serve on the old schema without a word.
    pub fn check_built(&self) -> Result<(), SetupError> {
        let Some(folder) = self.folder else {
            return Ok(());
        };
        let Ok(entries) = std::fs::read_dir(folder) else {
            return Ok(());
        };
        let mut missing: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".up.sql"))
            .filter(|f| !self.migrations.iter().any(|m| m.file == f))
            .collect();
        missing.sort();
        match missing.into_iter().next() {
            None => Ok(()),
            Some(file) => Err(SetupError::MigrationNotBuilt {
                database: self.name.to_owned(),
                file,
                folder: folder.to_owned(),
            }),
        }
    }

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

#[doc(hidden)]
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
