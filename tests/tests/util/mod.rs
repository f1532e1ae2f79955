//! Helpers shared by the end-to-end tests: a JSON client for a served app.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// Linking the shop app registers its endpoints and databases.
use shop_app as _;

/// A client of one served app.
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

impl Client {
    pub fn new(base: impl Into<String>) -> Client {
        Client {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("the body is readable");
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Creates a user, a product, and returns their ids.
    pub async fn user_and_product(
        &self,
        email: &str,
        price_cents: i64,
        inventory: i32,
    ) -> (String, String) {
        let user = self
            .post("/users", json!({"email": email, "name": "Buyer"}))
            .await;
        assert_eq!(user.status, 200, "{user:?}");
        let product = self
            .post(
                "/products",
                json!({"name": "Widget", "priceCents": price_cents, "inventory": inventory}),
            )
            .await;
        assert_eq!(product.status, 200, "{product:?}");
        (
            user.body["id"].as_str().unwrap().to_owned(),
            product.body["id"].as_str().unwrap().to_owned(),
        )
    }
}

/// `method url` with `body` (sent as JSON when given), signed with `key` as service `caller`
/// would sign it.
pub fn signed(
    http: &reqwest::Client,
    key: &ovation::tooling::ServiceAuthKey,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
    caller: &str,
) -> reqwest::RequestBuilder {
    let url = reqwest::Url::parse(url).unwrap();
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let signature = key.sign(
        ovation::tooling::Signed {
            method: method.as_str(),
            path: url.path(),
            query: url.query().unwrap_or(""),
            body: &bytes,
        },
        caller,
    );
    let mut request = http
        .request(method, url)
        .header(ovation::tooling::HEADER, signature);
    if body.is_some() {
        request = request
            .header("content-type", "application/json")
            .body(bytes);
    }
    request
}

/// Each way to forge or replay a signature for `POST path` with the JSON body `body`, by
/// name: none accepted by a service whose key is `key`.
pub fn forgeries(
    key: &ovation::tooling::ServiceAuthKey,
    path: &str,
    body: &Value,
) -> Vec<(&'static str, Option<String>)> {
    use ovation::tooling::{ServiceAuthKey, Signed};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let bytes = serde_json::to_vec(body).unwrap();
    let post = Signed {
        method: "POST",
        path,
        query: "",
        body: &bytes,
    };
    let nonce = || format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let other_body = serde_json::to_vec(&json!({"quantity": 40})).unwrap();
    vec![
        ("no header", None),
        (
            "wrong key",
            Some(ServiceAuthKey::new("not the app's key").sign(post, "orders")),
        ),
        (
            "stale timestamp",
            Some(key.sign_with(post, "orders", now - 180, &nonce())),
        ),
        (
            "timestamp from the future",
            Some(key.sign_with(post, "orders", now + 180, &nonce())),
        ),
        (
            "signed for another path",
            Some(key.sign(
                Signed {
                    path: "/products/00000000-0000-0000-0000-000000000000/reserve",
                    ..post
                },
                "orders",
            )),
        ),
        (
            "signed for another method",
            Some(key.sign(
                Signed {
                    method: "GET",
                    ..post
                },
                "orders",
            )),
        ),
        (
            "signed for another body",
            Some(key.sign(
                Signed {
                    body: &other_body,
                    ..post
                },
                "orders",
            )),
        ),
        (
            "signed with a query the request lacks",
            Some(key.sign(
                Signed {
                    query: "quantity=1",
                    ..post
                },
                "orders",
            )),
        ),
        (
            "the old v1 format",
            Some(format!("v1 orders {now} {}", "ab".repeat(32))),
        ),
        ("garbage", Some("v2 orders 12 zz".into())),
    ]
}

/// The base URL of a trace receiver and store (the CLI's, on the test cluster), started once
/// per test binary on a thread of its own so it outlives every test's runtime.
pub fn trace_receiver() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = ovation::testing::test_server().await.unwrap();
                let store = ovation_cli::traces::Store::open(server).await.unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                ovation_cli::traces::serve(store, listener, &[]);
                tx.send(url).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    })
}

/// A fresh W3C trace context: (trace id, `traceparent` header value).
pub fn new_traceparent() -> (String, String) {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    (trace.clone(), format!("00-{trace}-{span}-01"))
}

/// The spans of `trace_id` from the receiver at `base`, once `done` holds for them (polling
/// for at most 20 s: export is asynchronous).
pub async fn wait_for_trace(
    base: &str,
    trace_id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let response = client
            .get(format!("{base}/api/traces/{trace_id}"))
            .send()
            .await
            .unwrap();
        let spans: Vec<Value> = if response.status().is_success() {
            let body: Value = response.json().await.unwrap();
            body["spans"].as_array().cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        if done(&spans) {
            return spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "trace {trace_id} incomplete after 20 s: {:#}",
            Value::Array(spans)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The workspace, its target folder, and the `ovation` CLI built there.
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The target folder this test binary was built in (`<target>/debug/deps/deploy-…`).
pub fn target_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// The `ovation` binary, built (or found up to date) in this test's target folder.
pub fn ovation() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "-p",
                    "ovation-cli",
                    "--bin",
                    "ovation",
                    "--manifest-path",
                ])
                .arg(workspace().join("Cargo.toml"))
                .env("CARGO_TARGET_DIR", target_dir())
                .status()
                .unwrap();
        assert!(status.success(), "building the ovation CLI failed");
        target_dir().join("debug/ovation")
    })
}

/// A command-line tool from `tests/python/requirements.txt` (`schemathesis`,
/// `kubernetes-validate`), at the version pinned there: installed on first use into a
/// virtualenv under the target folder (one per version of the requirements), never taken from
/// the machine, whose copy may be newer and broken. `Err` says why it is not available (no
/// `python3`, no network for pip): the caller skips naming it, except in CI, which fails.
pub fn python_tool(name: &str) -> Result<PathBuf, String> {
    static VENV: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let venv = VENV.get_or_init(|| {
        let requirements = workspace().join("tests/python/requirements.txt");
        let pins =
            std::fs::read(&requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
        let digest: u64 = pins.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        let venv = target_dir().join(format!("ovation-python-{digest:016x}"));
        let ready = venv.join("ready");
        // Test binaries run in parallel: one installs, the others wait for it.
        std::fs::create_dir_all(target_dir()).map_err(|e| e.to_string())?;
        let lock = std::fs::File::create(target_dir().join("ovation-python.lock"))
            .map_err(|e| e.to_string())?;
        lock.lock().map_err(|e| e.to_string())?;
        if ready.exists() {
            return Ok(venv);
        }
        let _ = std::fs::remove_dir_all(&venv);
        let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{what} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
        run(
            Command::new(venv.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
            "pip install -r tests/python/requirements.txt",
        )?;
        std::fs::write(&ready, b"").map_err(|e| e.to_string())?;
        Ok(venv)
    });
    let venv = venv
        .clone()
        .map_err(|e| format!("{name} from tests/python/requirements.txt: {e}"));
    match venv {
        Ok(venv) => Ok(venv.join("bin").join(name)),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{e}"),
        Err(e) => Err(e),
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ovation run`, stopped (SIGTERM, then SIGKILL) when the test ends.
pub struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    pub fn start(app: &Path, port: u16, dashboard: u16, watch: bool, name: &str) -> Running {
        Running::start_with(app, (port, dashboard), watch, name, &[])
    }

    /// [`Running::start`] with `env` set for `ovation run` (and so for the app).
    pub fn start_with(
        app: &Path,
        (port, dashboard): (u16, u16),
        watch: bool,
        name: &str,
        env: &[(&str, &str)],
    ) -> Running {
        let log = target_dir().join(format!("ovation-run-{name}-{}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(ovation());
        cmd.args(["run", "--app"])
            .arg(app)
            .args(["--port", &port.to_string()])
            .args(["--dashboard-port", &dashboard.to_string()])
            .env("OVATION_DATA_DIR", target_dir().join("ovation-deploy-test"))
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("DATABASE_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if watch {
            cmd.arg("--watch");
        }
        Running {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// The CLI's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// Waits until `url` answers 200, failing with the CLI's output if it exits or takes
    /// longer than `within` (a first build may be long).
    pub async fn wait_for(&mut self, url: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ovation run exited ({status}):\n{}", self.output());
            }
            if http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} never answered:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM; the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "ovation run ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `ovation run` of the shop on free ports, once the app answers: the run, the app's URL and
/// the dashboard's.
pub async fn run_shop(name: &str) -> (Running, String, String) {
    run_shop_with(name, false).await
}

/// [`run_shop`], with `--watch` if asked: the app then sits behind the watch proxy.
pub async fn run_shop_with(name: &str, watch: bool) -> (Running, String, String) {
    run_shop_env(name, watch, &[]).await
}

/// [`run_shop_with`], with `env` set for `ovation run` and the app.
pub async fn run_shop_env(
    name: &str,
    watch: bool,
    env: &[(&str, &str)],
) -> (Running, String, String) {
    let (port, dashboard) = (free_port(), free_port());
    let mut run = Running::start_with(
        &workspace().join("examples/shop-app"),
        (port, dashboard),
        watch,
        name,
        env,
    );
    let app = format!("http://127.0.0.1:{port}");
    run.wait_for(&format!("{app}/__ovation/health"), Duration::from_secs(600))
        .await;
    (run, app, format!("http://127.0.0.1:{dashboard}"))
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// The shop split in three "processes" in one test process: A hosts users, products and
/// payments, B orders, checkout and notifications (calling A over HTTP), G is a gateway hosting
/// nothing.
pub struct Split {
    pub env: ovation::testing::TestEnv,
    pub a: ovation::Server,
    pub b: ovation::Server,
    pub g: ovation::Server,
}

pub async fn split() -> Split {
    use ovation::testing::{Hosting, TestEnv};
    let env = TestEnv::new().await.unwrap();
    let a = env
        .serve(Hosting::only(["users", "products", "payments"]))
        .await
        .unwrap();
    let b = env
        .serve(
            Hosting::only(["orders", "checkout", "notifications"])
                .remote("users", a.url())
                .remote("products", a.url())
                .remote("payments", a.url()),
        )
        .await
        .unwrap();
    let g = env
        .serve(
            Hosting::gateway()
                .remote("users", a.url())
                .remote("products", a.url())
                .remote("payments", a.url())
                .remote("orders", b.url())
                .remote("checkout", b.url())
                .remote("notifications", b.url()),
        )
        .await
        .unwrap();
    Split { env, a, b, g }
}
