//! The `products` service: the catalogue and its stock.

use ovation::prelude::*;

static DB: Database = ovation::database!("products", migrations = "./migrations");

#[ovation::model(row)]
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
    /// What the reservation is recorded under: reserving again with it changes nothing.
    pub reservation_id: Uuid,
}

/// Creates a product.
#[api(public, method = "POST", path = "/products")]
pub async fn create(p: CreateProductParams) -> Result<Product, Error> {
    let product = sqlx::query_as::<_, Product>(
        "INSERT INTO products (name, price_cents, inventory) VALUES ($1, $2, $3)
         RETURNING id, name, price_cents, inventory",
    )
    .bind(&p.name)
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

/// Takes `quantity` items out of stock under the reservation's id, in one transaction; fails
/// with `failed_precondition`, changing nothing, when the stock is short.
#[api(method = "POST", path = "/products/:id/reserve")]
pub async fn reserve(id: Uuid, p: ReserveParams) -> Result<(), Error> {
    let mut tx = DB.begin().await?;
    sqlx::query(
        "INSERT INTO reservations (id, product_id, quantity, status)
         VALUES ($1, $2, $3, 'reserved') ON CONFLICT (id) DO NOTHING",
    )
    .bind(p.reservation_id)
    .bind(id)
    .bind(p.quantity)
    .execute(&mut *tx)
    .await?;
    let updated = sqlx::query(
        "UPDATE products SET inventory = inventory - $1 WHERE id = $2 AND inventory >= $1",
    )
    .bind(p.quantity)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::failed_precondition("insufficient inventory"));
    }
    tx.commit().await?;
    Ok(())
}
