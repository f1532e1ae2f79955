//! The Postgres backend of Pub/Sub: durable tables in a framework-owned database.
//!
//! - `ovation_messages` holds each message once; `ovation_deliveries` one row per
//!   (subscription, message), made when the message is published (fan-out on write).
//! - A worker per subscription claims due rows with `FOR UPDATE SKIP LOCKED`, setting `next_at`
//!   to now + the ack deadline (the lease) and `claimed_by` to its process's liveness key: a
//!   session advisory lock the process holds on a connection of its own. When a process dies,
//!   its connection closes, the lock disappears from `pg_locks`, and within a second every
//!   other process hosting the subscription makes its claimed rows due again, without waiting
//!   for the lease (the shop app's `confirmations_survive_a_sigkill` test). That look is a
//!   task of its own, once a second, so that claiming — once per wake-up under load — scans
//!   only due rows and never reads `pg_locks`. Success marks the row `done`; failure pushes
//!   `next_at` out by the backoff, or marks the row `dead` past `max_retries`.
//! - Workers sleep until a publish in this process or `LISTEN ovation_pubsub` (another
//!   process's) wakes them, the next retry is due, or a one-second poll (in case a
//!   notification was lost with a dropped connection). A finishing handler wakes its worker
//!   only when the worker waits for room.
//! - `publish_in` writes to `_ovation_outbox` in the service's own database and transaction;
//!   a relay per service database moves committed rows here and deletes them. A crash between
//!   the two steps relays a row twice, which the message's primary key absorbs.
//! - The relay of that database runs in the publishing process, which wakes it in-process: no
//!   `NOTIFY` in the publisher's transaction: a `NOTIFY` takes a cluster-wide lock from before
//!   the commit until after it, so concurrent publishers' commits (every `POST /orders`)
//!   would wait for each other. Woken, the relay gathers for 5 ms (one relay transaction for many publishers),
//!   then, if the publisher has not committed yet, looks again after 1, 2, 4, ... ms until the
//!   row is there; it polls each second besides (a crash before relaying leaves the row to
//!   any process hosting the service).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{Postgres, Transaction};
use tokio::sync::{Notify, Semaphore, watch};
use uuid::Uuid;

use super::{DeadLetter, Delivery, MessageId, SubscriptionDef, SubscriptionStats};
use crate::error::Error;
use crate::runtime::{self, Runtime};
use crate::sqldb::{DatabaseDef, Migration};

/// The framework's Pub/Sub database.
pub(crate) static DATABASE: DatabaseDef = DatabaseDef {
    name: "ovation_pubsub",
    module: "ovation::pubsub",
    migrations: &MIGRATIONS,
};

static MIGRATIONS: [Migration; 3] = [
    Migration {
        version: 1,
        file: "1_pubsub.up.sql",
        sql: "
        CREATE TABLE ovation_messages (
            id UUID PRIMARY KEY,
            topic TEXT NOT NULL,
            payload JSONB NOT NULL,
            published_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            traceparent TEXT
        );
        CREATE TABLE ovation_deliveries (
            subscription TEXT NOT NULL,
            message_id UUID NOT NULL REFERENCES ovation_messages (id) ON DELETE CASCADE,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
            attempt INTEGER NOT NULL DEFAULT 0,
            next_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            last_error TEXT,
            done_at TIMESTAMPTZ,
            PRIMARY KEY (subscription, message_id)
        );
        CREATE INDEX ovation_deliveries_due ON ovation_deliveries (subscription, next_at)
            WHERE state = 'pending';
    ",
    },
    Migration {
        version: 2,
        file: "2_claim_owner.up.sql",
        // The claiming process's liveness key: a session advisory lock it holds while alive.
        sql: "ALTER TABLE ovation_deliveries ADD COLUMN claimed_by BIGINT;",
    },
    Migration {
        version: 3,
        file: "3_nats_delivered.up.sql",
        // With the NATS transport, JetStream holds pending messages; Ovation counts successes.
        sql: "CREATE TABLE ovation_nats_delivered (
            subscription TEXT PRIMARY KEY,
            delivered BIGINT NOT NULL DEFAULT 0
        );",
    },
];

const CHANNEL: &str = "ovation_pubsub";
/// The longest a worker or relay sleeps without looking.
const POLL: Duration = Duration::from_secs(1);
/// Added to the ack deadline for the lease, so a handler cancelled at its deadline is recorded
/// as failed before another worker may claim its message.
const LEASE_GRACE: Duration = Duration::from_secs(5);
const RELAY_BATCH: i64 = 500;
/// After a `publish_in`, the relay waits this long for more before it looks...
const GATHER: Duration = Duration::from_millis(5);
/// ...then, finding nothing yet, looks again after this...
const CHASE_FIRST: Duration = Duration::from_millis(1);
/// ...doubling up to this, until the publisher's transaction has committed (or rolled back).
const CHASE_LAST: Duration = Duration::from_millis(256);
/// Messages every subscription has handled are deleted this long after publication; dead
/// letters and pending messages are kept.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
const CLAIM_BATCH: usize = 100;
/// Successes wait this long for others to be recorded with (one statement for all of them).
const ACK_GATHER: Duration = Duration::from_millis(5);
/// How long the delivered count of a NATS subscription gathers before it is written: how
/// stale the dashboard's count may be.
const COUNT_GATHER: Duration = Duration::from_millis(100);

/// The Postgres Pub/Sub of one runtime.
#[derive(Debug)]
pub(crate) struct PgPubSub {
    pool: PgPool,
    /// This process's liveness key (see the module docs).
    owner: i64,
    /// Wakes this process's workers: after a local publish, or a notification.
    wake: Arc<Notify>,
    /// Wakes this process's outbox relays after a `publish_in`: (service, its relay's wake).
    relays: std::sync::OnceLock<Vec<(&'static str, Arc<Notify>)>>,
    /// The workers of the subscriptions hosted here, which messages stored by this process are
    /// handed to, claimed as they are stored (see [`PgPubSub::insert`]).
    locals: std::sync::OnceLock<Vec<Local>>,
    stop: watch::Sender<bool>,
    /// Held (cloned) by every running handler and acker: the strong count tells when they are
    /// all done, for a graceful shutdown.
    busy: Arc<()>,
    /// The NATS JetStream transport, when chosen: messages travel and wait there; dead
    /// letters and counts stay in this database.
    nats: Option<super::nats::Nats>,
}

#[derive(sqlx::FromRow)]
struct DeadRow {
    id: Uuid,
    topic: String,
    payload: serde_json::Value,
    published_at: chrono::DateTime<chrono::Utc>,
    attempt: i32,
    last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    id: Uuid,
    topic: String,
    payload: serde_json::Value,
    published_at: chrono::DateTime<chrono::Utc>,
    traceparent: Option<String>,
}

/// A subscription's worker in this process, as [`PgPubSub::insert`] sees it.
#[derive(Debug)]
struct Local {
    subscription: &'static str,
    /// The worker's room: one permit per handler running.
    permits: Arc<Semaphore>,
    lease: Duration,
    handoff: tokio::sync::mpsc::UnboundedSender<Handoff>,
}

/// A delivery claimed for a worker of this process, with the permit it runs under.
type Handoff = (Claimed, tokio::sync::OwnedSemaphorePermit);

/// A message as the outbox or `publish` hands it over.
struct Outgoing {
    id: Uuid,
    topic: String,
    payload: serde_json::Value,
    published_at: Option<chrono::DateTime<chrono::Utc>>,
    traceparent: Option<String>,
}

impl PgPubSub {
    pub(crate) fn new(pool: PgPool) -> PgPubSub {
        PgPubSub {
            pool,
            owner: rand::random::<i64>(),
            wake: Arc::new(Notify::new()),
            relays: std::sync::OnceLock::new(),
            locals: std::sync::OnceLock::new(),
            stop: watch::channel(false).0,
            busy: Arc::new(()),
            nats: None,
        }
    }

    /// Wakes the outbox relays of `service`'s databases (all of them for `None`).
    fn wake_relays(&self, service: Option<&str>) {
        for (relayed, wake) in self.relays.get().into_iter().flatten() {
            if service.is_none_or(|s| s == *relayed) {
                // A permit is kept if the relay is busy: it looks again when done.
                wake.notify_one();
            }
        }
    }

    /// Moves messages through NATS JetStream instead of these tables.
    pub(crate) fn with_nats(mut self, nats: super::nats::Nats) -> PgPubSub {
        self.nats = Some(nats);
        self
    }

    pub(crate) async fn publish(
        &self,
        topic: &str,
        payload: serde_json::Value,
    ) -> Result<MessageId, Error> {
        // Message ids are UUIDv7, ordered by time: each insert lands at the right edge of the
        // id indexes instead of on a random page of them (fewer pages touched and written to
        // the WAL per message than with random v4 ids).
        let id = Uuid::now_v7();
        let message = Outgoing {
            id,
            topic: topic.to_owned(),
            payload,
            published_at: None,
            traceparent: crate::telemetry::current_traceparent(),
        };
        self.insert(&[message]).await?;
        Ok(MessageId(id))
    }

    pub(crate) async fn publish_batch(
        &self,
        topic: &str,
        payloads: Vec<serde_json::Value>,
    ) -> Result<Vec<MessageId>, Error> {
        let traceparent = crate::telemetry::current_traceparent();
        let messages: Vec<Outgoing> = payloads
            .into_iter()
            .map(|payload| Outgoing {
                id: Uuid::now_v7(),
                topic: topic.to_owned(),
                payload,
                published_at: None,
                traceparent: traceparent.clone(),
            })
            .collect();
        self.insert(&messages).await?;
        Ok(messages.iter().map(|m| MessageId(m.id)).collect())
    }

    /// Stores messages and their deliveries, once each: one set-based statement per topic,
    /// whatever the number of messages.
    ///
    /// The deliveries of a subscription whose worker runs in this process, and has room for
    /// all of them, are stored claimed by this process and handed to the worker in memory:
    /// no claim query, no notification, no wait for the worker to look. Other subscriptions'
    /// deliveries are stored due, and their workers woken (here directly, elsewhere by a
    /// `NOTIFY`).
    async fn insert(&self, messages: &[Outgoing]) -> Result<(), Error> {
        if let Some(nats) = &self.nats {
            let publishes: Vec<super::nats::Publish<'_>> = messages
                .iter()
                .map(|m| super::nats::Publish {
                    id: m.id,
                    topic: &m.topic,
                    payload: &m.payload,
                    published_at: m.published_at,
                    traceparent: m.traceparent.as_deref(),
                    redrive_for: None,
                })
                .collect();
            return nats.publish(&publishes).await;
        }
        let mut by_topic: std::collections::BTreeMap<&str, Vec<&Outgoing>> = Default::default();
        for m in messages {
            by_topic.entry(m.topic.as_str()).or_default().push(m);
        }
        let stopping = *self.stop.borrow();
        let locals = self.locals.get().map_or(&[][..], Vec::as_slice);
        // Whether some subscription's worker, here or elsewhere, must look for what is stored.
        let (mut wake_here, mut wake_others) = (false, false);
        for (topic, group) in by_topic {
            let count = u32::try_from(group.len()).unwrap_or(u32::MAX);
            let mut subscribers: Vec<&str> = Vec::new();
            let mut leases: Vec<Option<f64>> = Vec::new();
            let mut claims: Vec<(&Local, tokio::sync::OwnedSemaphorePermit)> = Vec::new();
            for sub in super::subscriptions()
                .iter()
                .filter(|s| (s.topic)() == topic)
            {
                let local = locals.iter().find(|l| l.subscription == sub.name);
                let permit = local
                    .filter(|_| !stopping)
                    .and_then(|l| l.permits.clone().try_acquire_many_owned(count).ok());
                subscribers.push(sub.name);
                match (local, permit) {
                    (Some(local), Some(permit)) => {
                        leases.push(Some(local.lease.as_secs_f64()));
                        claims.push((local, permit));
                    }
                    (local, _) => {
                        // Due for any worker of the subscription: here, and in the other
                        // processes hosting it.
                        leases.push(None);
                        wake_here |= local.is_some();
                        wake_others = true;
                    }
                }
            }
            let ids: Vec<Uuid> = group.iter().map(|m| m.id).collect();
            let payloads: Vec<&serde_json::Value> = group.iter().map(|m| &m.payload).collect();
            let published: Vec<Option<chrono::DateTime<chrono::Utc>>> =
                group.iter().map(|m| m.published_at).collect();
            let traces: Vec<Option<&str>> =
                group.iter().map(|m| m.traceparent.as_deref()).collect();
            // One statement (so one transaction) for the messages and their deliveries. Only
            // the messages new here get deliveries: a message relayed twice gets them once.
            // It returns the deliveries claimed for this process's workers.
            let claimed: Vec<(String, Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                "WITH inserted AS (
                     INSERT INTO ovation_messages (id, topic, payload, published_at, traceparent)
                     SELECT id, $2, payload, coalesce(published_at, now()), traceparent
                     FROM unnest($1::uuid[], $3::jsonb[], $4::timestamptz[], $5::text[])
                          AS m (id, payload, published_at, traceparent)
                     ON CONFLICT (id) DO NOTHING
                     RETURNING id, published_at
                 ), delivered AS (
                     INSERT INTO ovation_deliveries
                         (subscription, message_id, attempt, next_at, claimed_by)
                     SELECT s.name, i.id,
                            CASE WHEN s.lease IS NULL THEN 0 ELSE 1 END,
                            now() + make_interval(secs => coalesce(s.lease, 0)),
                            CASE WHEN s.lease IS NOT NULL THEN $8::bigint END
                     FROM inserted i, unnest($6::text[], $7::float8[]) AS s (name, lease)
                     ON CONFLICT DO NOTHING
                     RETURNING subscription, message_id, claimed_by
                 )
                 SELECT d.subscription, d.message_id, i.published_at
                 FROM delivered d JOIN inserted i ON i.id = d.message_id
                 WHERE d.claimed_by IS NOT NULL",
            )
            .bind(&ids)
            .bind(topic)
            .bind(&payloads)
            .bind(&published)
            .bind(&traces)
            .bind(&subscribers)
            .bind(&leases)
            .bind(self.owner)
            .fetch_all(&self.pool)
            .await?;
            // Each claimed delivery takes one of its worker's permits; the rest (messages
            // stored before) go back when `claims` is dropped.
            let by_id: std::collections::HashMap<Uuid, &Outgoing> =
                group.iter().map(|m| (m.id, *m)).collect();
            for (subscription, id, published_at) in claimed {
                let Some((local, permits)) = claims
                    .iter_mut()
                    .find(|(l, _)| l.subscription == subscription)
                else {
                    continue;
                };
                let (Some(permit), Some(m)) = (permits.split(1), by_id.get(&id)) else {
                    continue;
                };
                let delivery = (
                    id,
                    1,
                    m.payload.clone(),
                    published_at,
                    m.traceparent.clone(),
                );
                // Only fails when the worker is gone (shutdown): the lease then runs out, or
                // another process reclaims the delivery once this one is gone.
                let _ = local.handoff.send((delivery, permit));
            }
        }
        if wake_others {
            // Stored already: a lost notification only makes other processes find the
            // messages at their next look, within a second. This process's listener skips it.
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(self.owner.to_string())
                .execute(&self.pool)
                .await
            {
                tracing::debug!("could not notify other processes of new messages: {e}");
            }
        }
        if wake_here {
            self.wake.notify_waiters();
        }
        Ok(())
    }

    pub(crate) async fn dead_letters(&self, subscription: &str) -> Result<Vec<DeadLetter>, Error> {
        let rows: Vec<DeadRow> = sqlx::query_as(
            "SELECT m.id, m.topic, m.payload, m.published_at, d.attempt, d.last_error
                 FROM ovation_deliveries d JOIN ovation_messages m ON m.id = d.message_id
                 WHERE d.subscription = $1 AND d.state = 'dead'
                 ORDER BY m.published_at, m.id",
        )
        .bind(subscription)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                message_id: MessageId(r.id),
                topic: r.topic,
                payload: r.payload,
                published_at: r.published_at,
                attempts: u32::try_from(r.attempt).unwrap_or(0),
                last_error: r.last_error,
            })
            .collect())
    }

    pub(crate) async fn redrive(
        &self,
        subscription: &str,
        message: Option<MessageId>,
    ) -> Result<u64, Error> {
        if let Some(nats) = &self.nats {
            return self.redrive_nats(nats, subscription, message).await;
        }
        let done = sqlx::query(
            "UPDATE ovation_deliveries
             SET state = 'pending', attempt = 0, next_at = now(), last_error = NULL
             WHERE subscription = $1 AND state = 'dead' AND ($2::uuid IS NULL OR message_id = $2)",
        )
        .bind(subscription)
        .bind(message.map(|m| m.0))
        .execute(&self.pool)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&self.pool)
            .await?;
        self.wake.notify_waiters();
        Ok(done.rows_affected())
    }

    /// Republishes dead letters for one subscription (a fresh message id, or JetStream's
    /// duplicate window would drop it), then forgets them.
    async fn redrive_nats(
        &self,
        nats: &super::nats::Nats,
        subscription: &str,
        message: Option<MessageId>,
    ) -> Result<u64, Error> {
        let dead = self.dead_letters(subscription).await?;
        let dead: Vec<_> = dead
            .into_iter()
            .filter(|d| message.is_none_or(|m| m == d.message_id))
            .collect();
        let publishes: Vec<super::nats::Publish<'_>> = dead
            .iter()
            .map(|d| super::nats::Publish {
                id: Uuid::now_v7(),
                topic: &d.topic,
                payload: &d.payload,
                published_at: Some(d.published_at),
                traceparent: None,
                redrive_for: Some(subscription),
            })
            .collect();
        nats.publish(&publishes).await?;
        let ids: Vec<Uuid> = dead.iter().map(|d| d.message_id.0).collect();
        sqlx::query("DELETE FROM ovation_deliveries WHERE subscription = $1 AND message_id = ANY($2) AND state = 'dead'")
            .bind(subscription)
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        Ok(u64::try_from(ids.len()).unwrap_or(0))
    }

    /// Messages published to `topic` and still kept (24 h), when Postgres carries them;
    /// `None` on the NATS transport, where JetStream holds them.
    pub(crate) async fn published(&self, topic: &str) -> Result<Option<u64>, Error> {
        if self.nats.is_some() {
            return Ok(None);
        }
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ovation_messages WHERE topic = $1")
                .bind(topic)
                .fetch_one(&self.pool)
                .await?;
        Ok(Some(u64::try_from(count).unwrap_or(0)))
    }

    pub(crate) async fn stats(&self, subscription: &str) -> Result<SubscriptionStats, Error> {
        if let Some(nats) = &self.nats {
            let sub = super::subscriptions()
                .iter()
                .find(|s| s.name == subscription)
                .ok_or_else(|| Error::not_found(format!("no subscription `{subscription}`")))?;
            let pending = nats.pending(sub).await?;
            let (delivered, dead): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT coalesce(max(delivered), 0) FROM ovation_nats_delivered WHERE subscription = $1),
                        (SELECT count(*) FROM ovation_deliveries WHERE subscription = $1 AND state = 'dead')",
            )
            .bind(subscription)
            .fetch_one(&self.pool)
            .await?;
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            return Ok(SubscriptionStats {
                pending,
                delivered: n(delivered),
                dead: n(dead),
            });
        }
        let (pending, delivered, dead): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'done'),
                    count(*) FILTER (WHERE state = 'dead')
             FROM ovation_deliveries WHERE subscription = $1",
        )
        .bind(subscription)
        .fetch_one(&self.pool)
        .await?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(SubscriptionStats {
            pending: n(pending),
            delivered: n(delivered),
            dead: n(dead),
        })
    }

    /// Stops claiming messages and relaying the outbox. Handlers running finish on their own
    /// (or their leases expire).
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until running handlers have finished and their successes are recorded, for at most
    /// `grace`. Call after [`PgPubSub::stop`]. Returns whether everything finished.
    pub(crate) async fn drain(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        while Arc::strong_count(&self.busy) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops background work and closes the connections.
    pub(crate) async fn close(&self) {
        self.stop();
        self.pool.close().await;
    }
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

/// Starts this runtime's Pub/Sub tasks: the notification listener, an outbox relay per hosted
/// service database, and a worker per subscription whose service is hosted here.
pub(crate) fn start(rt: &'static Runtime, pubsub: &'static PgPubSub) {
    tokio::spawn(hold_liveness_lock(pubsub, pubsub.stop.subscribe()));
    tokio::spawn(listen(pubsub, pubsub.stop.subscribe()));
    let mut relays = Vec::new();
    for (database, pool) in &rt.pools {
        let wake = Arc::new(Notify::new());
        let service = crate::sqldb::declared()
            .into_iter()
            .find(|d| d.name == *database)
            .map_or("", |d| d.service());
        relays.push((service, wake.clone()));
        tokio::spawn(relay(
            database,
            pool.clone(),
            pubsub,
            wake,
            pubsub.stop.subscribe(),
        ));
    }
    let _ = pubsub.relays.set(relays);
    let mut locals = Vec::new();
    for sub in super::subscriptions() {
        if rt.hosts(sub.service()) {
            match &pubsub.nats {
                Some(nats) => {
                    tokio::spawn(work_nats(rt, sub, pubsub, nats, pubsub.stop.subscribe()));
                }
                None => {
                    let permits = Arc::new(Semaphore::new(sub.config.max_concurrency.max(1)));
                    let (handoff, handed) = tokio::sync::mpsc::unbounded_channel();
                    locals.push(Local {
                        subscription: sub.name,
                        permits: permits.clone(),
                        lease: lease(sub),
                        handoff,
                    });
                    let worker = Worker {
                        rt,
                        sub,
                        pubsub,
                        permits,
                        handed,
                    };
                    tokio::spawn(worker.run(pubsub.stop.subscribe()));
                }
            }
        }
    }
    // The workers claiming from these tables: the ones whose dead peers' claims to look for.
    let hosted: Vec<&'static str> = locals.iter().map(|l| l.subscription).collect();
    if !hosted.is_empty() {
        tokio::spawn(reclaim(pubsub, hosted, pubsub.stop.subscribe()));
    }
    let _ = pubsub.locals.set(locals);
    tokio::spawn(expire(pubsub, pubsub.stop.subscribe()));
}

/// Deletes old messages that every subscription has handled, once a minute.
async fn expire(pubsub: &'static PgPubSub, mut stop: watch::Receiver<bool>) {
    loop {
        let deleted = sqlx::query(
            "DELETE FROM ovation_messages m
             WHERE m.published_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM ovation_deliveries d
                               WHERE d.message_id = m.id AND d.state <> 'done')",
        )
        .bind(RETENTION.as_secs_f64())
        .execute(&pubsub.pool)
        .await;
        if let Ok(done) = deleted
            && done.rows_affected() > 0
        {
            tracing::debug!(
                messages = done.rows_affected(),
                "expired delivered messages"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Holds this process's liveness lock on a connection of its own until stopped, taking it
/// again after a lost connection.
async fn hold_liveness_lock(pubsub: &'static PgPubSub, mut stop: watch::Receiver<bool>) {
    use sqlx::Connection;
    while !*stop.borrow() {
        let mut conn = match pubsub.pool.acquire().await {
            Ok(c) => c.detach(),
            Err(_) => {
                tokio::select! { _ = tokio::time::sleep(POLL) => continue, _ = stop.changed() => return }
            }
        };
        if sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(pubsub.owner)
            .execute(&mut conn)
            .await
            .is_err()
        {
            continue;
        }
        // Ping now and then, so a dead connection is noticed and the lock taken again.
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if conn.ping().await.is_err() {
                        break;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }
}

/// Wakes this process's workers when another process has published, reconnecting after
/// errors.
async fn listen(pubsub: &'static PgPubSub, mut stop: watch::Receiver<bool>) {
    let own = pubsub.owner.to_string();
    while !*stop.borrow() {
        let mut listener = match PgListener::connect_with(&pubsub.pool).await {
            Ok(l) => l,
            Err(_) => {
                tokio::select! { _ = tokio::time::sleep(POLL) => continue, _ = stop.changed() => return }
            }
        };
        if listener.listen(CHANNEL).await.is_err() {
            tokio::time::sleep(POLL).await;
            continue;
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    // This process's own publishes woke its workers already.
                    Ok(n) if n.payload() == own => {}
                    Ok(_) => pubsub.wake.notify_waiters(),
                    Err(_) => break,
                },
                _ = stop.changed() => return,
            }
        }
    }
}

/// Moves committed outbox rows of one service database to the topic: when `wake` says a row
/// was written (see the module docs), and once a second.
async fn relay(
    database: &str,
    pool: PgPool,
    pubsub: &'static PgPubSub,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    // The next look after a wake that found nothing yet: the writer had not committed.
    let mut chase: Option<Duration> = None;
    while !*stop.borrow() {
        let moved = match relay_once(&pool, pubsub).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(database, "outbox relay failed, retrying: {e}");
                0
            }
        };
        if moved == RELAY_BATCH {
            continue;
        }
        if moved > 0 {
            chase = None;
        }
        tokio::select! {
            () = wake.notified() => {
                // Rows written meanwhile are relayed together: one relay transaction for
                // many publishers under load, not one each.
                tokio::time::sleep(GATHER).await;
                chase = Some(CHASE_FIRST);
            }
            () = tokio::time::sleep(chase.unwrap_or(POLL)) => {
                chase = chase.map(|c| c * 2).filter(|c| *c <= CHASE_LAST);
            }
            _ = stop.changed() => return,
        }
    }
}

async fn relay_once(pool: &PgPool, pubsub: &PgPubSub) -> Result<i64, Error> {
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

/// A claimed delivery.
type Claimed = (
    Uuid,
    i32,
    serde_json::Value,
    chrono::DateTime<chrono::Utc>,
    Option<String>,
);

/// How long a claim holds a delivery of `sub`: past its ack deadline, so that a handler cancelled
/// at the deadline is recorded as failed before anyone may claim the delivery again.
fn lease(sub: &SubscriptionDef) -> Duration {
    sub.config.ack_deadline + LEASE_GRACE
}

/// The worker of one subscription in this process.
struct Worker {
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    pubsub: &'static PgPubSub,
    /// One per handler running: `max_concurrency` in all.
    permits: Arc<Semaphore>,
    /// Deliveries [`PgPubSub::insert`] claimed for this worker as it stored them.
    handed: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
}

impl Worker {
    /// Claims and handles the messages of the subscription until stopped.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let (sub, pubsub) = (self.sub, self.pubsub);
        let lease = lease(sub);
        // Successes are recorded in batches by `ack`; it ends, after recording every success,
        // once this worker and its handlers are gone (the last sender dropped).
        let (acks, ack_queue) = tokio::sync::mpsc::unbounded_channel::<Uuid>();
        let busy = pubsub.busy.clone();
        tokio::spawn(async move {
            ack(pubsub.pool.clone(), sub.name, ack_queue).await;
            drop(busy);
        });
        // A handler that finishes frees a permit: that wakes this worker only when it waits for
        // one. (Waking it after every message would be a claim per message, most finding
        // nothing.)
        let freed = Arc::new(Notify::new());
        let spawn = |(delivery, permit): Handoff| {
            let (acks, freed) = (acks.clone(), freed.clone());
            let busy = pubsub.busy.clone();
            let rt = self.rt;
            tokio::spawn(async move {
                let _busy = busy;
                handle(rt, sub, pubsub, &acks, delivery).await;
                drop(permit);
                freed.notify_one();
            });
        };
        let mut look = true;
        let mut starved = false;
        let mut next_look = tokio::time::Instant::now();
        let mut notified = std::pin::pin!(pubsub.wake.notified());
        while !*stop.borrow() {
            if look {
                // Armed before looking, so that a wake while looking is not lost; kept armed
                // while handing off.
                notified.set(pubsub.wake.notified());
                notified.as_mut().enable();
                // The permits are taken before claiming, never waited for after: a worker
                // waiting for a permit could not spawn the deliveries handed to it, whose
                // permits are the ones it would wait for.
                let mut room = self.permits.available_permits().min(CLAIM_BATCH);
                let held = u32::try_from(room)
                    .ok()
                    .filter(|&n| n > 0)
                    .and_then(|n| self.permits.clone().try_acquire_many_owned(n).ok());
                let mut claimed = 0;
                match held {
                    None => room = 0,
                    Some(mut held) => match claim(pubsub, sub.name, room, lease).await {
                        Ok(deliveries) => {
                            claimed = deliveries.len();
                            for delivery in deliveries {
                                if let Some(permit) = held.split(1) {
                                    spawn((delivery, permit));
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(subscription = sub.name, "claiming messages failed: {e}")
                        }
                    },
                }
                starved = claimed == room;
                if starved && self.permits.available_permits() > 0 {
                    continue;
                }
                // Nothing left due now. Found nothing at all: sleep until the next retry is due
                // (a failure here wakes the workers to look again). Found some: what comes next
                // is new messages, which wake this worker, or their retries, which do too.
                let wait = if claimed == 0 && room > 0 {
                    next_due(&pubsub.pool, sub.name)
                        .await
                        .unwrap_or(POLL)
                        .min(POLL)
                } else {
                    POLL
                };
                next_look = tokio::time::Instant::now() + wait;
            }
            tokio::select! {
                () = notified.as_mut() => look = true,
                () = freed.notified(), if starved => look = true,
                () = tokio::time::sleep_until(next_look) => look = true,
                handed = self.handed.recv() => {
                    // Claimed already: handle them, without looking for more.
                    let Some(first) = handed else { return };
                    spawn(first);
                    while let Ok(more) = self.handed.try_recv() {
                        spawn(more);
                    }
                    look = false;
                }
                _ = stop.changed() => return,
            }
        }
    }
}

async fn claim(
    pubsub: &PgPubSub,
    subscription: &str,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, Error> {
    // Due: pending and past `next_at` (the deliveries of dead processes are made due by
    // `reclaim`, so this scans only due rows of the partial index).
    Ok(sqlx::query_as(
        "UPDATE ovation_deliveries d
         SET attempt = d.attempt + 1, next_at = now() + make_interval(secs => $3), claimed_by = $4
         FROM (
             SELECT message_id FROM ovation_deliveries
             WHERE subscription = $1 AND state = 'pending' AND next_at <= now()
             ORDER BY next_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ) due, ovation_messages m
         WHERE d.subscription = $1 AND d.message_id = due.message_id AND m.id = d.message_id
         RETURNING d.message_id, d.attempt, m.payload, m.published_at, m.traceparent",
    )
    .bind(subscription)
    .bind(i64::try_from(limit).unwrap_or(1))
    .bind(lease.as_secs_f64())
    .bind(pubsub.owner)
    .fetch_all(&pubsub.pool)
    .await?)
}

/// Once a second, makes the deliveries of `hosted` subscriptions claimed by processes that are
/// gone due at once, rather than when their leases run out, and wakes the workers if there
/// were any.
async fn reclaim(
    pubsub: &'static PgPubSub,
    hosted: Vec<&'static str>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
        // Leased rows only (`next_at` in the future), through the partial index. A bigint
        // advisory lock shows in pg_locks as classid (high half) and objid (low half).
        let reclaimed = sqlx::query(
            "UPDATE ovation_deliveries SET next_at = now(), claimed_by = NULL
             WHERE subscription = ANY($1) AND state = 'pending' AND next_at > now()
               AND claimed_by IS NOT NULL
               AND claimed_by <> ALL (ARRAY(
                   SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
                   WHERE locktype = 'advisory' AND objsubid = 1 AND granted))",
        )
        .bind(&hosted)
        .execute(&pubsub.pool)
        .await;
        match reclaimed {
            Ok(r) if r.rows_affected() > 0 => {
                tracing::info!(
                    deliveries = r.rows_affected(),
                    "redelivering messages claimed by a process that is gone"
                );
                pubsub.wake.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("reclaiming deliveries failed: {e}"),
        }
    }
}

/// How long until the subscription's next pending message is due; `None` when nothing is
/// pending.
async fn next_due(pool: &PgPool, subscription: &str) -> Option<Duration> {
    // Not `greatest(.., 0)` in SQL: Postgres' GREATEST skips NULLs, so with nothing pending
    // it said "due now", and every idle worker claimed in a loop, hundreds of queries a second.
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM min(next_at) - now())::float8
         FROM ovation_deliveries WHERE subscription = $1 AND state = 'pending'",
    )
    .bind(subscription)
    .fetch_one(pool)
    .await
    .ok()?;
    secs.map(|s| Duration::from_secs_f64(s.max(0.0)))
}

pub(super) enum Outcome {
    Done,
    Failed(String),
    /// The message can never be handled (it does not decode): dead at once.
    Poison(String),
}

async fn handle(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    pubsub: &PgPubSub,
    acks: &tokio::sync::mpsc::UnboundedSender<Uuid>,
    claimed: Claimed,
) {
    let (id, attempt, payload, published_at, traceparent) = claimed;
    let attempt = u32::try_from(attempt).unwrap_or(1);
    let delivery = Delivery {
        message_id: MessageId(id),
        subscription: sub.name,
        published_at,
        attempt,
        traceparent,
    };
    let outcome = run_handler(rt, sub, payload, delivery).await;
    if let Outcome::Done = outcome {
        // Only fails when the acker is gone (shutdown): the lease then expires, and the
        // message is delivered again.
        let _ = acks.send(id);
        return;
    }
    if let Err(e) = record(&pubsub.pool, sub, id, attempt, outcome).await {
        // The lease expires and the message is delivered again: at least once.
        tracing::warn!(subscription = sub.name, message = %id, "could not record the delivery: {e}");
    }
    // A retry is scheduled: the workers look again, and sleep until it is due.
    pubsub.wake.notify_waiters();
}

/// Runs a subscription's handler on one message, in the subscription's service context,
/// under its ack deadline, catching panics.
pub(super) async fn run_handler(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    payload: serde_json::Value,
    delivery: Delivery,
) -> Outcome {
    let (id, attempt) = (delivery.message_id, delivery.attempt);
    match (sub.handler)(payload) {
        Err(e) => Outcome::Poison(e),
        Ok(fut) => {
            // A delivery is a request of the subscription: traced or not as its message's
            // trace says (or, published outside any trace, as `trace_sampling` says).
            let trace = crate::telemetry::request_span(delivery.traceparent.as_deref(), || {
                let topic = (sub.topic)();
                tracing::info_span!(
                    "delivery",
                    otel.name = %format!("deliver {topic} → {}", sub.name),
                    otel.kind = "consumer",
                    otel.status_code = tracing::field::Empty,
                    service = sub.service(),
                    topic,
                    subscription = sub.name,
                    message = %id,
                    attempt
                )
            });
            let fut = runtime::scope_in(
                rt,
                sub.service(),
                sub.name,
                super::DELIVERY.scope(delivery, fut),
            );
            // In the caller's task (each delivery has one): a panic is caught here, and a
            // handler past its deadline is dropped where it waits.
            let fut = std::panic::AssertUnwindSafe(trace.run(fut));
            let outcome = match tokio::time::timeout(
                sub.config.ack_deadline,
                futures_util::FutureExt::catch_unwind(fut),
            )
            .await
            {
                Ok(Ok(Ok(()))) => Outcome::Done,
                Ok(Ok(Err(e))) => Outcome::Failed(e.to_string()),
                Ok(Err(_panic)) => Outcome::Failed("the handler panicked".into()),
                Err(_) => Outcome::Failed(format!(
                    "the handler did not finish within its ack deadline of {:?}",
                    sub.config.ack_deadline
                )),
            };
            if let Outcome::Failed(reason) = &outcome {
                let span = trace.span();
                span.record("otel.status_code", "ERROR");
                span.in_scope(|| tracing::warn!(%reason, "delivery attempt failed"));
            }
            outcome
        }
    }
}

/// Records successes in batches: whatever has queued up while the previous batch was written.
/// One statement for many messages is what lets delivery keep up with batched publishing.
async fn ack(
    pool: PgPool,
    subscription: &'static str,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Uuid>,
) {
    let mut batch = Vec::with_capacity(GATHER_MAX);
    // The handlers running meanwhile finish: their successes join the batch.
    while gather(&mut queue, &mut batch, ACK_GATHER).await {
        if let Err(e) = mark_done(&pool, subscription, &batch).await {
            // Unrecorded successes are delivered again when their leases expire.
            tracing::warn!(
                subscription,
                "could not record {} deliveries: {e}",
                batch.len()
            );
        }
        batch.clear();
    }
}

/// Most items [`gather`] puts in one batch.
const GATHER_MAX: usize = 1000;

/// Waits for the next item of `queue`, then `wait` longer for those that follow it, into
/// `batch` (at most [`GATHER_MAX`]); `false` once the queue is closed and empty.
async fn gather<T>(
    queue: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    batch: &mut Vec<T>,
    wait: Duration,
) -> bool {
    if queue.recv_many(batch, GATHER_MAX).await == 0 {
        return false;
    }
    tokio::time::sleep(wait).await;
    while batch.len() < GATHER_MAX
        && let Ok(item) = queue.try_recv()
    {
        batch.push(item);
    }
    true
}

async fn mark_done(pool: &PgPool, subscription: &str, ids: &[Uuid]) -> Result<(), Error> {
    sqlx::query(
        "UPDATE ovation_deliveries
         SET state = 'done', done_at = now(), last_error = NULL, claimed_by = NULL
         WHERE subscription = $1 AND message_id = ANY($2) AND state = 'pending'",
    )
    .bind(subscription)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

async fn record(
    pool: &PgPool,
    sub: &SubscriptionDef,
    id: Uuid,
    attempt: u32,
    outcome: Outcome,
) -> Result<(), Error> {
    match outcome {
        Outcome::Done => mark_done(pool, sub.name, &[id]).await?,
        Outcome::Failed(error) => {
            let dead = attempt > sub.config.max_retries;
            let backoff = sub.config.backoff(attempt);
            if dead {
                tracing::warn!(subscription = sub.name, message = %id, attempt, "dead letter: {error}");
            } else {
                tracing::info!(subscription = sub.name, message = %id, attempt, retry_in = ?backoff, "delivery failed: {error}");
            }
            sqlx::query(
                "UPDATE ovation_deliveries
                 SET state = CASE WHEN $3 THEN 'dead' ELSE 'pending' END,
                     next_at = now() + make_interval(secs => $4),
                     last_error = $5,
                     claimed_by = NULL
                 WHERE subscription = $1 AND message_id = $2 AND state = 'pending'",
            )
            .bind(sub.name)
            .bind(id)
            .bind(dead)
            .bind(backoff.as_secs_f64())
            .bind(error)
            .execute(pool)
            .await?;
        }
        Outcome::Poison(error) => {
            tracing::warn!(subscription = sub.name, message = %id, "dead letter: {error}");
            sqlx::query(
                "UPDATE ovation_deliveries SET state = 'dead', last_error = $3
                 WHERE subscription = $1 AND message_id = $2",
            )
            .bind(sub.name)
            .bind(id)
            .bind(error)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Handles the messages of one subscription from its JetStream consumer until stopped.
async fn work_nats(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    pubsub: &'static PgPubSub,
    nats: &'static super::nats::Nats,
    mut stop: watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    let permits = Arc::new(Semaphore::new(sub.config.max_concurrency.max(1)));
    let (acks, ack_queue) = tokio::sync::mpsc::unbounded_channel::<Uuid>();
    let busy = pubsub.busy.clone();
    tokio::spawn(async move {
        count_delivered(pubsub.pool.clone(), sub.name, ack_queue).await;
        drop(busy);
    });
    while !*stop.borrow() {
        let consumer = match nats.consumer(sub).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(subscription = sub.name, "{e}");
                tokio::select! { () = tokio::time::sleep(POLL) => continue, _ = stop.changed() => return }
            }
        };
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(subscription = sub.name, "NATS subscription failed: {e}");
                tokio::select! { () = tokio::time::sleep(POLL) => continue, _ = stop.changed() => return }
            }
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = stop.changed() => return,
            };
            match next {
                Some(Ok(message)) => {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let (acks, busy) = (acks.clone(), pubsub.busy.clone());
                    tokio::spawn(async move {
                        let _busy = busy;
                        handle_nats(rt, sub, pubsub, &acks, super::nats::receive(message)).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => tracing::debug!(subscription = sub.name, "NATS: {e}"),
                None => break,
            }
        }
    }
}

async fn handle_nats(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    pubsub: &PgPubSub,
    acks: &tokio::sync::mpsc::UnboundedSender<Uuid>,
    received: super::nats::Received,
) {
    use async_nats::jetstream::AckKind;
    // A redrive for another subscription of this topic: not ours.
    if received
        .redrive_for
        .as_deref()
        .is_some_and(|target| target != sub.name)
    {
        let _ = super::nats::settle(&received.message, AckKind::Ack).await;
        return;
    }
    let payload = nats_payload(&received.message.payload);
    let delivery = Delivery {
        message_id: MessageId(received.id),
        subscription: sub.name,
        published_at: received.published_at,
        attempt: received.attempt,
        traceparent: received.traceparent.clone(),
    };
    let attempt = received.attempt;
    let outcome = run_handler(rt, sub, payload, delivery).await;
    let settled = match outcome {
        Outcome::Done => {
            let settled = super::nats::settle(&received.message, AckKind::Ack).await;
            if settled.is_ok() {
                let _ = acks.send(received.id);
            }
            settled
        }
        Outcome::Failed(error) if attempt <= sub.config.max_retries => {
            let backoff = sub.config.backoff(attempt);
            tracing::info!(subscription = sub.name, message = %received.id, attempt, retry_in = ?backoff, "delivery failed: {error}");
            super::nats::settle(&received.message, AckKind::Nak(Some(backoff))).await
        }
        Outcome::Failed(error) | Outcome::Poison(error) => {
            tracing::warn!(subscription = sub.name, message = %received.id, attempt, "dead letter: {error}");
            // Kept before JetStream lets go of it: a crash in between redelivers, never loses.
            // Decoded again: only dead letters need the payload after the handler has it.
            let payload = nats_payload(&received.message.payload);
            match store_dead(pubsub, sub, &received, payload, attempt, &error).await {
                Ok(()) => super::nats::settle(&received.message, AckKind::Term).await,
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = settled {
        tracing::warn!(subscription = sub.name, message = %received.id, "{e}; it will be delivered again");
    }
}

/// A NATS message's payload as JSON (a string saying what is wrong if it is not JSON).
fn nats_payload(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| serde_json::Value::String(format!("(not JSON: {e})")))
}

async fn store_dead(
    pubsub: &PgPubSub,
    sub: &SubscriptionDef,
    received: &super::nats::Received,
    payload: serde_json::Value,
    attempt: u32,
    error: &str,
) -> Result<(), Error> {
    let mut tx = pubsub.pool.begin().await?;
    sqlx::query(
        "INSERT INTO ovation_messages (id, topic, payload, published_at, traceparent)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(received.id)
    .bind((sub.topic)())
    .bind(payload)
    .bind(received.published_at)
    .bind(&received.traceparent)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ovation_deliveries (subscription, message_id, state, attempt, last_error)
         VALUES ($1, $2, 'dead', $3, $4)
         ON CONFLICT (subscription, message_id)
         DO UPDATE SET state = 'dead', attempt = excluded.attempt, last_error = excluded.last_error",
    )
    .bind(sub.name)
    .bind(received.id)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Counts successes of a NATS subscription, in batches.
async fn count_delivered(
    pool: PgPool,
    subscription: &'static str,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Uuid>,
) {
    let mut batch = Vec::with_capacity(GATHER_MAX);
    // A count, not a state: one statement per gathering, not per handful of messages.
    while gather(&mut queue, &mut batch, COUNT_GATHER).await {
        let counted = sqlx::query(
            "INSERT INTO ovation_nats_delivered (subscription, delivered) VALUES ($1, $2)
             ON CONFLICT (subscription) DO UPDATE
             SET delivered = ovation_nats_delivered.delivered + excluded.delivered",
        )
        .bind(subscription)
        .bind(i64::try_from(batch.len()).unwrap_or(0))
        .execute(&pool)
        .await;
        if let Err(e) = counted {
            tracing::warn!(subscription, "could not count deliveries: {e}");
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression: with nothing pending, the next message was "due now" (Postgres' GREATEST
    // skips NULLs), and idle workers claimed in a loop without pause.
    #[tokio::test]
    async fn with_nothing_pending_nothing_is_due() {
        let server = crate::testing::test_server().await.unwrap();
        // `ovt_<pid>_...`, as test databases are named: another test process's clean-up takes
        // any other `ovt_` name for an orphan, and dropped it under this test now and then.
        let name = format!("ovt_{}_next_due", std::process::id());
        server.create_database(&name).await.unwrap();
        server.migrate(&name, &DATABASE).await.unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(server.options(&name))
            .await
            .unwrap();
        assert_eq!(next_due(&pool, "nothing-subscribes-here").await, None);
        pool.close().await;
        server.drop_database(&name).await.unwrap();
    }
}
