//! Cron jobs against a real Postgres: two processes hosting a service run a one-second job
//! exactly once per tick; a missed tick is run once on start; a job that never ran waits;
//! "Run now", failures and panics are recorded; a run never overlaps another.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ovation::ErrCode;
use ovation::sqlx::{self, PgPool};
use ovation::testing::{Hosting, TestEnv};

mod beats {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use ovation::prelude::*;

    pub static BEATS: AtomicU64 = AtomicU64::new(0);
    pub static HOURLY: AtomicU64 = AtomicU64::new(0);
    pub static NEVER_RAN: AtomicU64 = AtomicU64::new(0);

    async fn beat() -> Result<(), Error> {
        BEATS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    ovation::cron!("beat", every = "1s", run = beat);

    async fn hourly() -> Result<(), Error> {
        HOURLY.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    ovation::cron!("hourly", every = "1h", run = hourly);

    async fn yearly() -> Result<(), Error> {
        NEVER_RAN.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    ovation::cron!("new-year", schedule = "0 0 1 1 *", run = yearly);

    async fn failing() -> Result<(), Error> {
        Err(Error::unavailable("the mail server is down"))
    }
    ovation::cron!("failing", schedule = "@yearly", run = failing);

    async fn panicking() -> Result<(), Error> {
        panic!("a bug in the job")
    }
    ovation::cron!("panicking", schedule = "@yearly", run = panicking);

    async fn morning() -> Result<(), Error> {
        Ok(())
    }
    ovation::cron!(
        "paris-morning",
        schedule = "0 9 * * *",
        tz = "Europe/Paris",
        run = morning
    );

    async fn slow() -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(())
    }
    ovation::cron!("slow", schedule = "@yearly", run = slow);
}

async fn cron_pool(env: &TestEnv) -> PgPool {
    let server = ovation::testing::test_server().await.unwrap();
    let db = env.database_name("ovation_cron").unwrap();
    PgPool::connect_with(server.options(db)).await.unwrap()
}

async fn runs(pool: &PgPool, job: &str) -> Vec<(Option<DateTime<Utc>>, String, Option<String>)> {
    sqlx::query_as("SELECT tick, status, error FROM ovation_cron_runs WHERE job = $1 ORDER BY id")
        .bind(job)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Two processes hosting `beats` for 10 s: every tick ran exactly once, no tick was skipped.
#[tokio::test]
async fn two_processes_run_a_job_once_per_tick() {
    let env = TestEnv::new().await.unwrap();
    let pool = cron_pool(&env).await;
    let before = beats::BEATS.load(Ordering::SeqCst);
    let a = env
        .serve(Hosting::only(["beats"]).cron_jobs(true))
        .await
        .unwrap();
    let b = env
        .serve(Hosting::only(["beats"]).cron_jobs(true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.shutdown().await;
    b.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ran = beats::BEATS.load(Ordering::SeqCst) - before;
    let rows = runs(&pool, "beat").await;
    let ticks: Vec<i64> = rows
        .iter()
        .map(|(tick, status, _)| {
            assert_eq!(status, "succeeded");
            tick.expect("a scheduled run has its tick").timestamp()
        })
        .collect();
    // A job that never ran waits for its first tick: 9 or 10 ticks in 10 s.
    assert!((9..=11).contains(&ticks.len()), "{ticks:?}");
    // Each tick once (the table would refuse a second), one after the other without a gap...
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "{ticks:?}");
    }
    // ...and each run recorded ran the job exactly once.
    assert_eq!(ran, ticks.len() as u64);
    env.close().await;
}

/// Nothing ran the service at the last tick: on start the tick is run once (not once per
/// missed tick), and a job that never ran does not run until its first tick.
#[tokio::test]
async fn a_missed_tick_runs_once_on_start() {
    let env = TestEnv::new().await.unwrap();
    let pool = cron_pool(&env).await;
    // The job last ran three hours ago: three ticks were missed.
    let last = ovation::cron::job("hourly")
        .unwrap()
        .schedule
        .latest_at_or_before(Utc::now())
        - chrono::Duration::hours(3);
    sqlx::query(
        "INSERT INTO ovation_cron_runs (job, tick, status, finished_at)
         VALUES ('hourly', $1, 'succeeded', $1)",
    )
    .bind(last)
    .execute(&pool)
    .await
    .unwrap();
    let (hourly, never) = (
        beats::HOURLY.load(Ordering::SeqCst),
        beats::NEVER_RAN.load(Ordering::SeqCst),
    );
    let server = env
        .serve(Hosting::only(["beats"]).cron_jobs(true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.shutdown().await;
    assert_eq!(beats::HOURLY.load(Ordering::SeqCst) - hourly, 1);
    let rows = runs(&pool, "hourly").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].0.unwrap(), last + chrono::Duration::hours(3));
    assert_eq!(beats::NEVER_RAN.load(Ordering::SeqCst), never);
    assert!(runs(&pool, "new-year").await.is_empty());
    env.close().await;
}

/// Jobs do not run on their schedule in a test unless it asks; `run_now` runs one and returns
/// its outcome, which is recorded: success, an error, a panic.
#[ovation::test]
async fn run_now_runs_a_job_and_records_its_outcome() {
    let before = beats::HOURLY.load(Ordering::SeqCst);
    ovation::cron::run_now("hourly").await.unwrap();
    assert_eq!(beats::HOURLY.load(Ordering::SeqCst), before + 1);

    let err = ovation::cron::run_now("failing").await.unwrap_err();
    assert_eq!(err.code(), ErrCode::Unavailable);
    let err = ovation::cron::run_now("panicking").await.unwrap_err();
    assert_eq!(err.code(), ErrCode::Internal);
    assert!(err.message().contains("a bug in the job"), "{err}");
    let err = ovation::cron::run_now("no-such-job").await.unwrap_err();
    assert_eq!(err.code(), ErrCode::NotFound);
}

#[tokio::test]
async fn failures_are_recorded_with_their_error() {
    let env = TestEnv::new().await.unwrap();
    let pool = cron_pool(&env).await;
    let _ = env.run(ovation::cron::run_now("failing")).await.unwrap();
    let _ = env.run(ovation::cron::run_now("panicking")).await.unwrap();
    let failing = runs(&pool, "failing").await;
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].0, None, "a run by hand has no tick");
    assert_eq!(failing[0].1, "failed");
    assert_eq!(
        failing[0].2.as_deref(),
        Some("unavailable: the mail server is down")
    );
    let panicking = runs(&pool, "panicking").await;
    assert_eq!(panicking[0].1, "failed");
    assert!(panicking[0].2.as_deref().unwrap().contains("panicked"));
    env.close().await;
}

/// A job runs once at a time: "Run now" while it runs is `aborted`, and so is its tick.
#[tokio::test]
async fn a_running_job_is_not_started_again() {
    let env = TestEnv::new().await.unwrap();
    let rt = env.runtime(Hosting::all()).unwrap();
    let (first, second) = tokio::join!(env.run_in(rt, ovation::cron::run_now("slow")), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        env.run_in(rt, ovation::cron::run_now("slow")).await
    });
    first.unwrap();
    let err = second.unwrap_err();
    assert_eq!(err.code(), ErrCode::Aborted, "{err}");
    assert!(err.message().contains("running already"), "{err}");
    // Finished: it can run again.
    env.run_in(rt, ovation::cron::run_now("slow"))
        .await
        .unwrap();
    let pool = cron_pool(&env).await;
    assert_eq!(runs(&pool, "slow").await.len(), 2);
    env.close().await;
}

/// The schedule, next run and last runs, as `/__ovation/cron` gives them to the dashboard.
#[tokio::test]
async fn the_admin_endpoint_lists_jobs_for_signed_requests_only() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    env.run(ovation::cron::run_now("hourly"))
        .await
        .unwrap()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/__ovation/cron", server.url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    let signature = env.service_auth_key().sign(
        ovation::tooling::Signed {
            method: "GET",
            path: "/__ovation/cron",
            query: "",
            body: b"",
        },
        "dashboard",
    );
    let state: serde_json::Value = http
        .get(&url)
        .header(ovation::tooling::HEADER, signature)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hourly = state["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "hourly")
        .unwrap();
    assert_eq!(hourly["service"], "beats");
    assert_eq!(hourly["schedule"], "every 1h");
    assert_eq!(hourly["runs"], 1);
    assert_eq!(hourly["lastRun"]["status"], "succeeded");
    assert_eq!(hourly["lastRun"]["manual"], true);
    let next: DateTime<Utc> = hourly["nextRun"].as_str().unwrap().parse().unwrap();
    assert!(next > Utc::now() && next <= Utc::now() + chrono::Duration::hours(1));
    // A schedule in a time zone: 09:00 in Paris is 08:00 UTC in winter, 07:00 in summer.
    let morning = state["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "paris-morning")
        .unwrap();
    assert_eq!(morning["schedule"], "0 9 * * * (Europe/Paris)");
    let next: DateTime<Utc> = morning["nextRun"].as_str().unwrap().parse().unwrap();
    assert!(
        next.format("%H:%M").to_string() == "08:00" || next.format("%H:%M").to_string() == "07:00",
        "{next}"
    );

    // "Run now": nothing without a signature, nor with one made for another job, nor twice
    // with the same one; a valid one starts the job.
    let run_url = |job: &str| format!("{}/__ovation/cron/{job}/run", server.url());
    let sign = |job: &str| {
        env.service_auth_key().sign(
            ovation::tooling::Signed {
                method: "POST",
                path: &format!("/__ovation/cron/{job}/run"),
                query: "",
                body: b"",
            },
            "dashboard",
        )
    };
    let post = |url: String, signature: Option<String>| {
        let mut request = http.post(url);
        if let Some(s) = signature {
            request = request.header(ovation::tooling::HEADER, s);
        }
        request.send()
    };
    let before = beats::HOURLY.load(Ordering::SeqCst);
    assert_eq!(post(run_url("hourly"), None).await.unwrap().status(), 404);
    let for_another = sign("new-year");
    assert_eq!(
        post(run_url("hourly"), Some(for_another))
            .await
            .unwrap()
            .status(),
        404
    );
    let signature = sign("hourly");
    let started = post(run_url("hourly"), Some(signature.clone()))
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    assert_eq!(
        post(run_url("hourly"), Some(signature))
            .await
            .unwrap()
            .status(),
        404,
        "a replayed signature"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while beats::HOURLY.load(Ordering::SeqCst) == before {
        assert!(std::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
    env.close().await;
}
