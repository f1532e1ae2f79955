//! The NATS JetStream transport of Pub/Sub, for scale-out.
//!
//! A stream per topic (`<prefix>_<topic>`, subject `<prefix>.<topic>`), a durable pull consumer
//! per subscription. Backoff is a delayed NAK; a message past `max_retries` is terminated in
//! JetStream and kept by Ovation as a dead letter in the `ovation_pubsub` Postgres tables, which
//! is also where the delivered counts live. A redrive republishes a dead letter with an
//! `Ovation-Redrive-For` header naming its subscription; the topic's other subscriptions
//! acknowledge it without handling it. (A consumer with a filter per subscription would avoid
//! that, but needs nats-server 2.10; Debian 12 ships 2.9.)

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use bytes::Bytes;
use uuid::Uuid;

use super::SubscriptionDef;
use crate::error::Error;

pub(crate) const REDRIVE_HEADER: &str = "Ovation-Redrive-For";
const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";
const PUBLISHED_HEADER: &str = "Ovation-Published-At";
const TRACEPARENT_HEADER: &str = "traceparent";
/// Messages a consumer may hold beyond its running handlers: those whose success is being
/// counted and acknowledged, and those waiting for a handler's permit.
const ACK_PIPELINE: usize = 1000;

/// A connection to JetStream, with this runtime's naming prefix.
#[derive(Debug, Clone)]
pub(crate) struct Nats {
    js: jetstream::Context,
    prefix: String,
}

/// A message to publish.
pub(crate) struct Publish<'a> {
    pub id: Uuid,
    pub topic: &'a str,
    pub payload: &'a serde_json::Value,
    pub published_at: Option<chrono::DateTime<chrono::Utc>>,
    pub traceparent: Option<&'a str>,
    pub redrive_for: Option<&'a str>,
}

/// A received message, decoded for a handler.
pub(crate) struct Received {
    pub message: jetstream::Message,
    pub id: Uuid,
    pub attempt: u32,
    pub published_at: chrono::DateTime<chrono::Utc>,
    pub traceparent: Option<String>,
    pub redrive_for: Option<String>,
}

fn nats_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("NATS {what} failed: {e}"))
}

/// Stream and consumer names allow letters, digits, `-` and `_`.
fn name(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Nats {
    pub(crate) async fn connect(url: &str, prefix: String) -> Result<Nats, Error> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| nats_err(&format!("connecting to {url}"), e))?;
        Ok(Nats {
            js: jetstream::new(client),
            prefix,
        })
    }

    fn stream_name(&self, topic: &str) -> String {
        format!("{}_{}", self.prefix, name(topic))
    }

    fn subject(&self, topic: &str) -> String {
        format!("{}.{}", self.prefix, name(topic))
    }

    /// Creates the stream of `topic` unless it exists.
    pub(crate) async fn ensure_stream(&self, topic: &str) -> Result<stream::Stream, Error> {
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream_name(topic),
                subjects: vec![self.subject(topic)],
                max_age: Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|e| nats_err("creating a stream", e))
    }

    /// Publishes messages, waiting for JetStream to store each (pipelined).
    pub(crate) async fn publish(&self, messages: &[Publish<'_>]) -> Result<(), Error> {
        let mut acks = Vec::with_capacity(messages.len());
        // A batch is one topic's: its subject is made once, and cloned as `Bytes`.
        let mut subject: Option<(&str, async_nats::Subject)> = None;
        for m in messages {
            let to = match &subject {
                Some((topic, to)) if *topic == m.topic => to.clone(),
                _ => {
                    let to = async_nats::Subject::from(self.subject(m.topic));
                    subject = Some((m.topic, to.clone()));
                    to
                }
            };
            let payload =
                serde_json::to_vec(m.payload).map_err(|e| Error::internal(e.to_string()))?;
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(Bytes::from(payload))
                .message_id(m.id.to_string());
            // Published earlier (from the outbox, or a redrive): JetStream's time would be the
            // relay's. Otherwise JetStream's is the publish time, and a header less per message
            // is less to write, store, parse and look up at both ends.
            if let Some(at) = m.published_at {
                publish = publish.header(PUBLISHED_HEADER, at.to_rfc3339());
            }
            if let Some(t) = m.traceparent {
                publish = publish.header(TRACEPARENT_HEADER, t);
            }
            if let Some(sub) = m.redrive_for {
                publish = publish.header(REDRIVE_HEADER, sub);
            }
            acks.push(
                self.js
                    .send_publish(to, publish)
                    .await
                    .map_err(|e| nats_err("publishing", e))?,
            );
        }
        for ack in acks {
            ack.await.map_err(|e| nats_err("storing a message", e))?;
        }
        Ok(())
    }

    /// The durable consumer of a subscription.
    pub(crate) async fn consumer(
        &self,
        sub: &SubscriptionDef,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, Error> {
        let stream = self.ensure_stream((sub.topic)()).await?;
        let durable = format!("{}_{}", self.prefix, name(sub.name));
        stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: sub.config.ack_deadline + Duration::from_secs(5),
                    // Room for the handlers running (`max_concurrency`, a semaphore of
                    // Ovation's) and for the successes being counted and acked in batches:
                    // with only `max_concurrency` here, each message held its slot for the
                    // ~5-10 ms of that pipeline after its handler, a fifth of the throughput.
                    max_ack_pending: i64::try_from(sub.config.max_concurrency + ACK_PIPELINE)
                        .unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| nats_err("creating a consumer", e))
    }

    /// Messages waiting for, or being handled by, a subscription.
    pub(crate) async fn pending(&self, sub: &SubscriptionDef) -> Result<u64, Error> {
        let mut consumer = self.consumer(sub).await?;
        let info = consumer
            .info()
            .await
            .map_err(|e| nats_err("reading a consumer", e))?;
        Ok(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0))
    }

    /// Deletes this runtime's streams (test clean-up).
    pub(crate) async fn delete_streams(&self, topics: &[&str]) {
        for topic in topics {
            let _ = self.js.delete_stream(self.stream_name(topic)).await;
        }
    }
}

/// Reads what a handler needs from a JetStream message.
pub(crate) fn receive(message: jetstream::Message) -> Received {
    let header = |key: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(key))
            .map(|v| v.as_str().to_owned())
    };
    let id = header(MESSAGE_ID_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(Uuid::new_v4);
    let info = message.info().ok();
    let attempt = info
        .as_ref()
        .map_or(1, |i| u32::try_from(i.delivered).unwrap_or(1));
    let published_at = header(PUBLISHED_HEADER)
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(&v).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|| info.map(|i| i.published))
        .unwrap_or_else(chrono::Utc::now);
    let traceparent = header(TRACEPARENT_HEADER);
    let redrive_for = header(REDRIVE_HEADER);
    Received {
        message,
        id,
        attempt,
        published_at,
        traceparent,
        redrive_for,
    }
}

/// Acknowledges, schedules a redelivery after `delay`, or terminates a message.
pub(crate) async fn settle(message: &jetstream::Message, how: AckKind) -> Result<(), Error> {
    message
        .ack_with(how)
        .await
        .map_err(|e| nats_err("acknowledging", e))
}
