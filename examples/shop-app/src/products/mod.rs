//! The `products` service: the catalogue and its stock.
//!
//! A reservation is confirmed when its order's `order-created` event arrives; stock reserved for
//! an order that was never recorded (its process died in between) is given back by the
//! `expire-reservations` cron job: see [`expire_reservations`].
//!
//! `reserve_inventory` and `release_inventory` are private: only other services (orders,
//! the checkout service) may call them; an outside request gets 404. Given a `reservationId`, both are
//! idempotent, so a saga can retry them (and its compensations) as often as it needs.

use ovation::prelude::*;

use crate::check_text;

mod expiry;

pub use expiry::{RESERVATION_TIMEOUT, expire_reservations};

static DB: Database = ovation::database!("products", migrations = "./migrations");

#[ovation::model]
#[derive(PartialEq)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub inventory: i32,
}

#[ovation::model]
pub struct CreateProductParams {
    pub name: String,
    pub price_cents: i64,
    pub inventory: i32,
}

#[ovation::model]
pub struct ReserveParams {
    pub quantity: i32,
    /// Makes the reservation idempotent: reserving again with this id changes nothing, and
    /// [`release_inventory`] with it gives back exactly this reservation, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Uuid>,
}

#[ovation::model]
pub struct ReleaseParams {
    pub quantity: i32,
    /// The id the stock was reserved with: the release happens once, however often it is
    /// retried, and a release before its reservation spends the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Uuid>,
}

/// Creates a product.
#[api(public, method = "POST", path = "/products")]
pub async fn create(p: CreateProductParams) -> Result<Product, Error> {
    check_text("name", &p.name, 200)?;
    if p.price_cents < 0 {
        return Err(Error::invalid_argument("`priceCents` must not be negative"));
    }
    if p.inventory < 0 {
        return Err(Error::invalid_argument("`inventory` must not be negative"));
    }
    let product = sqlx::query_as!(
        Product,
        "INSERT INTO products (name, price_cents, inventory) VALUES ($1, $2, $3)
         RETURNING id, name, price_cents, inventory",
        p.name.trim(),
        p.price_cents,
        p.inventory
    )
    .fetch_one(DB.pool())
    .await?;
    Ok(product)
}

/// Gets a product by id.
#[api(public, method = "GET", path = "/products/:id")]
pub async fn get(id: Uuid) -> Result<Product, Error> {
    sqlx::query_as!(
        Product,
        "SELECT id, name, price_cents, inventory FROM products WHERE id = $1",
        id
    )
    .fetch_optional(DB.pool())
    .await?
    .ok_or_else(|| Error::not_found(format!("no product {id}")))
}

/// Takes `quantity` items out of stock, atomically: concurrent reservations never oversell.
/// Fails with `failed_precondition` when the stock is short, changing nothing.
#[api(method = "POST", path = "/products/:id/reserve")]
pub async fn reserve_inventory(id: Uuid, p: ReserveParams) -> Result<(), Error> {
    if p.quantity <= 0 {
        return Err(Error::invalid_argument("`quantity` must be at least 1"));
    }
    let Some(reservation) = p.reservation_id else {
        // One statement: the row lock serialises concurrent reservations of one product.
        let updated = sqlx::query!(
            "UPDATE products SET inventory = inventory - $1 WHERE id = $2 AND inventory >= $1",
            p.quantity,
            id
        )
        .execute(DB.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(short_or_missing(id).await);
        }
        return Ok(());
    };
    // One statement for a new reservation: the stock taken and the reservation recorded, or
    // neither. An id used before fails the insert, which undoes the update with it.
    let made = sqlx::query!(
        "WITH taken AS (
             UPDATE products SET inventory = inventory - $3
             WHERE id = $2 AND inventory >= $3
             RETURNING id
         )
         INSERT INTO reservations (id, product_id, quantity, status)
         SELECT $1, id, $3, 'reserved' FROM taken",
        reservation,
        id,
        p.quantity
    )
    .execute(DB.pool())
    .await
    .map_err(Error::from);
    match made {
        Ok(made) if made.rows_affected() == 1 => Ok(()),
        // Nothing changed: a retry of a reservation made before, or stock that is short.
        Ok(_) => match made_before(reservation, id, p.quantity).await? {
            Some(outcome) => outcome,
            None => Err(short_or_missing(id).await),
        },
        // The reservation's id is taken (a unique violation).
        Err(e) if e.code() == ErrCode::AlreadyExists => made_before(reservation, id, p.quantity)
            .await?
            .unwrap_or_else(|| Err(Error::aborted("the reservation changed meanwhile: retry"))),
        Err(e) => Err(e),
    }
}

/// What a reservation id used before means for a reservation of `quantity` of `product`: the
/// same reservation again (done), or one that cannot be made. `None` for an id never used.
async fn made_before(
    reservation: Uuid,
    product: Uuid,
    quantity: i32,
) -> Result<Option<Result<(), Error>>, Error> {
    let Some(row) = sqlx::query!(
        "SELECT product_id, quantity, status FROM reservations WHERE id = $1",
        reservation
    )
    .fetch_optional(DB.pool())
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(if row.status == "released" {
        Err(Error::failed_precondition(
            "this reservation was released before it was made",
        ))
    } else if row.status == "expired" {
        Err(Error::failed_precondition(
            "this reservation expired: no order took it in time",
        ))
    } else if (row.product_id, row.quantity) != (product, quantity) {
        Err(Error::invalid_argument(
            "this reservation id was used for another reservation",
        ))
    } else {
        Ok(())
    }))
}

/// Why no stock could be taken from `product`.
async fn short_or_missing(product: Uuid) -> Error {
    let exists = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM products WHERE id = $1) AS \"exists!\"",
        product
    )
    .fetch_one(DB.pool())
    .await;
    match exists {
        Ok(true) => Error::failed_precondition("insufficient inventory"),
        Ok(false) => Error::not_found(format!("no product {product}")),
        Err(e) => e.into(),
    }
}

/// Puts `quantity` items back in stock: the compensation of `reserve_inventory`. With a
/// `reservationId`, gives back that reservation's stock once, whatever `quantity` says.
#[api(method = "POST", path = "/products/:id/release")]
pub async fn release_inventory(id: Uuid, p: ReleaseParams) -> Result<(), Error> {
    if p.quantity <= 0 {
        return Err(Error::invalid_argument("`quantity` must be at least 1"));
    }
    let mut tx = DB.begin().await?;
    let mut quantity = p.quantity;
    if let Some(reservation) = p.reservation_id {
        // Spend the id if it is new; otherwise lock the reservation and release it once.
        let spent = sqlx::query!(
            "INSERT INTO reservations (id, product_id, quantity, status)
             VALUES ($1, $2, 0, 'released') ON CONFLICT (id) DO NOTHING",
            reservation,
            id
        )
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(());
        }
        let released: Option<i32> = sqlx::query_scalar!(
            "UPDATE reservations SET status = 'released'
             WHERE id = $1 AND product_id = $2 AND status IN ('reserved', 'confirmed')
             RETURNING quantity",
            reservation,
            id
        )
        .fetch_optional(&mut *tx)
        .await?;
        match released {
            Some(q) => quantity = q,
            // Released already (or reserved for another product): nothing to give back.
            None => return Ok(()),
        }
    }
    let updated = sqlx::query!(
        "UPDATE products SET inventory = inventory + $1 WHERE id = $2",
        quantity,
        id
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::not_found(format!("no product {id}")));
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn widget(inventory: i32) -> Product {
        create(CreateProductParams {
            name: "Widget".into(),
            price_cents: 1000,
            inventory,
        })
        .await
        .unwrap()
    }

    #[ovation::test]
    async fn reserve_and_release_move_the_stock() {
        let p = widget(10).await;
        reserve_inventory(
            p.id,
            ReserveParams {
                quantity: 3,
                reservation_id: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(get(p.id).await.unwrap().inventory, 7);
        release_inventory(
            p.id,
            ReleaseParams {
                quantity: 2,
                reservation_id: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(get(p.id).await.unwrap().inventory, 9);
    }

    #[ovation::test]
    async fn short_stock_is_failed_precondition_and_changes_nothing() {
        let p = widget(2).await;
        let err = reserve_inventory(
            p.id,
            ReserveParams {
                quantity: 3,
                reservation_id: None,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        assert_eq!(err.message(), "insufficient inventory");
        assert_eq!(get(p.id).await.unwrap().inventory, 2);
    }

    #[ovation::test]
    async fn reserving_an_unknown_product_is_not_found() {
        let err = reserve_inventory(
            Uuid::new_v4(),
            ReserveParams {
                quantity: 1,
                reservation_id: None,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::NotFound);
    }

    #[ovation::test]
    async fn bad_quantities_and_prices_are_invalid_argument() {
        let p = widget(2).await;
        for q in [0, -1, i32::MIN] {
            let err = reserve_inventory(
                p.id,
                ReserveParams {
                    quantity: q,
                    reservation_id: None,
                },
            )
            .await
            .unwrap_err();
            assert_eq!(err.code(), ErrCode::InvalidArgument, "{q}");
        }
        let err = create(CreateProductParams {
            name: "X".into(),
            price_cents: -1,
            inventory: 1,
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::InvalidArgument);
        assert_eq!(get(p.id).await.unwrap().inventory, 2);
    }

    #[ovation::test]
    async fn concurrent_reservations_never_oversell() {
        let p = widget(10).await;
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                ovation::spawn(reserve_inventory(
                    p.id,
                    ReserveParams {
                        quantity: 1,
                        reservation_id: None,
                    },
                ))
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) => assert_eq!(e.code(), ErrCode::FailedPrecondition),
            }
        }
        assert_eq!(ok, 10);
        assert_eq!(get(p.id).await.unwrap().inventory, 0);
    }

    #[ovation::test]
    async fn a_keyed_reservation_retried_after_the_stock_ran_short_is_still_made() {
        let p = widget(5).await;
        let keyed = ReserveParams {
            quantity: 4,
            reservation_id: Some(Uuid::new_v4()),
        };
        reserve_inventory(p.id, keyed.clone()).await.unwrap();
        // One left: the retry takes nothing, and answers as the reservation made before.
        reserve_inventory(p.id, keyed.clone()).await.unwrap();
        assert_eq!(get(p.id).await.unwrap().inventory, 1);
        // Another reservation of the same size is short.
        let err = reserve_inventory(
            p.id,
            ReserveParams {
                reservation_id: Some(Uuid::new_v4()),
                ..keyed
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        assert_eq!(get(p.id).await.unwrap().inventory, 1);
    }

    #[ovation::test]
    async fn keyed_reservations_and_releases_happen_once() {
        let p = widget(10).await;
        let key = Some(Uuid::new_v4());
        for _ in 0..3 {
            reserve_inventory(
                p.id,
                ReserveParams {
                    quantity: 4,
                    reservation_id: key,
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(get(p.id).await.unwrap().inventory, 6);
        let err = reserve_inventory(
            p.id,
            ReserveParams {
                quantity: 5,
                reservation_id: key,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::InvalidArgument);
        for _ in 0..3 {
            release_inventory(
                p.id,
                ReleaseParams {
                    quantity: 1,
                    reservation_id: key,
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(get(p.id).await.unwrap().inventory, 10);
        // Released before it was made: the late reservation is refused and holds nothing.
        let late = Some(Uuid::new_v4());
        release_inventory(
            p.id,
            ReleaseParams {
                quantity: 2,
                reservation_id: late,
            },
        )
        .await
        .unwrap();
        let err = reserve_inventory(
            p.id,
            ReserveParams {
                quantity: 2,
                reservation_id: late,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        assert_eq!(get(p.id).await.unwrap().inventory, 10);
        // A short stock leaves no reservation behind: the id can be used once stock is back.
        let short = Some(Uuid::new_v4());
        let err = reserve_inventory(
            p.id,
            ReserveParams {
                quantity: 11,
                reservation_id: short,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        release_inventory(
            p.id,
            ReleaseParams {
                quantity: 1,
                reservation_id: None,
            },
        )
        .await
        .unwrap();
        reserve_inventory(
            p.id,
            ReserveParams {
                quantity: 11,
                reservation_id: short,
            },
        )
        .await
        .unwrap();
        assert_eq!(get(p.id).await.unwrap().inventory, 0);
    }
}
