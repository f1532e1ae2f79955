//! The checkout workflow across processes: a hundred concurrent checkouts for the last ten items,
//! and a crash in the middle of one.
//!
//! The checkout service runs in a runtime of its own on a tokio runtime of its own; shutting
//! that tokio runtime down drops every task at whatever `.await` it was — the run stops dead,
//! as in a crash, and its connections close. A new checkout runtime on the same databases must
//! take the run over and finish it.

mod util;

use std::time::{Duration, Instant};

use ovation::testing::{Hosting, TestEnv};
use serde_json::{Value, json};
use util::Client;

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Everything but the checkout service.
fn others() -> Hosting {
    Hosting::only(["users", "products", "payments", "orders", "notifications"])
}

fn checkout_service(others: &str, orders: &str) -> Hosting {
    Hosting::only(["checkout"])
        .remote("users", others)
        .remote("products", others)
        .remote("payments", others)
        .remote("notifications", others)
        .remote("orders", orders)
        .call_timeout(Duration::from_secs(120))
}

/// `GET path` of a private endpoint, signed as the checkout service would.
async fn signed_get(env: &TestEnv, c: &Client, path: &str) -> util::Reply {
    let url = format!("{}{path}", c.base);
    let key = env.service_auth_key();
    c.send(util::signed(
        c.http(),
        key,
        reqwest::Method::GET,
        &url,
        None,
        "checkout",
    ))
    .await
}

/// The body of a private endpoint's successful answer.
async fn private_get(env: &TestEnv, c: &Client, path: &str) -> Value {
    let r = signed_get(env, c, path).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

#[test]
fn a_crash_between_charge_and_order_is_resumed_to_a_consistent_end() {
    let main = tokio_runtime();
    let env = main.block_on(TestEnv::new()).unwrap();
    let rest = main.block_on(env.serve(others())).unwrap();
    let c = Client::new(rest.url());
    let (user, product) = main.block_on(c.user_and_product("crash@example.com", 1500, 5));

    // The checkout service's calls to orders go to a listener that never answers: the run stops
    // after the charge, waiting for the order.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = format!("http://{}", black_hole.local_addr().unwrap());
    let doomed = tokio_runtime();
    let g1 = doomed
        .block_on(env.serve(checkout_service(&rest.url(), &hole)))
        .unwrap();
    let body = json!({"userId": user, "productId": product, "quantity": 2});
    let checkout = c.http().post(format!("{}/checkout", g1.url())).json(&body);
    let in_flight = main.spawn(checkout.send());

    let charges_path = format!("/payments/users/{user}/charges");
    main.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let charges = private_get(&env, &c, &charges_path).await;
            if charges["charges"].as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "the checkout never charged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the run record the charge and call orders (the black hole).
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    assert_eq!(
        main.block_on(c.get(&format!("/products/{product}"))).body["inventory"],
        3,
        "the stock is reserved"
    );

    // The crash: every task of the checkout process is dropped where it stands.
    doomed.shutdown_background();
    std::mem::forget(g1);
    let reply = main.block_on(in_flight).unwrap();
    assert!(
        reply.is_err(),
        "the crashed checkout service answered: {reply:?}"
    );

    // The checkout service comes back, with orders reachable; it takes the run over (its owner's
    // liveness lock went with the crashed process), replays the reservation and the charge,
    // and places the order.
    let g2 = main
        .block_on(env.serve(checkout_service(&rest.url(), &rest.url())))
        .unwrap();
    main.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let order = loop {
            let charges = private_get(&env, &c, &charges_path).await;
            let key = charges["charges"][0]["idempotencyKey"]
                .as_str()
                .unwrap()
                .to_owned();
            let order = order_of(&env, &c, &key).await;
            if let Some(order) = order {
                break order;
            }
            assert!(
                Instant::now() < deadline,
                "the checkout was not resumed within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // A consistent end: one confirmed order, one charge for it, the stock taken once.
        assert_eq!(
            (
                order["status"].as_str(),
                order["quantity"].as_i64(),
                order["totalCents"].as_i64()
            ),
            (Some("confirmed"), Some(2), Some(3000)),
            "{order}"
        );
        let charges = private_get(&env, &c, &charges_path).await;
        let charges = charges["charges"].as_array().unwrap().clone();
        assert_eq!(charges.len(), 1, "{charges:?}");
        assert_eq!(
            (
                charges[0]["status"].as_str(),
                charges[0]["amountCents"].as_i64()
            ),
            (Some("charged"), Some(3000))
        );
        assert_eq!(
            c.get(&format!("/products/{product}")).await.body["inventory"],
            3
        );
        // And the run is finished: a new checkout through the new checkout runtime works end to end.
        let r = Client::new(g2.url())
            .post(
                "/checkout",
                json!({"userId": user, "productId": product, "quantity": 1}),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            c.get(&format!("/products/{product}")).await.body["inventory"],
            2
        );
    });
    drop((g2, rest, black_hole));
    main.block_on(env.close());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_checkouts_across_processes_for_the_last_ten_sell_and_charge_ten() {
    // Through the gateway process; the workflow runs in B and calls products and payments in A.
    let util::Split { env, a, b, g } = util::split().await;
    let gateway = Client::new(g.url());
    let (user, product) = gateway
        .user_and_product("hundred@example.com", 700, 10)
        .await;
    let body = json!({"userId": user, "productId": product, "quantity": 1});
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (gateway, body) = (Client::new(&gateway.base), body.clone());
            tokio::spawn(async move { gateway.post("/checkout", body).await })
        })
        .collect();
    let mut sold = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => sold += 1,
            _ => assert_eq!(
                (r.status, r.code(), r.message()),
                (400, "failed_precondition", "insufficient inventory"),
                "{r:?}"
            ),
        }
    }
    assert_eq!(sold, 10);
    assert_eq!(
        gateway.get(&format!("/products/{product}")).await.body["inventory"],
        0
    );
    let charges = private_get(
        &env,
        &Client::new(a.url()),
        &format!("/payments/users/{user}/charges"),
    )
    .await;
    let charges = charges["charges"].as_array().unwrap();
    assert_eq!(charges.len(), 10, "{charges:?}");
    assert!(
        charges
            .iter()
            .all(|c| c["status"] == "charged" && c["amountCents"] == 700)
    );
    drop((g, b, a));
    env.close().await;
}

/// The order of checkout `key`, once placed (private `GET /orders/checkouts/:id`).
async fn order_of(env: &TestEnv, c: &Client, key: &str) -> Option<Value> {
    let r = signed_get(env, c, &format!("/orders/checkouts/{key}")).await;
    match r.status {
        200 => Some(r.body),
        404 => None,
        _ => panic!("{r:?}"),
    }
}
