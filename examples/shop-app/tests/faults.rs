//! The shop under load while its managed servers fail: every order answered 200 survives a
//! crash of Postgres, a request that meets the outage is answered 503 (retryable), never 500,
//! and a server that died is restarted by the app itself.
//!
//! Each test has a data folder of its own: the crashes must not reach the servers the other
//! tests use.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

/// What the load's clients saw: the ids of the orders answered 200, and how many answers of
/// each other status (with their error codes).
#[derive(Default)]
struct Seen {
    answered: Vec<String>,
    failed: BTreeMap<(u16, String), usize>,
}

/// `clients` clients placing orders for `body` until `stop` is set.
fn load(
    base: &str,
    body: Value,
    clients: usize,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (base, body, stop, seen) =
                (base.to_owned(), body.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let http = http();
                while !stop.load(Ordering::Relaxed) {
                    let r = http
                        .post(format!("{base}/orders"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("the app did not answer: {e}"));
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let mut seen = seen.lock().unwrap();
                    if status == 200 {
                        seen.answered.push(body["id"].as_str().unwrap().to_owned());
                    } else {
                        let code = body["code"].as_str().unwrap_or("").to_owned();
                        *seen.failed.entry((status, code)).or_default() += 1;
                    }
                }
            })
        })
        .collect()
}

async fn user_and_product(base: &str, inventory: i64) -> Value {
    let (s, user) = post(
        base,
        "/users",
        json!({"email": format!("fault-{}@example.com", uuid_like()), "name": "Fault"}),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    let (s, product) = post(
        base,
        "/products",
        json!({"name": "Widget", "priceCents": 100, "inventory": inventory}),
    )
    .await;
    assert_eq!(s, 200, "{product}");
    json!({"userId": user["id"], "productId": product["id"], "quantity": 1})
}

/// The pid in the first line of `file`.
fn pid_in(file: &std::path::Path) -> u32 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn signal(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits until 20 orders beyond the first `after` have been answered 200 (`what` says when,
/// for the failure message), and returns how many have been.
async fn orders_flow(seen: &Mutex<Seen>, after: usize, within: Duration, what: &str) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let answered = seen.lock().unwrap().answered.len();
        if answered >= after + 20 {
            return answered;
        }
        assert!(
            Instant::now() < deadline,
            "orders did not flow {what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three crashes of the managed Postgres under 8 clients placing orders: an immediate shutdown
/// (`SIGQUIT` to the postmaster, what `pg_ctl stop -m immediate` sends: no checkpoint, crash
/// recovery at the next start), with the app restarting the server by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_crash_under_load_loses_no_answered_order() {
    let dir = data_dir().with_file_name("ovation-pg-crash-test");
    let app = start_on(
        free_port(),
        &[("OVATION_DATA_DIR", dir.display().to_string())],
    )
    .await;
    let body = user_and_product(&app.base, 1_000_000).await;
    let (stop, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Seen::default())),
    );
    let clients = load(&app.base, body, 8, &stop, &seen);

    let postmaster = dir.join("postgres/data/postmaster.pid");
    let mut answered = 0;
    for round in 1..=3 {
        // Under load first (the first orders of a loaded machine can take seconds).
        let before =
            orders_flow(&seen, answered, Duration::from_secs(60), "before the crash").await;
        signal("-QUIT", pid_in(&postmaster));
        eprintln!("crash {round} after {before} orders");
        answered = orders_flow(&seen, before, Duration::from_secs(60), "after the crash").await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "{} orders answered 200; other answers: {:?}",
        seen.answered.len(),
        seen.failed
    );
    for (status, code) in seen.failed.keys() {
        assert_eq!(
            (*status, code.as_str()),
            (503, "unavailable"),
            "a request that met the crash: {:?}",
            seen.failed
        );
    }
    let http = http();
    let mut lost = Vec::new();
    for id in &seen.answered {
        let r = http
            .get(format!("{}/orders/{id}", app.base))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            lost.push(id.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} orders answered 200 are gone after the crashes: {lost:?}",
        lost.len(),
        seen.answered.len()
    );
}

/// `nats-server` SIGKILLed while confirmations go out and orders keep coming: the app
/// restarts it, and every order gets exactly one confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_nats_server_is_restarted_by_the_app_and_nothing_is_lost() {
    let dir = data_dir().with_file_name("ovation-nats-kill-test");
    let extra = [
        ("OVATION_PUBSUB", "nats".to_owned()),
        ("OVATION_DATA_DIR", dir.display().to_string()),
    ];
    let app = start_on(free_port(), &extra).await;
    let body = user_and_product(&app.base, 1_000_000).await;
    let (stop, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Seen::default())),
    );
    let clients = load(&app.base, body.clone(), 4, &stop, &seen);

    orders_flow(&seen, 0, Duration::from_secs(60), "before the kill").await;
    let pidfile = dir.join("nats/nats.pid");
    let killed = pid_in(&pidfile);
    signal("-KILL", killed);
    let before = seen.lock().unwrap().answered.len();
    eprintln!("nats-server killed after {before} orders");
    // Restarted: a new server process, on the same port.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(pid) = std::fs::read_to_string(&pidfile)
            && pid.trim().parse::<u32>().is_ok_and(|p| p != killed)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server was not restarted within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    orders_flow(&seen, before, Duration::from_secs(60), "after the restart").await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let answered: std::collections::BTreeSet<String> =
        seen.lock().unwrap().answered.iter().cloned().collect();
    assert!(
        seen.lock().unwrap().failed.is_empty(),
        "{:?}",
        seen.lock().unwrap().failed
    );
    let user = body["userId"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (confirmed, sent) = confirmations(&app.base, user).await;
        if confirmed == answered {
            assert_eq!(
                sent.len(),
                answered.len(),
                "one confirmation per order, no more"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} orders confirmed 60 s after the restart",
            confirmed.len(),
            answered.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
