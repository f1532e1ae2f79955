//! The `expire-reservations` cron job: stock reserved more than [`RESERVATION_TIMEOUT`] ago by
//! a reservation that no order took and no running checkout holds is given back.
//!
//! `POST /orders` reserves stock here, then records the order in its own database. A process
//! that dies between the two leaves the stock reserved for no order; so does a client that
//! gives up while the reservation succeeds. Nothing else would ever return it.

use std::time::Duration;

use ovation::prelude::*;

use super::DB;
use crate::{checkout, orders};

/// How long a reservation may stay unconfirmed before its stock is given back.
pub const RESERVATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Reservations looked at per round.
const BATCH: i64 = 500;

ovation::cron!(
    "expire-reservations",
    every = "1m",
    run = expire_reservations
);

/// Confirms the old reservations an order took, and releases those no order took and no
/// running checkout holds. Returns nothing: its work is in the log and the run's trace.
pub async fn expire_reservations() -> Result<(), Error> {
    let (mut confirmed, mut released) = (0, 0);
    let mut after: Option<chrono::DateTime<chrono::Utc>> = None;
    loop {
        let stale: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT id, created_at FROM reservations
              WHERE status = 'reserved' AND created_at < now() - make_interval(secs => $1)
                AND ($2::timestamptz IS NULL OR created_at > $2)
              ORDER BY created_at LIMIT $3",
        )
        .bind(RESERVATION_TIMEOUT.as_secs_f64())
        .bind(after)
        .bind(BATCH)
        .fetch_all(DB.pool())
        .await?;
        let Some(last) = stale.last() else { break };
        after = Some(last.1);
        let ids: Vec<Uuid> = stale.iter().map(|(id, _)| *id).collect();
        let asked = orders::Reservations {
            reservation_ids: ids.clone(),
        };
        let taken = orders::taken_reservations(asked.clone())
            .await?
            .reservation_ids;
        let held = checkout::held_reservations(asked).await?.reservation_ids;
        let (confirm, release): (Vec<Uuid>, Vec<Uuid>) = ids
            .into_iter()
            .filter(|id| !held.contains(id))
            .partition(|id| taken.contains(id));
        confirmed += sqlx::query(
            "UPDATE reservations SET status = 'confirmed' WHERE id = ANY($1) AND status = 'reserved'",
        )
        .bind(&confirm)
        .execute(DB.pool())
        .await?
        .rows_affected();
        released += release_all(&release).await?;
        if stale.len() < BATCH as usize {
            break;
        }
    }
    if confirmed + released > 0 {
        ovation::tracing::info!(confirmed, released, "expired old reservations");
    }
    Ok(())
}

/// Releases the reservations `ids` that are still reserved, giving their stock back, in one
/// transaction; returns how many.
async fn release_all(ids: &[Uuid]) -> Result<u64, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = DB.begin().await?;
    let freed: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH freed AS (
             UPDATE reservations SET status = 'released'
              WHERE id = ANY($1) AND status = 'reserved'
              RETURNING product_id, quantity)
         SELECT product_id, sum(quantity)::bigint FROM freed GROUP BY product_id",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut released = 0;
    for (product, quantity) in &freed {
        sqlx::query("UPDATE products SET inventory = inventory + $2::int WHERE id = $1")
            .bind(product)
            .bind(quantity)
            .execute(&mut *tx)
            .await?;
        released += 1;
    }
    tx.commit().await?;
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixtures, products};

    /// Makes every reservation of `product` look older than the timeout.
    async fn age_reservations(product: Uuid) {
        sqlx::query(
            "UPDATE reservations SET created_at = now() - interval '11 minutes'
              WHERE product_id = $1",
        )
        .bind(product)
        .execute(DB.pool())
        .await
        .unwrap();
    }

    async fn status(reservation: Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM reservations WHERE id = $1")
            .bind(reservation)
            .fetch_one(DB.pool())
            .await
            .unwrap()
    }

    /// A reservation no order took (its order's process died) is released; one an order took is
    /// confirmed and keeps its stock; a recent one and a running checkout's are left alone.
    #[ovation::test]
    async fn the_sweep_gives_back_only_stock_no_order_took() {
        let user = fixtures::user("sweep@example.com", "Sam").await;
        let product = fixtures::product("Kettle", 1000, 10).await;
        // An order that was placed: its reservation is taken.
        let order = orders::create(orders::CreateOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
        })
        .await
        .unwrap();
        // An order whose process died after reserving: reserved, no order.
        let orphan = Uuid::new_v4();
        products::reserve_inventory(
            product.id,
            products::ReserveParams {
                quantity: 3,
                reservation_id: Some(orphan),
            },
        )
        .await
        .unwrap();
        assert_eq!(products::get(product.id).await.unwrap().inventory, 5);
        // Young reservations are left alone.
        ovation::cron::run_now("expire-reservations").await.unwrap();
        assert_eq!(status(orphan).await, "reserved");
        age_reservations(product.id).await;
        // A reservation made now, after the others aged: too young to touch.
        let young = Uuid::new_v4();
        products::reserve_inventory(
            product.id,
            products::ReserveParams {
                quantity: 1,
                reservation_id: Some(young),
            },
        )
        .await
        .unwrap();
        ovation::cron::run_now("expire-reservations").await.unwrap();
        assert_eq!(status(orphan).await, "released");
        assert_eq!(status(young).await, "reserved");
        let taken: String = sqlx::query_scalar(
            "SELECT status FROM reservations WHERE id <> $1 AND id <> $2 AND product_id = $3",
        )
        .bind(orphan)
        .bind(young)
        .bind(product.id)
        .fetch_one(DB.pool())
        .await
        .unwrap();
        assert_eq!(taken, "confirmed");
        // 10 − 2 (the order) − 1 (the young one): the orphan's 3 are back.
        assert_eq!(products::get(product.id).await.unwrap().inventory, 7);
        assert_eq!(orders::get(order.id).await.unwrap().quantity, 2);
        // Running it again changes nothing.
        ovation::cron::run_now("expire-reservations").await.unwrap();
        assert_eq!(products::get(product.id).await.unwrap().inventory, 7);
    }
}
