//! `ovation deploy`, as a user runs it: the real CLI builds the shop app in release mode and
//! starts it as separate processes behind the gateway; the Kubernetes target's manifests go
//! through `kubernetes-validate`.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ovation::tooling::{HEADER, ServiceAuthKey};
use serde_json::{Value, json};
use util::{Client, ovation, target_dir, workspace};

/// Runs `ovation ARGS` with the deployment's data folder; returns its output.
fn cli(data_dir: &Path, args: &[&str]) -> Output {
    cli_with(data_dir, args, &[])
}

/// The shop's `SessionKey` in these deployments: set in the environment, as an operator would.
const SESSION_KEY: &str = "deploy-test-session-key-3f9a1c";
/// The shop's `PaymentsWebhookKey` in these deployments, set the same way.
const WEBHOOK_KEY: &str = "deploy-test-webhook-key-8d2e47";

fn cli_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(ovation())
        .args(args)
        .env("OVATION_DATA_DIR", data_dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("DATABASE_URL")
        .env_remove("OVATION_PUBSUB")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("OVATION_SECRET_SESSION_KEY", SESSION_KEY)
        .env("OVATION_SECRET_PAYMENTS_WEBHOOK_KEY", WEBHOOK_KEY)
        // Not the developer's own secrets file: only what the test sets.
        .env("OVATION_SECRETS_FILE", data_dir.join("no-secrets.json"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Stops the deployment when the test ends, passed or failed.
struct Deployed {
    data_dir: PathBuf,
    app: String,
}

impl Drop for Deployed {
    fn drop(&mut self) {
        cli(&self.data_dir, &["deploy", "stop", "--app", &self.app]);
    }
}

fn status(d: &Deployed) -> Value {
    let out = cli(
        &d.data_dir,
        &["deploy", "status", "--json", "--app", &d.app],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn process<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no process {name} in {status:#}"))
}

/// A deployment of the shop to come, in `<target>/<folder>`, with a free port for its gateway;
/// stopped when the test ends.
fn new_deployment(folder: &str) -> (Deployed, String) {
    let deployed = Deployed {
        data_dir: target_dir().join(folder),
        app: workspace().join("examples/shop-app").display().to_string(),
    };
    (deployed, free_port().to_string())
}

/// `ovation deploy` of the shop on `port`, with `extra` arguments and `env`, stopped when this
/// test process exits; fails the test if it fails.
fn deploy(d: &Deployed, port: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let me = std::process::id().to_string();
    let mut args = vec![
        "deploy",
        "--target",
        "local",
        "--app",
        &d.app,
        "--port",
        port,
        "--stop-with-pid",
        &me,
    ];
    args.extend_from_slice(extra);
    let out = cli_with(&d.data_dir, &args, env);
    assert!(
        out.status.success(),
        "deploy failed:\n{}",
        text(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_shop_app_runs_as_separate_processes_behind_the_gateway() {
    // A cluster of its own, kept under the target folder so later runs reuse it.
    let (deployed, port) = new_deployment("ovation-deploy-test");
    let data_dir = deployed.data_dir.clone();
    // Every process exports its spans to a receiver in this test.
    let receiver = util::trace_receiver();
    let out = deploy(
        &deployed,
        &port,
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)],
    );
    assert!(
        text(&out.stdout).contains("ovation-gateway"),
        "{}",
        text(&out.stdout)
    );

    // One process per service plus the gateway, on distinct ports, all healthy.
    let s = status(&deployed);
    let processes = s["processes"].as_array().unwrap();
    assert!(processes.len() >= 5, "{s:#}");
    let mut ports: Vec<u64> = processes
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), processes.len(), "distinct ports: {s:#}");
    assert!(processes.iter().all(|p| p["health"] == "healthy"), "{s:#}");
    let pids: Vec<u64> = processes
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        process(&s, "ovation-gateway")["port"].as_u64(),
        Some(port.parse().unwrap())
    );

    // The guide's order flow, through the gateway port only.
    let gateway = Client::new(format!("http://127.0.0.1:{port}"));
    let email = format!("{}@deploy.example.com", uuid::Uuid::new_v4());
    let (user, product) = gateway.user_and_product(&email, 700, 10).await;
    let order = gateway
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 2}),
        )
        .await;
    assert_eq!(
        (order.status, &order.body["status"]),
        (200, &json!("confirmed")),
        "{order:?}"
    );
    let checkout = gateway
        .post(
            "/checkout",
            json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(checkout.status, 200, "{checkout:?}");
    // The confirmation travels over Pub/Sub to the notifications process.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = gateway.get(&format!("/notifications/{user}")).await;
        if n.body["notifications"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "notifications never arrived: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One order through the gateway is one trace across the processes it touched.
    let (trace, traceparent) = util::new_traceparent();
    let traced = gateway
        .send(
            gateway
                .http()
                .post(format!("{}/orders", gateway.base))
                .header("traceparent", &traceparent)
                .json(&json!({"userId": user, "productId": product, "quantity": 1})),
        )
        .await;
    assert_eq!(traced.status, 200, "{traced:?}");
    let wanted = [
        "ovation-gateway",
        "orders",
        "users",
        "products",
        "notifications",
    ];
    // Spans arrive from each process as it exports them: wait for the whole tree, every
    // span's parent in the trace (or the caller's), every process in it.
    let caller = traceparent.split('-').nth(2).unwrap().to_owned();
    util::wait_for_trace(receiver, &trace, |spans| {
        let ids: Vec<&Value> = spans.iter().map(|s| &s["id"]).collect();
        wanted
            .iter()
            .all(|p| spans.iter().any(|s| s["process"] == *p))
            && spans
                .iter()
                .all(|s| s["parent"] == caller.as_str() || ids.contains(&&s["parent"]))
    })
    .await;

    // A login through the gateway: the auth handler runs there, the user id is on the trace,
    // and the secret that signs the token is nowhere: not in a log, a span or the app model.
    let email = format!("{}@login.example.com", uuid::Uuid::new_v4());
    let created = gateway
        .post(
            "/users",
            json!({"email": email, "name": "Login", "password": "long enough"}),
        )
        .await;
    assert_eq!(created.status, 200, "{created:?}");
    let session = gateway
        .post(
            "/sessions",
            json!({"email": email, "password": "long enough"}),
        )
        .await;
    assert_eq!(session.status, 200, "{session:?}");
    let token = session.body["token"].as_str().unwrap();
    let (login_trace, traceparent) = util::new_traceparent();
    let me = gateway
        .send(
            gateway
                .http()
                .get(format!("{}/me", gateway.base))
                .bearer_auth(token)
                .header("traceparent", &traceparent),
        )
        .await;
    assert_eq!(me.body["email"], json!(email), "{me:?}");
    let user_id = created.body["id"].as_str().unwrap();
    // The request's spans at the gateway and in `users` (not those of the auth handler's own
    // call, made for nobody yet) name the user.
    let serves_me = |s: &Value| s["kind"] == "server" && s["attributes"]["endpoint"] == "me";
    let spans = util::wait_for_trace(receiver, &login_trace, |spans| {
        ["ovation-gateway", "users"]
            .iter()
            .all(|p| spans.iter().any(|s| s["process"] == *p && serves_me(s)))
    })
    .await;
    for s in spans.iter().filter(|s| serves_me(s)) {
        assert_eq!(s["attributes"]["enduser.id"], json!(user_id), "{s:#}");
    }
    let traces = Value::Array(spans).to_string();
    assert!(!traces.contains(token), "the token is in a span");
    let mut everything = traces;
    for p in processes {
        let log = std::fs::read_to_string(p["log"].as_str().unwrap()).unwrap();
        everything.push_str(&log);
    }
    let products_config: Value = serde_json::from_slice(
        &std::fs::read(process(&s, "products")["config"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let app_key = ServiceAuthKey::new(products_config["service_auth_key"].as_str().unwrap());
    for p in processes {
        let client = Client::new(p["url"].as_str().unwrap());
        let url = format!("{}/__ovation/meta", client.base);
        let meta = client
            .send(util::signed(
                client.http(),
                &app_key,
                reqwest::Method::GET,
                &url,
                None,
                "cli",
            ))
            .await;
        assert_eq!(meta.status, 200, "{meta:?}");
        assert_eq!(
            meta.body["secrets"],
            json!([
                {"name": "PaymentsWebhookKey", "env": "OVATION_SECRET_PAYMENTS_WEBHOOK_KEY"},
                {"name": "SessionKey", "env": "OVATION_SECRET_SESSION_KEY"},
            ])
        );
        everything.push_str(&meta.body.to_string());
    }
    assert!(
        !everything.contains(SESSION_KEY) && !everything.contains(WEBHOOK_KEY),
        "a secret's value leaked into a log, a span or the app model"
    );

    // Private endpoints: unreachable from outside, at every port, with every forgery.
    let products = process(&s, "products");
    let config: Value =
        serde_json::from_slice(&std::fs::read(products["config"].as_str().unwrap()).unwrap())
            .unwrap();
    let key = ServiceAuthKey::new(config["service_auth_key"].as_str().unwrap());
    let path = format!("/products/{product}/reserve");
    let forgeries = util::forgeries(&key, &path, &json!({"quantity": 1}));
    for p in processes {
        let client = Client::new(p["url"].as_str().unwrap());
        for (case, header) in &forgeries {
            let mut req = client
                .http()
                .post(format!("{}{path}", client.base))
                .json(&json!({"quantity": 1}));
            if let Some(h) = header {
                req = req.header(HEADER, h);
            }
            let r = client.send(req).await;
            assert_eq!(
                (r.status, r.code()),
                (404, "not_found"),
                "{case} at {}: {r:?}",
                p["name"]
            );
        }
    }
    let direct = Client::new(products["url"].as_str().unwrap());
    let url = format!("{}{path}", direct.base);
    let body = json!({"quantity": 1});
    let signed = direct
        .send(util::signed(
            direct.http(),
            &key,
            reqwest::Method::POST,
            &url,
            Some(&body),
            "orders",
        ))
        .await;
    assert_eq!(
        signed.status, 204,
        "a valid signature is accepted: {signed:?}"
    );
    assert_eq!(
        gateway.get(&format!("/products/{product}")).await.body["inventory"],
        5,
        "10 - 2 ordered - 1 checked out - 1 traced - 1 reserved with a valid signature"
    );

    // `users` dies: orders' calls to it are refused, retried while the supervisor restarts it
    // (for up to 5 s), then answered — or, had the restart taken longer, 503 `unavailable`:
    // never a 500, never a hang.
    let users_pid = process(&s, "users")["pid"].as_u64().unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", &users_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while !gone(users_pid) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = Instant::now();
        let r = gateway
            .post(
                "/orders",
                json!({"userId": user, "productId": product, "quantity": 1}),
            )
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "within the call timeout"
        );
        if r.status == 200 {
            break;
        }
        assert_eq!((r.status, r.code()), (503, "unavailable"), "{r:?}");
        assert!(Instant::now() < deadline, "users was not restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = status(&deployed);
    let users = process(&s, "users");
    assert!(users["restarts"].as_u64().unwrap() >= 1, "{s:#}");
    assert_ne!(users["pid"].as_u64(), Some(users_pid));

    // A steady load through the gateway across a graceful restart of `orders`, then of
    // `products`: no request fails, no order is lost.
    let stock = 100_000;
    let (user, product) = gateway
        .user_and_product(
            &format!("restart-{}@example.com", uuid::Uuid::new_v4()),
            100,
            stock,
        )
        .await;
    let mut confirmed = 0;
    for name in ["orders", "products"] {
        let old_pid = process(&status(&deployed), name)["pid"].as_u64().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load: Vec<_> = (0..8)
            .map(|_| {
                let (gateway, stop) = (Client::new(&gateway.base), stop.clone());
                let body = json!({"userId": user, "productId": product, "quantity": 1});
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = gateway.post("/orders", body.clone()).await;
                        answers.push((r.status, r.body.to_string()));
                    }
                    answers
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let restart = {
            let (data_dir, app) = (data_dir.clone(), deployed.app.clone());
            tokio::task::spawn_blocking(move || {
                cli(&data_dir, &["deploy", "restart", name, "--app", &app])
            })
        };
        let out = restart.await.unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut answers = Vec::new();
        for task in load {
            answers.extend(task.await.unwrap());
        }
        let failed: Vec<_> = answers
            .iter()
            .filter(|(status, _)| *status != 200)
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} requests failed across the restart of {name}: {:?}",
            failed.len(),
            answers.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(answers.len() >= 20, "a steady load: {}", answers.len());
        confirmed += answers.len() as i64;
        let new_pid = process(&status(&deployed), name)["pid"].as_u64().unwrap();
        assert_ne!(new_pid, old_pid, "{name} was restarted");
        assert!(gone(old_pid), "the old {name} exited");
    }
    assert_eq!(
        gateway.get(&format!("/products/{product}")).await.body["inventory"],
        i64::from(stock) - confirmed,
        "every confirmed order took its stock, once"
    );

    // Stop: every process is gone and the deployment with them.
    let last: Vec<u64> = status(&deployed)["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    let out = cli(&data_dir, &["deploy", "stop", "--app", &deployed.app]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(status(&deployed), Value::Null);
    for pid in pids.iter().chain(&last) {
        assert!(gone(*pid), "process {pid} still runs");
    }
}

/// A deploy supervisor that is SIGKILLed takes its processes with it, `deploy status` says
/// so (first, and with a failing exit code), and the next `ovation deploy` brings everything
/// back, `deploy restart` included.
#[tokio::test]
async fn a_killed_supervisor_takes_its_processes_with_it_and_says_so() {
    let (deployed, port) = new_deployment("ovation-deploy-supervisor-test");
    let data_dir = deployed.data_dir.clone();
    let deploy = || {
        deploy(&deployed, &port, &[], &[]);
    };
    deploy();
    let s = status(&deployed);
    assert_eq!(s["supervisor"]["running"], true, "{s:#}");
    let supervisor = s["supervisor"]["pid"].as_u64().unwrap();
    let pids: Vec<u64> = s["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();

    assert!(
        Command::new("kill")
            .args(["-KILL", &supervisor.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pids.iter().all(|p| gone(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes outlived their supervisor: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = cli(&data_dir, &["deploy", "status", "--app", &deployed.app]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(
        shown
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("supervisor: NOT RUNNING"),
        "{shown}"
    );
    assert!(
        text(&out.stderr).contains("ovation deploy"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        &data_dir,
        &["deploy", "restart", "users", "--app", &deployed.app],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("supervisor is not running"),
        "{}",
        text(&out.stderr)
    );

    // Deployed again: a new supervisor, and restarts work again.
    deploy();
    let s = status(&deployed);
    assert_eq!(s["supervisor"]["running"], true, "{s:#}");
    assert_ne!(s["supervisor"]["pid"].as_u64(), Some(supervisor));
    let out = cli(
        &data_dir,
        &["deploy", "restart", "users", "--app", &deployed.app],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let health = Client::new(format!("http://127.0.0.1:{port}"))
        .get("/__ovation/health")
        .await;
    assert_eq!(health.status, 200);
}

/// Whether `pid` has exited (gone, or a zombie waiting for its parent).
/// `--replicas users=2,notifications=2`: each runs twice; the gateway spreads requests over
/// the two `users` (both serve, as their traces show), the login throttle counts across them,
/// and the two `notifications` share the subscription (one confirmation per order).
#[tokio::test]
async fn replicas_share_the_requests_the_throttle_and_the_messages() {
    let (deployed, port) = new_deployment("ovation-deploy-replicas-test");
    let data_dir = deployed.data_dir.clone();
    let receiver = util::trace_receiver();
    deploy(
        &deployed,
        &port,
        &["--replicas", "users=2,notifications=2"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)],
    );
    let s = status(&deployed);
    for name in ["users.1", "users.2", "notifications.1", "notifications.2"] {
        assert_eq!(process(&s, name)["health"], "healthy", "{s:#}");
    }
    assert!(
        s["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "users"),
        "{s:#}"
    );

    let gateway = Client::new(format!("http://127.0.0.1:{port}"));
    let email = format!("{}@replicas.example.com", uuid::Uuid::new_v4());
    let (user, product) = gateway.user_and_product(&email, 300, 10).await;
    // Four reads, each its own trace: the `users` replicas serve them in turn.
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (trace, traceparent) = util::new_traceparent();
        let r = gateway
            .send(
                gateway
                    .http()
                    .get(format!("{}/users/{user}", gateway.base))
                    .header("traceparent", &traceparent),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let serves = |s: &Value| s["kind"] == "server" && s["attributes"]["endpoint"] == "get";
        let spans = util::wait_for_trace(receiver, &trace, |spans| {
            spans
                .iter()
                .any(|s| serves(s) && s["process"] != "ovation-gateway")
        })
        .await;
        for s in spans
            .iter()
            .filter(|s| serves(s) && s["process"] != "ovation-gateway")
        {
            served_by.insert(s["process"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        served_by.into_iter().collect::<Vec<_>>(),
        ["users.1", "users.2"],
        "both replicas served"
    );

    // The throttle counts failures on either replica together.
    let victim = format!("{}@throttle.example.com", uuid::Uuid::new_v4());
    let created = gateway
        .post(
            "/users",
            json!({"email": victim, "name": "V", "password": "long enough"}),
        )
        .await;
    assert_eq!(created.status, 200, "{created:?}");
    for _ in 0..5 {
        let r = gateway
            .post(
                "/sessions",
                json!({"email": victim, "password": "wrong!!!"}),
            )
            .await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    let r = gateway
        .post(
            "/sessions",
            json!({"email": victim, "password": "long enough"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (429, "resource_exhausted"), "{r:?}");

    // An order's confirmation is delivered once, by one of the two `notifications`.
    let order = gateway
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(order.status, 200, "{order:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = gateway.get(&format!("/notifications/{user}")).await;
        let count = n.body["notifications"].as_array().map_or(0, Vec::len);
        if count >= 1 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let again = gateway.get(&format!("/notifications/{user}")).await;
            assert_eq!(
                again.body["notifications"].as_array().map(Vec::len),
                Some(1),
                "{again:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no confirmation: {n:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = cli(&data_dir, &["deploy", "stop", "--app", &deployed.app]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let out_dir = target_dir().join(format!("ovation-k8s-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let app = workspace().join("examples/shop-app");
    let out = cli(
        &target_dir().join("ovation-deploy-test"),
        &[
            "deploy",
            "--target",
            "kubernetes",
            "--app",
            &app.display().to_string(),
            "--out",
            &out_dir.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifests: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let all: String = manifests
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "Ingress",
        "ConfigMap",
        "Secret",
        "StatefulSet",
    ] {
        assert!(all.contains(&format!("kind: \"{kind}\"")), "no {kind}");
    }
    for process in [
        "users",
        "products",
        "orders",
        "checkout",
        "notifications",
        "ovation-gateway",
    ] {
        assert!(
            out_dir.join(format!("{process}.yaml")).is_file(),
            "{process}"
        );
    }
    assert!(all.contains("/__ovation/health"));
    // The app's secrets come from the Secret the operator creates, never from the manifests.
    assert!(all.contains("OVATION_SECRET_SESSION_KEY"), "{all}");
    assert!(all.contains("OVATION_SECRET_PAYMENTS_WEBHOOK_KEY"), "{all}");
    assert!(all.contains("shop-app-secrets"));
    assert!(!all.contains(SESSION_KEY) && !all.contains(WEBHOOK_KEY));
    let notes = std::fs::read_to_string(out_dir.join("NOTES.md")).unwrap();
    assert!(
        notes.contains(
            "kubectl create secret generic shop-app-secrets \
             --from-literal=PaymentsWebhookKey='...' --from-literal=SessionKey="
        ),
        "{notes}"
    );
    assert!(all.contains("nats://shop-app-nats:4222"));
    // The shop has a cache: a Redis with a generated password, and every service process has
    // its URL.
    assert!(out_dir.join("redis.yaml").is_file());
    assert!(
        all.contains("redis://:$(REDIS_PASSWORD)@shop-app-redis:6379/"),
        "{all}"
    );
    assert!(all.contains("redis-password"));
    assert!(
        !all.contains("postgres://"),
        "no database credentials in the manifests"
    );
    assert!(
        !all.contains("service_auth_key"),
        "the key is not in the ConfigMap"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out_dir.join("secret.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "secret.yaml is private to its owner");
    assert!(out_dir.join("Dockerfile").is_file());

    let validate = match util::python_tool("kubernetes-validate") {
        Ok(tool) => tool,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            let _ = std::fs::remove_dir_all(&out_dir);
            return;
        }
    };
    let v = Command::new(validate)
        .args(["--strict", "-k", "1.34.0"])
        .args(&manifests)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "kubernetes-validate rejected the manifests:\n{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
