//! The `checkout` service: the public checkout, a saga over products, payments and orders.
//!
//! `POST /checkout` reserves the stock, charges the payment and places the order. When a step
//! fails, every earlier step is undone (`release_inventory`, `refund`, `cancel_checkout`) and
//! the client gets the step's error: a declined payment is 400 `failed_precondition`, short
//! stock too. The saga's progress lives in the service's database, so a crash at any point
//! ends consistently once the service is back: see [`saga`].

use ovation::prelude::*;

use crate::{products, users};

pub mod saga;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutRequest {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutResponse {
    pub order_id: Uuid,
    /// The saga's id: the payment's idempotency key and the order's checkout id.
    pub checkout_id: Uuid,
    pub user_name: String,
    pub product_name: String,
    pub total_cents: i64,
}

/// Checks out `quantity` of a product for a user: reserve → charge → order, all or nothing.
#[api(public, method = "POST", path = "/checkout")]
pub async fn checkout(p: CheckoutRequest) -> Result<CheckoutResponse, Error> {
    if p.quantity <= 0 {
        return Err(Error::invalid_argument("`quantity` must be at least 1"));
    }
    let user = users::get(p.user_id).await?;
    let product = products::get(p.product_id).await?;
    let total_cents = product
        .price_cents
        .checked_mul(i64::from(p.quantity))
        .ok_or_else(|| Error::invalid_argument("the order's total is too large"))?;
    let checkout = saga::begin(p.user_id, p.product_id, p.quantity, total_cents).await?;
    let checkout_id = checkout.id;
    let order = saga::run(checkout).await?;
    Ok(CheckoutResponse {
        order_id: order.id,
        checkout_id,
        user_name: user.name,
        product_name: product.name,
        total_cents: order.total_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::{orders, payments};

    fn request(user: &users::User, product: &products::Product, quantity: i32) -> CheckoutRequest {
        CheckoutRequest {
            user_id: user.id,
            product_id: product.id,
            quantity,
        }
    }

    #[ovation::test]
    async fn checkout_reserves_charges_and_orders() {
        let user = fixtures::user("c@example.com", "Cat").await;
        let product = fixtures::product("Lamp", 2500, 3).await;
        let r = checkout(request(&user, &product, 2)).await.unwrap();
        assert_eq!(
            (r.user_name.as_str(), r.product_name.as_str(), r.total_cents),
            ("Cat", "Lamp", 5000)
        );
        assert_eq!(orders::get(r.order_id).await.unwrap().quantity, 2);
        assert_eq!(products::get(product.id).await.unwrap().inventory, 1);
        let charges = payments::charges(user.id).await.unwrap().charges;
        assert_eq!(charges.len(), 1);
        assert_eq!(
            (charges[0].amount_cents, charges[0].status.as_str()),
            (5000, "charged")
        );
        assert_eq!(charges[0].idempotency_key, r.checkout_id.to_string());
        assert_eq!(
            saga::state_of(r.checkout_id).await,
            ("completed".to_owned(), Some(r.order_id))
        );
        let err = checkout(CheckoutRequest {
            user_id: Uuid::new_v4(),
            product_id: product.id,
            quantity: 1,
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::NotFound);
    }

    #[ovation::test]
    async fn a_declined_payment_releases_the_stock() {
        let user = fixtures::user("d@example.com", "Dee").await;
        // Two items cost more than the credit limit.
        let product = fixtures::product("Car", payments::CREDIT_LIMIT_CENTS / 2 + 1, 5).await;
        let err = checkout(request(&user, &product, 2)).await.unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        assert!(err.message().starts_with("payment declined"), "{err}");
        assert_eq!(products::get(product.id).await.unwrap().inventory, 5);
        assert!(payments::charges(user.id).await.unwrap().charges.is_empty());
        // The stock is free for a checkout the user can pay.
        checkout(request(&user, &product, 1)).await.unwrap();
        assert_eq!(products::get(product.id).await.unwrap().inventory, 4);
    }

    #[ovation::test]
    async fn short_stock_charges_nothing() {
        let user = fixtures::user("s@example.com", "Sam").await;
        let product = fixtures::product("Rare", 100, 1).await;
        let err = checkout(request(&user, &product, 2)).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (ErrCode::FailedPrecondition, "insufficient inventory")
        );
        assert!(payments::charges(user.id).await.unwrap().charges.is_empty());
        assert_eq!(products::get(product.id).await.unwrap().inventory, 1);
    }

    #[ovation::test]
    async fn bad_quantities_and_overflowing_totals_are_invalid_argument() {
        let user = fixtures::user("q@example.com", "Q").await;
        let product = fixtures::product("Yacht", i64::MAX / 2, 10).await;
        for quantity in [0, -1, i32::MIN, 3] {
            let err = checkout(request(&user, &product, quantity))
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrCode::InvalidArgument, "{quantity}");
        }
        assert_eq!(products::get(product.id).await.unwrap().inventory, 10);
    }

    #[ovation::test]
    async fn a_hundred_concurrent_checkouts_for_the_last_ten_sell_and_charge_exactly_ten() {
        let product = fixtures::product("Last", 1000, 10).await;
        let mut buyers = Vec::new();
        for i in 0..10 {
            buyers.push(fixtures::user(&format!("b{i}@example.com"), "Buyer").await);
        }
        let tasks: Vec<_> = (0..100)
            .map(|i| ovation::spawn(checkout(request(&buyers[i % 10], &product, 1))))
            .collect();
        let mut sold = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => sold += 1,
                Err(e) => assert_eq!(
                    (e.code(), e.message()),
                    (ErrCode::FailedPrecondition, "insufficient inventory")
                ),
            }
        }
        assert_eq!(sold, 10);
        assert_eq!(products::get(product.id).await.unwrap().inventory, 0);
        let mut charged = 0;
        for b in &buyers {
            for c in payments::charges(b.id).await.unwrap().charges {
                assert_eq!((c.status.as_str(), c.amount_cents), ("charged", 1000));
                charged += 1;
            }
        }
        assert_eq!(charged, 10);
    }
}
