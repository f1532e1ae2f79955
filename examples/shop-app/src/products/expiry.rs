//! Reservations that no order took: confirmed by the orders' events, expired by a cron job.
//!
//! `POST /orders` reserves stock here, then records the order in its own database with its
//! `order-created` event (one transaction); a checkout reserves with its own id, and its order's
//! event carries that id. The event confirms the reservation ([`confirm_reservation`]). A
//! process that dies between reserving and recording leaves the stock reserved for no order,
//! and no event ever comes: the `expire-reservations` job gives back the stock of reservations
//! still unconfirmed after [`RESERVATION_TIMEOUT`].
//!
//! An event that arrives after its reservation expired (a subscription stopped for longer than
//! the timeout) takes the stock again, or, if it is gone, logs the oversold quantity: the order
//! exists, and only a person can decide what to do about it.

use std::time::Duration;

use ovation::prelude::*;

use super::DB;
use crate::orders::OrderCreated;

/// How long a reservation may stay unconfirmed before its stock is given back.
pub const RESERVATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Reservations expired per statement.
const BATCH: i64 = 500;

ovation::cron!(
    "expire-reservations",
    every = "1m",
    run = expire_reservations
);

/// Expires the reservations still unconfirmed after [`RESERVATION_TIMEOUT`] and gives their stock
/// back, a batch per transaction.
pub async fn expire_reservations() -> Result<(), Error> {
    let mut expired = 0;
    loop {
        let mut tx = DB.begin().await?;
        let freed = sqlx::query!(
            "WITH stale AS (
                 SELECT id FROM reservations
                  WHERE status = 'reserved' AND created_at < now() - make_interval(secs => $1)
                  ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED),
             freed AS (
                 UPDATE reservations r SET status = 'expired' FROM stale
                  WHERE r.id = stale.id RETURNING r.product_id, r.quantity)
             SELECT product_id AS \"product_id!\", sum(quantity)::bigint AS \"quantity!\",
                    count(*) AS \"n!\"
               FROM freed GROUP BY product_id",
            RESERVATION_TIMEOUT.as_secs_f64(),
            BATCH
        )
        .fetch_all(&mut *tx)
        .await?;
        let freed: Vec<(Uuid, i64, i64)> = freed
            .into_iter()
            .map(|r| (r.product_id, r.quantity, r.n))
            .collect();
        for (product, quantity, _) in &freed {
            sqlx::query!(
                "UPDATE products SET inventory = inventory + $2::bigint WHERE id = $1",
                product,
                quantity
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let n: i64 = freed.iter().map(|(_, _, n)| n).sum();
        expired += n;
        if n < BATCH {
            break;
        }
    }
    if expired > 0 {
        ovation::tracing::info!(expired, "gave back the stock of reservations no order took");
    }
    Ok(())
}

/// Confirms the reservation an order took. Idempotent (a redelivery finds it confirmed); a
/// reservation released since (the order was cancelled) stays released.
#[subscription(topic = crate::orders::ORDER_CREATED, name = "confirm-reservations")]
async fn confirm_reservation(event: OrderCreated) -> Result<(), Error> {
    let Some(reservation) = event.reservation_id else {
        return Ok(());
    };
    // The usual case, a reservation still held, in one statement; it waits for a sweep that
    // holds the row, and then finds it expired.
    let confirmed = sqlx::query!(
        "UPDATE reservations SET status = 'confirmed' WHERE id = $1 AND status = 'reserved'",
        reservation
    )
    .execute(DB.pool())
    .await?;
    if confirmed.rows_affected() == 1 {
        return Ok(());
    }
    let mut tx = DB.begin().await?;
    let row = sqlx::query!(
        "SELECT product_id, quantity, status FROM reservations WHERE id = $1 FOR UPDATE",
        reservation
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((product, quantity, status)) = row.map(|r| (r.product_id, r.quantity, r.status))
    else {
        return Ok(());
    };
    match status.as_str() {
        "reserved" => {}
        "expired" => {
            // Its stock was given back before the order's event came: take it again.
            let taken = sqlx::query!(
                "UPDATE products SET inventory = inventory - $2 WHERE id = $1 AND inventory >= $2",
                product,
                quantity
            )
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 0 {
                ovation::tracing::error!(
                    order = %event.order_id, %product, quantity,
                    "an order's reservation expired before its event came, and the stock is \
                     gone: the order is oversold"
                );
            }
        }
        _ => return Ok(()),
    }
    sqlx::query!(
        "UPDATE reservations SET status = 'confirmed' WHERE id = $1",
        reservation
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{fixtures, orders, products};

    /// Makes every reservation of `product` look older than the timeout.
    async fn age_reservations(product: Uuid) {
        sqlx::query!(
            "UPDATE reservations SET created_at = now() - interval '11 minutes'
              WHERE product_id = $1",
            product
        )
        .execute(DB.pool())
        .await
        .unwrap();
    }

    async fn status(reservation: Uuid) -> String {
        sqlx::query_scalar!("SELECT status FROM reservations WHERE id = $1", reservation)
            .fetch_one(DB.pool())
            .await
            .unwrap()
    }

    async fn reserve(product: Uuid, quantity: i32) -> Uuid {
        let id = Uuid::new_v4();
        products::reserve_inventory(
            product,
            products::ReserveParams {
                quantity,
                reservation_id: Some(id),
            },
        )
        .await
        .unwrap();
        id
    }

    async fn wait_for_status(reservation: Uuid, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status(reservation).await != wanted {
            assert!(Instant::now() < deadline, "{reservation} never {wanted}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An order's event confirms its reservation; a reservation no order took (its order's
    /// process died) expires and its stock comes back; a young one is left alone; an event that
    /// comes after its reservation expired takes the stock again.
    #[ovation::test]
    async fn stock_no_order_took_comes_back() {
        let user = fixtures::user("sweep@example.com", "Sam").await;
        let product = fixtures::product("Kettle", 1000, 10).await;
        orders::create(orders::CreateOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
        })
        .await
        .unwrap();
        let taken: Uuid = sqlx::query_scalar!(
            "SELECT id FROM reservations WHERE product_id = $1",
            product.id
        )
        .fetch_one(DB.pool())
        .await
        .unwrap();
        wait_for_status(taken, "confirmed").await;
        // An order whose process died after reserving: reserved, no order, no event.
        let orphan = reserve(product.id, 3).await;
        assert_eq!(products::get(product.id).await.unwrap().inventory, 5);
        ovation::cron::run_now("expire-reservations").await.unwrap();
        assert_eq!(status(orphan).await, "reserved", "young: left alone");

        age_reservations(product.id).await;
        let young = reserve(product.id, 1).await;
        ovation::cron::run_now("expire-reservations").await.unwrap();
        assert_eq!(status(orphan).await, "expired");
        assert_eq!(status(young).await, "reserved");
        assert_eq!(status(taken).await, "confirmed");
        // 10 − 2 (the order) − 1 (the young one): the orphan's 3 are back.
        assert_eq!(products::get(product.id).await.unwrap().inventory, 7);
        ovation::cron::run_now("expire-reservations").await.unwrap();
        assert_eq!(products::get(product.id).await.unwrap().inventory, 7);

        // The orphan's order was recorded after all, and its event comes late: the stock is
        // taken again, once.
        let late = OrderCreated {
            order_id: Uuid::new_v4(),
            user_id: user.id,
            total: 3000,
            reservation_id: Some(orphan),
        };
        orders::ORDER_CREATED.publish(&late).await.unwrap();
        orders::ORDER_CREATED.publish(&late).await.unwrap();
        // The order's event and the late one twice: three handled.
        wait_for_deliveries(3).await;
        assert_eq!(status(orphan).await, "confirmed");
        assert_eq!(products::get(product.id).await.unwrap().inventory, 4);
    }

    async fn wait_for_deliveries(n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while ovation::pubsub::stats("confirm-reservations")
            .await
            .unwrap()
            .delivered
            < n
        {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} events were handled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A reservation released by its saga's compensation stays released when its order's event
    /// comes after.
    #[ovation::test]
    async fn a_released_reservation_stays_released() {
        let user = fixtures::user("released@example.com", "Rae").await;
        let product = fixtures::product("Mug", 500, 4).await;
        let id = reserve(product.id, 2).await;
        products::release_inventory(
            product.id,
            products::ReleaseParams {
                quantity: 2,
                reservation_id: Some(id),
            },
        )
        .await
        .unwrap();
        let event = OrderCreated {
            order_id: Uuid::new_v4(),
            user_id: user.id,
            total: 1000,
            reservation_id: Some(id),
        };
        orders::ORDER_CREATED.publish(&event).await.unwrap();
        wait_for_deliveries(1).await;
        assert_eq!(status(id).await, "released");
        assert_eq!(products::get(product.id).await.unwrap().inventory, 4);
    }
}
