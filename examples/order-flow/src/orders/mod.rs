//! The `orders` service: an order checks its user and product with their services, reserves
//! the stock, and is recorded with its `OrderCreated` event in one transaction.

use ovation::prelude::*;

use crate::{products, users};

static DB: Database = ovation::database!("orders", migrations = "./migrations");

#[ovation::model(row)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
    pub total_cents: i64,
    pub status: String,
}

#[ovation::model]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub total: i64,
}

pub static ORDER_CREATED: Topic<OrderCreated> = ovation::topic!("order-created");

#[ovation::model]
pub struct CreateOrderParams {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
}

/// Places an order.
#[api(public, method = "POST", path = "/orders")]
pub async fn create(p: CreateOrderParams) -> Result<Order, Error> {
    if p.quantity <= 0 {
        return Err(Error::invalid_argument("`quantity` must be at least 1"));
    }
    let exists = |what: &'static str| {
        move |e: Error| match e.code() {
            ErrCode::NotFound => Error::invalid_argument(what),
            _ => e,
        }
    };
    users::get(p.user_id)
        .await
        .map_err(exists("user does not exist"))?;
    let product = products::get(p.product_id)
        .await
        .map_err(exists("product does not exist"))?;
    let total_cents = product
        .price_cents
        .checked_mul(i64::from(p.quantity))
        .ok_or_else(|| Error::invalid_argument("the order's total is too large"))?;
    let reservation = products::ReserveParams {
        quantity: p.quantity,
        reservation_id: Uuid::new_v4(),
    };
    products::reserve(p.product_id, reservation).await?;

    let mut tx = DB.begin().await?;
    let order = sqlx::query_as::<_, Order>(
        "INSERT INTO orders (user_id, product_id, quantity, total_cents, status)
         VALUES ($1, $2, $3, $4, 'confirmed')
         RETURNING id, user_id, product_id, quantity, total_cents, status",
    )
    .bind(p.user_id)
    .bind(p.product_id)
    .bind(p.quantity)
    .bind(total_cents)
    .fetch_one(&mut *tx)
    .await?;
    let event = OrderCreated {
        order_id: order.id,
        user_id: order.user_id,
        total: total_cents,
    };
    ORDER_CREATED.publish_in(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(order)
}
