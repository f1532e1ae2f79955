//! What the dashboard and redrive read and change: dead letters, per-subscription counts,
//! redrive (on both transports).

use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct DeadRow {
    id: Uuid,
    topic: String,
    payload: serde_json::Value,
    published_at: chrono::DateTime<chrono::Utc>,
    attempt: i32,
    last_error: Option<String>,
}

impl PgPubSub {
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
        nats: &crate::pubsub::nats::Nats,
        subscription: &str,
        message: Option<MessageId>,
    ) -> Result<u64, Error> {
        let dead = self.dead_letters(subscription).await?;
        let dead: Vec<_> = dead
            .into_iter()
            .filter(|d| message.is_none_or(|m| m == d.message_id))
            .collect();
        let publishes: Vec<crate::pubsub::nats::Publish<'_>> = dead
            .iter()
            .map(|d| crate::pubsub::nats::Publish {
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
            let sub = crate::pubsub::subscriptions()
                .iter()
                .find(|s| s.name == subscription)
                .ok_or_else(|| Error::not_found(format!("no subscription `{subscription}`")))?;
            let waiting = nats.pending(sub).await?;
            // JetStream holds the messages not yet handled; this database the counted
            // successes, the retries waiting (and how they ended) and the dead letters.
            let (counted, retrying, retried, dead): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT coalesce(max(delivered), 0) FROM ovation_nats_delivered WHERE subscription = $1),
                        count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE state = 'done'),
                        count(*) FILTER (WHERE state = 'dead')
                 FROM ovation_deliveries WHERE subscription = $1",
            )
            .bind(subscription)
            .fetch_one(&self.pool)
            .await?;
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            let (pending, delivered) = (waiting + n(retrying), n(counted + retried));
            return Ok(SubscriptionStats {
                pending,
                delivered,
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
}
