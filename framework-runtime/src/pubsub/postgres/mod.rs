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

/// `$sql`, a statement that names `async_commit` in its `FROM`, committed without waiting for
/// its WAL to reach the disk, in one round trip: `set_config(.., true)` sets
/// `synchronous_commit` for the statement's own transaction, where `BEGIN; SET LOCAL ..;
/// <statement>; COMMIT` takes four. Naming the CTE makes Postgres evaluate it.
macro_rules! async_commit {
    ($sql:literal) => {
        concat!(
            "WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true)) ",
            $sql
        )
    };
}

mod nats_worker;
mod outbox;
mod store;
mod worker;

use nats_worker::work_nats;
use outbox::relay;
pub(crate) use outbox::write_outbox;
use worker::{Claimed, GATHER_MAX, Worker, gather, lease, reclaim};
pub(super) use worker::{Outcome, run_handler};

/// The framework's Pub/Sub database.
pub(crate) static DATABASE: DatabaseDef = DatabaseDef {
    name: "ovation_pubsub",
    module: "ovation::pubsub",
    migrations: &MIGRATIONS,
    folder: None,
    from_folder: false,
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
/// Starts this runtime's Pub/Sub tasks: the notification listener, an outbox relay per hosted
/// service database, and a worker per subscription whose service is hosted here.
pub(crate) fn start(rt: &'static Runtime, pubsub: &'static PgPubSub) {
    tokio::spawn(crate::sqldb::liveness::hold(
        &pubsub.pool,
        pubsub.owner,
        pubsub.stop.subscribe(),
    ));
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
            // Listed in the metrics at zero until its first delivery, as endpoints are.
            rt.metrics
                .of(crate::metrics::Kind::Delivery, (sub.topic)(), sub.name);
            // On NATS too: there it claims the retries (see `nats_worker`), under the same
            // permits as the JetStream consumer's handlers.
            let permits = Arc::new(Semaphore::new(sub.config.max_concurrency.max(1)));
            let (handoff, handed) = tokio::sync::mpsc::unbounded_channel();
            locals.push(Local {
                subscription: sub.name,
                permits: permits.clone(),
                lease: lease(sub),
                handoff,
            });
            if let Some(nats) = &pubsub.nats {
                let permits = permits.clone();
                tokio::spawn(work_nats(
                    rt,
                    sub,
                    pubsub,
                    nats,
                    permits,
                    pubsub.stop.subscribe(),
                ));
            }
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
