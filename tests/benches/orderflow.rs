//! The shop's order flow, written by hand with axum and sqlx (`tests/src/bin/axum_shop.rs`),
//! against two Ovation apps: `examples/order-flow`, the same flow with the same statements
//! (what the framework costs), and the shop app as a whole (what the shop's extra work costs
//! on top: sessions, payments, more events and services). All three are release binaries in
//! processes of their own on managed Postgres clusters with the same settings, driven over
//! loopback by the same clients:
//! - POST /orders (3 service calls, 2 transactions, 1 publish and its delivery): requests/s,
//!   p50/p99, and no failed request;
//! - the resident set of each process idle and under that load, and the part of the idle one
//!   that is not the binary's mapped pages;
//! - start-up: from starting the binary to its first 200 answer, the database already up and
//!   migrated;
//! - statements per order: what Postgres logs (`log_statement = all`) while 20 orders are placed
//!   one after the other and delivered, less what it logs in an idle window as long (the
//!   apps' background polls).
//!
//! The clusters keep Postgres's defaults for durability: every commit waits for its WAL to be
//! flushed (`synchronous_commit = on`), as on a production server.
//!
//! Rounds alternate between the three, a fresh process each. `cargo bench -p ovation-tests
//! --bench orderflow`. Not a test: it asserts nothing about speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ovation_tests::report::{Figure, Target, median, quantile};
use serde_json::{Value, json};

const CLIENTS: usize = 32;
const WARM_UP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(8);
const ROUNDS: usize = 3;
const STARTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
enum App {
    Axum,
    OrderFlow,
    Shop,
}

impl App {
    const ALL: [App; 3] = [App::Axum, App::OrderFlow, App::Shop];

    fn name(self) -> &'static str {
        match self {
            App::Axum => "axum+sqlx, hand-written",
            App::OrderFlow => "Ovation, the same flow",
            App::Shop => "Ovation shop app",
        }
    }

    /// How the figures name the app: the same flow in Ovation, or the whole shop.
    fn label(self) -> &'static str {
        match self {
            App::Axum => "axum+sqlx",
            App::OrderFlow => "Ovation, the same flow (examples/order-flow)",
            App::Shop => "Ovation, the whole shop app",
        }
    }

    /// The workspace package (and binary) an Ovation app is built from.
    fn package(self) -> Option<&'static str> {
        match self {
            App::Axum => None,
            App::OrderFlow => Some("order-flow"),
            App::Shop => Some("shop-app"),
        }
    }

    /// Its target for requests/s as a share of the hand-written flow's: the same flow pays
    /// only for the framework; the shop also does what the guide's flow does not.
    fn rate_target(self) -> f64 {
        match self {
            App::Axum => 1.0,
            App::OrderFlow => 0.95,
            App::Shop => 0.8,
        }
    }
}

/// What one round of load measured.
#[derive(Debug, Default)]
struct Load {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    failed: u64,
    rss_idle_mib: f64,
    /// Of the idle resident set, what is not file-backed: heap, stacks, the runtime's data. The
    /// rest is pages of the binary and its libraries, clean and shared with the page cache,
    /// which a larger binary touches more of (the kernel maps pages around each fault).
    anon_idle_mib: f64,
    rss_load_mib: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let target = ovation_tests::target_dir();
    let binaries = App::ALL.map(|app| match app.package() {
        Some(package) => build_app(&target, package),
        None => PathBuf::from(env!("CARGO_BIN_EXE_axum_shop")),
    });
    // Two clusters with the same settings: the shop and the same flow name their databases
    // alike (`orders`, `products`, ...) with other schemas. The hand-written flow uses one
    // database of its own, `axum_shop`, and shares the cluster of its counterpart.
    let clusters = ["ovation-bench", "ovation-bench-flow"].map(|dir| {
        ovation::tooling::ManagedPostgres::ensure(&target.join(dir))
            .expect("the managed Postgres starts")
    });
    let urls = App::ALL.map(|app| match app {
        App::Shop => clusters[0].url("postgres"),
        App::Axum | App::OrderFlow => clusters[1].url("postgres"),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut loads: [Vec<Load>; 3] = Default::default();
        for _ in 0..ROUNDS {
            for (i, app) in App::ALL.into_iter().enumerate() {
                loads[i].push(load_round(app, &binaries[i], &urls[i]).await);
            }
        }
        let mut starts: [Vec<f64>; 3] = Default::default();
        for (i, app) in App::ALL.into_iter().enumerate() {
            starts[i] = start_up(app, &binaries[i], &urls[i]).await;
        }
        let mut statements = [0.0; 3];
        for (i, app) in App::ALL.into_iter().enumerate() {
            let cluster = &clusters[usize::from(app != App::Shop)];
            statements[i] = statements_per_order(app, &binaries[i], cluster).await;
        }
        report(&loads, &mut starts, &statements);
    });
}

/// One figure of a round of load.
type LoadFigure = fn(&Load) -> f64;

fn report(loads: &[Vec<Load>; 3], starts: &mut [Vec<f64>; 3], statements: &[f64; 3]) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "POST /orders, {CLIENTS} clients over loopback, {ROUNDS} rounds of {MEASURE:?}, median; \
         {cores} cores shared by the load driver, the app and Postgres"
    );
    let med = |i: usize, f: LoadFigure| median(&mut loads[i].iter().map(f).collect::<Vec<_>>());
    let baseline = App::Axum.name();
    let ovation = || App::ALL.into_iter().enumerate().skip(1);
    // A figure of app `i`'s loads against the hand-written flow's.
    let of_loads = |section: &str, i: usize, what: String, f: LoadFigure, unit: &str| {
        Figure::new(section, what, med(i, f), unit).against(baseline, med(0, f))
    };
    let section = "Order flow";
    for (i, app) in ovation() {
        let name = app.label();
        of_loads(
            section,
            i,
            format!("{name}: POST /orders requests/s"),
            |l| l.rate,
            "req/s",
        )
        .target(Target::RatioAtLeast(app.rate_target()))
        .record();
        of_loads(
            section,
            i,
            format!("{name}: POST /orders p50"),
            |l| l.p50_us,
            "µs",
        )
        .record();
        of_loads(
            section,
            i,
            format!("{name}: POST /orders p99"),
            |l| l.p99_us,
            "µs",
        )
        .record();
    }
    for (i, app) in ovation() {
        Figure::new(
            section,
            format!("{}: statements per order, delivery included", app.label()),
            statements[i],
            "",
        )
        .against(baseline, statements[0])
        .record();
    }
    let failed: u64 = loads.iter().flatten().map(|l| l.failed).sum();
    Figure::new(
        section,
        "failed requests (all three, all rounds)",
        failed as f64,
        "",
    )
    .target(Target::AtMost(0.0))
    .record();
    let section = "Start-up and memory";
    let starts = starts.each_mut().map(|s| median(s));
    for (i, app) in ovation() {
        let name = app.label();
        Figure::new(
            section,
            format!("{name}: binary start to first 200"),
            starts[i],
            "ms",
        )
        .against(baseline, starts[0])
        .target(Target::AtMost(200.0))
        .record();
        let memory: [(String, LoadFigure); 3] = [
            ("resident set, idle".into(), |l| l.rss_idle_mib),
            (
                "resident set, idle, anonymous (heap, stacks; not the binary's pages)".into(),
                |l| l.anon_idle_mib,
            ),
            (
                format!("resident set, {CLIENTS} clients on POST /orders"),
                |l| l.rss_load_mib,
            ),
        ];
        for (what, f) in memory {
            of_loads(section, i, format!("{name}: {what}"), f, "MiB").record();
        }
    }
}

/// An Ovation app's release binary (`package` names the package and its binary), built (or
/// found up to date) in this bench's target folder.
fn build_app(target: &Path, package: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", package, "--bin", package])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .status()
        .unwrap();
    assert!(status.success(), "building {package} failed");
    target.join("release").join(package)
}

/// A running app, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn start(app: App, binary: &Path, database_url: &str, port: u16) -> Running {
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary);
        cmd.env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match app {
            App::Axum => cmd.env("LISTEN", &listen),
            App::OrderFlow | App::Shop => cmd.env("OVATION_LISTEN", &listen),
        };
        Running(cmd.spawn().expect("the app starts"))
    }

    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// A size line of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`), in MiB.
    fn status_mib(&self, line: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `url` until it answers 200; how long that took from `since`.
async fn first_ok(http: &reqwest::Client, url: &str, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the app at `base` answers anything (its databases created and migrated).
async fn wait_up(http: &reqwest::Client, base: &str, app: App) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let probe = format!("{base}/products/{}", uuid::Uuid::nil());
    while http.get(&probe).send().await.is_err() {
        assert!(Instant::now() < deadline, "{} did not start", app.name());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

/// A user and a product with stock for any load, through the app's own API.
async fn seed(http: &reqwest::Client, base: &str) -> (String, String) {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4());
    let user = post(
        http,
        format!("{base}/users"),
        json!({"email": email, "name": "Bench"}),
    )
    .await;
    let product = post(
        http,
        format!("{base}/products"),
        json!({"name": "Widget", "priceCents": 1000, "inventory": 1_000_000_000}),
    )
    .await;
    (
        user["id"].as_str().unwrap().to_owned(),
        product["id"].as_str().unwrap().to_owned(),
    )
}

async fn load_round(app: App, binary: &Path, database_url: &str) -> Load {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let running = Running::start(app, binary, database_url, port);
    let http = reqwest::Client::new();
    wait_up(&http, &base, app).await;
    let (user, product) = seed(&http, &base).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_mib = running.rss_mib();
    let anon_idle_mib = running.status_mib("RssAnon:");

    let body = json!({"userId": user, "productId": product, "quantity": 1});
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, url, body) = (http.clone(), format!("{base}/orders"), body.clone());
            let (counting, stop) = (counting.clone(), stop.clone());
            let (done, failed) = (done.clone(), failed.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 15);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let ok = match http.post(&url).json(&body).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if counting.load(Ordering::Relaxed) {
                        let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                        latencies.push(us);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut rss_load_mib: f64 = 0.0;
    while started.elapsed() < MEASURE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        rss_load_mib = rss_load_mib.max(running.rss_mib());
    }
    let count = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await.unwrap());
    }
    latencies.sort_unstable();
    running.stop();
    let load = Load {
        rate: count as f64 / elapsed.as_secs_f64(),
        p50_us: f64::from(quantile(&latencies, 0.5)),
        p99_us: f64::from(quantile(&latencies, 0.99)),
        failed: failed.load(Ordering::Relaxed),
        rss_idle_mib,
        anon_idle_mib,
        rss_load_mib,
    };
    println!(
        "{:<26} {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  failed {}  RSS idle {:.1} MiB, loaded {:.1} MiB",
        app.name(),
        load.rate,
        load.p50_us,
        load.p99_us,
        load.failed,
        load.rss_idle_mib,
        load.rss_load_mib
    );
    load
}

/// `STARTS` starts of `binary` against an already migrated database, each timed from spawning
/// the process to its first 200 answer (GET of an existing product), in ms.
async fn start_up(app: App, binary: &Path, database_url: &str) -> Vec<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // A first start creates (or finds) the databases and a product to ask for.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let running = Running::start(app, binary, database_url, port);
    wait_up(&http, &base, app).await;
    let (_, product) = seed(&http, &base).await;
    running.stop();
    let mut times = Vec::new();
    for _ in 0..STARTS {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/products/{product}");
        let started = Instant::now();
        let running = Running::start(app, binary, database_url, port);
        times.push(first_ok(&http, &url, started).await.as_secs_f64() * 1000.0);
        running.stop();
    }
    println!(
        "{:<26} start to first 200: {:?} ms",
        app.name(),
        times.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    times
}

const COUNTED_ORDERS: usize = 20;

/// The statements Postgres runs for one order of `app`, its delivery included: those logged
/// while [`COUNTED_ORDERS`] orders are placed one after the other and then 2 s pass, less those
/// logged in an idle window just as long, divided by the orders.
async fn statements_per_order(
    app: App,
    binary: &Path,
    cluster: &ovation::tooling::ManagedPostgres,
) -> f64 {
    use ovation::sqlx::{self, Connection as _};
    let log = cluster.dir().join("postgres.log");
    let mut admin = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .expect("the bench connects to its cluster");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let running = Running::start(app, binary, &cluster.url("postgres"), port);
    let http = reqwest::Client::new();
    wait_up(&http, &base, app).await;
    let (user, product) = seed(&http, &base).await;
    let order = json!({"userId": user, "productId": product, "quantity": 1});
    // A first order: connections opened, statements prepared.
    post(&http, format!("{base}/orders"), order.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    for sql in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(sql).execute(&mut admin).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_from = log_len(&log);
    let started = Instant::now();
    for _ in 0..COUNTED_ORDERS {
        post(&http, format!("{base}/orders"), order.clone()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = started.elapsed();
    let orders = logged_statements(&log, idle_from);
    let idle_from = log_len(&log);
    tokio::time::sleep(window).await;
    let idle = logged_statements(&log, idle_from);
    for sql in [
        "ALTER SYSTEM RESET log_statement",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(sql).execute(&mut admin).await.unwrap();
    }
    running.stop();
    let per_order = orders.saturating_sub(idle) as f64 / COUNTED_ORDERS as f64;
    println!(
        "{:<26} statements: {orders} while placing {COUNTED_ORDERS} orders, {idle} idle: \
         {per_order:.1} an order",
        app.name()
    );
    per_order
}

fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// Statements Postgres logged in `log` after byte `from`: simple queries and executions of
/// prepared ones, each counted once (not the lines of their text or parameters).
fn logged_statements(log: &Path, from: u64) -> usize {
    let bytes = std::fs::read(log).unwrap_or_default();
    let tail = bytes
        .get(usize::try_from(from).unwrap_or(0)..)
        .unwrap_or(&[]);
    String::from_utf8_lossy(tail)
        .lines()
        .filter(|l| l.contains("LOG:  statement: ") || l.contains("LOG:  execute "))
        .count()
}
