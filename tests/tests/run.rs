//! `ovation run`, as a user runs it: the real CLI builds the app, serves it and the trace API,
//! and with `--watch` swaps in a changed build while the port keeps answering.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::{Client, Running, free_port, ovation, target_dir, workspace};

#[tokio::test]
async fn ovation_run_serves_the_shop_and_the_traces_of_its_requests() {
    let (port, dashboard) = (free_port(), free_port());
    let mut run = Running::start(
        &workspace().join("examples/shop-app"),
        port,
        dashboard,
        false,
        "shop",
    );
    run.wait_for(
        &format!("http://127.0.0.1:{port}/__ovation/health"),
        Duration::from_secs(600),
    )
    .await;
    // The CLI announces both URLs once it has seen the app answer (so shortly after we do).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run
        .output()
        .contains(&format!("dashboard: http://127.0.0.1:{dashboard}"))
    {
        assert!(
            Instant::now() < deadline,
            "no dashboard URL printed:\n{}",
            run.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = run.output();
    assert!(
        output.contains(&format!("app:       http://127.0.0.1:{port}")),
        "{output}"
    );

    let c = Client::new(format!("http://127.0.0.1:{port}"));
    let email = format!("{}@run.example.com", uuid::Uuid::new_v4());
    let (user, product) = c.user_and_product(&email, 300, 5).await;
    let order = c
        .post(
            "/orders",
            json!({"userId": user, "productId": product, "quantity": 1}),
        )
        .await;
    assert_eq!(order.status, 200, "{order:?}");
    // The shop has the optional `ovation-dylib`: the process serving it is linked against
    // the framework's shared library, found through the search path `ovation run` set.
    #[cfg(target_os = "linux")]
    {
        let maps = maps_of_process_listening_on(port);
        assert!(
            maps.contains("libovation_dylib"),
            "not the shared library:\n{maps}"
        );
    }

    // A private endpoint called from outside: the same 404 as an unknown route, and in
    // development a line in the log that says why.
    let reserve = c
        .post(
            &format!("/products/{product}/reserve"),
            json!({"quantity": 1}),
        )
        .await;
    assert_eq!((reserve.status, reserve.code()), (404, "not_found"));
    assert!(!reserve.message().contains("private"), "{reserve:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run
        .output()
        .contains("products.reserve_inventory matches, but it is private")
    {
        assert!(
            Instant::now() < deadline,
            "no hint about the private endpoint:\n{}",
            run.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // GET /api/traces lists the order; its spans cover orders, users, products, the
    // database and the publish.
    let api = format!("http://127.0.0.1:{dashboard}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list: Value = http
            .get(format!(
                "{api}/api/traces?service=orders&endpoint=create&limit=5"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut complete = false;
        for t in list["traces"].as_array().unwrap() {
            let detail: Value = http
                .get(format!(
                    "{api}/api/traces/{}",
                    t["traceId"].as_str().unwrap()
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let spans = detail["spans"].as_array().unwrap();
            let services: Vec<&str> = spans.iter().filter_map(|s| s["service"].as_str()).collect();
            complete = ["orders", "users", "products"]
                .iter()
                .all(|s| services.contains(s))
                && spans
                    .iter()
                    .any(|s| s["name"].as_str().unwrap().starts_with("db "))
                && spans.iter().any(|s| s["name"] == "publish order-created");
            if complete {
                assert_eq!(t["rootEndpoint"], "create");
                assert_eq!(t["status"], "ok");
                break;
            }
        }
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no complete trace of POST /orders: {list:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Ctrl-C (here SIGTERM) stops the app, then the CLI, cleanly.
    let status = run.stop();
    assert!(status.success(), "{status}\n{}", run.output());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the app is gone"
    );
}

/// A one-service app in a folder of its own, built into the workspace's target folder with
/// the workspace's lock file and profiles, so it reuses what the workspace compiled.
fn temp_app(name: &str) -> PathBuf {
    let dir = target_dir().join(format!("ovation-{name}-app-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src/hello")).unwrap();
    let ws = workspace();
    let manifest = std::fs::read_to_string(ws.join("Cargo.toml")).unwrap();
    let profiles = &manifest[manifest.find("[profile.").unwrap()..];
    let dependency = |name: &str| {
        manifest
            .lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("{name} in the workspace's dependencies"))
            .to_owned()
    };
    // No serde or schemars: `#[ovation::model]` reaches them through `ovation`.
    let deps: Vec<String> = ["sqlx", "uuid", "tokio", "chrono"]
        .iter()
        .map(|d| dependency(d))
        .collect();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"watch-app\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\novation = {{ path = {:?} }}\n{}\n\n[workspace]\n\n{profiles}",
            ws.join("framework-runtime"),
            deps.join("\n"),
        ),
    )
    .unwrap();
    std::fs::copy(ws.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    std::fs::write(dir.join("src/main.rs"), "mod hello;\n\novation::main!();\n").unwrap();
    write_hello(&dir, "\"v1\"");
    dir
}

fn write_hello(app: &Path, message: &str) {
    std::fs::write(
        app.join("src/hello/mod.rs"),
        format!(
            "use ovation::prelude::*;\n\n\
             #[ovation::model]\n\
             pub struct Greeting {{\n    pub message: String,\n}}\n\n\
             #[api(public, method = \"GET\", path = \"/hello\")]\n\
             pub async fn hello() -> Result<Greeting, Error> {{\n    Ok(Greeting {{ message: {message}.into() }})\n}}\n\n\
             #[api(stream, public, path = \"/count\")]\n\
             pub async fn count(mut out: ovation::stream::StreamOut<u32>) -> Result<(), Error> {{\n    \
                 for n in 1..=3 {{ out.send(&n).await?; }}\n    Ok(())\n}}\n\n\
             #[cfg(test)]\n\
             mod tests {{\n    \
                 #[ovation::test]\n    \
                 async fn says_hello() {{\n        \
                     assert_eq!(super::hello().await.unwrap().message, \"v1\");\n    \
                 }}\n\
             }}\n"
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn watch_swaps_in_a_changed_handler_without_a_failed_request() {
    let app = temp_app("watch");
    let (port, dashboard) = (free_port(), free_port());
    let mut run = Running::start(&app, port, dashboard, true, "watch");
    let url = format!("http://127.0.0.1:{port}/hello");
    run.wait_for(&url, Duration::from_secs(900)).await;

    // Requests in a loop across the swap; every answer is recorded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = {
        let (stop, url) = (stop.clone(), url.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = match http.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        (status, body["message"].as_str().unwrap_or("").to_owned())
                    }
                    Err(e) => (0, e.to_string()),
                };
                answers.push(answer);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_hello(&app, "\"v2\"");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let body: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        if body["message"] == "v2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2 never served:\n{}",
            run.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = looping.await.unwrap();
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "failed across the swap: {failed:?}");
    let first_v2 = answers
        .iter()
        .position(|(_, m)| m == "v2")
        .expect("v2 seen");
    assert!(answers[..first_v2].iter().all(|(_, m)| m == "v1"));
    assert!(
        answers[first_v2..].iter().all(|(_, m)| m == "v2"),
        "no way back to v1"
    );
    assert!(
        answers.len() > 20,
        "the loop ran across the swap: {}",
        answers.len()
    );

    // A stream opens through the watch proxy: the WebSocket is tunnelled to the app.
    {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/count"))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) => got.push(t.to_string()),
                Message::Close(frame) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(got, ["1", "2", "3"]);
    }

    // The dashboard reads the app's model through the watch proxy: its signed request passes.
    let services = http
        .get(format!("http://127.0.0.1:{dashboard}/services"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        services.contains("/hello"),
        "the Services page lists the app's endpoint under --watch:\n{services}"
    );

    // A compile error is shown, and the previous build keeps serving.
    write_hello(&app, "v3 is not a string");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !run.output().contains("still serving the previous build") {
        assert!(
            Instant::now() < deadline,
            "no build error reported:\n{}",
            run.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        run.output().contains("error"),
        "the compiler's message is shown"
    );
    // The dashboard's status bar says so, with the error.
    let status: Value = http
        .get(format!("http://127.0.0.1:{dashboard}/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "compile_error", "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("error"),
        "{status}"
    );
    let body: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["message"], "v2");

    let status = run.stop();
    assert!(status.success(), "{status}\n{}", run.output());
    let _ = std::fs::remove_dir_all(&app);
}

#[tokio::test]
async fn ovation_test_runs_cargo_test_with_traces_and_returns_its_status() {
    let app = temp_app("test");
    let data_dir = target_dir().join("ovation-deploy-test");
    let started_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let ovation_test = |app: &Path| {
        Command::new(ovation())
            .args(["test", "--app"])
            .arg(app)
            .args(["--dashboard-port", &free_port().to_string()])
            .env("OVATION_DATA_DIR", &data_dir)
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("DATABASE_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .output()
            .unwrap()
    };
    let passed = ovation_test(&app);
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(passed.status.success(), "{}", text(&passed));
    assert!(
        text(&passed).contains("says_hello ... ok"),
        "{}",
        text(&passed)
    );

    // The test's call reached the CLI's trace store.
    let pg = ovation::tooling::ManagedPostgres::ensure(&data_dir).unwrap();
    let pool = ovation::sqlx::PgPool::connect(&pg.url("ovation_traces"))
        .await
        .unwrap();
    let traced: i64 = ovation::sqlx::query_scalar(
        "SELECT count(*) FROM spans WHERE name = 'call hello.hello' AND start_ns > $1",
    )
    .bind(started_ns)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(traced >= 1, "the test's call is in the trace store");
    pool.close().await;

    // A failing test: cargo's failure is the command's.
    write_hello(&app, "\"v9\"");
    let failed = ovation_test(&app);
    assert_eq!(failed.status.code(), Some(101), "{}", text(&failed));
    let _ = std::fs::remove_dir_all(&app);
}

/// `ovation check` validates an app without starting it: a good one is ok; two endpoints on one
/// route, or paths that differ only in a parameter's name, are each reported naming both
/// endpoints in the app's own syntax, and the command fails.
#[test]
fn ovation_check_names_both_endpoints_of_each_conflict() {
    let app = temp_app("check");
    let check = || {
        let out = Command::new(ovation())
            .args(["check", "--app"])
            .arg(&app)
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = check();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "ok: 1 service, 2 endpoints", "{stderr}");

    let mut module = std::fs::read_to_string(app.join("src/hello/mod.rs")).unwrap();
    module.push_str(
        "\n#[api(public, method = \"GET\", path = \"/hello\")]\n\
         pub async fn hi() -> Result<Greeting, Error> {\n    hello().await\n}\n\n\
         #[api(public, method = \"GET\", path = \"/greet/:name\")]\n\
         pub async fn greet(name: String) -> Result<(), Error> {\n    let _ = name;\n    Ok(())\n}\n\n\
         #[api(public, method = \"POST\", path = \"/greet/{who}\")]\n\
         pub async fn greet_back(who: String) -> Result<(), Error> {\n    let _ = who;\n    Ok(())\n}\n",
    );
    std::fs::write(app.join("src/hello/mod.rs"), module).unwrap();
    let (code, stdout, stderr) = check();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for expected in [
        "error: the app has 2 problems:",
        "  - the paths /greet/:name of hello.greet (src/hello/mod.rs:",
        "and /greet/:who of hello.greet_back (src/hello/mod.rs:",
        "  - two endpoints serve GET /hello: hello.hello (src/hello/mod.rs:",
        "and hello.hi (src/hello/mod.rs:",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(&app);
}

/// Each kind of failure has its exit code (`ovation --help` lists them), and its message says
/// what to do.
#[test]
fn the_cli_exits_with_a_code_for_each_kind_of_failure() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(ovation())
            .args(args)
            .envs(env.iter().copied())
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Usage: a folder that is no app.
    let (code, err) = run(&["graph", "--app", "/nonexistent-ovation-app"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("point --app at the folder"), "{err}");

    // A port that is taken: found before any build.
    let app = temp_app("exit-codes");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dashboard = free_port().to_string();
    let (code, err) = run(
        &[
            "run",
            "--app",
            app.to_str().unwrap(),
            "--port",
            &port,
            "--dashboard-port",
            &dashboard,
        ],
        &[],
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("--port"),
        "{err}"
    );
    drop(taken);

    // cargo missing.
    let (code, err) = run(
        &["gen", "openapi", "--app", app.to_str().unwrap()],
        &[("CARGO", "/nonexistent/cargo")],
    );
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains("cannot run cargo") && err.contains("rustup"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&app);

    // An app that does not compile (no dependencies, so the build takes a moment).
    let broken = target_dir().join(format!("ovation-broken-app-{}", std::process::id()));
    std::fs::create_dir_all(broken.join("src")).unwrap();
    std::fs::write(
        broken.join("Cargo.toml"),
        "[package]\nname = \"broken-app\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        broken.join("src/main.rs"),
        "fn main() { let x: u8 = \"no\"; }\n",
    )
    .unwrap();
    let (code, err) = run(&["gen", "openapi", "--app", broken.to_str().unwrap()], &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("the build failed: error[E0308]"), "{err}");
    let _ = std::fs::remove_dir_all(&broken);
}

/// `/proc/PID/maps` of the app process `ovation run` started on `port` (it passes the address
/// as `OVATION_LISTEN`).
#[cfg(target_os = "linux")]
fn maps_of_process_listening_on(port: u16) -> String {
    let wanted = format!("OVATION_LISTEN=127.0.0.1:{port}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()) {
            return std::fs::read_to_string(entry.path().join("maps")).unwrap();
        }
    }
    panic!("no process has {wanted}");
}
