//! The shop's order flow written by hand with axum and sqlx, no Ovation: the baseline of the
//! order-flow and start-up benchmarks (`tests/benches/orderflow.rs`, `startup.rs`).
//!
//! It does the same work per `POST /orders` as the shop app — look up the user and the
//! product, reserve the stock under a reservation id (one transaction), insert the order and
//! its event in one transaction (an outbox) — and a background task delivers the events the
//! way the shop's `notifications` subscription does (look up the user, upsert the
//! notification), as many at once as the subscription's default `max_concurrency`. The
//! tables, their constraints and indexes are the shop's, so each statement costs Postgres
//! what the shop's does. One database, one pool, one process: what a team would write
//! without a framework.
//!
//! `DATABASE_URL` names a server (its database is ignored: this uses `axum_shop`, created if
//! missing), `LISTEN` the address (default 127.0.0.1:4100).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);
CREATE TABLE IF NOT EXISTS products (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    inventory INTEGER NOT NULL DEFAULT 0 CHECK (inventory >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    id UUID PRIMARY KEY,
    product_id UUID NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 0),
    status TEXT NOT NULL CHECK (status IN ('reserved', 'released')),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
CREATE TABLE IF NOT EXISTS orders (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL,
    product_id UUID NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    total_cents BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);
ALTER TABLE orders ADD COLUMN IF NOT EXISTS checkout_id UUID UNIQUE;
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    order_id UUID PRIMARY KEY,
    user_id UUID NOT NULL,
    email TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, sent_at);
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS deliveries INTEGER NOT NULL DEFAULT 1;
";

#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
struct User {
    id: Uuid,
    email: String,
    name: String,
}

#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
struct Product {
    id: Uuid,
    name: String,
    price_cents: i64,
    inventory: i32,
}

#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
struct Order {
    id: Uuid,
    user_id: Uuid,
    product_id: Uuid,
    quantity: i32,
    total_cents: i64,
    status: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUser {
    email: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateProduct {
    name: String,
    price_cents: i64,
    inventory: i32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateOrder {
    user_id: Uuid,
    product_id: Uuid,
    quantity: i32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCreated {
    order_id: Uuid,
    user_id: Uuid,
    total: i64,
}

/// An error answered as `{"code": .., "message": ..}`, as the shop's are.
#[derive(Debug)]
struct Failure(StatusCode, &'static str, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.1, "message": self.2, "details": null });
        (self.0, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Failure {
        eprintln!("database error: {e}");
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error".into(),
        )
    }
}

fn invalid(message: &str) -> Failure {
    Failure(StatusCode::BAD_REQUEST, "invalid_argument", message.into())
}

async fn create_user(
    State(db): State<PgPool>,
    Json(p): Json<CreateUser>,
) -> Result<Json<User>, Failure> {
    let user = sqlx::query_as::<_, User>(
        "INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id, email, name",
    )
    .bind(p.email.trim())
    .bind(p.name.trim())
    .fetch_one(&db)
    .await?;
    Ok(Json(user))
}

async fn create_product(
    State(db): State<PgPool>,
    Json(p): Json<CreateProduct>,
) -> Result<Json<Product>, Failure> {
    let product = sqlx::query_as::<_, Product>(
        "INSERT INTO products (name, price_cents, inventory) VALUES ($1, $2, $3)
         RETURNING id, name, price_cents, inventory",
    )
    .bind(&p.name)
    .bind(p.price_cents)
    .bind(p.inventory)
    .fetch_one(&db)
    .await?;
    Ok(Json(product))
}

async fn find_product(db: &PgPool, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as::<_, Product>(
        "SELECT id, name, price_cents, inventory FROM products WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

async fn find_user(db: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>("SELECT id, email, name FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

async fn get_product(
    State(db): State<PgPool>,
    Path(id): Path<Uuid>,
) -> Result<Json<Product>, Failure> {
    find_product(&db, id).await?.map(Json).ok_or_else(|| {
        Failure(
            StatusCode::NOT_FOUND,
            "not_found",
            "product not found".into(),
        )
    })
}

async fn create_order(
    State(db): State<PgPool>,
    Json(p): Json<CreateOrder>,
) -> Result<Json<Order>, Failure> {
    if p.quantity <= 0 {
        return Err(invalid("`quantity` must be at least 1"));
    }
    find_user(&db, p.user_id)
        .await?
        .ok_or_else(|| invalid("user does not exist"))?;
    let product = find_product(&db, p.product_id)
        .await?
        .ok_or_else(|| invalid("product does not exist"))?;
    let total_cents = product
        .price_cents
        .checked_mul(i64::from(p.quantity))
        .ok_or_else(|| invalid("the order's total is too large"))?;

    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO reservations (id, product_id, quantity, status)
         VALUES ($1, $2, $3, 'reserved') ON CONFLICT (id) DO NOTHING",
    )
    .bind(Uuid::new_v4())
    .bind(p.product_id)
    .bind(p.quantity)
    .execute(&mut *tx)
    .await?;
    let updated = sqlx::query(
        "UPDATE products SET inventory = inventory - $1 WHERE id = $2 AND inventory >= $1",
    )
    .bind(p.quantity)
    .bind(p.product_id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "failed_precondition",
            "insufficient inventory".into(),
        ));
    }
    tx.commit().await?;

    let mut tx = db.begin().await?;
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
    let payload = serde_json::to_string(&event).expect("an event serialises");
    sqlx::query("INSERT INTO outbox (payload) VALUES ($1)")
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(order))
}

/// Delivers the outbox's events: a confirmation per order, as the shop's subscription does.
async fn deliver(db: PgPool) {
    loop {
        match deliver_batch(&db).await {
            Ok(0) => tokio::time::sleep(Duration::from_millis(10)).await,
            Ok(_) => {}
            Err(e) => {
                eprintln!("delivery failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Takes up to 100 events off the outbox and delivers them concurrently, each on a pooled
/// connection of its own, as the shop's subscription handles up to `max_concurrency` messages
/// at once; the events leave the outbox when all are delivered (the insert is idempotent, so a
/// crash in between delivers them again, harmlessly). Delivering them one after the other
/// falls behind the orders under load, leaving work out of the measured window.
async fn deliver_batch(db: &PgPool) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    let events: Vec<String> = sqlx::query_scalar(
        "DELETE FROM outbox WHERE id IN
           (SELECT id FROM outbox ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)
         RETURNING payload",
    )
    .fetch_all(&mut *tx)
    .await?;
    let deliveries = events.iter().map(|payload| async move {
        let Ok(event) = serde_json::from_str::<OrderCreated>(payload) else {
            eprintln!("an outbox row is not an event: {payload}");
            return Ok(());
        };
        notify(db, &event).await
    });
    futures_util::future::try_join_all(deliveries).await?;
    tx.commit().await?;
    Ok(events.len())
}

/// The confirmation of one order, as the shop's `notifications` subscription writes it.
async fn notify(db: &PgPool, event: &OrderCreated) -> Result<(), sqlx::Error> {
    let Some(user) = find_user(db, event.user_id).await? else {
        return Ok(());
    };
    let body = format!(
        "Your order #{} for ${}.{:02} has been confirmed.",
        event.order_id,
        event.total / 100,
        event.total % 100
    );
    let _first: bool = sqlx::query_scalar(
        "INSERT INTO notifications (order_id, user_id, email, subject, body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id) DO UPDATE SET deliveries = notifications.deliveries + 1
         RETURNING (xmax = 0)",
    )
    .bind(event.order_id)
    .bind(user.id)
    .bind(&user.email)
    .bind("Order Confirmed")
    .bind(&body)
    .fetch_one(db)
    .await?;
    Ok(())
}

async fn open(url: &str) -> Result<PgPool, sqlx::Error> {
    let server: PgConnectOptions = url.parse()?;
    let server = server.log_statements(log::LevelFilter::Off);
    let mut admin = server.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'axum_shop')")
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::query("CREATE DATABASE axum_shop")
            .execute(&mut admin)
            .await?;
    }
    let db = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(server.database("axum_shop"))
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&db).await?;
    Ok(db)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("axum_shop: set DATABASE_URL to a Postgres server");
        return std::process::ExitCode::FAILURE;
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:4100".into());
    let db = match open(&url).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("axum_shop: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::spawn(deliver(db.clone()));
    let app = Router::new()
        .route("/users", post(create_user))
        .route("/products", post(create_product))
        .route("/products/{id}", get(get_product))
        .route("/orders", post(create_order))
        .with_state(db);
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum_shop: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stop = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        eprintln!("axum_shop: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
