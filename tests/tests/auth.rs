//! Authentication end to end, over real HTTP: the shop's login, `/me` and `/me/orders` in one
//! process and split across processes behind a gateway; every way a client could pretend to
//! be another user or a service; a middleware that denies by tag; request validation; CORS.

mod util;

use std::collections::BTreeSet;
use std::sync::Mutex;

use ovation::middleware::{Next, Request, Response};
use ovation::testing::{Hosting, TestEnv};
use ovation::tooling::{GATEWAY, HEADER, ServiceAuthKey, Signed};
use ovation::{ErrCode, Error};
use reqwest::Method;
use serde_json::{Value, json};
use util::{Client, Reply, split};

/// Users whose account endpoints the test middleware refuses.
static BLOCKED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Refuses the account endpoints (tag "account") of blocked users: the middleware this test
/// binary adds to the shop.
#[ovation::middleware(target = tags("account"))]
async fn blocked_accounts(req: Request, next: Next) -> Result<Response, Error> {
    assert!(req.has_tag("account"), "{req:?}");
    let blocked = ovation::auth::user_id().is_some_and(|id| BLOCKED.lock().unwrap().contains(&id));
    if blocked {
        return Err(Error::permission_denied(format!(
            "this account is blocked ({}.{})",
            req.service(),
            req.endpoint()
        )));
    }
    next.run(req).await
}

async fn signup(c: &Client, email: &str, password: Option<&str>) -> String {
    let mut body = json!({"email": email, "name": email.split('@').next().unwrap()});
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let r = c.post("/users", body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.get("password").is_none() && r.body.get("passwordHash").is_none());
    r.body["id"].as_str().unwrap().to_owned()
}

async fn login(c: &Client, email: &str, password: &str) -> Reply {
    c.post("/sessions", json!({"email": email, "password": password}))
        .await
}

async fn token(c: &Client, email: &str, password: &str) -> String {
    let r = login(c, email, password).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["expiresAt"].is_string(), "{r:?}");
    r.body["token"].as_str().unwrap().to_owned()
}

async fn as_user(c: &Client, method: Method, path: &str, token: &str) -> Reply {
    c.send(
        c.http()
            .request(method, format!("{}{path}", c.base))
            .bearer_auth(token),
    )
    .await
}

fn order_ids(r: &Reply) -> Vec<String> {
    r.body["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("{r:?}"))
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Sign-up, login, `/me`, `/me/orders`: each user only ever sees their own.
async fn accounts(c: &Client) {
    let alice = signup(c, "alice@example.com", Some("correct horse")).await;
    let bob = signup(c, "bob@example.com", Some("battery staple")).await;
    signup(c, "carol@example.com", None).await;

    // The same 401 for a wrong password, an unknown email and a user without a password.
    for (email, password) in [
        ("alice@example.com", "wrong password"),
        ("nobody@example.com", "correct horse"),
        ("carol@example.com", "anything at all"),
    ] {
        let r = login(c, email, password).await;
        assert_eq!(
            (r.status, r.code(), r.message()),
            (401, "unauthenticated", "wrong email or password"),
            "{email}"
        );
    }
    let alice_token = token(c, "alice@example.com", "correct horse").await;
    let bob_token = token(c, "bob@example.com", "battery staple").await;

    let product = c
        .post(
            "/products",
            json!({"name": "Widget", "priceCents": 250, "inventory": 20}),
        )
        .await;
    let product = product.body["id"].as_str().unwrap().to_owned();
    let mut alices = Vec::new();
    for quantity in [1, 2] {
        let r = c
            .post(
                "/orders",
                json!({"userId": alice, "productId": product, "quantity": quantity}),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        alices.push(r.body["id"].as_str().unwrap().to_owned());
    }

    let me = as_user(c, Method::GET, "/me", &alice_token).await;
    assert_eq!(
        (me.status, &me.body["id"], &me.body["email"]),
        (200, &json!(alice), &json!("alice@example.com")),
        "{me:?}"
    );
    let mine = as_user(c, Method::GET, "/me/orders", &alice_token).await;
    alices.reverse();
    assert_eq!(order_ids(&mine), alices, "newest first, only alice's");
    let none = as_user(c, Method::GET, "/me/orders", &bob_token).await;
    assert_eq!(order_ids(&none), Vec::<String>::new());

    // Placed through orders, which asks users::me: the auth data travels with the call.
    let placed = c
        .send(
            c.http()
                .post(format!("{}/me/orders", c.base))
                .bearer_auth(&bob_token)
                .json(&json!({"productId": product, "quantity": 3})),
        )
        .await;
    assert_eq!(
        (
            placed.status,
            &placed.body["userId"],
            &placed.body["totalCents"]
        ),
        (200, &json!(bob), &json!(750)),
        "{placed:?}"
    );
    let bobs = as_user(c, Method::GET, "/me/orders", &bob_token).await;
    assert_eq!(order_ids(&bobs), [placed.body["id"].as_str().unwrap()]);
    assert_eq!(
        order_ids(&as_user(c, Method::GET, "/me/orders", &alice_token).await),
        alices
    );

    // Without a credential, with a bad one, with another scheme: 401, naming how to send it.
    let r = c.get("/me").await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");
    assert!(r.message().contains("Authorization: Bearer"), "{r:?}");
    let tampered = alice_token.replacen(&alice, &bob, 1);
    for bad in [tampered.as_str(), "v1.garbage", "", "Bearer"] {
        let r = as_user(c, Method::GET, "/me", bad).await;
        assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{bad:?}");
    }
    let basic = c
        .send(
            c.http()
                .get(format!("{}/me", c.base))
                .basic_auth("alice@example.com", Some("correct horse")),
        )
        .await;
    assert_eq!(basic.status, 401);
    // A public endpoint serves a request with a bad token as anonymous.
    let r = as_user(c, Method::GET, &format!("/users/{bob}"), "v1.garbage").await;
    assert_eq!(r.status, 200, "{r:?}");

    // An expired token, signed with the app's own key.
    let expired = session_token(&alice, chrono_now() - 5);
    let r = as_user(c, Method::GET, "/me", &expired).await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");

    // A deleted user's token stops working at once.
    let erin = signup(c, "erin@example.com", Some("erin's password")).await;
    let erin_token = token(c, "erin@example.com", "erin's password").await;
    let r = as_user(c, Method::DELETE, "/me", &erin_token).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = as_user(c, Method::GET, "/me", &erin_token).await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");
    assert_eq!(c.get(&format!("/users/{erin}")).await.status, 404);

    // The test middleware refuses a blocked user's account endpoints, and only those.
    let dave = signup(c, "dave@example.com", Some("dave's password")).await;
    let dave_token = token(c, "dave@example.com", "dave's password").await;
    BLOCKED.lock().unwrap().insert(dave.clone());
    for (method, path) in [(Method::GET, "/me"), (Method::GET, "/me/orders")] {
        let r = as_user(c, method, path, &dave_token).await;
        assert_eq!((r.status, r.code()), (403, "permission_denied"), "{r:?}");
    }
    let r = as_user(c, Method::GET, &format!("/users/{dave}"), &dave_token).await;
    assert_eq!(r.status, 200, "untagged endpoints are not wrapped: {r:?}");
    let r = as_user(c, Method::GET, "/me", &alice_token).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Validation: a password too short is a 400 naming the field.
    let r = c
        .post(
            "/users",
            json!({"email": "short@example.com", "name": "Short", "password": "1234567"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    assert_eq!(r.body["details"]["fields"][0]["field"], "password", "{r:?}");
    assert!(r.message().contains("`password`"), "{r:?}");
    assert_eq!(login(c, "short@example.com", "1234567").await.status, 401);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A session token as the shop signs them, with the `SessionKey` this machine's shop uses
/// (the environment's, or the one generated into its local secrets file).
fn session_token(user: &str, expires_at: i64) -> String {
    use hmac::Mac;
    let key = std::env::var("OVATION_SECRET_SESSION_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| {
            let file = ovation::secrets::local_file(
                util::workspace()
                    .join("examples/shop-app")
                    .to_str()
                    .unwrap(),
            );
            ovation::secrets::read_file(&file).unwrap()["SessionKey"].clone()
        });
    let payload = format!("v1.{user}.{expires_at}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    format!("{payload}.{}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn accounts_in_one_process() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    accounts(&Client::new(server.url())).await;
}

#[tokio::test]
async fn accounts_split_behind_the_gateway() {
    let s = split().await;
    accounts(&Client::new(s.g.url())).await;
}

/// Login throttling, across two processes hosting `users` (two replicas sharing the cache):
/// failures on either count together; past five, both refuse that email with 429 — even the
/// right password — while another email logs in.
#[tokio::test]
async fn failed_logins_are_throttled_across_replicas() {
    let env = TestEnv::new().await.unwrap();
    let replicas = [
        env.serve(Hosting::all()).await.unwrap(),
        env.serve(Hosting::all()).await.unwrap(),
    ];
    let clients = replicas.each_ref().map(|r| Client::new(r.url()));
    signup(&clients[0], "mallory@example.com", Some("right password")).await;
    signup(&clients[1], "bob@example.com", Some("bob's password")).await;
    let max = shop_app::users::MAX_FAILED_LOGINS;
    for attempt in 0..max {
        // Alternating replicas, and the email's case: one count per address.
        let c = &clients[usize::try_from(attempt % 2).unwrap()];
        let email = if attempt % 2 == 0 {
            "mallory@example.com"
        } else {
            "Mallory@Example.com"
        };
        let r = login(c, email, "wrong guess").await;
        assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");
    }
    for c in &clients {
        let r = login(c, "mallory@example.com", "another guess").await;
        assert_eq!((r.status, r.code()), (429, "resource_exhausted"), "{r:?}");
        let r = login(c, "mallory@example.com", "right password").await;
        assert_eq!(r.status, 429, "the right password is refused too: {r:?}");
        assert!(
            r.body["message"]
                .as_str()
                .unwrap()
                .contains("try again in a minute")
        );
    }
    token(&clients[0], "bob@example.com", "bob's password").await;
    token(&clients[1], "bob@example.com", "bob's password").await;
    env.close().await;
}

/// Headers a client might try in the hope that some layer reads them as "the user is".
const IMPERSONATING_HEADERS: [&str; 10] = [
    "x-ovation-user-id",
    "x-ovation-auth-data",
    "x-ovation-auth",
    "x-ovation-caller",
    "x-encore-meta-userid",
    "x-user-id",
    "x-forwarded-user",
    "x-auth-request-user",
    "x-remote-user",
    "remote-user",
];

/// `method path` (with the JSON `body`, if any) signed with `key` as `caller`, for the user
/// whose auth data is `auth`.
fn signed_for(
    c: &Client,
    key: &ServiceAuthKey,
    (method, path, body): (Method, &str, Option<&Value>),
    caller: &str,
    auth: Option<&Value>,
) -> reqwest::RequestBuilder {
    let url = reqwest::Url::parse(&format!("{}{path}", c.base)).unwrap();
    let auth = auth.map(|a| serde_json::to_vec(a).unwrap());
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let signature = key.sign_for(
        Signed {
            method: method.as_str(),
            path: url.path(),
            query: url.query().unwrap_or(""),
            body: &bytes,
        },
        caller,
        auth.as_deref(),
    );
    let request = c.http().request(method, url).header(HEADER, signature);
    match body {
        Some(_) => request
            .header("content-type", "application/json")
            .body(bytes),
        None => request,
    }
}

/// Every forged header against a server (`direct`: the process hosting `users`, whose key
/// `key` is; otherwise the gateway in front of it).
async fn impersonation_fails(c: &Client, key: &ServiceAuthKey, direct: bool) {
    let n = uuid::Uuid::new_v4().simple().to_string();
    let (alice_email, bob_email) = (
        format!("alice-{n}@example.com"),
        format!("bob-{n}@example.com"),
    );
    let alice = signup(c, &alice_email, Some("correct horse")).await;
    signup(c, &bob_email, Some("battery staple")).await;
    let bob_token = token(c, &bob_email, "battery staple").await;
    let alice_session = json!({"userId": alice, "expiresAt": chrono_now() + 3600});
    let alice_hex = hex::encode(serde_json::to_vec(&alice_session).unwrap());

    for name in IMPERSONATING_HEADERS {
        for value in [alice.as_str(), alice_hex.as_str(), alice_email.as_str()] {
            let r = c
                .send(c.http().get(format!("{}/me", c.base)).header(name, value))
                .await;
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthenticated"),
                "{name}: {r:?}"
            );
            // With bob's own token, bob stays bob.
            let r = c
                .send(
                    c.http()
                        .get(format!("{}/me", c.base))
                        .bearer_auth(&bob_token)
                        .header(name, value),
                )
                .await;
            assert_eq!(
                (r.status, r.body["email"].as_str()),
                (200, Some(bob_email.as_str())),
                "{name}: {r:?}"
            );
        }
    }

    // An envelope naming alice, signed with any key but the app's.
    let foreign = ServiceAuthKey::new("not the app's key");
    let r = c
        .send(signed_for(
            c,
            &foreign,
            (Method::GET, "/me", None),
            "orders",
            Some(&alice_session),
        ))
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");

    // A genuine envelope, as a service sends it, copied: to another path, and a second time.
    let genuine = signed_for(
        c,
        key,
        (Method::GET, "/me", None),
        "orders",
        Some(&alice_session),
    )
    .build()
    .unwrap();
    let header = genuine.headers()[HEADER].clone();
    let first = c
        .send(
            c.http()
                .get(format!("{}/me", c.base))
                .header(HEADER, header.clone()),
        )
        .await;
    if direct {
        assert_eq!(
            first.body["id"],
            json!(alice),
            "a service's call is honoured: {first:?}"
        );
    } else {
        // The gateway removes every x-ovation-* header a client sends.
        assert_eq!(first.status, 401, "{first:?}");
    }
    // Replayed, and on another request (deleting the account): refused, and nothing deleted.
    for method in [Method::GET, Method::DELETE] {
        let r = c
            .send(
                c.http()
                    .request(method.clone(), format!("{}/me", c.base))
                    .header(HEADER, header.clone()),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthenticated"),
            "{method}: {r:?}"
        );
    }
    assert_eq!(c.get(&format!("/users/{alice}")).await.status, 200);

    // A client's credential opens no private endpoint (reserve answers 204 to a service).
    let product = c
        .post(
            "/products",
            json!({"name": "Widget", "priceCents": 100, "inventory": 5}),
        )
        .await;
    let product = product.body["id"].as_str().unwrap().to_owned();
    let reserve = format!("/products/{product}/reserve");
    let one = json!({"quantity": 1});
    let r = c
        .send(
            c.http()
                .post(format!("{}{reserve}", c.base))
                .bearer_auth(&bob_token)
                .json(&one),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    if direct {
        // Nor does a request a gateway signed: it is a client's, whatever the path.
        let r = c
            .send(signed_for(
                c,
                key,
                (Method::POST, &reserve, Some(&one)),
                GATEWAY,
                Some(&alice_session),
            ))
            .await;
        assert_eq!(r.status, 404, "{r:?}");
        // While a service's signature of the same request is honoured.
        let r = c
            .send(signed_for(
                c,
                key,
                (Method::POST, &reserve, Some(&one)),
                "orders",
                None,
            ))
            .await;
        assert_eq!(r.status, 204, "{r:?}");
    }
    let stock = c.get(&format!("/products/{product}")).await;
    let expected = if direct { 4 } else { 5 };
    assert_eq!(stock.body["inventory"], expected, "{stock:?}");
    if direct {
        // And a gateway's request for nobody reaches no `auth` endpoint.
        let r = c
            .send(signed_for(
                c,
                key,
                (Method::GET, "/me", None),
                GATEWAY,
                None,
            ))
            .await;
        assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");
        // While a service's signed call for nobody is refused with the reason.
        let r = c
            .send(signed_for(
                c,
                key,
                (Method::GET, "/me", None),
                "orders",
                None,
            ))
            .await;
        assert_eq!(r.status, 401, "{r:?}");
        assert!(r.message().contains("called it for none"), "{r:?}");
    }
}

#[tokio::test]
async fn no_header_impersonates_a_user_or_a_service_in_one_process() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    impersonation_fails(&Client::new(server.url()), env.service_auth_key(), true).await;
}

#[tokio::test]
async fn no_header_impersonates_a_user_or_a_service_through_the_gateway() {
    let s = split().await;
    impersonation_fails(&Client::new(s.g.url()), s.env.service_auth_key(), false).await;
    // Behind the gateway, the service hosting `users` honours only what the app's key signed.
    impersonation_fails(&Client::new(s.a.url()), s.env.service_auth_key(), true).await;
}

/// A user made through the `users` service, and a session of theirs for a minute.
async fn user_and_session(email: &str) -> (shop_app::users::User, shop_app::users::Session) {
    let user = shop_app::users::create(shop_app::users::CreateUserParams {
        email: email.into(),
        name: "Someone".into(),
        password: None,
    })
    .await
    .unwrap();
    let session = shop_app::users::Session {
        user_id: user.id,
        expires_at: chrono_now() + 60,
    };
    (user, session)
}

#[ovation::test]
async fn calls_carry_the_auth_data_and_auth_endpoints_need_it() {
    use shop_app::{orders, users};
    let err = users::me().await.unwrap_err();
    assert_eq!(err.code(), ErrCode::Unauthenticated, "{err}");
    let (user, session) = user_and_session("local@example.com").await;
    let me = ovation::auth::with_data(session, async {
        assert_eq!(ovation::auth::user_id(), Some(user.id.to_string()));
        // Two calls deep: orders.my_orders, and users.me from a task of its own.
        let orders = orders::my_orders().await.unwrap();
        assert!(orders.orders.is_empty());
        ovation::spawn(users::me()).await.unwrap()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(me, user);
    // Validation runs for calls as for requests.
    let err = users::create(users::CreateUserParams {
        email: "x@example.com".into(),
        name: "X".into(),
        password: Some("short".into()),
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrCode::InvalidArgument);
}

#[ovation::test(split)]
async fn a_split_call_carries_the_auth_data_across_processes() {
    use shop_app::users;
    let (user, session) = user_and_session("remote@example.com").await;
    let me = ovation::auth::with_data(session, users::me())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(me.id, user.id);
    assert_eq!(
        users::me().await.unwrap_err().code(),
        ErrCode::Unauthenticated
    );
}

async fn preflight(c: &Client, origin: &str) -> reqwest::Response {
    c.http()
        .request(Method::OPTIONS, format!("{}/me", c.base))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let env = TestEnv::new().await.unwrap();
    // By default: no cross-origin access at all.
    let closed = env.serve(Hosting::all()).await.unwrap();
    let c = Client::new(closed.url());
    let r = preflight(&c, "https://shop.example").await;
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers()
    );
    assert_ne!(r.status(), 200);

    let open = env
        .serve(Hosting::all().cors(ovation::config::Cors {
            allowed_origins: vec!["https://shop.example".into()],
            allowed_headers: vec!["authorization".into()],
            allow_credentials: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    let c = Client::new(open.url());
    let r = preflight(&c, "https://shop.example").await;
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    let refused = preflight(&c, "https://evil.example").await;
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        refused.headers()
    );
    // Actual responses carry the header for the allowed origin only.
    let get = |origin: &'static str| {
        c.http()
            .get(format!("{}/users/{}", c.base, uuid::Uuid::new_v4()))
            .header("origin", origin)
            .send()
    };
    let ok = get("https://shop.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let no = get("https://evil.example").await.unwrap();
    assert!(no.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn openapi_shows_the_security_scheme_and_the_validation_rules() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let spec = Client::new(server.url())
        .get("/__ovation/openapi.json")
        .await;
    let spec = &spec.body;
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    assert_eq!(
        spec["paths"]["/me"]["get"]["security"],
        json!([{"bearer": []}])
    );
    assert_eq!(
        spec["paths"]["/me/orders"]["post"]["security"],
        json!([{"bearer": []}])
    );
    // A public endpoint takes the credential optionally.
    assert_eq!(
        spec["paths"]["/users/{id}"]["get"]["security"],
        json!([{}, {"bearer": []}])
    );
    let body = &spec["paths"]["/users"]["post"]["requestBody"]["content"]["application/json"];
    let password = &body["schema"]["properties"]["password"];
    assert_eq!(password["minLength"], 8, "{body}");
    assert_eq!(password["maxLength"], 1024, "{password}");
}
