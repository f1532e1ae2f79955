//! The dashboard in a real browser: `ovation run` serves the shop, and headless Chromium
//! (driven by `tests/browser/dashboard.mjs` with playwright-core) walks its pages with the
//! network cut off beyond 127.0.0.1, saving a screenshot of each under
//! `<target>/dashboard-screenshots/`.
//!
//! Needs Node.js, Chromium (`/usr/bin/chromium` or `CHROMIUM`) and `npm install` in
//! `tests/browser`; `.ci/run` provides all three. Without them the test says what is missing
//! and skips, except under `CI=true`, where it fails.

mod util;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use util::{Client, target_dir, workspace};

/// What is missing to run the browser, if anything.
fn missing_tools(chromium: &str) -> Option<String> {
    let browser_dir = workspace().join("tests/browser");
    if Command::new("node").arg("--version").output().is_err() {
        return Some("Node.js (`node`)".into());
    }
    if !PathBuf::from(chromium).exists() {
        return Some(format!(
            "Chromium at {chromium} (Debian: `apt install chromium`)"
        ));
    }
    if !browser_dir.join("node_modules/playwright-core").is_dir() {
        return Some(format!(
            "playwright-core (`npm install` in {})",
            browser_dir.display()
        ));
    }
    None
}

/// The Chromium to drive, or `None` (after saying why) when a tool is missing off CI.
fn browser() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if let Some(missing) = missing_tools(&chromium) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the browser test needs {missing}; .ci/run installs it"
        );
        eprintln!("SKIPPED: the browser test needs {missing}");
        return None;
    }
    Some(chromium)
}

/// Inserts a dead letter of `send-order-confirmation` into the Pub/Sub database of the
/// managed Postgres `ovation run` uses: a message the subscription gave up on.
async fn dead_letter() -> (ovation::sqlx::PgPool, uuid::Uuid) {
    let dead = uuid::Uuid::new_v4();
    let pg = ovation::tooling::ManagedPostgres::ensure(&target_dir().join("ovation-deploy-test"))
        .unwrap();
    let pool = ovation::sqlx::PgPool::connect(&pg.url("ovation_pubsub"))
        .await
        .unwrap();
    ovation::sqlx::query(
        "INSERT INTO ovation_messages (id, topic, payload) VALUES ($1, 'order-created', '{\"poisoned\": true}')",
    )
    .bind(dead)
    .execute(&pool)
    .await
    .unwrap();
    ovation::sqlx::query(
        "INSERT INTO ovation_deliveries (subscription, message_id, state, attempt, last_error)
         VALUES ('send-order-confirmation', $1, 'dead', 6, 'test: a poisoned message')",
    )
    .bind(dead)
    .execute(&pool)
    .await
    .unwrap();
    (pool, dead)
}

/// The last run of the shop's cron job (`null` if none), once the dashboard reaches the app.
async fn last_cron_run(dashboard: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = reqwest::get(format!("{dashboard}/api/cron")).await.unwrap();
        if response.status().is_success() {
            let jobs: serde_json::Value = response.json().await.unwrap();
            let job = jobs
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["name"] == "expire-reservations")
                .unwrap_or_else(|| panic!("{jobs}"));
            return job["lastRun"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard never reached the app"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Holds the browser tests (and the trace load) apart, whether they run as threads of one process (`cargo test`)
/// or as processes (`nextest`): they share `ovation run`'s data folder, so one's "Run now" would
/// be the other's evidence that a page elsewhere ran the job.
fn one_at_a_time() -> std::fs::File {
    let lock = std::fs::File::create(target_dir().join("dashboard-tests.lock")).unwrap();
    lock.lock().unwrap();
    lock
}

#[tokio::test]
async fn the_dashboard_works_in_a_browser_offline() {
    let Some(chromium) = browser() else {
        return;
    };
    let _alone = one_at_a_time();
    // Under --watch: the app answers through the watch proxy, which must pass the explorer's
    // signed calls of private endpoints on (it once stripped them: a 404 for every one).
    let (mut run, app, dashboard) = util::run_shop_with("dashboard", true).await;
    let c = Client::new(&app);
    let email = format!("{}@browser.example.com", uuid::Uuid::new_v4());
    let (user, product) = c.user_and_product(&email, 400, 10).await;

    // A dead letter for the Pub/Sub page to redrive.
    let (pool, dead) = dead_letter().await;

    let out = target_dir().join("dashboard-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let browser = tokio::process::Command::new("node")
        .arg(workspace().join("tests/browser/dashboard.mjs"))
        .current_dir(workspace().join("tests/browser"))
        .env("DASHBOARD", &dashboard)
        .env("APP", &app)
        .env("USER_ID", &user)
        .env("USER_EMAIL", &email)
        .env("PRODUCT_ID", &product)
        .env("OUT", &out)
        .env("DEAD_ID", dead.to_string())
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), browser)
        .await
        .expect("the browser run finishes within 3 minutes")
        .unwrap();
    assert!(
        output.status.success(),
        "the browser run failed:\n{}{}\n--- ovation run ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        run.output()
    );
    for shot in [
        "services.png",
        "activity.png",
        "traces.png",
        "trace.png",
        "architecture.png",
        "pubsub.png",
        "cron.png",
        "explorer.png",
        "databases.png",
        "table.png",
        "not-found.png",
    ] {
        let size = std::fs::metadata(out.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot} is a real screenshot ({size} bytes)");
    }
    let state: String =
        ovation::sqlx::query_scalar("SELECT state FROM ovation_deliveries WHERE message_id = $1")
            .bind(dead)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        state == "pending" || state == "dead",
        "the redriven letter went back to delivery (and, poisoned, may be dead again): {state}"
    );
    pool.close().await;
    let status = run.stop();
    assert!(status.success(), "{status}");
}

/// The app `ovation run` serves exports its metrics to the dashboard over OTLP, and the
/// dashboard's `/api/metrics` (the Services page's sparklines) counts exactly what was sent.
#[tokio::test]
async fn the_dashboard_receives_the_apps_metrics_over_otlp() {
    // Compressed, as an exporter to a remote collector would send them: the dashboard takes
    // gzip as it takes uncompressed requests.
    let gzip = [("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")];
    let (mut run, app, dashboard) = util::run_shop_env("metrics", false, &gzip).await;
    let c = Client::new(&app);
    for _ in 0..2 {
        let missing = c.get(&format!("/users/{}", uuid::Uuid::new_v4())).await;
        assert_eq!(missing.status, 404, "{missing:?}");
    }
    // This one's trace is looked for too: the spans came gzip-compressed as well.
    let (trace, traceparent) = util::new_traceparent();
    let missing = reqwest::Client::new()
        .get(format!("{app}/users/{}", uuid::Uuid::new_v4()))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(c.get("/users/not-a-uuid").await.status, 400);

    // `ovation run` has its app export every 5 s.
    let users_get = |body: &serde_json::Value| {
        body["activity"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "request" && a["scope"] == "users" && a["name"] == "get")
            .cloned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let activity = loop {
        let body: serde_json::Value = reqwest::get(format!("{dashboard}/api/metrics"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(a) = users_get(&body).filter(|a| a["total"] == 4) {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "users.get's 4 requests never reached the dashboard: {body:#}\n--- ovation run ---\n{}",
            run.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(activity["errors"], 4, "{activity:#}");
    let slots = activity["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 60, "ten minutes of 10 s slots");
    let sum = |field: &str| -> u64 { slots.iter().map(|s| s[field].as_u64().unwrap()).sum() };
    assert_eq!((sum("count"), sum("errors")), (4, 4), "{activity:#}");
    let spans = util::wait_for_trace(&dashboard, &trace, |s| !s.is_empty()).await;
    assert_eq!(
        spans[0]["attributes"]["http.status_code"], 404,
        "{spans:#?}"
    );
    let status = run.stop();
    assert!(status.success(), "{status}");
}

/// OTLP trace requests as the app's exporter sends them (one at a time, in batches), of
/// Ovation-shaped traces: a server span, a call, and three statements each.
fn traces_request(run: u64, batch: u64, traces: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let text = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut spans = Vec::new();
    for t in 0..traces {
        let trace_id = [run.to_be_bytes(), (batch * traces + t).to_be_bytes()].concat();
        let span_id = |n: u64| ((batch * traces + t) << 3 | n).to_be_bytes().to_vec();
        let span = |n: u64, parent: Option<u64>, kind: i32, name: &str, attributes| Span {
            trace_id: trace_id.clone(),
            span_id: span_id(n),
            parent_span_id: parent.map(span_id).unwrap_or_default(),
            kind,
            name: name.into(),
            start_time_unix_nano: now + n * 1000,
            end_time_unix_nano: now + 900_000,
            attributes,
            ..Span::default()
        };
        spans.push(span(
            1,
            None,
            2,
            "GET /users/:id",
            vec![
                text("service", "users"),
                text("endpoint", "get"),
                text("http.request.method", "GET"),
                text("url.path", "/users/5f0c3e55-9d1b-4a37-8d6e-2f1f8a0b6c11"),
            ],
        ));
        spans.push(span(
            2,
            Some(1),
            1,
            "users.get",
            vec![text("service", "users"), text("endpoint", "get")],
        ));
        for n in 3..6 {
            spans.push(span(
                n,
                Some(2),
                3,
                "SELECT users",
                vec![
                    text("db.system", "postgresql"),
                    text(
                        "db.statement",
                        "SELECT id, email, name, created_at FROM users WHERE id = $1",
                    ),
                ],
            ));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "trace-load")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

/// 5,000 spans a second for 20 s into `ovation run`'s trace store, sent as the app's exporter
/// sends them (one request at a time, 500 spans each, on a fixed schedule): every span is
/// stored, none is dropped, and the sender never falls behind by more than the exporter's
/// queue holds (past that, an app would drop spans). The trace list is read twice a second
/// meanwhile, as the Traces page does; its times are printed (the endpoint bench reports them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_store_keeps_up_with_5000_spans_a_second() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use prost::Message;
    const RATE: u64 = 5_000;
    const SECONDS: u64 = 20;
    const TRACES_PER_REQUEST: u64 = 100; // 500 spans
    /// The app's export queue (`telemetry::export::QUEUE_CAPACITY`).
    const EXPORT_QUEUE: f64 = 8192.0;
    // The store is the managed cluster's, shared with the browser tests: these traces, all
    // newer than theirs, would push the traces they look for off the list.
    let _alone = one_at_a_time();
    let (mut run, _, dashboard) = util::run_shop("trace-load").await;
    let http = reqwest::Client::new();
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (http, dashboard, reading) = (http.clone(), dashboard.clone(), reading.clone());
        tokio::spawn(async move {
            let mut times = Vec::new();
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = std::time::Instant::now();
                let list = http
                    .get(format!("{dashboard}/api/traces?limit=50"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(list.status(), 200);
                list.bytes().await.unwrap();
                times.push(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            times
        })
    };
    let run_id: u64 = rand_id();
    let requests = RATE * SECONDS / (TRACES_PER_REQUEST * 5);
    let started = tokio::time::Instant::now();
    let mut behind_most = 0f64;
    for batch in 0..requests {
        let due = started
            + Duration::from_secs_f64((batch * TRACES_PER_REQUEST * 5) as f64 / RATE as f64);
        tokio::time::sleep_until(due).await;
        let behind = tokio::time::Instant::now().saturating_duration_since(due);
        behind_most = behind_most.max(behind.as_secs_f64() * RATE as f64);
        let response = http
            .post(format!("{dashboard}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(traces_request(run_id, batch, TRACES_PER_REQUEST))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {batch}");
        let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
        assert_eq!(answer.partial_success, None, "request {batch}");
    }
    let took = started.elapsed();
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut times = reader.await.unwrap();
    times.sort();
    eprintln!(
        "{} spans in {took:?}; most spans waiting to be sent {behind_most:.0}; the trace list \
         ({} reads) p50 {:?}, max {:?}",
        requests * TRACES_PER_REQUEST * 5,
        times.len(),
        times[times.len() / 2],
        times.last().unwrap()
    );
    assert!(
        behind_most < EXPORT_QUEUE,
        "the store fell behind by {behind_most:.0} spans: an app's export queue of \
         {EXPORT_QUEUE} spans would have dropped some"
    );
    let list: serde_json::Value = http
        .get(format!("{dashboard}/api/traces?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["dropped"],
        serde_json::json!({"spans": 0, "requests": 0, "inApp": 0})
    );
    let status = run.stop();
    assert!(status.success(), "{status}");
}

fn rand_id() -> u64 {
    let id = uuid::Uuid::new_v4();
    u64::from_be_bytes(id.as_bytes()[..8].try_into().unwrap())
}

/// Serves a blank page on another origin (another port of 127.0.0.1), for the attacks to run
/// in; returns its URL.
async fn foreign_origin() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let page = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            axum::response::Html("<!doctype html><title>elsewhere</title><p>a page elsewhere</p>")
        }),
    );
    tokio::spawn(async move { axum::serve(listener, page).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_cannot_use_the_dashboard_or_the_app() {
    let Some(chromium) = browser() else {
        return;
    };
    let _alone = one_at_a_time();
    let (mut run, app, dashboard) = util::run_shop("attacks").await;
    let c = Client::new(&app);
    let email = format!("{}@attacks.example.com", uuid::Uuid::new_v4());
    let (_, product) = c.user_and_product(&email, 400, 10).await;
    let (pool, dead) = dead_letter().await;
    let owned = std::env::temp_dir().join(format!("ovation-owned-{}", uuid::Uuid::new_v4()));
    // The data folder outlives test runs: the job may have run by hand in an earlier one.
    let before = last_cron_run(&dashboard).await;

    let browser = tokio::process::Command::new("node")
        .arg(workspace().join("tests/browser/attacks.mjs"))
        .current_dir(workspace().join("tests/browser"))
        .env("DASHBOARD", &dashboard)
        .env("APP", &app)
        .env("EVIL", foreign_origin().await)
        .env("PRODUCT_ID", &product)
        .env("DEAD_ID", dead.to_string())
        .env("OWNED", &owned)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), browser)
        .await
        .expect("the browser run finishes within 3 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}{}\n--- ovation run ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        run.output()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("{report:#}");

    // Nothing a page elsewhere sent took effect...
    assert!(!owned.exists(), "the SQL box ran no program");
    assert_eq!(
        c.get(&format!("/products/{product}")).await.body["inventory"],
        9,
        "only the dashboard's own explorer call (1) took stock: {report}"
    );
    // No "Run now" reached the app: the job's last run, if new, is a scheduled one.
    let job = last_cron_run(&dashboard).await;
    assert!(
        job["id"] == before["id"] || job["manual"] == false,
        "a page elsewhere ran the job: {job}"
    );
    // (the own page's redrive found the letter still dead)
    assert_eq!(
        report["ownRedrive"].as_str().unwrap_or_default().trim(),
        "Put 1 message back for delivery.",
        "{report}"
    );
    // ...and what it tried to read, it could not.
    let cross = &report["crossOrigin"];
    for read in ["read traces", "read app model", "explorer cors json"] {
        assert_eq!(cross[read], "blocked", "{read}: {report}");
    }
    // A rebound name gets nothing from the dashboard, not even a page. (Chromium's own
    // Private Network Access checks may stop the page's fetches first; `security.rs` sends
    // every route a rebound `Host` directly.)
    let rebound = &report["rebound"];
    assert_eq!(rebound["navigation"], 421, "{report}");
    for (what, status) in rebound.as_object().unwrap() {
        assert!(
            *status == 421 || *status == "blocked",
            "{what} under a rebound name: {report}"
        );
    }
    pool.close().await;
    let status = run.stop();
    assert!(status.success(), "{status}");
}
