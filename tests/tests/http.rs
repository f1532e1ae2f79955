//! The shop app served over real HTTP on loopback, against real Postgres: the guide's flow,
//! every error path a client can hit, and concurrent orders that must never oversell.

mod util;

use ovation::testing::{Hosting, TestEnv};
use serde_json::json;
use util::Client;

async fn serve_all() -> (TestEnv, ovation::Server, Client) {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let client = Client::new(server.url());
    (env, server, client)
}

#[tokio::test]
async fn the_guides_order_flow_over_http() {
    let (env, server, c) = serve_all().await;
    let (user, product) = c.user_and_product("flow@example.com", 1000, 10).await;

    let order = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 2}),
        )
        .await;
    assert_eq!(order.status, 200, "{order:?}");
    assert_eq!(order.body["totalCents"], 2000);
    assert_eq!(order.body["status"], "confirmed");
    assert_eq!(order.body["userId"], user.as_str());

    let p = c.get(&format!("/products/{product}")).await;
    assert_eq!((p.status, &p.body["inventory"]), (200, &json!(8)));
    assert_eq!(p.body["priceCents"], 1000);
    let u = c.get(&format!("/users/{user}")).await;
    assert_eq!(
        (u.status, &u.body["email"]),
        (200, &json!("flow@example.com"))
    );
    let o = c
        .get(&format!("/orders/{}", order.body["id"].as_str().unwrap()))
        .await;
    assert_eq!(o.body, order.body);

    let checkout = c
        .post(
            "/checkout",
            json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(checkout.status, 200, "{checkout:?}");
    assert_eq!(checkout.body["totalCents"], 1000);
    assert_eq!(checkout.body["productName"], "Widget");

    drop(server);
    env.close().await;
}

#[tokio::test]
async fn client_mistakes_get_4xx_with_the_field_named() {
    let (env, server, c) = serve_all().await;
    let (user, product) = c.user_and_product("errors@example.com", 1000, 10).await;

    // Unknown route and unknown method: 404 with an error body.
    let r = c.get("/nope").await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");
    let r = c.send(c.http().delete(format!("{}/users", c.base))).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");

    // Malformed JSON.
    let r = c
        .post_raw("/users", "application/json", "{\"email\": ")
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    assert!(r.message().contains("not valid JSON"), "{r:?}");

    // A missing field, named.
    let r = c.post("/users", json!({"email": "x@example.com"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    assert!(r.message().contains("`name`"), "{r:?}");

    // A wrong type, named by its path.
    let r = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": "two"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    assert!(r.message().contains("`quantity`"), "{r:?}");
    let r = c
        .post(
            "/orders",
            json!({"userId": "not-a-uuid", "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    assert!(r.message().contains("`userId`"), "{r:?}");

    // Integer overflow in the request: rejected, never wrapped.
    let r = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 4294967296u64}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");

    // A path id that is not a UUID, named.
    let r = c.get("/users/123").await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    assert!(r.message().contains("`id`"), "{r:?}");

    // Not found, with the service's message.
    let unknown = uuid::Uuid::new_v4();
    let r = c.get(&format!("/users/{unknown}")).await;
    assert_eq!(
        (r.status, r.code(), r.message()),
        (404, "not_found", format!("no user {unknown}").as_str()),
        "{r:?}"
    );

    // Mapped upstream errors.
    let r = c
        .post(
            "/orders",
            json!({"userId": uuid::Uuid::new_v4(), "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.message()),
        (400, "invalid_argument", "user does not exist")
    );
    let r = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 11}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.message()),
        (400, "failed_precondition", "insufficient inventory")
    );

    // Duplicate email: 409.
    let r = c
        .post(
            "/users",
            json!({"email": "errors@example.com", "name": "Again"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "already_exists"), "{r:?}");

    // Wrong content type.
    let r = c
        .post_raw(
            "/users",
            "text/plain",
            "{\"email\":\"a@b.c\",\"name\":\"n\"}",
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");

    // A body over the limit (1 MiB by default): 413.
    let big = format!(
        "{{\"email\":\"a@b.c\",\"name\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let r = c.post_raw("/users", "application/json", big).await;
    assert_eq!((r.status, r.code()), (413, "resource_exhausted"), "{r:?}");

    // Invalid UTF-8 in a body.
    let r = c
        .post_raw(
            "/users",
            "application/json",
            b"{\"email\":\"\xff\xfe\",\"name\":\"n\"}".to_vec(),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");

    // Nothing above changed the stock.
    let p = c.get(&format!("/products/{product}")).await;
    assert_eq!(p.body["inventory"], 10);

    drop(server);
    env.close().await;
}

#[tokio::test]
async fn private_endpoints_are_not_reachable_from_outside() {
    let (env, server, c) = serve_all().await;
    let (_, product) = c.user_and_product("private@example.com", 1000, 10).await;

    // A plain request to a private endpoint: 404, exactly like a route that does not exist.
    let r = c
        .post(
            &format!("/products/{product}/reserve"),
            json!({"quantity": 5}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");
    // A forged signature: also 404.
    let forged = c
        .send(
            c.http()
                .post(format!("{}/products/{product}/reserve", c.base))
                .header("x-ovation-service-auth", "v1 orders 1700000000 00ff")
                .json(&json!({"quantity": 5})),
        )
        .await;
    assert_eq!(
        (forged.status, forged.code()),
        (404, "not_found"),
        "{forged:?}"
    );
    let p = c.get(&format!("/products/{product}")).await;
    assert_eq!(p.body["inventory"], 10, "the stock was not touched");

    // Health answers anyone.
    let h = c.get("/__ovation/health").await;
    assert_eq!((h.status, &h.body["status"]), (200, &json!("ok")));

    drop(server);
    env.close().await;
}

#[tokio::test]
async fn fifty_concurrent_orders_for_ten_items_confirm_exactly_ten() {
    let (env, server, c) = serve_all().await;
    let (user, product) = c.user_and_product("rush@example.com", 500, 10).await;
    let c = std::sync::Arc::new(c);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (c, user, product) = (c.clone(), user.clone(), product.clone());
            tokio::spawn(async move {
                c.post(
                    "/orders",
                    json!({"userId": user, "productId": product, "quantity": 1}),
                )
                .await
            })
        })
        .collect();
    let mut confirmed = 0;
    for t in futures::future::join_all(tasks).await {
        let r = t.unwrap();
        match r.status {
            200 => {
                assert_eq!(r.body["status"], "confirmed");
                confirmed += 1;
            }
            _ => assert_eq!((r.status, r.code()), (400, "failed_precondition"), "{r:?}"),
        }
    }
    assert_eq!(confirmed, 10);
    let p = c.get(&format!("/products/{product}")).await;
    assert_eq!(p.body["inventory"], 0);

    drop(server);
    env.close().await;
}

#[tokio::test]
async fn meta_lists_every_endpoint_with_schemas() {
    let (env, server, c) = serve_all().await;
    // Loopback is no credential: the app model names private endpoints, so it answers only a
    // signed request (the CLI's), with the same 404 as a route that does not exist otherwise.
    let unsigned = c.get("/__ovation/meta").await;
    assert_eq!((unsigned.status, unsigned.code()), (404, "not_found"));
    let url = format!("{}/__ovation/meta", c.base);
    let key = env.service_auth_key();
    let meta = c
        .send(util::signed(
            c.http(),
            key,
            reqwest::Method::GET,
            &url,
            None,
            "cli",
        ))
        .await;
    assert_eq!(meta.status, 200);
    let endpoints = meta.body["endpoints"].as_array().unwrap();
    let reserve = endpoints
        .iter()
        .find(|e| e["name"] == "reserve_inventory")
        .unwrap();
    assert_eq!(reserve["access"], "private");
    assert_eq!(reserve["path"], "/products/:id/reserve");
    let create = endpoints
        .iter()
        .find(|e| e["service"] == "orders" && e["name"] == "create")
        .unwrap();
    let props = &create["requestSchema"]["properties"];
    assert!(
        props["userId"].is_object() && props["quantity"].is_object(),
        "{create}"
    );
    assert!(
        create["responseSchema"]["properties"]["totalCents"].is_object(),
        "{create}"
    );
    let dbs: Vec<&str> = meta.body["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        dbs,
        ["notifications", "orders", "payments", "products", "users"]
    );
    assert_eq!(meta.body["topics"][0]["name"], "order-created");
    assert_eq!(meta.body["topics"][0]["service"], "orders");
    let sub = meta.body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "send-order-confirmation")
        .unwrap_or_else(|| panic!("{}", meta.body));
    assert_eq!(sub["topic"], "order-created");
    assert_eq!(sub["config"]["max_retries"], 100);
    assert_eq!(sub["config"]["ack_deadline_ms"], 30_000);
    drop(server);
    env.close().await;
}

// Regression: `curl -d '{...}'` sends Content-Type application/x-www-form-urlencoded, and the
// README's (and Encore's) curl commands failed with 400 until that type was accepted for JSON.
#[tokio::test]
async fn curl_style_json_bodies_are_accepted() {
    let (env, server, c) = serve_all().await;
    let r = c
        .post_raw(
            "/users",
            "application/x-www-form-urlencoded",
            r#"{"email":"curl@example.com","name":"Curl"}"#,
        )
        .await;
    assert_eq!(
        (r.status, &r.body["email"]),
        (200, &json!("curl@example.com")),
        "{r:?}"
    );
    // Still JSON only: a real form body is a 400 that says so.
    let r = c
        .post_raw(
            "/users",
            "application/x-www-form-urlencoded",
            "email=a%40b.c&name=n",
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    assert!(r.message().contains("not valid JSON"), "{r:?}");
    drop(server);
    env.close().await;
}

/// `/__ovation/metrics` after known traffic: each endpoint's requests, its errors by code and
/// its latency histogram, and the calls made to other endpoints, counted exactly; readable
/// without a signature, as Prometheus scrapes it.
#[tokio::test]
async fn metrics_count_requests_and_calls_by_endpoint_and_code() {
    let (env, server, c) = serve_all().await;
    let (user, product) = c.user_and_product("metrics@example.com", 500, 5).await;
    for _ in 0..3 {
        assert_eq!(c.get(&format!("/users/{user}")).await.status, 200);
    }
    for _ in 0..2 {
        let missing = c.get(&format!("/users/{}", uuid::Uuid::new_v4())).await;
        assert_eq!(missing.status, 404, "{missing:?}");
    }
    assert_eq!(c.get("/users/not-a-uuid").await.status, 400);
    let order = c
        .post(
            "/orders",
            json!({"userId": uuid::Uuid::new_v4(), "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(order.status, 400, "{order:?}");
    let order = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(order.status, 200, "{order:?}");

    // The order's event is delivered to its subscriptions in the background: wait for them.
    let deliveries = |text: &str| {
        [
            "live-orders",
            "send-order-confirmation",
            "confirm-reservations",
        ]
        .iter()
        .all(|sub| {
            text.lines().any(|l| {
                l == format!(
                    r#"ovation_deliveries_total{{topic="order-created",subscription="{sub}"}} 1"#
                )
            })
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = reqwest::get(format!("{}/__ovation/metrics", server.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if deliveries(&text) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        deliveries(&text),
        "no delivery of the order's event in:\n{text}"
    );

    let scrape = reqwest::get(format!("{}/__ovation/metrics", server.url()))
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    assert_eq!(
        scrape.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = scrape.text().await.unwrap();
    let has = |line: &str| {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in the metrics:\n{text}"
        )
    };
    let users_get = r#"service="users",endpoint="get""#;
    has(&format!("ovation_requests_total{{{users_get}}} 6"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("ovation_spans_dropped_total ")),
        "{text}"
    );
    // The order's workflow run, and the cron job this process would schedule (not yet run).
    has(r#"ovation_workflow_runs_total{service="orders",workflow="place-order"} 1"#);
    has(r#"ovation_cron_runs_total{service="products",job="expire-reservations"} 0"#);
    has(
        r#"ovation_delivery_duration_seconds_count{topic="order-created",subscription="live-orders"} 1"#,
    );
    has(&format!(
        r#"ovation_request_errors_total{{{users_get},code="not_found"}} 2"#
    ));
    has(&format!(
        r#"ovation_request_errors_total{{{users_get},code="invalid_argument"}} 1"#
    ));
    has(&format!(
        r#"ovation_request_duration_seconds_bucket{{{users_get},le="+Inf"}} 6"#
    ));
    has(&format!(
        "ovation_request_duration_seconds_count{{{users_get}}} 6"
    ));
    has(r#"ovation_requests_total{service="users",endpoint="create"} 1"#);
    has(r#"ovation_requests_total{service="orders",endpoint="create"} 2"#);
    has(
        r#"ovation_request_errors_total{service="orders",endpoint="create",code="invalid_argument"} 1"#,
    );
    // Served here, never requested: shown at zero.
    has(r#"ovation_requests_total{service="orders",endpoint="get"} 0"#);
    // The orders' calls to `users.get` and the confirmation's (its subscription looks the user
    // up), made in this process, are calls and not requests.
    has(&format!("ovation_calls_total{{{users_get}}} 3"));
    has(&format!(
        r#"ovation_call_errors_total{{{users_get},code="not_found"}} 1"#
    ));
    has(&format!(
        "ovation_call_duration_seconds_count{{{users_get}}} 3"
    ));
    // Every sample line is `name{labels} value` (or `name value`), and the buckets only grow.
    let mut last: Option<(String, f64)> = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line:?}"));
        assert!(
            series.ends_with('}') || series.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{line:?}"
        );
        if let Some(prefix) = series
            .split(",le=")
            .next()
            .filter(|_| series.contains(",le="))
        {
            if let Some((before, v)) = &last
                && before == prefix
            {
                assert!(value >= *v, "a bucket shrank at {line:?}");
            }
            last = Some((prefix.to_owned(), value));
        }
    }

    drop(server);
    env.close().await;
}
