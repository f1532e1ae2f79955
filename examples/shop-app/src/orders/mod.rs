//! The `orders` service: checks the user and the product with their services, reserves the
//! stock, records the order and publishes `OrderCreated` with it. Confirmed orders are pushed
//! to the clients of `GET /orders/live` ([`live`]).

use ovation::prelude::*;
use ovation::workflow::step;

use crate::{products, users};

pub mod live;

static DB: Database = ovation::database!("orders", migrations = "./migrations");

#[ovation::model]
#[derive(PartialEq)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
    pub total_cents: i64,
    pub status: String,
}

/// Published when an order is confirmed, in the order's own transaction.
#[ovation::model]
#[derive(PartialEq)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub user_id: Uuid,
    /// The order's total, in cents.
    pub total: i64,
    /// The stock reservation the order took (a checkout's order: the checkout's id), which
    /// `products` confirms on this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Uuid>,
}

pub static ORDER_CREATED: Topic<OrderCreated> = ovation::topic!("order-created");

#[ovation::model]
pub struct CreateOrderParams {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
}

/// Places an order: the user and the product must exist, and the stock must suffice.
#[api(public, method = "POST", path = "/orders")]
pub async fn create(p: CreateOrderParams) -> Result<Order, Error> {
    if p.quantity <= 0 {
        return Err(Error::invalid_argument("`quantity` must be at least 1"));
    }
    users::get(p.user_id).await.map_err(|e| match e.code() {
        ErrCode::NotFound => Error::invalid_argument("user does not exist"),
        _ => e,
    })?;
    let product = products::get(p.product_id)
        .await
        .map_err(|e| match e.code() {
            ErrCode::NotFound => Error::invalid_argument("product does not exist"),
            _ => e,
        })?;
    let total_cents = product
        .price_cents
        .checked_mul(i64::from(p.quantity))
        .ok_or_else(|| Error::invalid_argument("the order's total is too large"))?;

    let order = NewOrder {
        id: Uuid::new_v4(),
        user_id: p.user_id,
        product_id: p.product_id,
        quantity: p.quantity,
        total_cents,
    };
    place_order.run_with_id(&order.id.to_string(), order).await
}

/// An order `create` places: the input of [`place_order`].
#[ovation::model]
#[serde(rename_all = "snake_case")] // stored as a workflow's input
pub struct NewOrder {
    /// The order's id, and its workflow run's and stock reservation's.
    pub id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
    pub total_cents: i64,
}

/// Reserves the stock, then records the order and its event; should recording fail for good,
/// the stock is given back. A crash between the two is finished by recovery, so stock is never
/// left reserved for no order. The reservation is confirmed by the order's event in `products`.
#[ovation::workflow(name = "place-order")]
pub async fn place_order(o: NewOrder) -> Result<Order, Error> {
    let reservation = products::ReserveParams {
        quantity: o.quantity,
        reservation_id: Some(o.id),
    };
    let release = products::ReleaseParams {
        quantity: o.quantity,
        reservation_id: Some(o.id),
    };
    let product = o.product_id;
    step("reserve", || {
        products::reserve_inventory(product, reservation.clone())
    })
    .compensate_with(move || products::release_inventory(product, release.clone()))
    .await?;
    step("record", || record(o.clone())).await
}

/// Inserts the order and publishes `OrderCreated` in one transaction: the event exists if and
/// only if the order does. Idempotent by the order's id: a step run again after a crash
/// returns the order its first run recorded.
async fn record(o: NewOrder) -> Result<Order, Error> {
    let mut tx = DB.begin().await?;
    let inserted = sqlx::query_as!(
        Order,
        "INSERT INTO orders (id, user_id, product_id, quantity, total_cents, status)
         VALUES ($1, $2, $3, $4, $5, 'confirmed')
         ON CONFLICT (id) DO NOTHING
         RETURNING id, user_id, product_id, quantity, total_cents, status",
        o.id,
        o.user_id,
        o.product_id,
        o.quantity,
        o.total_cents
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(order) = inserted else {
        drop(tx);
        return get(o.id).await;
    };
    let event = OrderCreated {
        order_id: order.id,
        user_id: order.user_id,
        total: o.total_cents,
        reservation_id: Some(o.id),
    };
    ORDER_CREATED.publish_in(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(order)
}

/// An order the checkout service places: stock reserved and payment taken already.
#[ovation::model]
pub struct PlaceOrderParams {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
    pub total_cents: i64,
}

/// Records the order of checkout `checkout_id`, whose stock and payment the checkout has
/// already taken, and publishes `OrderCreated`. Idempotent: placing a checkout's order again
/// returns the first one; a cancelled checkout's order is `failed_precondition`.
#[api(method = "POST", path = "/orders/checkouts/:checkout_id")]
pub async fn place(checkout_id: Uuid, p: PlaceOrderParams) -> Result<Order, Error> {
    if p.quantity <= 0 || p.total_cents < 0 {
        return Err(Error::invalid_argument(
            "`quantity` must be at least 1 and `totalCents` not negative",
        ));
    }
    let mut tx = DB.begin().await?;
    let placed = sqlx::query_as!(
        Order,
        "INSERT INTO orders (user_id, product_id, quantity, total_cents, status, checkout_id)
         VALUES ($1, $2, $3, $4, 'confirmed', $5)
         ON CONFLICT (checkout_id) DO NOTHING
         RETURNING id, user_id, product_id, quantity, total_cents, status",
        p.user_id,
        p.product_id,
        p.quantity,
        p.total_cents,
        checkout_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(order) = placed else {
        let order = by_checkout(&mut *tx, checkout_id)
            .await?
            .ok_or_else(|| Error::internal("a conflicting order vanished"))?;
        return if order.status == "cancelled" {
            Err(Error::failed_precondition("this checkout was cancelled"))
        } else {
            Ok(order)
        };
    };
    let event = OrderCreated {
        order_id: order.id,
        user_id: order.user_id,
        total: order.total_cents,
        reservation_id: Some(checkout_id),
    };
    ORDER_CREATED.publish_in(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(order)
}

/// Cancels checkout `checkout_id`'s order: the compensation of [`place`]. Idempotent; before
/// the order exists, it makes sure none will be placed.
#[api(method = "POST", path = "/orders/checkouts/:checkout_id/cancel")]
pub async fn cancel_checkout(checkout_id: Uuid, p: PlaceOrderParams) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO orders (user_id, product_id, quantity, total_cents, status, checkout_id)
         VALUES ($1, $2, GREATEST($3::int, 1), GREATEST($4::bigint, 0), 'cancelled', $5)
         ON CONFLICT (checkout_id) DO UPDATE SET status = 'cancelled'",
        p.user_id,
        p.product_id,
        p.quantity,
        p.total_cents,
        checkout_id
    )
    .execute(DB.pool())
    .await?;
    Ok(())
}

/// The order of checkout `checkout_id`, confirmed or cancelled; `not_found` before the
/// checkout placed it.
#[api(method = "GET", path = "/orders/checkouts/:checkout_id")]
pub async fn get_by_checkout(checkout_id: Uuid) -> Result<Order, Error> {
    by_checkout(DB.pool(), checkout_id)
        .await?
        .ok_or_else(|| Error::not_found(format!("no order for checkout {checkout_id}")))
}

async fn by_checkout<'e>(
    db: impl sqlx::PgExecutor<'e>,
    checkout_id: Uuid,
) -> Result<Option<Order>, Error> {
    Ok(sqlx::query_as!(
Order, "SELECT id, user_id, product_id, quantity, total_cents, status FROM orders WHERE checkout_id = $1", checkout_id)
    .fetch_optional(db)
    .await?)
}

/// Gets an order by id.
#[api(public, method = "GET", path = "/orders/:id")]
pub async fn get(id: Uuid) -> Result<Order, Error> {
    sqlx::query_as!(
        Order,
        "SELECT id, user_id, product_id, quantity, total_cents, status FROM orders WHERE id = $1",
        id
    )
    .fetch_optional(DB.pool())
    .await?
    .ok_or_else(|| Error::not_found(format!("no order {id}")))
}

/// Orders, newest first.
#[ovation::model]
#[derive(PartialEq)]
pub struct OrderList {
    pub orders: Vec<Order>,
}

/// The signed-in user's orders, newest first.
#[api(auth, method = "GET", path = "/me/orders", tags = ["account"])]
pub async fn my_orders() -> Result<OrderList, Error> {
    let session = ovation::auth::require::<users::Session>()?;
    let orders = sqlx::query_as!(
Order, "SELECT id, user_id, product_id, quantity, total_cents, status FROM orders WHERE user_id = $1
         ORDER BY created_at DESC, id DESC LIMIT 1000", session.user_id)
    .fetch_all(DB.pool())
    .await?;
    Ok(OrderList { orders })
}

#[ovation::model]
pub struct MyOrderParams {
    pub product_id: Uuid,
    pub quantity: i32,
}

/// Places an order for the signed-in user. The user comes from `users::me`, a call that
/// carries the caller's auth data to the `users` service wherever it runs.
#[api(auth, method = "POST", path = "/me/orders", tags = ["account"])]
pub async fn place_my_order(p: MyOrderParams) -> Result<Order, Error> {
    let me = users::me().await?;
    create(CreateOrderParams {
        user_id: me.id,
        product_id: p.product_id,
        quantity: p.quantity,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    async fn buyer_and_widget(inventory: i32) -> (users::User, products::Product) {
        let user = fixtures::user("buyer@example.com", "Buyer").await;
        let product = fixtures::product("Widget", 1000, inventory).await;
        (user, product)
    }

    // The guide's TestCreateOrderFlow.
    #[ovation::test]
    async fn create_order_flow() {
        let (user, product) = buyer_and_widget(10).await;
        let order = create(CreateOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
        })
        .await
        .unwrap();
        assert_eq!(order.total_cents, 2000);
        assert_eq!(order.status, "confirmed");
        assert_eq!(products::get(product.id).await.unwrap().inventory, 8);
        assert_eq!(get(order.id).await.unwrap(), order);
    }

    #[ovation::test]
    async fn unknown_user_or_product_is_invalid_argument() {
        let (user, product) = buyer_and_widget(10).await;
        let err = create(CreateOrderParams {
            user_id: Uuid::new_v4(),
            product_id: product.id,
            quantity: 1,
        })
        .await
        .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (ErrCode::InvalidArgument, "user does not exist")
        );
        let err = create(CreateOrderParams {
            user_id: user.id,
            product_id: Uuid::new_v4(),
            quantity: 1,
        })
        .await
        .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (ErrCode::InvalidArgument, "product does not exist")
        );
        assert_eq!(products::get(product.id).await.unwrap().inventory, 10);
    }

    #[ovation::test]
    async fn short_stock_fails_without_an_order() {
        let (user, product) = buyer_and_widget(1).await;
        let err = create(CreateOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        let n: i64 = sqlx::query_scalar!("SELECT count(*) AS \"n!\" FROM orders")
            .fetch_one(DB.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
    }

    #[ovation::test]
    async fn overflowing_totals_are_invalid_argument() {
        let user = fixtures::user("r@example.com", "R").await;
        let product = fixtures::product("Yacht", i64::MAX / 2, 10).await;
        let err = create(CreateOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 3,
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::InvalidArgument);
        assert_eq!(products::get(product.id).await.unwrap().inventory, 10);
    }

    #[ovation::test]
    async fn unknown_order_is_not_found() {
        assert_eq!(
            get(Uuid::new_v4()).await.unwrap_err().code(),
            ErrCode::NotFound
        );
    }

    #[ovation::test]
    async fn placing_a_checkouts_order_is_idempotent_and_cancel_wins() {
        let (user, product) = buyer_and_widget(10).await;
        let params = PlaceOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
            total_cents: 2000,
        };
        let checkout = Uuid::new_v4();
        let first = place(checkout, params.clone()).await.unwrap();
        assert_eq!(place(checkout, params.clone()).await.unwrap(), first);
        cancel_checkout(checkout, params.clone()).await.unwrap();
        assert_eq!(get(first.id).await.unwrap().status, "cancelled");
        // Cancelled first: the late placement places nothing.
        let other = Uuid::new_v4();
        cancel_checkout(other, params.clone()).await.unwrap();
        let err = place(other, params).await.unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        let confirmed: i64 =
            sqlx::query_scalar!("SELECT count(*) AS \"n!\" FROM orders WHERE status = 'confirmed'")
                .fetch_one(DB.pool())
                .await
                .unwrap();
        assert_eq!(confirmed, 0);
        // Stock is the checkout's business, not place's.
        assert_eq!(products::get(product.id).await.unwrap().inventory, 10);
    }
}
