//! The shop app as a user runs it: the real binary, configured by environment variables,
//! creating its databases on start, serving on the address it is given, and stopping cleanly
//! on SIGTERM (its live streams closed with `1001 going away`).

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

#[tokio::test]
async fn the_binary_serves_every_service_and_stops_on_sigterm() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut app = start().await;
    let (mut live, _) = tokio_tungstenite::connect_async(format!(
        "{}/orders/live",
        app.base.replacen("http://", "ws://", 1)
    ))
    .await
    .unwrap();
    let email = format!("bin-{}@example.com", std::process::id());
    let (s, user) = post(&app.base, "/users", json!({"email": email, "name": "Bin"})).await;
    assert_eq!(s, 200, "{user}");
    let (s, product) = post(
        &app.base,
        "/products",
        json!({"name": "Widget", "priceCents": 1000, "inventory": 10}),
    )
    .await;
    assert_eq!(s, 200, "{product}");
    let (s, order) = post(
        &app.base,
        "/orders",
        json!({"userId": user["id"], "productId": product["id"], "quantity": 2}),
    )
    .await;
    assert_eq!(
        (s, &order["totalCents"], &order["status"]),
        (200, &json!(2000), &json!("confirmed"))
    );
    // The live stream pushes it.
    let pushed = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("the order was not pushed to the live stream");
    let Some(Ok(Message::Text(pushed))) = pushed else {
        panic!("{pushed:?}");
    };
    let pushed: Value = serde_json::from_str(&pushed).unwrap();
    assert_eq!(pushed["orderId"], order["id"]);
    let (s, checkout) = post(
        &app.base,
        "/checkout",
        json!({"userId": user["id"], "productId": product["id"], "quantity": 1}),
    )
    .await;
    assert_eq!(
        (s, &checkout["totalCents"]),
        (200, &json!(1000)),
        "{checkout}"
    );
    let (s, reserve) = post(
        &app.base,
        &format!("/products/{}/reserve", product["id"].as_str().unwrap()),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!((s, &reserve["code"]), (404, &json!("not_found")));

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(app.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    // The stream ends cleanly: a close frame saying why, not a cut connection.
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match live.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("the stream ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the live stream was not closed on SIGTERM")
    .expect("the close frame has a code");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason, "the server is shutting down");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = app.child.try_wait().unwrap() {
            assert!(exit.success(), "exit status after SIGTERM: {exit}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shop-app did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let child = spawn(&[("OVATION_LISTEN", format!("127.0.0.1:{port}"))]);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("OVATION_LISTEN"), "{stderr}");
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let port = free_port();
    let child = spawn(&[
        ("OVATION_LISTEN", format!("127.0.0.1:{port}")),
        (
            "DATABASE_URL",
            format!("postgres://nobody@127.0.0.1:{}/x", free_port()),
        ),
    ]);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to the Postgres server"),
        "{stderr}"
    );
}

#[test]
fn logs_say_where_it_serves() {
    let port = free_port();
    let mut child = spawn(&[("OVATION_LISTEN", format!("127.0.0.1:{port}"))]);
    let stderr = child.stderr.take().unwrap();
    // Never hang: kill the app if it has not said where it serves within 60 s.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = Command::new("kill").arg("-KILL").arg(pid).status();
    });
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("serving") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains(&format!(
            "serving checkout, notifications, orders, payments, products, users on http://127.0.0.1:{port}"
        )),
        "{seen}"
    );
}

#[tokio::test]
async fn an_order_is_confirmed_within_two_seconds() {
    let app = start().await;
    let email = format!("quick-{}@example.com", uuid_like());
    let (_, user) = post(
        &app.base,
        "/users",
        json!({"email": email, "name": "Quick"}),
    )
    .await;
    let (_, product) = post(
        &app.base,
        "/products",
        json!({"name": "Widget", "priceCents": 700, "inventory": 5}),
    )
    .await;
    let (s, order) = post(
        &app.base,
        "/orders",
        json!({"userId": user["id"], "productId": product["id"], "quantity": 1}),
    )
    .await;
    assert_eq!(s, 200, "{order}");
    let placed = Instant::now();
    let path = format!("/notifications/{}", user["id"].as_str().unwrap());
    loop {
        let (_, sent) = get_json(&app.base, &path).await;
        if let Some(first) = sent["notifications"].as_array().and_then(|a| a.first()) {
            assert_eq!(first["orderId"], order["id"]);
            assert_eq!(first["subject"], "Order Confirmed");
            break;
        }
        assert!(
            placed.elapsed() < Duration::from_secs(2),
            "no confirmation within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn confirmations_survive_a_sigkill() {
    // Postgres backend: a dead process's claims are released with its connection.
    crash_test(&[], Duration::from_secs(30)).await;
}

#[tokio::test]
async fn confirmations_survive_a_sigkill_on_nats() {
    // NATS backend: unacknowledged messages come back after JetStream's ack wait (the
    // subscription's 30 s ack deadline + 5 s). Its own data folder: the two crash tests must not
    // relay each other's outbox.
    let dir = data_dir().with_file_name("ovation-nats-crash-test");
    let extra = [
        ("OVATION_PUBSUB", "nats".to_owned()),
        ("OVATION_DATA_DIR", dir.display().to_string()),
    ];
    crash_test(&extra, Duration::from_secs(60)).await;
}

/// Creates 300 orders, SIGKILLs the app while confirmations go out, restarts it, and waits
/// (at most `within`) for exactly one confirmation per order.
async fn crash_test(extra: &[(&str, String)], within: Duration) {
    let port = free_port();
    let mut app = start_on(port, extra).await;
    let email = format!("crash-{}@example.com", uuid_like());
    let (_, user) = post(
        &app.base,
        "/users",
        json!({"email": email, "name": "Crash"}),
    )
    .await;
    let (_, product) = post(
        &app.base,
        "/products",
        json!({"name": "Widget", "priceCents": 100, "inventory": 1000}),
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_owned();

    // 300 orders, 16 at a time, as fast as the app takes them.
    let client = http();
    let mut order_ids = std::collections::BTreeSet::new();
    let body = json!({"userId": user["id"], "productId": product["id"], "quantity": 1});
    for _ in 0..(300 / 15) {
        let batch: Vec<_> = (0..15)
            .map(|_| {
                tokio::spawn(
                    client
                        .post(format!("{}/orders", app.base))
                        .json(&body)
                        .send(),
                )
            })
            .collect();
        for r in batch {
            let order: Value = r.await.unwrap().unwrap().json().await.unwrap();
            order_ids.insert(order["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(order_ids.len(), 300);

    // Kill it while the confirmations are going out.
    let before = confirmations(&app.base, &user_id).await.1.len();
    sigkill(&mut app.child);
    eprintln!("SIGKILL with {before} of 300 confirmations sent");

    let app = start_on(port, extra).await;
    let restarted = Instant::now();
    loop {
        let (confirmed, sent) = confirmations(&app.base, &user_id).await;
        if confirmed == order_ids {
            assert_eq!(sent.len(), 300, "one confirmation per order, no more");
            let deliveries: i64 = sent.iter().map(|n| n["deliveries"].as_i64().unwrap()).sum();
            assert!(deliveries >= 300);
            eprintln!(
                "all 300 confirmed {:?} after the restart; {} duplicate deliveries",
                restarted.elapsed(),
                deliveries - 300
            );
            break;
        }
        assert!(
            restarted.elapsed() < within,
            "{} of 300 orders confirmed {within:?} after the restart",
            confirmed.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A secrets file of this test's own, under the target folder.
fn secrets_file(name: &str) -> std::path::PathBuf {
    let dir = data_dir().with_file_name("shop-app-test-secrets");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}.json", std::process::id()))
}

#[test]
fn a_deployed_binary_without_its_secret_does_not_start_and_says_how_to_set_it() {
    let out = command(&[
        ("OVATION_DEPLOYMENT", "true".into()),
        ("OVATION_SECRET_SESSION_KEY", String::new()),
        (
            "OVATION_SECRETS_FILE",
            secrets_file("none").display().to_string(),
        ),
        ("OVATION_LISTEN", "127.0.0.1:0".into()),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secret `SessionKey` is not set")
            && stderr.contains("OVATION_SECRET_SESSION_KEY")
            && stderr.contains("ovation secret set SessionKey"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_deployed_binary_reads_its_secret_from_the_environment_or_the_secrets_file() {
    // From the environment.
    let none = secrets_file("none").display().to_string();
    let from_env = start_on(
        free_port(),
        &[
            ("OVATION_DEPLOYMENT", "true".into()),
            ("OVATION_SECRET_SESSION_KEY", "from the environment".into()),
            (
                "OVATION_SECRET_PAYMENTS_WEBHOOK_KEY",
                "from the environment".into(),
            ),
            ("OVATION_SECRETS_FILE", none),
        ],
    )
    .await;
    drop(from_env);
    // From the local secrets file, as `ovation secret set` writes it.
    let file = secrets_file("set");
    ovation::secrets::store(&file, "SessionKey", "from the file", true).unwrap();
    ovation::secrets::store(&file, "PaymentsWebhookKey", "from the file", true).unwrap();
    let app = start_on(
        free_port(),
        &[
            ("OVATION_DEPLOYMENT", "true".into()),
            ("OVATION_SECRET_SESSION_KEY", String::new()),
            ("OVATION_SECRET_PAYMENTS_WEBHOOK_KEY", String::new()),
            ("OVATION_SECRETS_FILE", file.display().to_string()),
        ],
    )
    .await;
    // The key signs sessions: a login and its token work.
    let email = format!("secret-{}@example.com", std::process::id());
    let (s, _) = post(
        &app.base,
        "/users",
        json!({"email": email, "name": "S", "password": "long enough"}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, session) = post(
        &app.base,
        "/sessions",
        json!({"email": email, "password": "long enough"}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    let me = http()
        .get(format!("{}/me", app.base))
        .bearer_auth(session["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let _ = std::fs::remove_file(file);
}
