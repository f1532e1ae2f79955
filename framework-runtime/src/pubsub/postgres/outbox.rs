//! The outbox: `publish_in` writes a message into the service's own database, in its
//! transaction; a relay per service database moves committed rows into Pub/Sub's tables.

use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct OutboxRow {
    seq: i64,
    id: Uuid,
    topic: String,
    payload: serde_json::Value,
    published_at: chrono::DateTime<chrono::Utc>,
    traceparent: Option<String>,
}

/// Writes a message into the outbox of the transaction's database.
pub(crate) async fn write_outbox(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    payload: serde_json::Value,
) -> Result<MessageId, Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO _ovation_outbox (id, topic, payload, traceparent) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(topic)
    .bind(payload)
    .bind(crate::telemetry::current_traceparent())
    .execute(&mut **tx)
    .await?;
    // The transaction is the caller's database's, and so is the running service's (outside
    // any service, e.g. in a test's body, every relay here is woken).
    if let Ok(ctx) = runtime::context()
        && let Ok(pubsub) = ctx.rt.pubsub()
    {
        pubsub.wake_relays(ctx.service);
    }
    Ok(MessageId(id))
}
/// Moves committed outbox rows of one service database to the topic: when `wake` says a row
/// was written (see the module docs), and once a second.
pub(super) async fn relay(
    database: &str,
    pool: PgPool,
    pubsub: &'static PgPubSub,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    // The next look after a wake that found nothing yet: the writer had not committed.
    let mut chase: Option<Duration> = None;
    // Whether this look is the once-a-second one, with nothing written since the last.
    let mut idle = false;
    while !*stop.borrow() {
        // An empty outbox is the usual answer then: one read, not a transaction of three
        // statements (a few per second per database, for as long as the app is idle).
        let moved = if idle && outbox_empty(&pool).await.unwrap_or(false) {
            0
        } else {
            match relay_once(&pool, pubsub).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(database, "outbox relay failed, retrying: {e}");
                    0
                }
            }
        };
        if moved == RELAY_BATCH {
            continue;
        }
        if moved > 0 {
            chase = None;
        }
        idle = false;
        tokio::select! {
            () = wake.notified() => {
                // Rows written meanwhile are relayed together: one relay transaction for
                // many publishers under load, not one each.
                tokio::time::sleep(GATHER).await;
                chase = Some(CHASE_FIRST);
            }
            () = tokio::time::sleep(chase.unwrap_or(POLL)) => {
                idle = chase.is_none();
                chase = chase.map(|c| c * 2).filter(|c| *c <= CHASE_LAST);
            }
            _ = stop.changed() => return,
        }
    }
}

async fn outbox_empty(pool: &PgPool) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM _ovation_outbox)")
            .fetch_one(pool)
            .await?,
    )
}

pub(super) async fn relay_once(pool: &PgPool, pubsub: &PgPubSub) -> Result<i64, Error> {
    // Deleted in a transaction that commits only once the messages are stored on the topic: a
    // crash in between leaves the rows here, relayed again later, which the message ids make
    // harmless.
    let mut tx = pool.begin().await?;
    let mut rows: Vec<OutboxRow> = sqlx::query_as(
        "DELETE FROM _ovation_outbox WHERE seq IN (
             SELECT seq FROM _ovation_outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING seq, id, topic, payload, published_at, traceparent",
    )
    .bind(RELAY_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    rows.sort_unstable_by_key(|r| r.seq);
    let relayed = i64::try_from(rows.len()).unwrap_or(0);
    let messages: Vec<Outgoing> = rows
        .into_iter()
        .map(|r| Outgoing {
            id: r.id,
            topic: r.topic,
            payload: r.payload,
            published_at: Some(r.published_at),
            traceparent: r.traceparent,
        })
        .collect();
    pubsub.insert(&messages).await?;
    tx.commit().await?;
    Ok(relayed)
}
