//! The app split in two "processes" (two runtimes with their own servers, in one test
//! process): A hosts users and products, B hosts orders and checkout. Every call B makes
//! to users and products is a signed HTTP request to A over loopback.

mod util;

use ovation::testing::{Hosting, TestEnv};
use serde_json::json;
use util::Client;

#[tokio::test]
async fn orders_reaches_users_and_products_over_http() {
    let env = TestEnv::new().await.unwrap();
    let a = env
        .serve(Hosting::only(["users", "products"]))
        .await
        .unwrap();
    let b = env
        .serve(
            Hosting::only(["orders", "checkout"])
                .remote("users", a.url())
                .remote("products", a.url()),
        )
        .await
        .unwrap();
    let (ca, cb) = (Client::new(a.url()), Client::new(b.url()));

    // A does not serve B's endpoints, and B does not serve A's.
    assert_eq!(
        cb.post("/users", json!({"email": "x@example.com", "name": "X"}))
            .await
            .status,
        404
    );
    assert_eq!(
        ca.get(&format!("/orders/{}", uuid::Uuid::new_v4()))
            .await
            .status,
        404
    );

    let (user, product) = ca.user_and_product("split@example.com", 1000, 10).await;

    // B's orders::create calls users::get, products::get and the private
    // products::reserve_inventory on A.
    let order = cb
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 2}),
        )
        .await;
    assert_eq!(order.status, 200, "{order:?}");
    assert_eq!(
        (
            order.body["totalCents"].as_i64(),
            order.body["status"].as_str()
        ),
        (Some(2000), Some("confirmed"))
    );
    assert_eq!(
        ca.get(&format!("/products/{product}")).await.body["inventory"],
        8
    );

    // Error codes cross the wire intact: A's not_found becomes orders' invalid_argument,
    // A's failed_precondition passes through unchanged.
    let r = cb
        .post(
            "/orders",
            json!({"userId": uuid::Uuid::new_v4(), "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.message()),
        (400, "invalid_argument", "user does not exist")
    );
    let r = cb
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 9}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.message()),
        (400, "failed_precondition", "insufficient inventory")
    );
    let unknown = uuid::Uuid::new_v4();
    let r = cb
        .post(
            "/checkout",
            json!({"userId": unknown, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.message()),
        (404, "not_found", format!("no user {unknown}").as_str())
    );

    // The private endpoint B just used through its stub still refuses unsigned requests.
    let r = ca
        .post(
            &format!("/products/{product}/reserve"),
            json!({"quantity": 1}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // With A gone, B's calls fail as `unavailable`: proof they went over the network.
    a.shutdown().await;
    let r = cb
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{r:?}");

    drop(b);
    env.close().await;
}

#[tokio::test]
async fn a_service_with_no_known_location_is_unavailable() {
    let env = TestEnv::new().await.unwrap();
    let b = env.serve(Hosting::only(["orders"])).await.unwrap();
    let r = Client::new(b.url())
        .post("/orders", json!({"userId": uuid::Uuid::new_v4(), "productId": uuid::Uuid::new_v4(), "quantity": 1}))
        .await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{r:?}");
    assert!(r.message().contains("`users`"), "{r:?}");
    drop(b);
    env.close().await;
}
