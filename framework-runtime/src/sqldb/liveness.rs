//! Whether a process is alive, as Postgres sees it: each process that leases rows (Pub/Sub
//! deliveries, workflow runs) holds a session advisory lock keyed by a random number, its
//! liveness key, on a connection of its own. When the process dies its connection closes and
//! the lock disappears from `pg_locks`, so the others can take its rows over within a second
//! instead of waiting for the leases to run out.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

/// The liveness keys of the processes alive now, as an SQL array. A bigint advisory lock shows
/// in `pg_locks` as classid (high half) and objid (low half).
pub(crate) const LIVE_KEYS: &str = "ARRAY(
    SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 1 AND granted)";

/// How long [`hold`] waits before trying again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Holds the lock `key` on a connection of `pool`'s server until `stop` changes, taking it
/// again after a lost connection.
pub(crate) async fn hold(pool: &PgPool, key: i64, stop: watch::Receiver<bool>) {
    hold_reporting(pool, key, stop, None).await
}

/// [`hold`], telling `held` whether the lock is held now.
pub(crate) async fn hold_reporting(
    pool: &PgPool,
    key: i64,
    mut stop: watch::Receiver<bool>,
    held: Option<&watch::Sender<bool>>,
) {
    let report = |now: bool| {
        if let Some(held) = held {
            held.send_replace(now);
        }
    };
    use sqlx::Connection;
    while !*stop.borrow() {
        let mut conn = match pool.acquire().await {
            Ok(c) => c.detach(),
            Err(_) => {
                tokio::select! { _ = tokio::time::sleep(RETRY) => continue, _ = stop.changed() => return }
            }
        };
        if sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut conn)
            .await
            .is_err()
        {
            continue;
        }
        report(true);
        // Ping now and then, so a dead connection is noticed and the lock taken again.
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if conn.ping().await.is_err() {
                        report(false);
                        break;
                    }
                }
                _ = stop.changed() => {
                    report(false);
                    return;
                }
            }
        }
    }
}
