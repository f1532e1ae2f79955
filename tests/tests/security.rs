//! The local tools are no open door: the dashboard port answers only its own host names, takes
//! state-changing requests only from its own pages, and its SQL box can do nothing a
//! read-only user of the app's tables could not. The browser half of this suite, pages of
//! another origin attacking a running `ovation run`, is in `dashboard.rs`.

mod util;

use std::sync::{Arc, RwLock};

use ovation::testing::{TestEnv, test_server};
use ovation_cli::dashboard::databases::{self, Databases};
use ovation_cli::dashboard::{AppState, AppStatus};
use reqwest::StatusCode;
use serde_json::Value;

/// The dashboard of an app that does not run (the guard and the pages need none), served on a
/// free port: its base URL and port.
async fn dashboard() -> (String, u16) {
    dashboard_of(
        format!("http://127.0.0.1:{}", util::free_port()),
        AppState::Stopped,
        ovation::tooling::ServiceAuthKey::random(),
    )
    .await
}

/// The dashboard of the app at `url`, in `state`, signing with `key`.
async fn dashboard_of(
    url: String,
    state: AppState,
    key: ovation::tooling::ServiceAuthKey,
) -> (String, u16) {
    let server = test_server().await.unwrap();
    let store = ovation_cli::traces::Store::open(server).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let status = Arc::new(RwLock::new(AppStatus { url, state }));
    let router = ovation_cli::dashboard::router(
        store,
        status,
        util::workspace().join("examples/shop-app"),
        Databases::new(server.clone()),
        key,
        ovation_cli::guard::Guard::new(port, &["dev.example.com".into()]),
    );
    ovation_cli::traces::serve_router(router, listener);
    (format!("http://127.0.0.1:{port}"), port)
}

/// The token a dashboard page carries.
async fn token(http: &reqwest::Client, base: &str) -> String {
    let page = http
        .get(format!("{base}/services"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = page.find("name=\"ovation-csrf\" content=\"").unwrap() + 29;
    page[start..start + 64].to_owned()
}

/// An empty OTLP/protobuf export request.
fn empty_export() -> Vec<u8> {
    Vec::new()
}

#[tokio::test]
async fn the_dashboard_answers_only_its_own_host_names() {
    let (base, port) = dashboard().await;
    let http = reqwest::Client::new();
    // What a page whose name was rebound to 127.0.0.1 sends, or a proxy that keeps `Host`.
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost:{}", port + 1),
        "127.0.0.1".into(),
    ] {
        for (method, path) in [
            ("GET", "/services"),
            ("GET", "/api/traces"),
            ("GET", "/api/status"),
            ("GET", "/assets/app.js"),
            ("GET", "/no-such-page"),
            ("POST", "/api/explorer"),
            ("POST", "/databases/users/query"),
            ("POST", "/pubsub/send-order-confirmation/redrive"),
            ("GET", "/cron"),
            ("GET", "/api/cron"),
            ("POST", "/cron/expire-reservations/run"),
            ("GET", "/workflows"),
            ("GET", "/api/workflows"),
            ("POST", "/workflows/runs/some-run/retry"),
            ("POST", "/v1/traces"),
            ("POST", "/v1/metrics"),
            ("GET", "/api/metrics"),
        ] {
            let response = http
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .header("host", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::MISDIRECTED_REQUEST,
                "{method} {path} with Host {host}"
            );
            assert!(response.bytes().await.unwrap().is_empty(), "no content");
        }
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("dev.example.com:{port}"),
    ] {
        let response = http
            .get(format!("{base}/api/traces?limit=1"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "Host {host}");
        let body: Value = response.json().await.unwrap();
        assert!(body["dropped"]["spans"].is_u64(), "{body}");
    }
}

#[tokio::test]
async fn state_changing_requests_need_the_pages_origin_and_token() {
    let (base, port) = dashboard().await;
    let http = reqwest::Client::new();
    let token = token(&http, &base).await;
    let own = format!("http://127.0.0.1:{port}");
    let foreign = format!("http://127.0.0.1:{}", port + 1);
    let explorer = r#"{"service":"products","endpoint":"reserve_inventory","params":{"id":"x"},"body":{"quantity":1}}"#;
    let query = format!("csrf={token}&sql=SELECT+1");
    let query_without_token = "sql=SELECT+1".to_owned();
    // (what, path, content type, body, headers) → expected status.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        String,
        Vec<(&'a str, String)>,
        u16,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "no Origin nor Sec-Fetch-Site",
            "/api/explorer",
            "application/json",
            explorer.into(),
            vec![("x-ovation-csrf", token.clone())],
            403,
        ),
        (
            "another origin",
            "/api/explorer",
            "application/json",
            explorer.into(),
            vec![
                ("origin", foreign.clone()),
                ("x-ovation-csrf", token.clone()),
            ],
            403,
        ),
        (
            "Origin: null",
            "/api/explorer",
            "application/json",
            explorer.into(),
            vec![("origin", "null".into()), ("x-ovation-csrf", token.clone())],
            403,
        ),
        (
            "cross-site fetch metadata",
            "/api/explorer",
            "application/json",
            explorer.into(),
            vec![
                ("sec-fetch-site", "cross-site".into()),
                ("x-ovation-csrf", token.clone()),
            ],
            403,
        ),
        (
            "same-site is not same-origin",
            "/api/explorer",
            "application/json",
            explorer.into(),
            vec![
                ("sec-fetch-site", "same-site".into()),
                ("x-ovation-csrf", token.clone()),
            ],
            403,
        ),
        (
            "no token",
            "/api/explorer",
            "application/json",
            explorer.into(),
            vec![("origin", own.clone())],
            403,
        ),
        (
            "a wrong token",
            "/api/explorer",
            "application/json",
            explorer.into(),
            vec![("origin", own.clone()), ("x-ovation-csrf", "0".repeat(64))],
            403,
        ),
        (
            "text/plain to a JSON API",
            "/api/explorer",
            "text/plain",
            explorer.into(),
            vec![("origin", own.clone()), ("x-ovation-csrf", token.clone())],
            415,
        ),
        (
            "a form without its token",
            "/databases/users/query",
            "application/x-www-form-urlencoded",
            query_without_token,
            vec![("origin", own.clone())],
            403,
        ),
        (
            "a form from another origin",
            "/databases/users/query",
            "application/x-www-form-urlencoded",
            query.clone(),
            vec![("origin", foreign.clone())],
            403,
        ),
        (
            "text/plain carrying a form",
            "/databases/users/query",
            "text/plain",
            query.clone(),
            vec![("origin", own.clone())],
            415,
        ),
        (
            "a redrive from another origin",
            "/pubsub/send-order-confirmation/redrive",
            "application/x-www-form-urlencoded",
            format!("csrf={token}"),
            vec![("origin", foreign.clone())],
            403,
        ),
        (
            "a \"Run now\" from another origin",
            "/cron/expire-reservations/run",
            "application/x-www-form-urlencoded",
            format!("csrf={token}"),
            vec![("origin", foreign.clone())],
            403,
        ),
        (
            "a \"Run now\" without the token",
            "/cron/expire-reservations/run",
            "application/x-www-form-urlencoded",
            String::new(),
            vec![("origin", own.clone())],
            403,
        ),
        (
            "a workflow retry from another origin",
            "/workflows/runs/some-run/retry",
            "application/x-www-form-urlencoded",
            format!("csrf={token}"),
            vec![("origin", foreign.clone())],
            403,
        ),
        (
            "a workflow retry without the token",
            "/workflows/runs/some-run/retry",
            "application/x-www-form-urlencoded",
            String::new(),
            vec![("origin", own.clone())],
            403,
        ),
        // The page's own requests pass the guard (and meet an app that does not run).
        (
            "the explorer's own call",
            "/api/explorer",
            "application/json",
            explorer.into(),
            vec![("origin", own.clone()), ("x-ovation-csrf", token.clone())],
            503,
        ),
        (
            "the SQL box's own form",
            "/databases/users/query",
            "application/x-www-form-urlencoded",
            query.clone(),
            vec![
                ("origin", own.clone()),
                ("sec-fetch-site", "same-origin".into()),
            ],
            200,
        ),
    ];
    for (what, path, content_type, body, headers, expected) in cases {
        let mut request = http
            .post(format!("{base}{path}"))
            .header("content-type", content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{what}");
    }
}

/// A WebSocket is a `GET` any page may open to any host (no CORS applies): the explorer's
/// stream relay takes one only from the dashboard's own page with its token.
#[tokio::test]
async fn the_explorers_stream_needs_the_pages_origin_and_token() {
    let (base, port) = dashboard().await;
    let http = reqwest::Client::new();
    let token = token(&http, &base).await;
    let own = format!("http://127.0.0.1:{port}");
    let foreign = format!("http://127.0.0.1:{}", port + 1);
    let call = "%7B%22service%22%3A%22orders%22%2C%22endpoint%22%3A%22live%22%7D";
    let cases: [(&str, String, Option<&str>, u16); 5] = [
        ("no Origin", format!("call={call}&csrf={token}"), None, 403),
        (
            "another origin",
            format!("call={call}&csrf={token}"),
            Some(foreign.as_str()),
            403,
        ),
        (
            "Origin: null",
            format!("call={call}&csrf={token}"),
            Some("null"),
            403,
        ),
        ("no token", format!("call={call}"), Some(own.as_str()), 403),
        // The page's own stream passes the guard (and meets an app that does not run).
        (
            "the page's own stream",
            format!("call={call}&csrf={token}"),
            Some(own.as_str()),
            503,
        ),
    ];
    for (what, query, origin, expected) in cases {
        let mut request = http
            .get(format!("{base}/api/explorer/stream?{query}"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{what}");
    }
}

/// The explorer's relay, as the page uses it: the stream opens (its first message names the
/// trace), the app's messages come through, and a close from the page is answered with its code.
#[tokio::test]
async fn the_explorer_relays_a_stream_of_the_app() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let env = TestEnv::new().await.unwrap();
    let app = env.serve(ovation::testing::Hosting::all()).await.unwrap();
    let (base, port) =
        dashboard_of(app.url(), AppState::Running, env.service_auth_key().clone()).await;
    let http = reqwest::Client::new();
    let token = token(&http, &base).await;
    let shop = util::Client::new(app.url());
    let (user, product) = shop.user_and_product("relay@example.com", 100, 5).await;
    let call = r#"{"service":"orders","endpoint":"live"}"#;
    let query = format!(
        "call={}&csrf={token}",
        reqwest::Url::parse(&format!("http://x/?c={call}"))
            .unwrap()
            .query()
            .unwrap()[2..]
            .to_owned()
    );
    let mut request = format!("ws://127.0.0.1:{port}/api/explorer/stream?{query}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "origin",
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| {
        tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
    };
    let Some(Ok(Message::Text(hello))) = next(&mut ws).await else {
        panic!("no hello");
    };
    let hello: Value = serde_json::from_str(&hello).unwrap();
    assert_eq!(hello["opened"], true, "{hello}");
    assert_eq!(hello["traceId"].as_str().unwrap().len(), 32, "{hello}");
    let order = shop
        .post(
            "/orders",
            serde_json::json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(order.status, 200, "{order:?}");
    let Some(Ok(Message::Text(pushed))) = next(&mut ws).await else {
        panic!("the order was not relayed");
    };
    assert!(
        pushed.contains(order.body["id"].as_str().unwrap()),
        "{pushed}"
    );
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        },
    )))
    .await
    .unwrap();
    let close = loop {
        match next(&mut ws).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1000));
    env.close().await;
}

#[tokio::test]
async fn the_trace_receiver_refuses_web_pages_but_not_exporters() {
    let (base, port) = dashboard().await;
    let http = reqwest::Client::new();
    for path in ["/v1/traces", "/v1/metrics"] {
        let send = |headers: Vec<(&'static str, String)>| {
            let mut request = http
                .post(format!("{base}{path}"))
                .header("content-type", "application/x-protobuf")
                .body(empty_export());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send()
        };
        for (what, headers) in [
            (
                "another origin",
                vec![("origin", format!("http://127.0.0.1:{}", port + 1))],
            ),
            ("Origin: null", vec![("origin", "null".into())]),
            ("cross-site", vec![("sec-fetch-site", "cross-site".into())]),
        ] {
            let status = send(headers).await.unwrap().status();
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {what}");
        }
        // An exporter sends no Origin, and a page of the dashboard itself may.
        assert_eq!(
            send(Vec::new()).await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
        let own = vec![("origin", format!("http://127.0.0.1:{port}"))];
        assert_eq!(send(own).await.unwrap().status(), StatusCode::OK, "{path}");
    }
}

/// Runs `sql` in the SQL box of `database` (a database of `env`).
async fn sql_box(env: &TestEnv, database: &str, sql: &str) -> Result<Vec<Value>, String> {
    let dbs = Databases::new(test_server().await.unwrap().clone());
    databases::query(&dbs, env.database_name(database).unwrap(), sql).await
}

#[tokio::test]
async fn the_sql_box_refuses_what_only_a_superuser_could_do() {
    let env = TestEnv::new().await.unwrap();
    let server = test_server().await.unwrap();
    // A backend of the server's own role, for the box to try to kill.
    let mut admin = ovation::sqlx::PgConnection::connect_with(
        &server.options(env.database_name("users").unwrap()),
    )
    .await
    .unwrap();
    use ovation::sqlx::Connection;
    let pid: i32 = ovation::sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let superuser: String = ovation::sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let owned = std::env::temp_dir().join(format!("ovation-owned-{}", uuid::Uuid::new_v4()));
    let owned = owned.display();
    for (sql, refusal) in [
        (
            format!("COPY (SELECT 1) TO PROGRAM 'id > {owned}'"),
            "COPY to or from an external program",
        ),
        (format!("COPY (SELECT 1) TO '{owned}'"), "COPY to a file"),
        (format!("COPY users FROM '{owned}'"), "COPY from a file"),
        (
            "SELECT pg_read_file('/etc/passwd')".into(),
            "permission denied for function pg_read_file",
        ),
        (
            "SELECT pg_ls_dir('.')".into(),
            "permission denied for function pg_ls_dir",
        ),
        ("SELECT lo_import('/etc/passwd')".into(), "lo_import"),
        (format!("SELECT pg_terminate_backend({pid})"), "terminate"),
        (format!("SELECT pg_cancel_backend({pid})"), "cancel"),
        (
            "LOCK TABLE users IN ACCESS EXCLUSIVE MODE".into(),
            "permission denied for table users",
        ),
        (
            "SELECT pg_reload_conf()".into(),
            "permission denied for function pg_reload_conf",
        ),
        (
            "SELECT pg_advisory_lock(7249812391)".into(),
            "permission denied for function pg_advisory_lock",
        ),
        (
            "SELECT pg_try_advisory_xact_lock(1, 2)".into(),
            "permission denied for function pg_try_advisory_xact_lock",
        ),
        (
            "SELECT * FROM _ovation_migrations".into(),
            "permission denied for table _ovation_migrations",
        ),
        (
            format!("SET ROLE \"{superuser}\""),
            "permission denied to set role",
        ),
        (
            "DELETE FROM users".into(),
            "cannot execute DELETE in a read-only transaction",
        ),
    ] {
        let answer = sql_box(&env, "users", &sql).await;
        let error = answer.expect_err(&sql);
        assert!(error.contains(refusal), "{sql}: {error}");
    }
    assert!(
        !std::path::Path::new(&owned.to_string()).exists(),
        "nothing was written"
    );
    // The backend the box tried to end still answers.
    ovation::sqlx::query("SELECT 1")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    env.close().await;
}

#[tokio::test]
async fn the_sql_box_reads_every_service_database() {
    let env = TestEnv::new().await.unwrap();
    for def in ovation::sqldb::declared() {
        let tables = sql_box(
            &env,
            def.name,
            "SELECT table_name::text AS t FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name NOT LIKE '\\_ovation%' ORDER BY 1",
        )
        .await
        .unwrap();
        assert!(!tables.is_empty(), "{} has tables", def.name);
        for table in tables {
            let name = table["t"].as_str().unwrap();
            let rows = sql_box(
                &env,
                def.name,
                &format!("SELECT count(*) AS n FROM \"{name}\""),
            )
            .await
            .unwrap();
            assert!(rows[0]["n"].is_i64(), "{}.{name}: {rows:?}", def.name);
        }
    }
    env.close().await;
}

/// A protobuf length-delimited field.
fn field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    for mut value in [u64::from(number << 3 | 2), payload.len() as u64] {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    out.extend_from_slice(payload);
    out
}

/// An OTLP/protobuf export request of `n` empty spans, encoded without building them.
fn empty_spans(n: usize) -> Vec<u8> {
    // ExportTraceServiceRequest.resource_spans(1) → ResourceSpans.scope_spans(2) →
    // ScopeSpans.spans(2), each span an empty message: 0x12 0x00.
    field(1, &field(2, &[0x12, 0x00].repeat(n)))
}

/// Resident memory of process `pid`, in MiB.
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_receiver_stays_bounded_whatever_is_sent() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use prost::Message;
    let (mut run, _, base) = util::run_shop("otlp-flood").await;
    let pid = run.pid();
    let idle = resident_mib(pid);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (peak, watching) = (peak.clone(), watching.clone());
        tokio::spawn(async move {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(resident_mib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let http = reqwest::Client::new();
    let export = |body: Vec<u8>, content_type: &'static str| {
        http.post(format!("{base}/v1/traces"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    // 2,000,000 empty spans (4 MB): the first 10,000 are kept, the rest rejected in OTLP's
    // partial success, which exporters log.
    let response = export(empty_spans(2_000_000), "application/x-protobuf")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_spans, 2_000_000 - 10_000);

    // Four 30 MB requests at once (15,000,000 spans each): each is taken within the limits or
    // told to come back (429), and the trace API keeps answering meanwhile.
    let floods: Vec<_> = (0..4)
        .map(|_| export(empty_spans(15_000_000), "application/x-protobuf"))
        .collect();
    let (statuses, listing) = tokio::join!(
        futures_util::future::join_all(floods),
        http.get(format!("{base}/api/traces?limit=1")).send()
    );
    assert_eq!(listing.unwrap().status(), StatusCode::OK);
    let statuses: Vec<u16> = statuses
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let busy = statuses.iter().filter(|s| **s == 429).count() as u64;

    // Larger than any request may be: 413 before it is read.
    let response = export(vec![0; 40 * 1024 * 1024], "application/x-protobuf")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // JSON decodes whole, so it is bounded by its objects: 1,000,000 empty spans is refused.
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        vec!["{}"; 1_000_000].join(",")
    );
    let response = export(json.into_bytes(), "application/json").await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.await.unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("ovation run: {idle} MiB idle, {peak} MiB at most under the flood");
    assert!(peak < 300, "{peak} MiB resident under the flood");

    // What was turned away is counted, and shown.
    let listed: Value = http
        .get(format!("{base}/api/traces?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dropped = &listed["dropped"];
    let accepted_floods = 4 - busy;
    assert_eq!(
        dropped["spans"].as_u64().unwrap(),
        1_990_000 + accepted_floods * (15_000_000 - 10_000),
        "{listed}"
    );
    // The two refused here, the floods told to come back, and any batch of the app's own
    // exporter that arrived while the floods held both permits.
    assert!(
        dropped["requests"].as_u64().unwrap() >= busy + 2,
        "{listed}"
    );
    let page = http
        .get(format!("{base}/traces"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"dropped\""), "the Traces page says so");
    let status = run.stop();
    assert!(status.success(), "{status}");
}
