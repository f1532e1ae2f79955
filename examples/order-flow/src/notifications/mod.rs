//! The `notifications` service: a confirmation for every `OrderCreated`, recorded once per
//! order however often the event is delivered.

use ovation::prelude::*;

use crate::orders::OrderCreated;
use crate::users;

static DB: Database = ovation::database!("notifications", migrations = "./migrations");

#[subscription(topic = crate::orders::ORDER_CREATED, name = "send-order-confirmation")]
async fn send_confirmation(event: OrderCreated) -> Result<(), Error> {
    let user = users::get(event.user_id).await?;
    let body = format!(
        "Your order #{} for ${}.{:02} has been confirmed.",
        event.order_id,
        event.total / 100,
        event.total % 100
    );
    sqlx::query(
        "INSERT INTO notifications (order_id, user_id, email, subject, body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id) DO UPDATE SET deliveries = notifications.deliveries + 1",
    )
    .bind(event.order_id)
    .bind(user.id)
    .bind(&user.email)
    .bind("Order Confirmed")
    .bind(&body)
    .execute(DB.pool())
    .await?;
    Ok(())
}

/// How many confirmations a user was sent.
pub async fn sent_to(user_id: Uuid) -> Result<i64, Error> {
    let sent = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(DB.pool())
        .await?;
    Ok(sent)
}
