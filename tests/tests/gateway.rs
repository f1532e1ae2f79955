//! Gateway mode and calls across processes, in one test process: A hosts users and products,
//! B hosts orders, checkout and notifications, and G is a gateway hosting nothing, forwarding
//! public endpoints to A and B. Every hop is real HTTP over loopback.

mod util;

use std::time::{Duration, Instant};

use ovation::testing::{Hosting, TestEnv};
use ovation::tooling::HEADER;
use reqwest::Method;
use serde_json::{Value, json};
use util::{Client, split};

#[tokio::test]
async fn the_guides_order_flow_works_through_the_gateway() {
    let s = split().await;
    let c = Client::new(s.g.url());
    let (user, product) = c.user_and_product("gw@example.com", 1500, 5).await;

    let order = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 2}),
        )
        .await;
    assert_eq!(order.status, 200, "{order:?}");
    assert_eq!(order.body["status"], "confirmed");
    let id = order.body["id"].as_str().unwrap();
    let fetched = c.get(&format!("/orders/{id}")).await;
    assert_eq!(
        (fetched.status, &fetched.body["totalCents"]),
        (200, &json!(3000))
    );

    let checkout = c
        .post(
            "/checkout",
            json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(checkout.status, 200, "{checkout:?}");
    assert_eq!(checkout.body["userName"], "Buyer");
    assert_eq!(
        c.get(&format!("/products/{product}")).await.body["inventory"],
        2
    );

    // Errors pass through the gateway with their codes and messages.
    let r = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 3}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.message()),
        (400, "failed_precondition", "insufficient inventory"),
        "{r:?}"
    );
    let r = c.post("/orders", json!({"userId": "nope"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    // Routes no service has, and methods an endpoint does not take, end at the gateway.
    assert_eq!(c.get("/nowhere").await.status, 404);
    assert_eq!(c.get("/orders").await.status, 404);
    assert_eq!(
        c.get("/__ovation/health").await.body["status"],
        "ok",
        "the gateway answers health checks"
    );

    drop((s.a, s.b, s.g));
    s.env.close().await;
}

#[tokio::test]
async fn private_endpoints_answer_only_valid_fresh_signatures() {
    let s = split().await;
    let (direct, gateway) = (Client::new(s.a.url()), Client::new(s.g.url()));
    let (_, product) = direct.user_and_product("forge@example.com", 100, 10).await;
    let path = format!("/products/{product}/reserve");
    let key = s.env.service_auth_key();

    for (case, header) in util::forgeries(key, &path, &json!({"quantity": 1})) {
        for (at, client) in [("the service port", &direct), ("the gateway", &gateway)] {
            let mut req = client
                .http()
                .post(format!("{}{path}", client.base))
                .json(&json!({"quantity": 1}));
            if let Some(h) = &header {
                req = req.header(HEADER, h);
            }
            let r = client.send(req).await;
            assert_eq!(
                (r.status, r.code()),
                (404, "not_found"),
                "{case} at {at}: {r:?}"
            );
        }
    }
    assert_eq!(
        direct.get(&format!("/products/{product}")).await.body["inventory"],
        10,
        "no forgery touched the stock"
    );

    // A valid signature: the service accepts it once; the gateway has no route to forward it
    // on. The same signature again, or on another body or query, is a replay: 404.
    let body = json!({"quantity": 1});
    let url = format!("{}{path}", direct.base);
    let valid = util::signed(
        direct.http(),
        key,
        Method::POST,
        &url,
        Some(&body),
        "orders",
    )
    .build()
    .unwrap();
    let header = valid.headers()[HEADER].to_str().unwrap().to_owned();
    let send = |client: &Client, query: &str, body: Value| {
        client
            .http()
            .post(format!("{}{path}{query}", client.base))
            .header(HEADER, &header)
            .json(&body)
    };
    let r = gateway.send(send(&gateway, "", body.clone())).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");
    let r = direct.send(send(&direct, "", body.clone())).await;
    assert_eq!(r.status, 204, "{r:?}");
    for (case, query, body) in [
        ("the same request again", "", body.clone()),
        ("another body", "", json!({"quantity": 40})),
        ("an added query", "?quantity=50", body.clone()),
    ] {
        let r = direct.send(send(&direct, query, body)).await;
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found"),
            "replayed with {case}: {r:?}"
        );
    }
    assert_eq!(
        direct.get(&format!("/products/{product}")).await.body["inventory"],
        9,
        "only the one valid call took stock"
    );

    drop((s.a, s.b, s.g));
    s.env.close().await;
}

#[tokio::test]
async fn a_service_that_is_down_gives_unavailable_not_a_500_or_a_hang() {
    let s = split().await;
    let c = Client::new(s.g.url());
    let (user, product) = c.user_and_product("down@example.com", 100, 10).await;
    s.a.shutdown().await;

    let started = Instant::now();
    let r = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{r:?}");
    assert_eq!(r.message(), "service `users` is unreachable");
    // Through the gateway, straight to the stopped process: also 503.
    let r = c.get(&format!("/users/{user}")).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{r:?}");
    assert!(
        !r.message().contains("127.0.0.1"),
        "internal addresses stay internal: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    drop((s.b, s.g));
    s.env.close().await;
}

#[tokio::test]
async fn a_callee_that_never_answers_gives_deadline_exceeded_after_the_call_timeout() {
    let env = TestEnv::new().await.unwrap();
    // Accepts connections and reads nothing: a process that hangs.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = format!("http://{}", black_hole.local_addr().unwrap());
    let b = env
        .serve(
            Hosting::only(["orders"])
                .remote("users", &hole)
                .remote("products", &hole)
                .call_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let c = Client::new(b.url());
    let started = Instant::now();
    let r = c
        .post(
            "/orders",
            json!({"userId": uuid::Uuid::new_v4(), "productId": uuid::Uuid::new_v4(), "quantity": 1}),
        )
        .await;
    assert_eq!((r.status, r.code()), (504, "deadline_exceeded"), "{r:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    drop((b, black_hole));
    env.close().await;
}

#[tokio::test]
async fn a_rotated_key_verifies_while_accepted_and_not_once_removed() {
    use ovation::tooling::ServiceAuthKey;
    let env = TestEnv::new().await.unwrap();
    let (old, new) = (
        ServiceAuthKey::new("old key"),
        ServiceAuthKey::new("new key"),
    );
    // During the rotation every process signs with the new key and still accepts the old;
    // after it, the old key is gone from the config.
    let during = env
        .serve(Hosting::all().service_auth(new.clone(), vec![old.clone()]))
        .await
        .unwrap();
    let after = env
        .serve(Hosting::all().service_auth(new.clone(), Vec::new()))
        .await
        .unwrap();
    let c = Client::new(during.url());
    let (_, product) = c.user_and_product("rotate@example.com", 100, 10).await;
    let path = format!("/products/{product}/reserve");
    let body = json!({"quantity": 1});
    for (server, key, expected) in [
        (&during, &old, 204),
        (&during, &new, 204),
        (&after, &new, 204),
        (&after, &old, 404),
    ] {
        let url = format!("{}{path}", server.url());
        let request = util::signed(c.http(), key, Method::POST, &url, Some(&body), "orders");
        let r = c.send(request).await;
        assert_eq!(r.status, expected, "{key:?} at {url}: {r:?}");
    }
    assert_eq!(
        c.get(&format!("/products/{product}")).await.body["inventory"],
        7
    );
    drop((during, after));
    env.close().await;
}
