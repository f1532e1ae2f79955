//! Pub/Sub: durable topics and subscriptions.
//!
//! ```ignore
//! // orders: the topic, and a publish inside the order's own transaction
//! pub static ORDER_CREATED: Topic<OrderCreated> = ovation::topic!("order-created");
//!
//! let mut tx = DB.begin().await?;
//! let order = /* INSERT ... */;
//! ORDER_CREATED.publish_in(&mut tx, &OrderCreated { .. }).await?;
//! tx.commit().await?; // the message exists only if the order does
//!
//! // notifications: a subscription
//! #[subscription(topic = crate::orders::ORDER_CREATED, name = "send-order-confirmation")]
//! async fn send_confirmation(event: OrderCreated) -> Result<(), Error> { .. }
//! ```
//!
//! Every subscription gets every message published after it exists, at least once. A handler
//! that fails, panics or outlives its `ack_deadline` is retried with exponential backoff from
//! `min_backoff` to `max_backoff`; after `max_retries` retries the message becomes a dead letter
//! of that subscription, listed by [`dead_letters`] and put back by [`redrive`].
//!
//! The backend is Postgres (`postgres` module): a framework-owned database on the same server
//! as the service databases, with no extra process to run.

pub(crate) mod nats;
pub(crate) mod postgres;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Postgres, Transaction};
use tracing::Instrument;

use crate::error::Error;
use crate::runtime::service_of;

/// The id of a published message.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct MessageId(pub uuid::Uuid);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What `topic!` declares.
#[doc(hidden)]
#[derive(Debug)]
pub struct TopicDef {
    pub name: &'static str,
    pub module: &'static str,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct TopicEntry(pub &'static TopicDef);
inventory::collect!(TopicEntry);

/// A topic carrying messages of type `T`, declared as a static with [`topic!`](crate::topic).
pub struct Topic<T> {
    def: &'static TopicDef,
    _message: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.def.name)
            .finish()
    }
}

/// A type that can be published: serialisable to JSON and back.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a Pub/Sub message",
    label = "derive `Serialize` and `Deserialize` for this type"
)]
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T> Message for T where T: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Message> Topic<T> {
    #[doc(hidden)]
    pub const fn __new(def: &'static TopicDef) -> Self {
        Topic {
            def,
            _message: PhantomData,
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &'static str {
        self.def.name
    }

    /// Publishes `message` now, to every subscription of the topic.
    pub async fn publish(&self, message: &T) -> Result<MessageId, Error> {
        let rt = crate::runtime::current()?;
        let pubsub = rt.pubsub()?;
        let payload = encode(message)?;
        pubsub
            .publish(self.def.name, payload)
            .instrument(self.span())
            .await
    }

    /// The producer span of a publish; the message carries its trace context.
    fn span(&self) -> tracing::Span {
        if !crate::telemetry::exporting() {
            return tracing::Span::none();
        }
        let service = crate::runtime::context().ok().and_then(|c| c.service);
        tracing::info_span!(
            "publish",
            otel.name = %format!("publish {}", self.def.name),
            otel.kind = "producer",
            topic = self.def.name,
            service,
        )
    }

    /// Publishes `messages` in one transaction: all or none. Much cheaper per message than
    /// `publish` in a loop (see `tests/benches/pubsub.rs`).
    pub async fn publish_batch(&self, messages: &[T]) -> Result<Vec<MessageId>, Error> {
        let rt = crate::runtime::current()?;
        let payloads = messages.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        rt.pubsub()?
            .publish_batch(self.def.name, payloads)
            .instrument(self.span())
            .await
    }

    /// Writes `message` in the caller's transaction `tx` (on a service database): it is
    /// published if and only if `tx` commits. A relay moves committed messages to the topic.
    pub async fn publish_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        message: &T,
    ) -> Result<MessageId, Error> {
        let payload = encode(message)?;
        postgres::write_outbox(tx, self.def.name, payload)
            .instrument(self.span())
            .await
    }
}

fn encode<T: Serialize>(message: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(message)
        .map_err(|e| Error::internal(format!("the message could not be encoded: {e}")))
}

#[doc(hidden)]
/// Every topic declared in the app, by name.
pub fn topics() -> &'static [&'static TopicDef] {
    static ALL: std::sync::OnceLock<Vec<&'static TopicDef>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<&'static TopicDef> = inventory::iter::<TopicEntry>
            .into_iter()
            .map(|e| e.0)
            .collect();
        all.sort_by_key(|t| t.name);
        all.dedup_by_key(|t| t.name);
        all
    })
}

#[doc(hidden)]
/// A subscription's delivery settings. Serialised with durations in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SubscriptionConfig {
    /// Retries after the first attempt before the message becomes a dead letter.
    pub max_retries: u32,
    #[serde(rename = "min_backoff_ms", serialize_with = "millis")]
    pub min_backoff: Duration,
    #[serde(rename = "max_backoff_ms", serialize_with = "millis")]
    pub max_backoff: Duration,
    /// How long a handler may run; past it, it is cancelled and the attempt fails.
    #[serde(rename = "ack_deadline_ms", serialize_with = "millis")]
    pub ack_deadline: Duration,
    /// Handlers of this subscription running at once, per process.
    pub max_concurrency: usize,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

impl SubscriptionConfig {
    /// Encore's defaults: 100 retries, backoff from 10 s to 10 min, 30 s to handle a message.
    pub const DEFAULT: SubscriptionConfig = SubscriptionConfig {
        max_retries: 100,
        min_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(600),
        ack_deadline: Duration::from_secs(30),
        max_concurrency: 100,
    };

    /// The wait before the retry that follows failed attempt number `attempt` (1-based):
    /// `min_backoff`, doubled each attempt, at most `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.min_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A handler, type-erased: decoding failure is `Err` (the message can never be handled).
#[doc(hidden)]
pub type Handler = fn(
    serde_json::Value,
) -> Result<Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>, String>;

/// What `#[subscription]` declares.
#[doc(hidden)]
#[derive(Debug)]
pub struct SubscriptionDef {
    pub name: &'static str,
    pub module: &'static str,
    pub topic: fn() -> &'static str,
    pub config: SubscriptionConfig,
    pub handler: Handler,
    pub location: &'static str,
}

impl SubscriptionDef {
    /// The service that owns the subscription: its handler runs where that service is hosted.
    pub fn service(&self) -> &'static str {
        service_of(self.module)
    }
}

#[doc(hidden)]
#[derive(Debug)]
pub struct SubscriptionEntry(pub &'static SubscriptionDef);
inventory::collect!(SubscriptionEntry);

#[doc(hidden)]
/// Every subscription declared in the app, by name.
///
/// Computed once: the registry is fixed at link time, and publishing consults it every time.
pub fn subscriptions() -> &'static [&'static SubscriptionDef] {
    static ALL: std::sync::OnceLock<Vec<&'static SubscriptionDef>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<&'static SubscriptionDef> = inventory::iter::<SubscriptionEntry>
            .into_iter()
            .map(|e| e.0)
            .collect();
        all.sort_by_key(|s| s.name);
        all
    })
}

/// Decodes a message for a handler of `T`.
#[doc(hidden)]
pub fn decode<T: Message>(payload: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(payload).map_err(|e| format!("the message does not decode: {e}"))
}

/// Whether the app uses Pub/Sub at all (and so needs its database).
pub(crate) fn in_use() -> bool {
    !topics().is_empty() || !subscriptions().is_empty()
}

/// The delivery being handled, as seen from inside a subscription handler.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub message_id: MessageId,
    pub subscription: &'static str,
    pub published_at: chrono::DateTime<chrono::Utc>,
    /// 1 for the first delivery.
    pub attempt: u32,
    /// The publisher's W3C trace context, when it had one.
    pub traceparent: Option<String>,
}

tokio::task_local! {
    pub(crate) static DELIVERY: Delivery;
}

/// The delivery the current subscription handler is handling; `None` outside handlers.
pub fn delivery() -> Option<Delivery> {
    DELIVERY.try_with(Clone::clone).ok()
}

/// A message a subscription gave up on.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: MessageId,
    pub topic: String,
    pub payload: serde_json::Value,
    pub published_at: chrono::DateTime<chrono::Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The dead letters of `subscription`, oldest first.
pub async fn dead_letters(subscription: &str) -> Result<Vec<DeadLetter>, Error> {
    crate::runtime::current()?
        .pubsub()?
        .dead_letters(subscription)
        .await
}

/// Puts dead letters of `subscription` back for delivery, with fresh retries: one message, or
/// all of them. Returns how many.
pub async fn redrive(subscription: &str, message: Option<MessageId>) -> Result<u64, Error> {
    crate::runtime::current()?
        .pubsub()?
        .redrive(subscription, message)
        .await
}

/// Counts of one subscription's messages by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubscriptionStats {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
}

/// Counts of `subscription`'s messages by state.
pub async fn stats(subscription: &str) -> Result<SubscriptionStats, Error> {
    crate::runtime::current()?
        .pubsub()?
        .stats(subscription)
        .await
}

/// Declares a topic: `pub static ORDER_CREATED: Topic<OrderCreated> = ovation::topic!("order-created");`
#[macro_export]
macro_rules! topic {
    ($name:literal) => {{
        static __OVATION_TOPIC: $crate::__private::TopicDef = $crate::__private::TopicDef {
            name: $name,
            module: ::core::module_path!(),
        };
        $crate::__private::inventory::submit! { $crate::__private::TopicEntry(&__OVATION_TOPIC) }
        $crate::pubsub::Topic::__new(&__OVATION_TOPIC)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_min_to_max() {
        let c = SubscriptionConfig {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..SubscriptionConfig::DEFAULT
        };
        let waits: Vec<u128> = (1..=6).map(|a| c.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_millis(1000));
    }
}
