//! The `products` service: the catalogue and its stock.
//!
//! `reserve_inventory` and `release_inventory` are private: only other services (orders,
//! the gateway) may call them; an outside request gets 404.

use ovation::prelude::*;

use crate::check_text;

static DB: Database = ovation::database!("products", migrations = "./migrations");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub inventory: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateProductParams {
    pub name: String,
    pub price_cents: i64,
    pub inventory: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveParams {
    pub quantity: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseParams {
    pub quantity: i32,
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
    let product = sqlx::query_as::<_, Product>(
        "INSERT INTO products (name, price_cents, inventory) VALUES ($1, $2, $3)
         RETURNING id, name, price_cents, inventory",
    )
    .bind(p.name.trim())
    .bind(p.price_cents)
    .bind(p.inventory)
    .fetch_one(DB.pool())
    .await?;
    Ok(product)
}

/// Gets a product by id.
#[api(public, method = "GET", path = "/products/:id")]
pub async fn get(id: Uuid) -> Result<Product, Error> {
    sqlx::query_as::<_, Product>(
        "SELECT id, name, price_cents, inventory FROM products WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(DB.pool())
    .await?
    .ok_or_else(|| Error::not_found("product not found"))
}

/// Takes `quantity` items out of stock, atomically: concurrent reservations never oversell.
/// Fails with `failed_precondition` when the stock is short, changing nothing.
#[api(method = "POST", path = "/products/:id/reserve")]
pub async fn reserve_inventory(id: Uuid, p: ReserveParams) -> Result<(), Error> {
    if p.quantity <= 0 {
        return Err(Error::invalid_argument("`quantity` must be at least 1"));
    }
    // One statement: the row lock serialises concurrent reservations of one product.
    let updated = sqlx::query(
        "UPDATE products SET inventory = inventory - $1 WHERE id = $2 AND inventory >= $1",
    )
    .bind(p.quantity)
    .bind(id)
    .execute(DB.pool())
    .await?;
    if updated.rows_affected() == 0 {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)")
                .bind(id)
                .fetch_one(DB.pool())
                .await?;
        return Err(if exists {
            Error::failed_precondition("insufficient inventory")
        } else {
            Error::not_found("product not found")
        });
    }
    Ok(())
}

/// Puts `quantity` items back in stock: the compensation of `reserve_inventory`.
#[api(method = "POST", path = "/products/:id/release")]
pub async fn release_inventory(id: Uuid, p: ReleaseParams) -> Result<(), Error> {
    if p.quantity <= 0 {
        return Err(Error::invalid_argument("`quantity` must be at least 1"));
    }
    let updated = sqlx::query("UPDATE products SET inventory = inventory + $1 WHERE id = $2")
        .bind(p.quantity)
        .bind(id)
        .execute(DB.pool())
        .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::not_found("product not found"));
    }
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
        reserve_inventory(p.id, ReserveParams { quantity: 3 })
            .await
            .unwrap();
        assert_eq!(get(p.id).await.unwrap().inventory, 7);
        release_inventory(p.id, ReleaseParams { quantity: 2 })
            .await
            .unwrap();
        assert_eq!(get(p.id).await.unwrap().inventory, 9);
    }

    #[ovation::test]
    async fn short_stock_is_failed_precondition_and_changes_nothing() {
        let p = widget(2).await;
        let err = reserve_inventory(p.id, ReserveParams { quantity: 3 })
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        assert_eq!(err.message(), "insufficient inventory");
        assert_eq!(get(p.id).await.unwrap().inventory, 2);
    }

    #[ovation::test]
    async fn reserving_an_unknown_product_is_not_found() {
        let err = reserve_inventory(Uuid::new_v4(), ReserveParams { quantity: 1 })
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrCode::NotFound);
    }

    #[ovation::test]
    async fn bad_quantities_and_prices_are_invalid_argument() {
        let p = widget(2).await;
        for q in [0, -1, i32::MIN] {
            let err = reserve_inventory(p.id, ReserveParams { quantity: q })
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
            .map(|_| ovation::spawn(reserve_inventory(p.id, ReserveParams { quantity: 1 })))
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
}
