//! What a test's isolation costs: one `#[ovation::test]` database cloned from its migrated
//! template, against creating a fresh database and running its migrations, for each database
//! the shop declares; and a whole `TestEnv::new()` (every declared database). Measured in the
//! same run on the managed Postgres the tests use, alternating, median of the repetitions.
//!
//! `RUST_LOG=warn cargo bench -p ovation-tests --bench provision` (the migrations log at INFO).
//! Not a test: it asserts nothing about speed.

use std::time::{Duration, Instant};

use ovation::testing::TestEnv;
use ovation_tests::report::{Figure, Target};

const REPETITIONS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // The shop's databases are declared by linking it.
    use shop_app as _;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = ovation::testing::test_server().await.unwrap();
        // Warm: the templates exist, as they do after a suite's first test.
        TestEnv::new().await.unwrap().close().await;
        // What the benches before this one wrote is written back now, not during the clones:
        // a clone is a copy of the template through the WAL, and a checkpoint that comes due
        // in the middle of one (the Pub/Sub bench leaves plenty to write) would be measured
        // as provisioning.
        {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect_with(&server.options("postgres"))
                .await
                .unwrap();
            sqlx::query("CHECKPOINT").execute(&mut admin).await.unwrap();
            admin.close().await.unwrap();
        }
        let defs: Vec<_> = ovation::sqldb::declared()
            .into_iter()
            .filter(|d| d.name != "ovation_pubsub")
            .collect();
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        println!(
            "provisioning one test database, {REPETITIONS} repetitions, median; {cores} cores, \
             Postgres on the same machine"
        );
        println!(
            "{:<16} {:>11} {:>16} {:>8}",
            "database", "clone ms", "create+migrate ms", "ratio"
        );
        for (i, def) in defs.iter().enumerate() {
            let (mut cloned, mut fresh) = (Vec::new(), Vec::new());
            for r in 0..REPETITIONS {
                let name = format!("ovb_{}_{i}_{r}", std::process::id());
                let started = Instant::now();
                server.clone_from_template(def, &name).await.unwrap();
                cloned.push(started.elapsed());
                server.drop_database(&name).await.unwrap();

                let started = Instant::now();
                server.create_database(&name).await.unwrap();
                server.migrate(&name, def).await.unwrap();
                fresh.push(started.elapsed());
                server.drop_database(&name).await.unwrap();
            }
            let (c, f) = (median(cloned), median(fresh));
            println!(
                "{:<16} {:>11.1} {:>16.1} {:>8.2}",
                def.name,
                ms(c),
                ms(f),
                ms(c) / ms(f)
            );
            Figure::new(
                "Test isolation",
                format!("`{}`: a test database cloned from its template", def.name),
                ms(c),
                "ms",
            )
            .against("created and migrated", ms(f))
            .target(Target::AtMost(100.0))
            .record();
        }
        // Back to back: the spare copies a test leaves for the next are not ready yet, and
        // every database is copied from its template.
        let mut back_to_back = Vec::new();
        for _ in 0..REPETITIONS {
            let started = Instant::now();
            let env = TestEnv::new().await.unwrap();
            back_to_back.push(started.elapsed());
            env.close().await;
        }
        let back_to_back = ms(median(back_to_back));
        // As in a suite, where a test runs for a while before the next starts: its spares are
        // ready, and taken by renaming them.
        let mut whole = Vec::new();
        for _ in 0..REPETITIONS {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let started = Instant::now();
            let env = TestEnv::new().await.unwrap();
            whole.push(started.elapsed());
            env.close().await;
        }
        let whole = ms(median(whole));
        // The services' databases, Pub/Sub's, and the cron runs' when the app has a job.
        let databases = defs.len() + 1 + usize::from(!ovation::cron::jobs().is_empty());
        println!(
            "TestEnv::new() (all {databases} databases, the framework's included): {whole:.1} ms \
             after a test's time, {back_to_back:.1} ms back to back (no spare ready)"
        );
        Figure::new(
            "Test isolation",
            format!("a whole `#[ovation::test]` environment ({databases} databases)"),
            whole,
            "ms",
        )
        .against(
            "the same with no spare copy ready (environments back to back)",
            back_to_back,
        )
        .target(Target::AtMost(100.0))
        .record();
    });
}
