//! One service call, in-process against across processes: p50/p99 latency of `echo::ping`
//! called directly (the callee is hosted in the same runtime: no serialization, no socket)
//! and from another runtime over loopback HTTP (JSON, HMAC-signed, pooled keep-alive
//! connection), one call in flight at a time, measured in the same run. A third row is the
//! floor for any HTTP hop: the same JSON echo as a bare axum handler called with reqwest, no
//! Ovation on either side.
//!
//! `cargo bench -p ovation-tests --bench rpc`. Not a test: it asserts nothing about speed.

use std::time::{Duration, Instant};

use ovation::testing::{Hosting, TestEnv};
use ovation_tests::report::Figure;

mod echo {
    use ovation::prelude::*;

    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Ping {
        pub message: String,
        pub n: u64,
    }

    /// Answers what it is sent: a private endpoint, so the remote calls are signed.
    #[api(method = "POST", path = "/echo/ping")]
    pub async fn ping(p: Ping) -> Result<Ping, Error> {
        Ok(p)
    }
}

const CALLS: usize = 5_000;

fn ping(n: u64) -> echo::Ping {
    echo::Ping {
        message: "a short payload, like most calls between services".into(),
        n,
    }
}

/// Latencies of `CALLS` sequential calls after a warm-up.
async fn measure() -> Vec<Duration> {
    for n in 0..200 {
        echo::ping(ping(n)).await.unwrap();
    }
    let mut latencies = Vec::with_capacity(CALLS);
    for n in 0..CALLS as u64 {
        let started = Instant::now();
        let back = echo::ping(ping(n)).await.unwrap();
        latencies.push(started.elapsed());
        assert_eq!(back.n, n);
    }
    latencies.sort_unstable();
    latencies
}

/// The same exchange without Ovation: reqwest posts the JSON to a bare axum handler.
async fn measure_bare() -> Vec<Duration> {
    let app = axum::Router::new().route(
        "/echo/ping",
        axum::routing::post(
            |axum::Json(p): axum::Json<serde_json::Value>| async move { axum::Json(p) },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/echo/ping", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let call = |n: u64| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let p = ping(n);
            let body = serde_json::json!({"message": p.message, "n": p.n});
            let back: serde_json::Value = http
                .post(&url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(back["n"], n);
        }
    };
    for n in 0..200 {
        call(n).await;
    }
    let mut latencies = Vec::with_capacity(CALLS);
    for n in 0..CALLS as u64 {
        let started = Instant::now();
        call(n).await;
        latencies.push(started.elapsed());
    }
    server.abort();
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let env = TestEnv::new().await.unwrap();
        let local = env.run(measure()).await.unwrap();
        let callee = env.serve(Hosting::only(["echo"])).await.unwrap();
        let remote = env
            .run_hosting(
                Hosting::only(Vec::<String>::new()).remote("echo", callee.url()),
                measure(),
            )
            .await
            .unwrap();
        let bare = measure_bare().await;
        println!("echo::ping, {CALLS} sequential calls each way");
        println!("{:<14} {:>10} {:>10}", "", "p50", "p99");
        for (name, l) in [
            ("in-process", &local),
            ("cross-process", &remote),
            ("bare axum", &bare),
        ] {
            println!(
                "{name:<14} {:>10.1?} {:>10.1?}",
                percentile(l, 0.5),
                percentile(l, 0.99)
            );
        }
        let ratio = |p| percentile(&remote, p).as_secs_f64() / percentile(&local, p).as_secs_f64();
        println!(
            "cross-process / in-process: p50 x{:.0}, p99 x{:.0}",
            ratio(0.5),
            ratio(0.99)
        );
        let overhead =
            |p| percentile(&remote, p).as_secs_f64() / percentile(&bare, p).as_secs_f64();
        println!(
            "cross-process / bare axum+reqwest: p50 x{:.2}, p99 x{:.2}",
            overhead(0.5),
            overhead(0.99)
        );
        for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
            Figure::new(
                "Call overhead",
                format!("cross-process call over loopback, {name}"),
                percentile(&remote, p).as_secs_f64() * 1e6,
                "µs",
            )
            .against(
                "the same JSON echo, bare axum + reqwest",
                percentile(&bare, p).as_secs_f64() * 1e6,
            )
            .record();
        }
        drop(callee);
        env.close().await;
    });
}
