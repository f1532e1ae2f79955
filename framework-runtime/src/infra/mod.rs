//! Managed local infrastructure: a private Postgres cluster (and, when the app needs them, a
//! `nats-server` and a `redis-server`), without Docker.
//!
//! When no `DATABASE_URL` is given, Ovation runs its own Postgres from the server binaries
//! installed on the machine:
//!
//! - the binaries are looked up on `PATH`, then in `/usr/lib/postgresql/*/bin` (Debian, Ubuntu)
//!   and a few other usual places;
//! - `initdb` runs once into `<data dir>/postgres/data`, with a generated password for the
//!   superuser `ovation` (kept in `<data dir>/postgres/password`, readable only by its owner);
//! - `postgres` listens on a free port on 127.0.0.1 only (no Unix socket), and later runs reuse
//!   the cluster and, while it runs, the server;
//! - a file lock serialises set-up, so parallel processes (test binaries, say) never race;
//! - every process using the cluster holds a shared lock on `clients.lock`; a small watchdog
//!   stops the server once no process has held it for [`IDLE_STOP`], so nothing is left running.
//!
//! Postgres refuses to run as root (`initdb: error: cannot be run as root`). When this process
//! is root (CI containers often are), `initdb`, `postgres` and the watchdog run as the
//! unprivileged `postgres` account, and the data folder is handed to it. Every folder above the
//! data folder must then be traversable by that account.

use std::path::PathBuf;
use std::time::Duration;

mod nats;
mod postgres;
mod process;
mod redis;

pub use nats::ManagedNats;
pub use postgres::ManagedPostgres;
pub use redis::ManagedRedis;

/// How long the managed server keeps running after the last process using it exits.
pub const IDLE_STOP: Duration = Duration::from_secs(20);
/// Why the managed Postgres could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH nor in \
         /usr/lib/postgresql/*/bin.\n  Install PostgreSQL's server (Debian/Ubuntu: `apt install \
         postgresql`, Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql@16`), \
         or set DATABASE_URL to a Postgres server on which Ovation may create databases."
    )]
    PostgresNotFound,
    #[error(
        "this process runs as root, and Postgres refuses to run as root; Ovation runs it as the \
         `postgres` account instead, but that account does not exist.\n  Create it (`useradd \
         --system postgres`), run as another user, or set DATABASE_URL."
    )]
    NoUnprivilegedUser,
    #[error(
        "the managed Postgres runs as `postgres`, which cannot enter {0} (root-only \
         permissions).\n  Set OVATION_DATA_DIR to a folder every user can traverse (e.g. under \
         /var/tmp), or set DATABASE_URL."
    )]
    DataDirNotTraversable(PathBuf),
    #[error(
        "the NATS backend was chosen (OVATION_PUBSUB=nats) but `nats-server` was not found on \
         PATH nor in /usr/sbin.\n  Install it (Debian/Ubuntu: `apt install nats-server`), give a \
         server with OVATION_PUBSUB=nats://HOST:PORT, or use the default Postgres backend."
    )]
    NatsNotFound,
    #[error(
        "the app declares a cache (ovation::cache!) but `redis-server` was not found on PATH \
         nor in /usr/bin.\n  Install it (Debian/Ubuntu: `apt install redis-server`, Fedora: \
         `dnf install redis`, macOS: `brew install redis`), or set REDIS_URL to a Redis server."
    )]
    RedisNotFound,
    #[error("{action} failed: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
}

fn io_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> InfraError {
    move |source| InfraError::Io {
        action: action.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::postgres::{PgBinaries, version_key};
    use super::*;
    use std::fs;

    #[test]
    fn no_binaries_is_an_error_that_says_what_to_do() {
        let empty = std::env::temp_dir().join(format!("ovation-empty-{}", std::process::id()));
        fs::create_dir_all(&empty).unwrap();
        let err = PgBinaries::find_in(vec![empty.clone()]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, InfraError::PostgresNotFound));
        assert!(text.contains("apt install postgresql"), "{text}");
        assert!(text.contains("DATABASE_URL"), "{text}");
        let _ = fs::remove_dir(empty);
    }

    #[test]
    fn newest_postgres_version_sorts_first() {
        let mut dirs = [
            PathBuf::from("/usr/lib/postgresql/9.6/bin"),
            PathBuf::from("/usr/lib/postgresql/16/bin"),
            PathBuf::from("/usr/lib/postgresql/15/bin"),
        ];
        dirs.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
        assert_eq!(dirs[0], PathBuf::from("/usr/lib/postgresql/16/bin"));
    }
}
