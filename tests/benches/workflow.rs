//! What a workflow adds to the calls it makes: a run of five steps, each a typed call to an
//! endpoint that updates one row, against the same five calls made by a plain function, in
//! the same run and on the same Postgres. The difference is the run's own rows (one insert,
//! one update at the end) and one checkpoint upsert per step, the last one in the statement
//! of that update.
//!
//! `cargo bench -p ovation-tests --bench workflow`. Not a test: it asserts nothing about speed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ovation::testing::{Hosting, TestEnv};
use ovation_tests::report::{Figure, Target};

const STEPS: u64 = 5;

mod tally {
    use ovation::prelude::*;

    static DB: Database = ovation::database!("tally", migrations = "./tally_migrations");

    /// Adds one to counter `id`: one UPDATE.
    #[api(method = "POST", path = "/tally/:id")]
    pub async fn bump(id: i32) -> Result<(), Error> {
        ovation::sqlx::query("UPDATE tallies SET n = n + 1 WHERE id = $1")
            .bind(id)
            .execute(DB.pool())
            .await?;
        Ok(())
    }

    /// Five bumps, each a step.
    #[ovation::workflow]
    pub async fn five_bumps(id: i32) -> Result<(), Error> {
        for _ in 0..super::STEPS {
            bump(id).await?;
        }
        Ok(())
    }

    /// The same five bumps, no workflow.
    pub async fn five_bumps_plain(id: i32) -> Result<(), Error> {
        for _ in 0..super::STEPS {
            bump(id).await?;
        }
        Ok(())
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
    // Its pools connect lazily, which needs the tokio runtime.
    let runtime = rt.block_on(async { env.runtime(Hosting::all()) }).unwrap();

    let out = ovation_tests::criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&out)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group("workflow");
    group.bench_function("plain", |b| {
        b.iter_custom(|iters| {
            rt.block_on(env.run_in(runtime, async move {
                let started = Instant::now();
                for _ in 0..iters {
                    tally::five_bumps_plain(black_box(1)).await.unwrap();
                }
                started.elapsed()
            }))
        });
    });
    group.bench_function("workflow", |b| {
        b.iter_custom(|iters| {
            rt.block_on(env.run_in(runtime, async move {
                let started = Instant::now();
                for _ in 0..iters {
                    tally::five_bumps.run(black_box(1)).await.unwrap();
                }
                started.elapsed()
            }))
        });
    });
    group.finish();
    c.final_summary();
    rt.block_on(env.close());

    let plain = ovation_tests::criterion_mean_ns(&out, "workflow", "plain") / 1000.0;
    let workflow = ovation_tests::criterion_mean_ns(&out, "workflow", "workflow") / 1000.0;
    let per_step = (workflow - plain) / STEPS as f64;
    println!(
        "workflow: {workflow:.0} µs a run of {STEPS} steps, plain {plain:.0} µs; {per_step:.0} µs added per step"
    );
    Figure::new(
        "Workflows",
        format!("a run of {STEPS} steps, each a call updating one row"),
        workflow,
        "µs",
    )
    .against(format!("the same {STEPS} calls without a workflow"), plain)
    .target(Target::RatioAtMost(2.5))
    .record();
    Figure::new(
        "Workflows",
        "one step: its call, plus its checkpoint and its share of the run's rows",
        plain / STEPS as f64 + per_step,
        "µs",
    )
    .against("the call alone", plain / STEPS as f64)
    .target(Target::RatioAtMost(2.5))
    .record();
}
