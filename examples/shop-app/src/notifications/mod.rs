//! The `notifications` service: sends an order confirmation for every `OrderCreated`.
//!
//! "Sending" records the email in this service's database (and logs it); the order id is the
//! key, so a message delivered twice sends one email.

use ovation::prelude::*;

use crate::orders::OrderCreated;
use crate::users;

static DB: Database = ovation::database!("notifications", migrations = "./migrations");

#[ovation::model]
#[derive(PartialEq)]
pub struct Notification {
    pub order_id: Uuid,
    pub email: String,
    pub subject: String,
    pub body: String,
    pub sent_at: chrono::DateTime<chrono::Utc>,
    /// How many times the event was delivered (at-least-once); the email went out once.
    pub deliveries: i32,
}

#[ovation::model]
pub struct Notifications {
    pub notifications: Vec<Notification>,
}

#[subscription(topic = crate::orders::ORDER_CREATED, name = "send-order-confirmation")]
async fn send_confirmation(event: OrderCreated) -> Result<(), Error> {
    let user = users::get(event.user_id).await?;
    let subject = "Order Confirmed";
    let body = format!(
        "Your order #{} for ${}.{:02} has been confirmed.",
        event.order_id,
        event.total / 100,
        event.total % 100
    );
    // A redelivery finds the row: it counts, and sends nothing. `xmax = 0` tells a fresh
    // insert from the update of an existing row.
    let first: bool = sqlx::query_scalar!(
        "INSERT INTO notifications (order_id, user_id, email, subject, body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id) DO UPDATE SET deliveries = notifications.deliveries + 1
         RETURNING (xmax = 0) AS \"first!\"",
        event.order_id,
        user.id,
        &user.email,
        subject,
        &body
    )
    .fetch_one(DB.pool())
    .await?;
    if first {
        ovation::tracing::info!(to = %user.email, subject, "email sent");
    }
    Ok(())
}

/// The emails sent to a user, oldest first.
#[api(public, method = "GET", path = "/notifications/:user_id")]
pub async fn list(user_id: Uuid) -> Result<Notifications, Error> {
    let notifications = sqlx::query_as!(
        Notification,
        "SELECT order_id, email, subject, body, sent_at, deliveries FROM notifications
         WHERE user_id = $1 ORDER BY sent_at, order_id",
        user_id
    )
    .fetch_all(DB.pool())
    .await?;
    Ok(Notifications { notifications })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::fixtures;
    use crate::orders;

    async fn wait_for(user_id: Uuid, count: usize) -> Vec<Notification> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sent = list(user_id).await.unwrap().notifications;
            if sent.len() >= count || Instant::now() > deadline {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[ovation::test]
    async fn an_order_is_confirmed_by_email_once() {
        let user = fixtures::user("buyer@example.com", "Buyer").await;
        let product = fixtures::product("Widget", 1250, 5).await;
        let order = orders::create(orders::CreateOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
        })
        .await
        .unwrap();

        let sent = wait_for(user.id, 1).await;
        assert_eq!(sent.len(), 1, "no confirmation within 10 s");
        assert_eq!(sent[0].order_id, order.id);
        assert_eq!(sent[0].email, "buyer@example.com");
        assert_eq!(sent[0].subject, "Order Confirmed");
        assert_eq!(
            sent[0].body,
            format!("Your order #{} for $25.00 has been confirmed.", order.id)
        );

        // The same event again (a redelivery): handled, and nothing is sent twice.
        let again = orders::OrderCreated {
            order_id: order.id,
            user_id: user.id,
            total: 2500,
            reservation_id: None,
        };
        orders::ORDER_CREATED.publish(&again).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ovation::pubsub::stats("send-order-confirmation")
            .await
            .unwrap()
            .delivered
            < 2
        {
            assert!(
                Instant::now() < deadline,
                "the second delivery was not handled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = list(user.id).await.unwrap().notifications;
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].deliveries, 2);
    }

    #[ovation::test]
    async fn a_failed_order_publishes_nothing() {
        let user = fixtures::user("short@example.com", "Short").await;
        let product = fixtures::product("Rare", 100, 1).await;
        let err = orders::create(orders::CreateOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = ovation::pubsub::stats("send-order-confirmation")
            .await
            .unwrap();
        assert_eq!(stats, ovation::pubsub::SubscriptionStats::default());
    }
}
