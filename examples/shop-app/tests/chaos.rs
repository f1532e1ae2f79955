//! The real shop binary SIGKILLed at random instants, five times, while 8 clients place orders
//! and check out. Once the last restart has settled, the public API and the databases must
//! agree: stock is conserved (initial = inventory + the confirmed orders' quantities), every
//! charge has its confirmed order or its refund, every order answered 200 exists, and no order
//! or charge exists twice.
//!
//! Before `POST /orders` and the checkout were workflows, a kill between reserving the stock and
//! recording the order left the stock reserved for no order (3 units short in 200 orders).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovation::sqlx::{self, PgPool};
use serde_json::{Value, json};

mod common;
use common::*;

const INITIAL_STOCK: i64 = 1_000_000;
const CLIENTS: usize = 8;
const KILLS: usize = 5;

/// What the clients were answered 200: order ids (both endpoints) and checkout ids.
#[derive(Default)]
struct Answered {
    orders: Vec<String>,
    checkouts: Vec<String>,
    /// Requests cut off by a kill, or answered with an error.
    other: usize,
}

/// A small deterministic generator: the kill instants, from a seed printed for a rerun.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn client(
    base: String,
    user: String,
    product: String,
    n: usize,
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Answered>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = http();
        let mut i = n;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let checkout = i.is_multiple_of(2);
            let quantity = 1 + (i % 3) as i64;
            let (path, body) = if checkout {
                (
                    "/checkout",
                    json!({"userId": user, "productId": product, "quantity": quantity.min(2)}),
                )
            } else {
                (
                    "/orders",
                    json!({"userId": user, "productId": product, "quantity": quantity}),
                )
            };
            let reply = http.post(format!("{base}{path}")).json(&body).send().await;
            let ok = match reply {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                _ => None,
            };
            let failed = {
                let mut seen = answered.lock().unwrap();
                match ok {
                    Some(v) if checkout => {
                        seen.orders.push(v["orderId"].as_str().unwrap().to_owned());
                        seen.checkouts
                            .push(v["checkoutId"].as_str().unwrap().to_owned());
                        false
                    }
                    Some(v) => {
                        seen.orders.push(v["id"].as_str().unwrap().to_owned());
                        false
                    }
                    None => {
                        seen.other += 1;
                        true
                    }
                }
            };
            if failed {
                // The app is down: wait a little for the restart.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
}

async fn pool(dir: &std::path::Path, database: &str) -> PgPool {
    let dir = dir.to_owned();
    let pg = tokio::task::spawn_blocking(move || ovation::tooling::ManagedPostgres::ensure(&dir))
        .await
        .unwrap()
        .unwrap();
    PgPool::connect(&pg.url(database)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_under_orders_and_checkouts_leave_every_service_consistent() {
    let dir = data_dir().with_file_name("ovation-chaos-test");
    let port = free_port();
    let extra = [("OVATION_DATA_DIR", dir.display().to_string())];
    let mut app = start_on(port, &extra).await;
    let (s, product) = post(
        &app.base,
        "/products",
        json!({"name": "Chaos", "priceCents": 100, "inventory": INITIAL_STOCK}),
    )
    .await;
    assert_eq!(s, 200, "{product}");
    let product = product["id"].as_str().unwrap().to_owned();
    let mut users = Vec::new();
    for i in 0..CLIENTS {
        let email = format!("chaos-{i}-{}@example.com", uuid_like());
        let (s, user) = post(
            &app.base,
            "/users",
            json!({"email": email, "name": "Chaos"}),
        )
        .await;
        assert_eq!(s, 200, "{user}");
        users.push(user["id"].as_str().unwrap().to_owned());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Answered::default()));
    let clients: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(n, user)| {
            client(
                app.base.clone(),
                user.clone(),
                product.clone(),
                n,
                stop.clone(),
                answered.clone(),
            )
        })
        .collect();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos seed {seed}");
    let mut rng = Rng(seed);
    for kill in 1..=KILLS {
        // Under load first: some answers since the (re)start, then a random instant.
        let before = answered.lock().unwrap().orders.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered.lock().unwrap().orders.len() < before + 10 {
            assert!(
                Instant::now() < deadline,
                "no orders flow before kill {kill}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.next(700))).await;
        sigkill(&mut app.child);
        eprintln!(
            "kill {kill}: SIGKILL after {} answered orders",
            answered.lock().unwrap().orders.len()
        );
        app = start_on(port, &extra).await;
    }
    // The last restart serves a while, then the clients stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    // Settled: no workflow run left unfinished.
    let workflows = pool(&dir, "ovation_workflows").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ovation_workflow_runs WHERE status IN ('running', 'compensating')",
        )
        .fetch_one(&workflows)
        .await
        .unwrap();
        if unfinished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unfinished} runs still unfinished after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let answered = std::mem::take(&mut *answered.lock().unwrap());
    eprintln!(
        "{} orders and {} checkouts answered 200, {} requests cut off or failed",
        answered.orders.len(),
        answered.checkouts.len(),
        answered.other
    );
    assert!(
        answered.other > 0,
        "no request met a kill: the test tested nothing"
    );

    let orders = pool(&dir, "orders").await;
    let products = pool(&dir, "products").await;
    let payments = pool(&dir, "payments").await;

    // Stock is conserved.
    let (_, p) = get_json(&app.base, &format!("/products/{product}")).await;
    let inventory = p["inventory"].as_i64().unwrap();
    let product_id: uuid::Uuid = product.parse().unwrap();
    let confirmed: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(quantity), 0)::bigint FROM orders
          WHERE product_id = $1 AND status = 'confirmed'",
    )
    .bind(product_id)
    .fetch_one(&orders)
    .await
    .unwrap();
    eprintln!(
        "inventory {inventory} + confirmed {confirmed} = {}",
        inventory + confirmed
    );
    assert_eq!(
        inventory + confirmed,
        INITIAL_STOCK,
        "stock is not conserved"
    );
    // The reservations agree: reserved or confirmed ones are exactly the confirmed orders.
    let reserved: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(quantity), 0)::bigint FROM reservations
          WHERE product_id = $1 AND status IN ('reserved', 'confirmed')",
    )
    .bind(product_id)
    .fetch_one(&products)
    .await
    .unwrap();
    assert_eq!(reserved, confirmed, "reservations held for no order");

    // Every order answered 200 exists, confirmed.
    for id in &answered.orders {
        let (s, order) = get_json(&app.base, &format!("/orders/{id}")).await;
        assert_eq!(
            (s, order["status"].as_str()),
            (200, Some("confirmed")),
            "{id}: {order}"
        );
    }

    // Every charge has its confirmed order or its refund; no charge or order twice.
    let user_ids: Vec<uuid::Uuid> = users.iter().map(|u| u.parse().unwrap()).collect();
    let charges: Vec<(String, String)> =
        sqlx::query_as("SELECT idempotency_key, status FROM charges WHERE user_id = ANY($1)")
            .bind(&user_ids)
            .fetch_all(&payments)
            .await
            .unwrap();
    let mut keys: Vec<&str> = charges.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), charges.len(), "a charge exists twice");
    for (key, status) in &charges {
        let checkout: uuid::Uuid = key.parse().unwrap();
        let order: Option<String> =
            sqlx::query_scalar("SELECT status FROM orders WHERE checkout_id = $1")
                .bind(checkout)
                .fetch_optional(&orders)
                .await
                .unwrap();
        match status.as_str() {
            "charged" => assert_eq!(order.as_deref(), Some("confirmed"), "charge {key}"),
            "refunded" | "declined" => {
                assert_ne!(order.as_deref(), Some("confirmed"), "charge {key}")
            }
            other => panic!("charge {key} is {other}"),
        }
    }
    for id in &answered.checkouts {
        assert!(
            charges.iter().any(|(k, s)| k == id && s == "charged"),
            "checkout {id} answered 200 without its charge"
        );
    }
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT checkout_id FROM orders
          WHERE checkout_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) t",
    )
    .fetch_one(&orders)
    .await
    .unwrap();
    assert_eq!(twice, 0, "a checkout has two orders");
    // Each confirmed order is one workflow run's: an order id (or checkout id) is its run's.
    let confirmed_orders: Vec<(uuid::Uuid, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT id, checkout_id FROM orders WHERE product_id = $1 AND status = 'confirmed'",
    )
    .bind(product_id)
    .fetch_all(&orders)
    .await
    .unwrap();
    let runs: Vec<String> = confirmed_orders
        .iter()
        .map(|(id, checkout)| checkout.unwrap_or(*id).to_string())
        .collect();
    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ovation_workflow_runs WHERE id = ANY($1) AND status = 'completed'",
    )
    .bind(&runs)
    .fetch_one(&workflows)
    .await
    .unwrap();
    assert_eq!(
        completed as usize,
        runs.len(),
        "an order without its completed run"
    );
    drop(app);
}
