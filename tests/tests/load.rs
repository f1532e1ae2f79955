//! The order flow under load: 200 concurrent clients for 30 s over loopback HTTP, half placing
//! orders (`POST /orders`), half checking out (`POST /checkout`, the saga), on one product
//! whose stock runs out during the run.
//!
//! Nothing may fail on the server's side (no 5xx), no confirmed order may be lost, and the
//! stock left plus the quantities confirmed must equal the initial stock.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ovation::testing::{Hosting, TestEnv};
use serde_json::json;
use util::Client;

const CLIENTS: usize = 200;
const DURATION: Duration = Duration::from_secs(30);
const INITIAL_STOCK: i64 = 20_000;

#[derive(Debug, Default)]
struct Tally {
    /// `(order id, quantity)` of every confirmed order.
    confirmed: Vec<(String, i64)>,
    /// Answers that are not a confirmed order, by status and code.
    refused: std::collections::BTreeMap<(u16, String), usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_for_thirty_seconds_lose_nothing_and_never_oversell() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let setup = Client::new(server.url());
    let product = setup
        .post(
            "/products",
            json!({"name": "Load", "priceCents": 100, "inventory": INITIAL_STOCK}),
        )
        .await;
    assert_eq!(product.status, 200, "{product:?}");
    let product = product.body["id"].as_str().unwrap().to_owned();
    let mut users = Vec::new();
    for i in 0..20 {
        let u = setup
            .post(
                "/users",
                json!({"email": format!("load{i}@example.com"), "name": "Load"}),
            )
            .await;
        assert_eq!(u.status, 200, "{u:?}");
        users.push(u.body["id"].as_str().unwrap().to_owned());
    }

    // One HTTP client with a connection per simulated client, as 200 browsers would have.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let base = Arc::new(server.url());
    let users = Arc::new(users);
    let product = Arc::new(product);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (http, base, users, product) =
                (http.clone(), base.clone(), users.clone(), product.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let path = if i % 2 == 0 { "/orders" } else { "/checkout" };
                let mut n = 0;
                while started.elapsed() < DURATION {
                    n += 1;
                    let quantity = 1 + (i + n) % 3;
                    let body = json!({
                        "userId": users[(i + n) % users.len()],
                        "productId": *product,
                        "quantity": quantity,
                    });
                    let r = http
                        .post(format!("{base}{path}"))
                        .json(&body)
                        .send()
                        .await
                        .expect("the server answers");
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.expect("a JSON answer");
                    if status == 200 {
                        let id = body
                            .get("orderId")
                            .or_else(|| body.get("id"))
                            .and_then(|v| v.as_str())
                            .expect("an order id")
                            .to_owned();
                        tally.confirmed.push((id, quantity as i64));
                    } else {
                        let code = body["code"].as_str().unwrap_or("?").to_owned();
                        *tally.refused.entry((status, code)).or_default() += 1;
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        all.confirmed.extend(t.confirmed);
        for (k, v) in t.refused {
            *all.refused.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    let answered = all.confirmed.len() + all.refused.values().sum::<usize>();
    eprintln!(
        "{answered} requests in {elapsed:.1?} ({:.0}/s): {} confirmed, refused {:?}",
        answered as f64 / elapsed.as_secs_f64(),
        all.confirmed.len(),
        all.refused
    );

    // No 5xx; the only refusal is the stock running out.
    for ((status, code), n) in &all.refused {
        assert!(*status < 500, "{n} answers {status} {code}");
        assert_eq!(
            (*status, code.as_str()),
            (400, "failed_precondition"),
            "{n} times"
        );
    }
    assert!(all.confirmed.len() >= 100, "the load ran: {answered}");

    // No order lost: every confirmed order is there, confirmed, with its quantity.
    let check = Client::new(base.as_str());
    let mut lookups = futures::stream::iter(all.confirmed.iter().cloned())
        .map(|(id, quantity)| {
            let check = &check;
            async move {
                let r = check.get(&format!("/orders/{id}")).await;
                (id, quantity, r)
            }
        })
        .buffer_unordered(32);
    while let Some((id, quantity, r)) = lookups.next().await {
        assert_eq!(r.status, 200, "order {id} is lost: {r:?}");
        assert_eq!(
            (r.body["status"].as_str(), r.body["quantity"].as_i64()),
            (Some("confirmed"), Some(quantity)),
            "{id}"
        );
    }

    // Stock left plus quantities confirmed is the initial stock.
    let sold: i64 = all.confirmed.iter().map(|(_, q)| q).sum();
    let left = check.get(&format!("/products/{product}")).await.body["inventory"]
        .as_i64()
        .unwrap();
    assert_eq!(left + sold, INITIAL_STOCK, "left {left}, sold {sold}");
    drop(server);
    env.close().await;
}
