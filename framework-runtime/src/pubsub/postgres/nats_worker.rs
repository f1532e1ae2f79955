//! Delivery from NATS JetStream: the same handlers and retry policy, with retries, dead letters
//! and counts kept in Pub/Sub's Postgres store.
//!
//! A message that fails with retries left is not NAKed with a delay (it would hold one of the
//! consumer's `max_ack_pending` slots while it waits, and enough failing messages would stop
//! the subscription): it is stored as a pending delivery in `ovation_deliveries`, due after its
//! backoff, and then acknowledged in JetStream. The subscription's Postgres worker, which runs
//! beside this one under the same `max_concurrency` permits, claims it when due; from then on it
//! is retried, and ends done or dead, exactly as on the Postgres transport.

use super::*;
use crate::pubsub::nats::Received;

/// Handles the messages of one subscription from its JetStream consumer until stopped, then
/// lets the handlers running finish.
///
/// A delivery is a future of this task, not a task of its own: up to `max_concurrency` of them
/// run concurrently here, as the requests of one HTTP/2 connection do. A task per message cost
/// an allocation, a copy of the whole delivery future and a wake-up on another thread: about a
/// tenth of the delivered messages/s of the pubsub bench. The handlers of one subscription
/// therefore share one thread at a time: work that keeps a CPU busy belongs in
/// `spawn_blocking`, as it does in an endpoint.
pub(super) async fn work_nats(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    pubsub: &'static PgPubSub,
    nats: &'static crate::pubsub::nats::Nats,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    let _busy = pubsub.busy.clone();
    let (acks, ack_queue) = tokio::sync::mpsc::unbounded_channel::<Received>();
    let busy = pubsub.busy.clone();
    tokio::spawn(async move {
        count_and_ack(pubsub.pool.clone(), sub.name, ack_queue).await;
        drop(busy);
    });
    let deliver = |message: async_nats::jetstream::Message| {
        let (acks, permits) = (&acks, permits.clone());
        async move {
            let waiting = tokio::time::Instant::now();
            // Shared with the Postgres worker's retries of this subscription.
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            // Waited for a handler to finish: JetStream's redelivery timer (the ack deadline
            // + 5 s) starts again now, so the wait does not count against it.
            if waiting.elapsed() > Duration::from_secs(1) {
                let _ =
                    crate::pubsub::nats::settle(&message, async_nats::jetstream::AckKind::Progress)
                        .await;
            }
            handle_nats(rt, sub, pubsub, acks, crate::pubsub::nats::receive(message)).await;
            drop(permit);
        }
    };
    let max = sub.config.max_concurrency.max(1);
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut incoming = std::pin::pin!(incoming(nats, sub));
    while !*stop.borrow() {
        tokio::select! {
            Some(()) = running.next(), if !running.is_empty() => {}
            Some(message) = incoming.next(), if running.len() < max => running.push(deliver(message)),
            changed = stop.changed() => if changed.is_err() { break },
        }
    }
    while running.next().await.is_some() {}
}

/// The messages of a subscription's consumer, (re)connecting as long as it is polled.
fn incoming(
    nats: &'static crate::pubsub::nats::Nats,
    sub: &'static SubscriptionDef,
) -> impl futures_util::Stream<Item = async_nats::jetstream::Message> {
    use futures_util::StreamExt;
    futures_util::stream::unfold(None, move |mut messages| async move {
        loop {
            let Some(stream) = &mut messages else {
                match nats.consumer(sub).await {
                    Ok(consumer) => match consumer.messages().await {
                        Ok(stream) => messages = Some(stream),
                        Err(e) => {
                            tracing::warn!(
                                subscription = sub.name,
                                "NATS subscription failed: {e}"
                            );
                            tokio::time::sleep(POLL).await;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(subscription = sub.name, "{e}");
                        tokio::time::sleep(POLL).await;
                    }
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(message)) => return Some((message, messages)),
                Some(Err(e)) => tracing::debug!(subscription = sub.name, "NATS: {e}"),
                None => messages = None,
            }
        }
    })
}

pub(super) async fn handle_nats(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    pubsub: &PgPubSub,
    acks: &tokio::sync::mpsc::UnboundedSender<Received>,
    received: Received,
) {
    use async_nats::jetstream::AckKind;
    // A redrive for another subscription of this topic: not ours.
    if received
        .redrive_for
        .as_deref()
        .is_some_and(|target| target != sub.name)
    {
        let _ = crate::pubsub::nats::settle(&received.message, AckKind::Ack).await;
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
            // Counted, then acknowledged (by `count_and_ack`): a crash in between delivers
            // it again, and never loses a count.
            let _ = acks.send(received);
            return;
        }
        Outcome::Failed(error) if attempt <= sub.config.max_retries => {
            let backoff = sub.config.backoff(attempt);
            tracing::info!(subscription = sub.name, message = %received.id, attempt, retry_in = ?backoff, "delivery failed: {error}");
            // Stored before JetStream lets go of it: a crash in between delivers it twice
            // (at least once), never loses it.
            let payload = nats_payload(&received.message.payload);
            match schedule_retry(pubsub, sub, &received, payload, attempt, backoff, &error).await {
                Ok(()) => {
                    // The worker sleeps until its next due delivery: this one may be sooner.
                    pubsub.wake.notify_waiters();
                    crate::pubsub::nats::settle(&received.message, AckKind::Ack).await
                }
                // Not stored: JetStream keeps it, and delivers it again after the backoff.
                Err(e) => {
                    crate::pubsub::nats::settle(&received.message, AckKind::Nak(Some(backoff)))
                        .await
                        .and(Err(e))
                }
            }
        }
        Outcome::Failed(error) | Outcome::Poison(error) => {
            tracing::warn!(subscription = sub.name, message = %received.id, attempt, "dead letter: {error}");
            // Kept before JetStream lets go of it: a crash in between redelivers, never loses.
            // Decoded again: only dead letters need the payload after the handler has it.
            let payload = nats_payload(&received.message.payload);
            match store_dead(pubsub, sub, &received, payload, attempt, &error).await {
                Ok(()) => crate::pubsub::nats::settle(&received.message, AckKind::Term).await,
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = settled {
        tracing::warn!(subscription = sub.name, message = %received.id, "{e}; it will be delivered again");
    }
}

/// A NATS message's payload as JSON (a string saying what is wrong if it is not JSON).
pub(super) fn nats_payload(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| serde_json::Value::String(format!("(not JSON: {e})")))
}

/// Stores a failed message as a delivery of `sub` due after `backoff`: its retries are the
/// Postgres worker's from now on.
async fn schedule_retry(
    pubsub: &PgPubSub,
    sub: &SubscriptionDef,
    received: &Received,
    payload: serde_json::Value,
    attempt: u32,
    backoff: Duration,
    error: &str,
) -> Result<(), Error> {
    let mut tx = pubsub.pool.begin().await?;
    insert_message(&mut tx, sub, received, payload).await?;
    sqlx::query(
        "INSERT INTO ovation_deliveries (subscription, message_id, state, attempt, next_at, last_error)
         VALUES ($1, $2, 'pending', $3, now() + make_interval(secs => $4), $5)
         ON CONFLICT (subscription, message_id) DO NOTHING",
    )
    .bind(sub.name)
    .bind(received.id)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(backoff.as_secs_f64())
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_message(
    tx: &mut Transaction<'_, Postgres>,
    sub: &SubscriptionDef,
    received: &Received,
    payload: serde_json::Value,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ovation_messages (id, topic, payload, published_at, traceparent)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(received.id)
    .bind((sub.topic)())
    .bind(payload)
    .bind(received.published_at)
    .bind(&received.traceparent)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn store_dead(
    pubsub: &PgPubSub,
    sub: &SubscriptionDef,
    received: &Received,
    payload: serde_json::Value,
    attempt: u32,
    error: &str,
) -> Result<(), Error> {
    let mut tx = pubsub.pool.begin().await?;
    insert_message(&mut tx, sub, received, payload).await?;
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

/// Counts successes of a NATS subscription in batches, then acknowledges them in JetStream:
/// a crash between the two delivers a message again (counted twice, handled twice: at least
/// once), never loses a count.
pub(super) async fn count_and_ack(
    pool: PgPool,
    subscription: &'static str,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Received>,
) {
    use async_nats::jetstream::AckKind;
    let mut batch = Vec::with_capacity(GATHER_MAX);
    while gather(&mut queue, &mut batch, ACK_GATHER).await {
        let counted = count(&pool, subscription, batch.len()).await;
        match counted {
            Ok(_) => {
                let acks = batch
                    .iter()
                    .map(|r| crate::pubsub::nats::settle(&r.message, AckKind::Ack));
                for (received, acked) in
                    batch.iter().zip(futures_util::future::join_all(acks).await)
                {
                    if let Err(e) = acked {
                        tracing::warn!(subscription, message = %received.id, "{e}; it will be delivered again");
                    }
                }
            }
            // Not acknowledged either: JetStream delivers them again after the ack wait.
            Err(e) => tracing::warn!(
                subscription,
                "could not count {} deliveries: {e}; they will be delivered again",
                batch.len()
            ),
        }
        batch.clear();
    }
}

/// Adds `n` to the delivered count of `subscription`, without waiting for the disk: only a crash
/// of Postgres itself can lose it (the app's crash cannot: it is acked after this commits).
async fn count(pool: &PgPool, subscription: &str, n: usize) -> Result<(), Error> {
    sqlx::query(async_commit!(
        "INSERT INTO ovation_nats_delivered (subscription, delivered)
         SELECT $1, $2 FROM async_commit
         ON CONFLICT (subscription) DO UPDATE
         SET delivered = ovation_nats_delivered.delivered + excluded.delivered"
    ))
    .bind(subscription)
    .bind(i64::try_from(n).unwrap_or(0))
    .execute(pool)
    .await?;
    Ok(())
}
