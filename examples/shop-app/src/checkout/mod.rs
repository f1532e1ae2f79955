//! The `checkout` service: the public checkout, a workflow over products, payments and orders.
//!
//! `POST /checkout` reserves the stock, charges the payment and places the order, as the
//! durable workflow [`checkout_flow`]: each step is checkpointed once done, and undone when a
//! later one fails for good (`release_inventory`, `refund`, `cancel_checkout`); the client gets
//! the step's error: a declined payment is 400 `failed_precondition`, short stock too. A crash
//! at any point is finished by another process hosting `checkout` (or this one restarted),
//! which resumes the run after its last checkpoint. Every step and undo is idempotent by the
//! checkout's id, which is also the run's, so a step cut off by a crash can run again.

use ovation::prelude::*;
use ovation::workflow::step;

use crate::{orders, payments, products, users};

#[ovation::model]
pub struct CheckoutRequest {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
}

#[ovation::model]
#[derive(PartialEq)]
pub struct CheckoutResponse {
    pub order_id: Uuid,
    /// The checkout's id: its workflow run, the payment's idempotency key and the order's
    /// checkout id.
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
    let c = Checkout {
        id: Uuid::new_v4(),
        user_id: p.user_id,
        product_id: p.product_id,
        quantity: p.quantity,
        total_cents,
    };
    let order = checkout_flow
        .run_with_id(&c.id.to_string(), c.clone())
        .await?;
    Ok(CheckoutResponse {
        order_id: order.id,
        checkout_id: c.id,
        user_name: user.name,
        product_name: product.name,
        total_cents: order.total_cents,
    })
}

/// What a checkout takes: the workflow's input.
#[ovation::model]
#[serde(rename_all = "snake_case")] // stored as a workflow's input
pub struct Checkout {
    pub id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
    pub total_cents: i64,
}

impl Checkout {
    fn reservation(&self) -> products::ReserveParams {
        products::ReserveParams {
            quantity: self.quantity,
            reservation_id: Some(self.id),
        }
    }

    fn release(&self) -> products::ReleaseParams {
        products::ReleaseParams {
            quantity: self.quantity,
            reservation_id: Some(self.id),
        }
    }

    fn charge(&self) -> payments::ChargeParams {
        payments::ChargeParams {
            idempotency_key: self.id.to_string(),
            user_id: self.user_id,
            amount_cents: self.total_cents,
        }
    }

    fn refund(&self) -> payments::RefundParams {
        payments::RefundParams {
            idempotency_key: self.id.to_string(),
        }
    }

    fn order(&self) -> orders::PlaceOrderParams {
        orders::PlaceOrderParams {
            user_id: self.user_id,
            product_id: self.product_id,
            quantity: self.quantity,
            total_cents: self.total_cents,
        }
    }
}

/// Reserve the stock → charge the payment → place the order; each undone if a later step
/// fails for good.
#[ovation::workflow(name = "checkout")]
pub async fn checkout_flow(c: Checkout) -> Result<orders::Order, Error> {
    let (product, undo) = (c.product_id, c.clone());
    step("reserve", || {
        products::reserve_inventory(product, c.reservation())
    })
    .compensate_with(move || products::release_inventory(undo.product_id, undo.release()))
    .await?;
    let undo = c.clone();
    step("charge", || payments::charge(c.charge()))
        .compensate_with(move || payments::refund(undo.refund()))
        .await?;
    let undo = c.clone();
    step("place-order", || orders::place(c.id, c.order()))
        .compensate_with(move || orders::cancel_checkout(undo.id, undo.order()))
        .await
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
        let run = ovation::workflow::status(&r.checkout_id.to_string())
            .await
            .unwrap();
        assert_eq!(run.state, ovation::workflow::RunState::Completed);
        let steps: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(steps, ["reserve", "charge", "place-order"]);
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
