//! The workers: one per subscription, claiming due deliveries, running handlers within
//! `max_concurrency`, acknowledging in batches, retrying with backoff, giving up into dead
//! letters.

use super::*;
use crate::error::ErrCode;

/// A claimed delivery.
pub(super) type Claimed = (
    Uuid,
    i32,
    serde_json::Value,
    chrono::DateTime<chrono::Utc>,
    Option<String>,
);

/// How long a claim holds a delivery of `sub`: past its ack deadline, so that a handler cancelled
/// at the deadline is recorded as failed before anyone may claim the delivery again.
pub(super) fn lease(sub: &SubscriptionDef) -> Duration {
    sub.config.ack_deadline + LEASE_GRACE
}

/// The worker of one subscription in this process.
pub(super) struct Worker {
    pub(super) rt: &'static Runtime,
    pub(super) sub: &'static SubscriptionDef,
    pub(super) pubsub: &'static PgPubSub,
    /// One per handler running: `max_concurrency` in all.
    pub(super) permits: Arc<Semaphore>,
    /// Deliveries [`PgPubSub::insert`] claimed for this worker as it stored them.
    pub(super) handed: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
}

impl Worker {
    /// Claims and handles the messages of the subscription until stopped.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
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

pub(super) async fn claim(
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
pub(super) async fn reclaim(
    pubsub: &'static PgPubSub,
    hosted: Vec<&'static str>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
        // Leased rows only (`next_at` in the future), through the partial index.
        let reclaimed = sqlx::query(&format!(
            "UPDATE ovation_deliveries SET next_at = now(), claimed_by = NULL
             WHERE subscription = ANY($1) AND state = 'pending' AND next_at > now()
               AND claimed_by IS NOT NULL
               AND claimed_by <> ALL ({})",
            crate::sqldb::liveness::LIVE_KEYS
        ))
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
pub(super) async fn next_due(pool: &PgPool, subscription: &str) -> Option<Duration> {
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

pub(in crate::pubsub) enum Outcome {
    Done,
    Failed(String),
    /// The message can never be handled (it does not decode): dead at once.
    Poison(String),
}

pub(super) async fn handle(
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
pub(in crate::pubsub) async fn run_handler(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    payload: serde_json::Value,
    delivery: Delivery,
) -> Outcome {
    let (id, attempt) = (delivery.message_id, delivery.attempt);
    let started = std::time::Instant::now();
    let stats = rt
        .metrics
        .of(crate::metrics::Kind::Delivery, (sub.topic)(), sub.name);
    match (sub.handler)(payload) {
        Err(e) => {
            stats.record(started.elapsed(), Some(ErrCode::InvalidArgument));
            Outcome::Poison(e)
        }
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
            // A message carries no auth data: its handler runs for nobody, whoever published.
            let fut = crate::auth::data::scope(
                None,
                runtime::scope_in(
                    rt,
                    sub.service(),
                    sub.name,
                    crate::pubsub::DELIVERY.scope(delivery, fut),
                ),
            );
            // In the caller's task (each delivery has one): a panic is caught here, and a
            // handler past its deadline is dropped where it waits.
            let fut = std::panic::AssertUnwindSafe(trace.run(fut));
            let (outcome, code) = match tokio::time::timeout(
                sub.config.ack_deadline,
                futures_util::FutureExt::catch_unwind(fut),
            )
            .await
            {
                Ok(Ok(Ok(()))) => (Outcome::Done, None),
                Ok(Ok(Err(e))) => (Outcome::Failed(e.to_string()), Some(e.code())),
                Ok(Err(_panic)) => (
                    Outcome::Failed("the handler panicked".into()),
                    Some(ErrCode::Internal),
                ),
                Err(_) => (
                    Outcome::Failed(format!(
                        "the handler did not finish within its ack deadline of {:?}",
                        sub.config.ack_deadline
                    )),
                    Some(ErrCode::DeadlineExceeded),
                ),
            };
            stats.record(started.elapsed(), code);
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
pub(super) async fn ack(
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
pub(super) const GATHER_MAX: usize = 1000;

/// Waits for the next item of `queue`, then `wait` longer for those that follow it, into
/// `batch` (at most [`GATHER_MAX`]); `false` once the queue is closed and empty.
pub(super) async fn gather<T>(
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

pub(super) async fn mark_done(
    pool: &PgPool,
    subscription: &str,
    ids: &[Uuid],
) -> Result<(), Error> {
    // Committed without waiting for the disk: a crash of Postgres that loses the mark delivers
    // the message again (at least once), never loses it, and the batch's acker does not wait
    // for an fsync (a third of the delivered messages/s with synchronous commits).
    sqlx::query(async_commit!(
        "UPDATE ovation_deliveries
         SET state = 'done', done_at = now(), last_error = NULL, claimed_by = NULL
         FROM async_commit
         WHERE subscription = $1 AND message_id = ANY($2) AND state = 'pending'"
    ))
    .bind(subscription)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn record(
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
