//! What an Ovation endpoint costs next to a hand-written axum router serving the same JSON
//! handler: the server's CPU time per request, requests per second and latency (p50, p99)
//! under the same load, with Ovation's tracing off, on with sampling 0.0, and on with every
//! request traced (sampling 1.0) and exported over OTLP/HTTP: to a collector that takes the
//! spans and keeps none (what the server pays for tracing; in a deployment the collector runs
//! elsewhere), and to the CLI's receiver, which decodes every span and stores it in Postgres on
//! the same two cores (what `ovation run` costs).
//!
//! Each server runs in a process of its own (the tracing pipeline is process-wide), started
//! afresh for each round; the load driver, the collector and the store run in this one. The
//! server's CPU time is read from `/proc` over the measured window, so the load driver's work
//! is not counted against either server. On two cores the driver, not the server, limits the
//! requests per second both servers reach, so the throughput each server has in it is taken
//! from its CPU time: requests per CPU-second, what a saturated core serves. Variants
//! alternate, median of the rounds.
//!
//! Time on this VM varies by ±10–15 % from run to run, so the bench also counts the
//! instructions the server executes per request under callgrind ([`instructions`]), which
//! repeat to a fraction of a percent whatever else the machine does.
//!
//! `cargo bench -p ovation-tests --bench endpoint`. Not a test: it asserts nothing about speed.
//! `endpoint --child bare x` serves one variant until its stdin closes, for a profiler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ovation::testing::{Hosting, TestEnv};
use ovation_tests::report::{Figure, Target};

mod bench {
    use ovation::prelude::*;

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    pub struct Pong {
        pub ok: bool,
    }

    /// A simple endpoint: no database, a small JSON answer.
    #[api(public, method = "GET", path = "/ping")]
    pub async fn ping() -> Result<Pong, Error> {
        Ok(Pong { ok: true })
    }
}

const CLIENTS: usize = 32;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 5;

/// One variant's figures for one round.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rate: f64,
    /// CPU time of the whole process (load driver included) per request: steadier than the
    /// rate on a shared machine.
    cpu_us: f64,
    p50_us: f64,
    p99_us: f64,
    dropped: u64,
}

const VARIANTS: [(&str, &str); 6] = [
    ("axum", "axum, hand-written"),
    ("bare", "ovation, no log/trace subscriber"),
    ("off", "ovation, tracing off"),
    ("sampled-0", "ovation, sampling 0.0"),
    (
        "sampled-1",
        "ovation, sampling 1.0, exported to a collector",
    ),
    (
        "stored-1",
        "ovation, sampling 1.0, into the local trace store",
    ),
];
/// The variants whose spans go to the local trace store rather than the collector.
const STORED: &str = "stored-1";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let variant = args.get(i + 1).cloned().unwrap_or_default();
        let endpoint = args.get(i + 2).filter(|e| e.starts_with("http")).cloned();
        serve(&variant, endpoint);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let (collector, received) = start_collector();
    // `ENDPOINT_BENCH_ONLY=instructions`: only the instruction counts.
    if std::env::var("ENDPOINT_BENCH_ONLY").as_deref() == Ok("instructions") {
        instructions(&collector);
        return;
    }
    let store = start_store();
    let driver = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rounds: Vec<Vec<Figures>> = vec![Vec::new(); VARIANTS.len()];
    // `ENDPOINT_BENCH_ONLY=sampled-1,off`: run only these variants (and axum), for profiling.
    let only = std::env::var("ENDPOINT_BENCH_ONLY").unwrap_or_default();
    let chosen = |variant: &str| {
        only.is_empty() || variant == "axum" || only.split(',').any(|v| v == variant)
    };
    for _ in 0..ROUNDS {
        for (i, (variant, _)) in VARIANTS.iter().enumerate() {
            if !chosen(variant) {
                rounds[i].push(Figures::default());
                continue;
            }
            let endpoint = if *variant == STORED {
                &store
            } else {
                &collector
            };
            rounds[i].push(run_child(&driver, variant, endpoint));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let summary: Vec<Figures> = rounds
        .iter()
        .map(|r| Figures {
            rate: median(r.iter().map(|f| f.rate).collect()),
            cpu_us: median(r.iter().map(|f| f.cpu_us).collect()),
            p50_us: median(r.iter().map(|f| f.p50_us).collect()),
            p99_us: median(r.iter().map(|f| f.p99_us).collect()),
            dropped: r.iter().map(|f| f.dropped).sum(),
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "GET /ping (JSON), {CLIENTS} clients over loopback, {ROUNDS} rounds of {MEASURE:?}, \
         median; {cores} cores shared by the load driver, the server, the exporter and the receiver"
    );
    println!(
        "{:<50} {:>12} {:>14} {:>8} {:>10} {:>9} {:>9}",
        "variant", "server µs/req", "req/CPU-second", "/ axum", "req/s", "p50 µs", "p99 µs"
    );
    let per_cpu = |f: &Figures| 1e6 / f.cpu_us;
    for ((_, name), f) in VARIANTS.iter().zip(&summary) {
        println!(
            "{name:<50} {:>12.2} {:>14.0} {:>8.2} {:>10.0} {:>9.0} {:>9.0}",
            f.cpu_us,
            per_cpu(f),
            per_cpu(f) / per_cpu(&summary[0]),
            f.rate,
            f.p50_us,
            f.p99_us,
        );
    }
    println!(
        "spans dropped by the bounded export queue (all rounds): {} sent to the collector, {} \
         to the local store; the collector took {} OTLP requests ({} MiB)",
        summary[4].dropped,
        summary[5].dropped,
        received.requests.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed) >> 20,
    );
    let section = "Endpoint overhead";
    let targets = [None, None, None, Some(0.97), Some(0.90), None];
    let axum = &summary[0];
    for (((_, name), f), target) in VARIANTS.iter().zip(&summary).zip(targets).skip(1) {
        let figure = Figure::new(
            section,
            format!("{name}: requests per server CPU-second"),
            per_cpu(f),
            "req/s",
        )
        .against(VARIANTS[0].1, per_cpu(axum));
        match target {
            Some(t) => figure.target(Target::RatioAtLeast(t)).record(),
            None => figure.record(),
        }
    }
    for ((_, name), f) in VARIANTS.iter().zip(&summary).skip(1) {
        Figure::new(
            section,
            format!("{name}: req/s reached by the load driver"),
            f.rate,
            "req/s",
        )
        .against(VARIANTS[0].1, axum.rate)
        .record();
    }
    instructions(&collector);
    for i in [3, 4, 5] {
        let name = VARIANTS[i].1;
        Figure::new(section, format!("{name}: p50"), summary[i].p50_us, "µs")
            .against(VARIANTS[0].1, summary[0].p50_us)
            .record();
        Figure::new(section, format!("{name}: p99"), summary[i].p99_us, "µs")
            .against(VARIANTS[0].1, summary[0].p99_us)
            .record();
    }
}

/// What the collector has taken.
#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// An OTLP/HTTP collector that reads each export request whole and answers it as a collector
/// that accepted every span does (200, an empty `ExportTraceServiceResponse`), keeping
/// nothing: the far end of a deployment's export, without its cost on these two cores.
fn start_collector() -> (String, Arc<Received>) {
    let received = Arc::new(Received::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let counts = received.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let take = move |body: axum::body::Bytes| {
                counts.requests.fetch_add(1, Ordering::Relaxed);
                counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            };
            let router = axum::Router::new()
                .route("/v1/traces", axum::routing::post(take))
                .layer(axum::extract::DefaultBodyLimit::disable());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            axum::serve(listener, router).await.unwrap();
        });
    });
    (rx.recv().unwrap(), received)
}

/// The CLI's receiver and store, on the test cluster, for the stored run.
fn start_store() -> String {
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
            tx.send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            ovation_cli::traces::serve(store, listener, &[]);
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// One round of `variant`: its server started in a process of its own, driven from here.
fn run_child(driver: &tokio::runtime::Runtime, variant: &str, receiver: &str) -> Figures {
    use std::io::{BufRead, Read};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child", variant, receiver])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    let url = ready
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("the {variant} server did not start: {ready:?}"))
        .trim()
        .to_owned();
    let pid = child.id();
    let (rate, cpu_us, mut latencies) = driver.block_on(drive(&url, pid));
    // Its stdin closed, the server stops and says how many spans it dropped.
    drop(child.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "the {variant} server failed"
    );
    let dropped = rest
        .lines()
        .find_map(|l| l.strip_prefix("dropped "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64;
    Figures {
        rate,
        cpu_us,
        p50_us: at(0.50),
        p99_us: at(0.99),
        dropped,
    }
}

/// The same handler as `bench::ping`, in a router written by hand.
async fn serve_axum() -> (String, tokio::task::JoinHandle<()>) {
    async fn ping() -> axum::Json<bench::Pong> {
        axum::Json(bench::Pong { ok: true })
    }
    let router = axum::Router::new().route("/ping", axum::routing::get(ping));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ping", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (url, task)
}

/// Serves the endpoint as `variant` says until stdin closes: says where on stdout first, and
/// how many spans were dropped last.
fn serve(variant: &str, otlp_endpoint: Option<String>) {
    if variant == "bare" {
        // Taken first, so that `TestEnv::new()` installs no subscriber of its own.
        ovation::tracing::subscriber::set_global_default(
            ovation::tracing::subscriber::NoSubscriber::default(),
        )
        .unwrap();
    } else if variant != "axum" {
        let (otlp_endpoint, trace_sampling) = match variant {
            "sampled-0" => (otlp_endpoint, Some(0.0)),
            "sampled-1" | STORED => (otlp_endpoint, Some(1.0)),
            _ => (None, None),
        };
        ovation::tooling::init(&ovation::Config {
            otlp_endpoint,
            trace_sampling,
            ..ovation::Config::default()
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ovation_app = None;
        let url = if variant == "axum" {
            serve_axum().await.0
        } else {
            let env = TestEnv::new().await.unwrap();
            let server = env.serve(Hosting::all()).await.unwrap();
            let url = format!("{}/ping", server.url());
            ovation_app = Some((env, server));
            url
        };
        println!("serving {url}");
        // Until the driver closes stdin (or goes away).
        tokio::task::spawn_blocking(|| {
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        })
        .await
        .unwrap();
        if let Some((env, server)) = ovation_app {
            drop(server);
            env.close().await;
        }
        println!("dropped {}", ovation::dropped_spans());
    })
}

/// CPU time process `pid` has used (all threads), in µs, from `/proc/<pid>/stat`.
fn cpu_time_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may contain spaces:
    // utime and stime are the 14th and 15th fields, in clock ticks (100 per second).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10_000.0
}

/// `CLIENTS` clients in a loop on `url`: requests per second over `MEASURE` after `WARM_UP`,
/// the CPU time per request (µs) of the server, process `server`, and every measured request's
/// latency in µs.
async fn drive(url: &str, server: u32) -> (f64, f64, Vec<u32>) {
    let http = reqwest::Client::new();
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_owned());
            let (counting, stop, done) = (counting.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let r = http.get(&url).send().await.unwrap();
                    assert!(r.status().is_success());
                    r.bytes().await.unwrap();
                    if counting.load(Ordering::Relaxed) {
                        latencies
                            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
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
    let cpu_started = cpu_time_us(server);
    tokio::time::sleep(MEASURE).await;
    let count = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = cpu_time_us(server) - cpu_started;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await.unwrap());
    }
    (
        count as f64 / elapsed.as_secs_f64(),
        cpu / count.max(1) as f64,
        latencies,
    )
}

/// Requests counted under callgrind, after [`COUNT_WARM_UP`] uncounted ones.
const COUNTED: u64 = 4_000;
const COUNT_WARM_UP: u64 = 500;
/// Clients while counting: few, since valgrind runs one thread at a time.
const COUNT_CLIENTS: u64 = 4;

/// Instructions per request, counted by callgrind (user space only: the kernel's share of a
/// request, its system calls, is not in them), for axum and the ovation variants but the one
/// exporting to the local store (whose cost is mostly Postgres, in another process): the
/// variant exporting to the collector is counted with its export thread, which encodes and
/// sends in batches of 512 spans, so the window's edges cut at most a batch either way (about
/// 1 % of the figure). Each server runs under `valgrind --tool=callgrind` with instrumentation off until
/// it has served [`COUNT_WARM_UP`] requests, on for exactly [`COUNTED`], then off again. For
/// ovation at sampling 0.0 it also says what recording the metrics costs (`Stats::record`,
/// inclusive). Skipped, saying so, where valgrind is not installed.
fn instructions(collector: &str) {
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("instructions per request: skipped, valgrind is not installed");
        return;
    }
    let out = std::env::temp_dir().join(format!("ovation-endpoint-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let mut counted = Vec::new();
    for (variant, name) in [
        VARIANTS[0],
        VARIANTS[1],
        VARIANTS[2],
        VARIANTS[3],
        VARIANTS[4],
    ] {
        let file = out.join(format!("callgrind.{variant}"));
        let Some(per_request) = count(variant, collector, &file) else {
            println!("instructions per request: {name}: callgrind did not finish");
            return;
        };
        counted.push((variant, name, per_request, file));
    }
    let axum = counted[0].2;
    println!(
        "{:<50} {:>14} {:>8}",
        "variant (under callgrind)", "instr/request", "/ axum"
    );
    for (_, name, per_request, _) in &counted {
        println!("{name:<50} {per_request:>14.0} {:>8.3}", per_request / axum);
    }
    let section = "Endpoint overhead";
    for (variant, name, per_request, file) in &counted[1..] {
        Figure::new(
            section,
            format!("{name}: instructions per request (callgrind, user space)"),
            *per_request,
            "instr",
        )
        .against(VARIANTS[0].1, axum)
        .record();
        if *variant == "sampled-0" {
            let metrics = inclusive(file, "ovation::metrics::Stats::record") / COUNTED as f64;
            println!(
                "  of which recording metrics (Stats::record): {metrics:.0} ({:.2} %)",
                metrics / per_request * 100.0
            );
            Figure::new(
                section,
                format!("{name}: of which recording metrics"),
                metrics,
                "instr",
            )
            .against("the whole request", *per_request)
            .record();
        }
    }
    if std::env::var_os("KEEP_CALLGRIND").is_none() {
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// Serves `variant` under callgrind and drives it: instructions per counted request.
fn count(variant: &str, collector: &str, file: &std::path::Path) -> Option<f64> {
    use std::io::{BufRead, Read};
    let mut child = std::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(std::env::current_exe().unwrap())
        .args(["--child", variant, collector])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut out = std::io::BufReader::new(child.stdout.take()?);
    let mut ready = String::new();
    out.read_line(&mut ready).ok()?;
    let url = ready.strip_prefix("serving ")?.trim().to_owned();
    let pid = child.id().to_string();
    let toggle = |on: bool| {
        std::process::Command::new("callgrind_control")
            .args(["-i", if on { "on" } else { "off" }, &pid])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    driver.block_on(requests(&url, COUNT_WARM_UP));
    let toggled = toggle(true);
    driver.block_on(requests(&url, COUNTED));
    let toggled = toggled && toggle(false);
    drop(child.stdin.take());
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    if !child.wait().ok()?.success() || !toggled {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let total: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("totals:"))?
        .trim()
        .parse()
        .ok()?;
    Some(total / COUNTED as f64)
}

/// Exactly `n` requests of `url`, from [`COUNT_CLIENTS`] clients.
async fn requests(url: &str, n: u64) {
    let http = reqwest::Client::new();
    let clients: Vec<_> = (0..COUNT_CLIENTS)
        .map(|c| {
            let (http, url) = (http.clone(), url.to_owned());
            let mine = n / COUNT_CLIENTS + u64::from(c < n % COUNT_CLIENTS);
            tokio::spawn(async move {
                for _ in 0..mine {
                    let r = http.get(&url).send().await.unwrap();
                    assert!(r.status().is_success());
                    r.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
}

/// The inclusive instructions of the functions whose name starts with `function` in a
/// callgrind output file, from `callgrind_annotate --inclusive=yes`.
fn inclusive(file: &std::path::Path, function: &str) -> f64 {
    let Ok(output) = std::process::Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(file)
        .output()
    else {
        return 0.0;
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (count, rest) = line.trim_start().split_once(' ')?;
            let name = rest.trim_start().trim_start_matches("(*)").trim_start();
            let name = name.split_once(':').map_or(name, |(_, f)| f);
            name.starts_with(function)
                .then(|| count.replace(',', "").parse::<f64>().ok())
                .flatten()
        })
        .fold(0.0, f64::max)
}
