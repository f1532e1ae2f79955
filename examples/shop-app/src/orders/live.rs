//! `GET /orders/live`: a WebSocket stream of every order confirmed anywhere in the app, as
//! `{"orderId", "productId", "quantity", "totalCents"}`, within a second of its confirmation.
//!
//! The feed comes from the `order-created` topic, so it spans processes and replicas:
//!
//! 1. the `live-orders` subscription (delivered to one process of `orders`) announces the
//!    order with Postgres `NOTIFY orders_live` on the orders database;
//! 2. every process serving `orders` listens on that channel from start-up
//!    ([`listen`]), drops an order it has announced already (delivery is at least once), and
//!    hands each order to its open streams through a broadcast channel;
//! 3. each stream sends what it receives, in the order its process heard the announcements.
//!
//! The shop's status page (`/`, from `examples/shop-app/public`) shows the feed.
//!
//! A client that reads nothing is disconnected by the stream's back-pressure (see
//! `ovation::stream`); one whose stream falls more than [`BACKLOG`] orders behind the
//! broadcast is closed with `resource_exhausted`, so neither can hold memory.

use std::collections::{HashSet, VecDeque};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use ovation::prelude::*;
use ovation::stream::StreamOut;
use tokio::sync::broadcast;

use super::{DB, ORDER_CREATED, OrderCreated};

/// One confirmed order, as the stream sends it.
#[ovation::model]
#[derive(PartialEq)]
pub struct LiveOrder {
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
    pub total_cents: i64,
}

/// Orders a stream may lag behind the broadcast before it is closed.
pub const BACKLOG: usize = 1024;

/// How many announced order ids a process remembers, to drop a redelivery's announcement.
const REMEMBERED: usize = 10_000;

const CHANNEL: &str = "orders_live";

static FEED: LazyLock<broadcast::Sender<LiveOrder>> =
    LazyLock::new(|| broadcast::channel(BACKLOG).0);

/// The orders this process has handed to its streams, newest last: shared by every listener
/// of the process (a test runs several "processes" in one).
static ANNOUNCED: LazyLock<Mutex<(HashSet<Uuid>, VecDeque<Uuid>)>> = LazyLock::new(Mutex::default);

/// Hands `order` to the open streams unless it was handed already.
fn hand_out(order: LiveOrder) {
    let mut announced = ANNOUNCED.lock().unwrap_or_else(PoisonError::into_inner);
    let (seen, oldest_first) = &mut *announced;
    if !seen.insert(order.order_id) {
        return;
    }
    oldest_first.push_back(order.order_id);
    if oldest_first.len() > REMEMBERED
        && let Some(oldest) = oldest_first.pop_front()
    {
        seen.remove(&oldest);
    }
    // Sent while holding the lock, so every stream sees the orders in one order. No open
    // stream is no error.
    let _ = FEED.send(order);
}

/// Pushes every order confirmed from now on, until the client goes away.
#[api(stream, public, path = "/orders/live")]
pub async fn live(mut out: StreamOut<LiveOrder>) -> Result<(), Error> {
    let mut feed = FEED.subscribe();
    loop {
        match feed.recv().await {
            Ok(order) => out.send(&order).await?,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                return Err(Error::resource_exhausted(format!(
                    "the stream fell {missed} orders behind: reconnect"
                )));
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// Announces a confirmed order to every process serving `orders`.
#[subscription(topic = ORDER_CREATED, name = "live-orders")]
async fn announce(event: OrderCreated) -> Result<(), Error> {
    // One statement: the order's row as the stream sends it, announced if it is confirmed.
    sqlx::query!(
        "SELECT pg_notify($1, json_build_object(
             'orderId', id, 'productId', product_id,
             'quantity', quantity, 'totalCents', total_cents)::text)
         FROM orders WHERE id = $2 AND status = 'confirmed'",
        CHANNEL,
        event.order_id
    )
    .execute(DB.pool())
    .await?;
    Ok(())
}

/// Listens for announcements for as long as the process serves `orders`, handing each order
/// to the open streams once.
async fn listen() {
    loop {
        let mut listener = match ovation::sqlx::postgres::PgListener::connect_with(DB.pool()).await
        {
            Ok(listener) => listener,
            Err(e) => {
                ovation::tracing::warn!("live orders: cannot listen on the orders database: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            ovation::tracing::warn!("live orders: LISTEN failed: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            let notification = match listener.recv().await {
                Ok(n) => n,
                Err(e) => {
                    ovation::tracing::warn!("live orders: the listening connection failed: {e}");
                    break;
                }
            };
            if let Ok(live) = serde_json::from_str::<LiveOrder>(notification.payload()) {
                hand_out(live);
            }
        }
    }
}

ovation::on_start!(listen);

// The status page at `/`, which shows this feed.
ovation::static_files!("/", dir = "./public");
