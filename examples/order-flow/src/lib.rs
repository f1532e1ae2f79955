//! The shop's order flow and nothing else, written with Ovation: what
//! `tests/src/bin/axum_shop.rs` does by hand with axum and sqlx, route for route and statement
//! for statement, so that the benchmarks compare the same app with and without the framework
//! (`tests/benches/compile.rs`). The full shop, with sessions, payments, the checkout saga and
//! the live stream, is `examples/shop-app`.
//!
//! - `users`: `POST /users`, and a private `get` the other services call;
//! - `products`: `POST /products`, `GET /products/:id`, and a private `reserve`;
//! - `orders`: `POST /orders` checks the user and the product, reserves the stock, and records
//!   the order with its `OrderCreated` event in one transaction;
//! - `notifications`: a subscription to `OrderCreated` that records a confirmation per order.

pub mod notifications;
pub mod orders;
pub mod products;
pub mod users;

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ovation::prelude::*;

    use crate::{notifications, orders, products, users};

    #[ovation::test]
    async fn an_order_takes_its_stock_and_is_confirmed_once() {
        let user = users::create(users::CreateUserParams {
            email: "buyer@example.com".into(),
            name: "Buyer".into(),
        })
        .await
        .unwrap();
        let product = products::create(products::CreateProductParams {
            name: "Widget".into(),
            price_cents: 1250,
            inventory: 3,
        })
        .await
        .unwrap();
        let order = |quantity| {
            orders::create(orders::CreateOrderParams {
                user_id: user.id,
                product_id: product.id,
                quantity,
            })
        };

        let placed = order(2).await.unwrap();
        assert_eq!(
            (placed.total_cents, placed.status.as_str()),
            (2500, "confirmed")
        );
        assert_eq!(products::get(product.id).await.unwrap().inventory, 1);
        let short = order(2).await.unwrap_err();
        assert_eq!(short.code(), ErrCode::FailedPrecondition, "{short}");
        assert_eq!(products::get(product.id).await.unwrap().inventory, 1);

        let deadline = Instant::now() + Duration::from_secs(10);
        while notifications::sent_to(user.id).await.unwrap() == 0 {
            assert!(Instant::now() < deadline, "no confirmation after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The failed order published nothing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(notifications::sent_to(user.id).await.unwrap(), 1);
    }
}
