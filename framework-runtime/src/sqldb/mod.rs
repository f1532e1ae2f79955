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
use std::path::Path;
use std::sync::Mutex;

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
    /// The migrations folder the files were embedded from (absolute); `None` for the
    /// framework's own databases.
    pub folder: Option<&'static str>,
    /// Whether the migrations are read from `folder` while it exists (the app's debug builds),
    /// rather than only embedded (its release builds): see [`DatabaseDef::current_migrations`].
    pub from_folder: bool,
}

impl DatabaseDef {
    /// The migrations to apply, by version.
    ///
    /// A debug build whose migrations folder still exists (a checkout) reads the folder as it
    /// is now: cargo rebuilds a crate when an embedded file changes, but not when a file is
    /// added to a folder, so a new migration is applied by `cargo run` and `cargo test` without
    /// a build script. A release build applies what it embedded, and refuses to start where
    /// the folder holds a migration it does not (see [`DatabaseDef::check_built`]).
    pub fn current_migrations(&self) -> Result<&'static [Migration], SetupError> {
        match self.folder {
            Some(folder) if self.from_folder && Path::new(folder).is_dir() => {
                read_folder(self.name, folder)
            }
            _ => {
                self.check_built()?;
                Ok(self.migrations)
            }
        }
    }

    /// Fails when the migrations folder, where it still exists (a checkout, not a deployed
    /// image), holds a migration this build did not embed: the app would otherwise serve on
    /// the old schema without a word.
    fn check_built(&self) -> Result<(), SetupError> {
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
        for m in self.current_migrations().unwrap_or(self.migrations) {
            h.update(m.file.as_bytes());
            h.update([0]);
            h.update(m.sql.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..6])
    }
}

/// The `<number>_<name>.up.sql` files of `folder`, by version, read once per process (the
/// same rules as `database!`'s).
fn read_folder(database: &'static str, folder: &str) -> Result<&'static [Migration], SetupError> {
    static READ: Mutex<BTreeMap<&'static str, &'static [Migration]>> = Mutex::new(BTreeMap::new());
    let mut read = READ.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(migrations) = read.get(database) {
        return Ok(migrations);
    }
    let found =
        migration_files(Path::new(folder)).map_err(|message| SetupError::MigrationsFolder {
            database: database.to_owned(),
            folder: folder.to_owned(),
            message,
        })?;
    let migrations: &'static [Migration] = Box::leak(
        found
            .into_iter()
            .map(|(version, file, sql)| Migration {
                version,
                file: Box::leak(file.into_boxed_str()),
                sql: Box::leak(sql.into_boxed_str()),
            })
            .collect(),
    );
    read.insert(database, migrations);
    Ok(migrations)
}

#[doc(hidden)]
/// `(version, file name, SQL)` of each `<number>_<name>.up.sql` file of `folder`, by version:
/// the rules of `database!`, for reading a folder after the build.
pub fn migration_files(folder: &Path) -> Result<Vec<(i64, String, String)>, String> {
    let entries = std::fs::read_dir(folder).map_err(|e| e.to_string())?;
    let mut found: Vec<(i64, String, String)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".sql") || file.ends_with(".down.sql") {
            continue;
        }
        let version = file
            .strip_suffix(".up.sql")
            .and_then(|stem| stem.split_once('_'))
            .filter(|(_, label)| !label.is_empty())
            .and_then(|(n, _)| n.parse::<i64>().ok())
            .ok_or_else(|| format!("{file} is not named `<number>_<name>.up.sql`"))?;
        if let Some((_, other, _)) = found.iter().find(|(v, _, _)| *v == version) {
            return Err(format!(
                "migrations {other} and {file} have the same number {version}"
            ));
        }
        let sql = std::fs::read_to_string(entry.path()).map_err(|e| format!("{file}: {e}"))?;
        found.push((version, file, sql));
    }
    found.sort_by_key(|(v, _, _)| *v);
    Ok(found)
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
