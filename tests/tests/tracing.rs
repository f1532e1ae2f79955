//! Distributed tracing end to end: the runtime exports over OTLP/HTTP to the CLI's receiver
//! (started in this test process on the test cluster), and each test reads its trace back
//! through the trace API. Every request carries a `traceparent` made here, so each test knows
//! its trace id while the others run in parallel.

mod util;

use ovation::testing::{Hosting, TestEnv};
use serde_json::{Value, json};
use util::Client;

fn receiver() -> &'static str {
    let url = util::trace_receiver();
    ovation::tooling::init_for_tests_exporting_to(url);
    url
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one `{name}` span in {:#}",
        Value::Array(spans.to_vec())
    );
    found[0]
}

fn has(spans: &[Value], names: &[&str]) -> bool {
    names.iter().all(|n| spans.iter().any(|s| s["name"] == *n))
}

/// Every span's parent is in the trace, but the root's, which is the caller's span.
fn check_links(spans: &[Value], traceparent: &str) {
    let caller = traceparent.split('-').nth(2).unwrap();
    let ids: Vec<&str> = spans.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parent"] == caller).collect();
    assert_eq!(roots.len(), 1, "one span continues the caller's");
    for s in spans {
        let parent = s["parent"].as_str().unwrap_or("");
        assert!(
            parent == caller || ids.contains(&parent),
            "span {} has parent {parent:?} outside the trace",
            s["name"]
        );
    }
}

fn parent_of<'a>(spans: &'a [Value], span: &Value) -> &'a Value {
    spans
        .iter()
        .find(|s| s["id"] == span["parent"])
        .unwrap_or_else(|| panic!("no parent for {}", span["name"]))
}

#[tokio::test]
async fn one_request_is_one_trace_through_services_queries_and_pubsub() {
    let receiver = receiver();
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let c = Client::new(server.url());
    let email = format!("{}@trace.example.com", uuid::Uuid::new_v4());
    let (user, product) = c.user_and_product(&email, 250, 10).await;

    let (trace, traceparent) = util::new_traceparent();
    let r = c
        .send(
            c.http()
                .post(format!("{}/orders", c.base))
                .header("traceparent", &traceparent)
                .header("authorization", "Bearer s3cr3t-token")
                .header("cookie", "session=c00kie-value")
                .json(&json!({"userId": user, "productId": product, "quantity": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    let deliver = "deliver order-created → send-order-confirmation";
    let spans = util::wait_for_trace(receiver, &trace, |s| {
        has(
            s,
            &[
                "orders.create",
                "call users.get",
                "call products.get",
                "call products.reserve_inventory",
                "publish order-created",
                deliver,
                // Every delivery, so no query of one is read before the span it belongs to.
                "deliver order-created → live-orders",
                "deliver order-created → confirm-reservations",
                "db INSERT",
            ],
        )
    })
    .await;
    check_links(&spans, &traceparent);

    let request = one(&spans, "orders.create");
    assert_eq!(request["kind"], "server");
    assert_eq!(request["service"], "orders");
    assert_eq!(request["attributes"]["http.status_code"], 200);
    for call in [
        "call users.get",
        "call products.get",
        "call products.reserve_inventory",
    ] {
        let span = &named(&spans, call)[0];
        assert_eq!(span["kind"], "internal", "{call} is in-process");
        assert_eq!(span["attributes"]["remote"], false);
    }
    assert_eq!(
        parent_of(&spans, named(&spans, "call users.get")[0])["id"],
        request["id"]
    );

    // Queries: children of the code that ran them, statement kept, literals redacted.
    let queries: Vec<&Value> = spans.iter().filter(|s| s["kind"] == "client").collect();
    assert!(queries.len() >= 2, "{queries:#?}");
    let user_query = queries
        .iter()
        .find(|q| {
            q["attributes"]["db.statement"]
                .as_str()
                .unwrap()
                .contains("FROM users")
        })
        .expect("a query of users");
    assert_eq!(parent_of(&spans, user_query)["name"], "call users.get");
    let insert = queries
        .iter()
        .find(|q| {
            q["attributes"]["db.statement"]
                .as_str()
                .unwrap()
                .starts_with("INSERT INTO orders")
        })
        .expect("the order's insert");
    assert!(
        !insert["attributes"]["db.statement"]
            .as_str()
            .unwrap()
            .contains("'confirmed'"),
        "literals are redacted: {insert:#}"
    );

    // The order is placed by the `place-order` workflow, a child of the request: its steps'
    // calls and the order's publish are the workflow's.
    let flow = one(&spans, "workflow place-order");
    assert_eq!(flow["parent"], request["id"]);
    assert_eq!(flow["attributes"]["workflow.resumed"], false);
    assert_eq!(
        parent_of(&spans, named(&spans, "call products.reserve_inventory")[0])["id"],
        flow["id"]
    );
    // The message carries the trace: the delivery is the publish's child, in this trace.
    let publish = one(&spans, "publish order-created");
    assert_eq!(
        (&publish["kind"], &publish["parent"]),
        (&json!("producer"), &flow["id"])
    );
    let delivery = &named(&spans, deliver)[0];
    assert_eq!(
        (&delivery["kind"], &delivery["parent"]),
        (&json!("consumer"), &publish["id"])
    );
    assert_eq!(delivery["service"], "notifications");
    // The handler's log line is an event of the delivery span.
    assert!(
        delivery["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "email sent"),
        "{delivery:#}"
    );

    let all = Value::Array(spans.clone()).to_string();
    assert!(
        !all.contains("s3cr3t-token"),
        "no Authorization header in traces"
    );
    assert!(!all.contains("c00kie-value"), "no cookie in traces");

    drop(server);
    env.close().await;
}

/// A login's cache operations (the throttle's read, then its count of the failure) are client
/// spans of the request, with the keyspace and whether the read hit.
#[tokio::test]
async fn cache_operations_are_spans_of_the_request() {
    let receiver = receiver();
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let c = Client::new(server.url());
    let email = format!("{}@cache.example.com", uuid::Uuid::new_v4());
    let r = c
        .post(
            "/users",
            json!({"email": email, "name": "C", "password": "long enough"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let (trace, traceparent) = util::new_traceparent();
    let r = c
        .send(
            c.http()
                .post(format!("{}/sessions", c.base))
                .header("traceparent", &traceparent)
                .json(&json!({"email": email, "password": "wrong guess"})),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let spans = util::wait_for_trace(receiver, &trace, |s| {
        named(s, "cache get users").len() == 1 && named(s, "cache increment users").len() == 1
    })
    .await;
    check_links(&spans, &traceparent);
    let request = one(&spans, "users.create_session");
    for (name, hit) in [
        ("cache get users", Some(false)),
        ("cache increment users", None),
    ] {
        let span = one(&spans, name);
        assert_eq!(span["kind"], "client", "{span:#}");
        assert_eq!(parent_of(&spans, span)["id"], request["id"]);
        assert_eq!(span["attributes"]["db.system"], "redis");
        assert_eq!(span["attributes"]["cache.keyspace"], "failed-logins/:email");
        assert_eq!(span["attributes"]["cache.hit"].as_bool(), hit, "{span:#}");
        // The key (an email) is not on the span.
        assert!(!span.to_string().contains(&email), "{span:#}");
    }
    env.close().await;
}

/// A cron run is a trace of its own, rooted at `cron <job>`, with its queries under it; the
/// run's record keeps the trace id the dashboard links to.
#[tokio::test]
async fn a_cron_run_is_a_trace_root() {
    let receiver = receiver();
    let env = TestEnv::new().await.unwrap();
    env.run(ovation::cron::run_now("expire-reservations"))
        .await
        .unwrap()
        .unwrap();
    let server = ovation::testing::test_server().await.unwrap();
    let pool = ovation::sqlx::PgPool::connect_with(
        server.options(env.database_name("ovation_cron").unwrap()),
    )
    .await
    .unwrap();
    let trace: String = ovation::sqlx::query_scalar(
        "SELECT trace_id FROM ovation_cron_runs WHERE job = 'expire-reservations'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let is_query = |s: &Value| s["name"].as_str().is_some_and(|n| n.starts_with("db "));
    let spans = util::wait_for_trace(receiver, &trace, |s| {
        has(s, &["cron expire-reservations"]) && s.iter().any(is_query)
    })
    .await;
    let root = one(&spans, "cron expire-reservations");
    assert_eq!(root["parent"], Value::Null, "{root:#}");
    assert_eq!(root["service"], "products");
    assert_eq!(root["attributes"]["cron.job"], "expire-reservations");
    let query = spans.iter().find(|s| is_query(s)).unwrap();
    assert_eq!(parent_of(&spans, query)["id"], root["id"]);
    pool.close().await;
    env.close().await;
}

#[tokio::test]
async fn a_split_deployment_is_one_trace_across_processes() {
    let receiver = receiver();
    let util::Split { env, a, b, g } = util::split().await;
    let c = Client::new(g.url());
    let email = format!("{}@trace.example.com", uuid::Uuid::new_v4());
    let (user, product) = c.user_and_product(&email, 250, 10).await;
    let (trace, traceparent) = util::new_traceparent();
    let r = c
        .send(
            c.http()
                .post(format!("{}/orders", c.base))
                .header("traceparent", &traceparent)
                .json(&json!({"userId": user, "productId": product, "quantity": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    let spans = util::wait_for_trace(receiver, &trace, |s| {
        has(
            s,
            &[
                "gateway orders.create",
                "orders.create",
                "users.get",
                "products.reserve_inventory",
                "deliver order-created → send-order-confirmation",
                "deliver order-created → live-orders",
                "deliver order-created → confirm-reservations",
            ],
        ) && named(s, "users.get").len() == 2
    })
    .await;
    check_links(&spans, &traceparent);

    // gateway → orders → (over HTTP) users and products: each hop a client span, then the
    // callee's server span as its child.
    let at_gateway = one(&spans, "gateway orders.create");
    let orders = one(&spans, "orders.create");
    assert_eq!(parent_of(&spans, orders)["id"], at_gateway["id"]);
    let call = &named(&spans, "call users.get")[0];
    assert_eq!(
        (&call["kind"], &call["attributes"]["remote"]),
        (&json!("client"), &json!(true))
    );
    let served = named(&spans, "users.get");
    assert!(
        served
            .iter()
            .all(|s| s["kind"] == "server" && s["service"] == "users")
    );
    assert!(served.iter().any(|s| s["parent"] == call["id"]));
    let reserve = one(&spans, "products.reserve_inventory");
    assert_eq!(
        parent_of(&spans, reserve)["name"],
        "call products.reserve_inventory"
    );
    // users' own query is in the trace, under users' server span.
    assert!(spans.iter().any(|s| {
        s["kind"] == "client"
            && s["attributes"]["db.statement"]
                .as_str()
                .is_some_and(|q| q.contains("FROM users"))
            && parent_of(&spans, s)["name"] == "users.get"
    }));

    drop((a, b, g));
    env.close().await;
}

#[tokio::test]
async fn failed_requests_are_error_traces_and_the_api_filters_them() {
    let receiver = receiver();
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let c = Client::new(server.url());
    let (trace, traceparent) = util::new_traceparent();
    let r = c
        .send(
            c.http()
                .post(format!("{}/orders", c.base))
                .header("traceparent", &traceparent)
                .json(&json!({"userId": uuid::Uuid::new_v4(), "productId": uuid::Uuid::new_v4(), "quantity": 1})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    let spans = util::wait_for_trace(receiver, &trace, |s| has(s, &["orders.create"])).await;
    let request = one(&spans, "orders.create");
    assert_eq!(request["status"], "error");
    assert_eq!(request["attributes"]["error.code"], "invalid_argument");
    assert_eq!(request["attributes"]["http.status_code"], 400);

    let http = reqwest::Client::new();
    let list: Value = http
        .get(format!(
            "{receiver}/api/traces?service=orders&endpoint=create&status=error&limit=1000"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = list["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["traceId"] == trace.as_str())
        .expect("the trace is listed under its service, endpoint and status");
    assert_eq!(listed["rootEndpoint"], "create");
    assert!(listed["spanCount"].as_i64().unwrap() >= 1);
    let ok_only: Value = http
        .get(format!(
            "{receiver}/api/traces?service=orders&status=ok&limit=1000"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !ok_only.to_string().contains(&trace),
        "not among the ok traces"
    );

    drop(server);
    env.close().await;
}

#[tokio::test]
async fn the_receiver_takes_otlp_json_and_rejects_what_is_not_otlp() {
    let receiver = util::trace_receiver();
    let http = reqwest::Client::new();
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace,
            "spanId": "00f067aa0ba902b7",
            "name": "GET /json",
            "kind": 2,
            "startTimeUnixNano": (now - 5_000_000).to_string(),
            "endTimeUnixNano": now.to_string(),
            "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}],
            "status": {"code": 2}
        }]}]
    }]});
    let r = http
        .post(format!("{receiver}/v1/traces"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let spans = util::wait_for_trace(receiver, &trace, |s| !s.is_empty()).await;
    assert_eq!(spans[0]["name"], "GET /json");
    assert_eq!(spans[0]["process"], "json-client");
    assert_eq!(spans[0]["kind"], "server");
    assert_eq!(spans[0]["status"], "error");
    assert_eq!(spans[0]["attributes"]["http.method"], "GET");
    assert!((spans[0]["durationMs"].as_f64().unwrap() - 5.0).abs() < 0.001);

    let status = |r: reqwest::Response| r.status().as_u16();
    let post = |ct: &'static str, body: &'static [u8]| {
        http.post(format!("{receiver}/v1/traces"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_eq!(status(post("text/plain", b"hi").await.unwrap()), 415);
    assert_eq!(
        status(
            post("application/x-protobuf", b"\xff\xff\xff")
                .await
                .unwrap()
        ),
        400
    );
    assert_eq!(
        status(
            post("application/json", b"{\"resourceSpans\": 7}")
                .await
                .unwrap()
        ),
        400
    );
    let get = |path: String| http.get(format!("{receiver}{path}")).send();
    assert_eq!(
        status(get("/api/traces/not-hex".into()).await.unwrap()),
        400
    );
    assert_eq!(
        status(
            get(format!("/api/traces/{}", uuid::Uuid::new_v4().simple()))
                .await
                .unwrap()
        ),
        404
    );
    assert_eq!(
        status(get("/api/traces?status=maybe".into()).await.unwrap()),
        400
    );
    assert_eq!(
        status(get("/api/traces?limit=lots".into()).await.unwrap()),
        400
    );
}

/// What an exporter sends gzip-compressed (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`) is stored as
/// if it had come uncompressed; a body that inflates past the limit is refused as too large,
/// without being inflated whole, and an encoding the store cannot read is named.
#[tokio::test]
async fn the_receiver_takes_gzip_and_bounds_what_it_inflates() {
    use std::io::Write as _;
    let gzip = |bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    };
    let receiver = util::trace_receiver();
    let http = reqwest::Client::new();
    let post = |encoding: &'static str, content_type: &'static str, body: Vec<u8>| {
        http.post(format!("{receiver}/v1/traces"))
            .header("content-type", content_type)
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gzip-client"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace,
            "spanId": "00f067aa0ba902b7",
            "name": "GET /gzip",
            "kind": 2,
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000005000000",
        }]}]
    }]});
    let r = post(
        "gzip",
        "application/json",
        gzip(body.to_string().as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let spans = util::wait_for_trace(receiver, &trace, |s| !s.is_empty()).await;
    assert_eq!(
        (&spans[0]["name"], &spans[0]["process"]),
        (&json!("GET /gzip"), &json!("gzip-client"))
    );

    // 33 MiB of zeros inflate past the 32 MiB protobuf limit; compressed, they are 33 KiB.
    let bomb = gzip(&vec![0; 33 * 1024 * 1024]);
    assert!(bomb.len() < 100 * 1024);
    let r = post("gzip", "application/x-protobuf", bomb).await.unwrap();
    assert_eq!(r.status(), 413, "{}", r.text().await.unwrap());

    let r = post("gzip", "application/x-protobuf", b"not gzip".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{}", r.text().await.unwrap());

    let r = post("br", "application/x-protobuf", b"..".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let text = r.text().await.unwrap();
    assert!(text.contains("gzip"), "{text}");
}

/// A stream is a span of its own, a child of its handshake's request span, with the number of
/// messages each way; the handshake continues the client's trace.
#[tokio::test]
async fn a_stream_is_a_span_with_its_message_counts() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let receiver = receiver();
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let c = Client::new(server.url());
    let email = format!("{}@trace.example.com", uuid::Uuid::new_v4());
    let (user, product) = c.user_and_product(&email, 250, 10).await;

    let (trace, traceparent) = util::new_traceparent();
    let mut handshake = format!("{}/orders/live", server.url().replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    handshake
        .headers_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(handshake).await.unwrap();
    for _ in 0..2 {
        let order = c
            .post(
                "/orders",
                json!({"userId": user, "productId": product, "quantity": 1}),
            )
            .await;
        assert_eq!(order.status, 200, "{order:?}");
        let pushed = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await;
        assert!(
            matches!(pushed, Ok(Some(Ok(Message::Text(_))))),
            "{pushed:?}"
        );
    }
    ws.send(Message::Close(None)).await.unwrap();
    let spans = util::wait_for_trace(receiver, &trace, |spans| {
        has(spans, &["orders.live", "stream orders.live"])
    })
    .await;
    let handshake = one(&spans, "orders.live");
    assert_eq!(handshake["attributes"]["http.status_code"], 101);
    let stream = one(&spans, "stream orders.live");
    assert_eq!(stream["parent"], handshake["id"]);
    assert_eq!(stream["attributes"]["messages.sent"], 2, "{stream:#}");
    assert_eq!(stream["attributes"]["messages.received"], 0, "{stream:#}");
    check_links(&spans, &traceparent);
    env.close().await;
}
