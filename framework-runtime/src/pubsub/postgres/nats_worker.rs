//! Delivery from NATS JetStream: the same handlers and retry policy, with dead letters and
//! counts kept in Pub/Sub's Postgres store.

use super::*;

/// Handles the messages of one subscription from its JetStream consumer until stopped.
pub(super) async fn work_nats(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    pubsub: &'static PgPubSub,
    nats: &'static crate::pubsub::nats::Nats,
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
                        handle_nats(
                            rt,
                            sub,
                            pubsub,
                            &acks,
                            crate::pubsub::nats::receive(message),
                        )
                        .await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => tracing::debug!(subscription = sub.name, "NATS: {e}"),
                None => break,
            }
        }
    }
}

pub(super) async fn handle_nats(
    rt: &'static Runtime,
    sub: &'static SubscriptionDef,
    pubsub: &PgPubSub,
    acks: &tokio::sync::mpsc::UnboundedSender<Uuid>,
    received: crate::pubsub::nats::Received,
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
            let settled = crate::pubsub::nats::settle(&received.message, AckKind::Ack).await;
            if settled.is_ok() {
                let _ = acks.send(received.id);
            }
            settled
        }
        Outcome::Failed(error) if attempt <= sub.config.max_retries => {
            let backoff = sub.config.backoff(attempt);
            tracing::info!(subscription = sub.name, message = %received.id, attempt, retry_in = ?backoff, "delivery failed: {error}");
            crate::pubsub::nats::settle(&received.message, AckKind::Nak(Some(backoff))).await
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

pub(super) async fn store_dead(
    pubsub: &PgPubSub,
    sub: &SubscriptionDef,
    received: &crate::pubsub::nats::Received,
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
pub(super) async fn count_delivered(
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
