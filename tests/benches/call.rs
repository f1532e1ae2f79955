//! What a service call costs in-process: `echo::ping` through the stub `#[api]` generates
//! (the callee is hosted here, so no socket: the request and response make the wire's JSON
//! trip, so the call behaves as it would across processes; a span, the caller's context and
//! the call) against the same body as a plain async function called directly, for a short
//! payload and a 64 KiB one.
//! Criterion measures both in the same run; the difference is the stub's cost per call.
//!
//! `cargo bench -p ovation-tests --bench call`. Not a test: it asserts nothing about speed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ovation::testing::TestEnv;
use ovation_tests::report::{Figure, Target};

mod echo {
    use ovation::prelude::*;

    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Ping {
        pub message: String,
        pub n: u64,
    }

    /// A private endpoint, called by other services.
    #[api(method = "POST", path = "/echo/ping")]
    pub async fn ping(p: Ping) -> Result<Ping, Error> {
        Ok(Ping { n: p.n + 1, ..p })
    }

    /// The same body, not an endpoint.
    pub async fn plain(p: Ping) -> Result<Ping, Error> {
        Ok(Ping { n: p.n + 1, ..p })
    }
}

fn ping() -> echo::Ping {
    echo::Ping {
        message: "a short payload, like most calls between services".into(),
        n: 1,
    }
}

/// A 64 KiB payload: the trip's cost grows with what travels.
fn large() -> echo::Ping {
    echo::Ping {
        message: "x".repeat(64 * 1024),
        n: 1,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(TestEnv::new()).unwrap();
    let out = ovation_tests::criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&out)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("call");
    // Both inside the Ovation context (`env.run`), as code in a handler is.
    for (suffix, payload) in [("", ping as fn() -> echo::Ping), ("-64KiB", large)] {
        group.bench_function(format!("direct{suffix}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(env.run(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        black_box(echo::plain(black_box(payload())).await.unwrap());
                    }
                    started.elapsed()
                }))
                .unwrap()
            });
        });
        group.bench_function(format!("stub{suffix}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(env.run(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        black_box(echo::ping(black_box(payload())).await.unwrap());
                    }
                    started.elapsed()
                }))
                .unwrap()
            });
        });
    }
    group.finish();
    c.final_summary();
    rt.block_on(env.close());

    let direct = ovation_tests::criterion_mean_ns(&out, "call", "direct") / 1000.0;
    let stub = ovation_tests::criterion_mean_ns(&out, "call", "stub") / 1000.0;
    println!("call::direct {direct:.3} µs, call::stub {stub:.3} µs");
    let (direct_large, stub_large) = (
        ovation_tests::criterion_mean_ns(&out, "call", "direct-64KiB") / 1000.0,
        ovation_tests::criterion_mean_ns(&out, "call", "stub-64KiB") / 1000.0,
    );
    println!("call::direct-64KiB {direct_large:.3} µs, call::stub-64KiB {stub_large:.3} µs");
    Figure::new(
        "Call overhead",
        "in-process call through the stub, 64 KiB request and response",
        stub_large,
        "µs",
    )
    .against("the same async fn called directly", direct_large)
    .record();
    Figure::new(
        "Call overhead",
        "in-process call through the stub",
        stub,
        "µs",
    )
    .against("the same async fn called directly", direct)
    .target(Target::AddedAtMost(2.0))
    .record();
}
