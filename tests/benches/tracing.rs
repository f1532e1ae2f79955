//! What tracing costs: requests per second of a simple endpoint with tracing off, against
//! the same with every request traced (sampling 1.0) and exported over OTLP/HTTP to the
//! CLI's receiver, measured in the same run, alternating, each in a fresh process (the
//! tracing pipeline is process-wide).
//!
//! `cargo bench -p ovation-tests --bench tracing`. Not a test: it asserts nothing about speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ovation::testing::{Hosting, TestEnv};

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
const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let endpoint = args.get(i + 1).filter(|e| e.starts_with("http")).cloned();
        let sampling = args.get(i + 2).and_then(|r| r.parse().ok());
        println!("{}", child(endpoint, sampling));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let receiver = start_receiver();
    let mut plain = Vec::new();
    let mut unsampled = Vec::new();
    let mut traced = Vec::new();
    let mut dropped = 0;
    for _ in 0..ROUNDS {
        plain.push(run_child(None, 1.0).0);
        unsampled.push(run_child(Some(&receiver), 0.0).0);
        let (rate, lost) = run_child(Some(&receiver), 1.0);
        traced.push(rate);
        dropped += lost;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, u, t) = (
        median(&mut plain),
        median(&mut unsampled),
        median(&mut traced),
    );
    println!("GET /ping, {CLIENTS} clients, {ROUNDS} rounds of {MEASURE:?} each (median)");
    println!("tracing off:                {p:>9.0} req/s");
    println!(
        "tracing on, sampling 0.0:   {u:>9.0} req/s  ({:.2} of off)",
        u / p
    );
    println!("tracing on, exported (1.0): {t:>9.0} req/s");
    println!("traced / untraced throughput: {:.2}", t / p);
    println!("spans dropped by the bounded export queue: {dropped}");
}

/// The CLI's receiver and store, on the test cluster, for the traced runs.
fn start_receiver() -> String {
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
            ovation_cli::traces::serve(store, listener);
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// Requests per second, and spans dropped, of one child run.
fn run_child(endpoint: Option<&str>, sampling: f64) -> (f64, u64) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .arg(endpoint.unwrap_or("-"))
        .arg(sampling.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dropped = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dropped "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let rate = stdout.lines().last().unwrap().trim().parse().unwrap();
    (rate, dropped)
}

/// Serves the endpoint and drives it; requests per second.
fn child(otlp_endpoint: Option<String>, trace_sampling: Option<f64>) -> f64 {
    ovation::telemetry::init(&ovation::Config {
        otlp_endpoint,
        trace_sampling,
        ..ovation::Config::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = TestEnv::new().await.unwrap();
        let server = env.serve(Hosting::all()).await.unwrap();
        let url = format!("{}/ping", server.url());
        let http = reqwest::Client::new();
        let counting = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (http, url) = (http.clone(), url.clone());
                let (counting, stop, done) = (counting.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = http.get(&url).send().await.unwrap();
                        assert!(r.status().is_success());
                        r.bytes().await.unwrap();
                        if counting.load(Ordering::Relaxed) {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(WARM_UP).await;
        counting.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(MEASURE).await;
        let count = done.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        println!("dropped {}", ovation::telemetry::dropped_spans());
        drop(server);
        env.close().await;
        count as f64 / elapsed.as_secs_f64()
    })
}
