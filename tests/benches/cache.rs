//! What a cache operation costs through Ovation's typed keyspaces (key built from the pattern,
//! the runtime's store found, the operation bounded by a timeout, a span when traced) against
//! the same command sent with the `redis` crate directly, over the same kind of connection
//! (`ConnectionManager`) to the same `redis-server`, in the same run.
//!
//! `cargo bench -p ovation-tests --bench cache`. Not a test: it asserts nothing about speed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ovation::testing::TestEnv;
use ovation_tests::report::{Figure, Target};

mod kv {
    use ovation::cache::{CacheCluster, StringKeyspace};

    pub static CACHE: CacheCluster = ovation::cache!("bench");
    pub static NOTES: StringKeyspace<u64> = StringKeyspace::new(&CACHE, "notes/:id");
}

/// The Redis the tests' caches use: `REDIS_URL`, or the managed server of the target folder.
fn redis_url() -> String {
    if let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        return url;
    }
    ovation::tooling::ManagedRedis::ensure(&ovation_tests::target_dir().join("ovation"))
        .expect("the managed redis-server starts")
        .url()
}

const VALUE: &str = "a short cached value, like a session or a rendered fragment";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(TestEnv::new()).unwrap();
    let mut direct = rt.block_on(async {
        let client = redis::Client::open(redis_url()).unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    });
    rt.block_on(env.run(kv::NOTES.set(&1, VALUE)))
        .unwrap()
        .unwrap();
    rt.block_on(async {
        redis::cmd("SET")
            .arg("bench-direct/1")
            .arg(VALUE)
            .query_async::<()>(&mut direct)
            .await
            .unwrap();
    });

    let out = ovation_tests::criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&out)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("cache");
    group.bench_function("direct-get", |b| {
        let direct = direct.clone();
        b.iter_custom(|iters| {
            let mut conn = direct.clone();
            rt.block_on(async move {
                let started = Instant::now();
                for _ in 0..iters {
                    let v: Option<String> = redis::cmd("GET")
                        .arg("bench-direct/1")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    black_box(v);
                }
                started.elapsed()
            })
        });
    });
    group.bench_function("ovation-get", |b| {
        b.iter_custom(|iters| {
            rt.block_on(env.run(async move {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(kv::NOTES.get(black_box(&1)).await.unwrap());
                }
                started.elapsed()
            }))
            .unwrap()
        });
    });
    group.bench_function("direct-set", |b| {
        let direct = direct.clone();
        b.iter_custom(|iters| {
            let mut conn = direct.clone();
            rt.block_on(async move {
                let started = Instant::now();
                for _ in 0..iters {
                    redis::cmd("SET")
                        .arg("bench-direct/2")
                        .arg(VALUE)
                        .query_async::<()>(&mut conn)
                        .await
                        .unwrap();
                }
                started.elapsed()
            })
        });
    });
    group.bench_function("ovation-set", |b| {
        b.iter_custom(|iters| {
            rt.block_on(env.run(async move {
                let started = Instant::now();
                for _ in 0..iters {
                    kv::NOTES.set(black_box(&2), VALUE).await.unwrap();
                }
                started.elapsed()
            }))
            .unwrap()
        });
    });
    group.finish();
    c.final_summary();
    rt.block_on(env.close());

    for op in ["get", "set"] {
        let direct =
            ovation_tests::criterion_mean_ns(&out, "cache", &format!("direct-{op}")) / 1000.0;
        let ovation =
            ovation_tests::criterion_mean_ns(&out, "cache", &format!("ovation-{op}")) / 1000.0;
        println!("cache::{op}: ovation {ovation:.2} µs, redis crate {direct:.2} µs");
        Figure::new(
            "Cache",
            format!(
                "{} through a keyspace, one client, round trip",
                op.to_uppercase()
            ),
            ovation,
            "µs",
        )
        .against("the same command with the redis crate directly", direct)
        .target(Target::RatioAtMost(1.25))
        .record();
    }
}
