//! Where cron runs are claimed and recorded: the framework's `ovation_cron` database. The
//! scheduler of each process, and one run from its claim to its record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tracing::Instrument as _;

use super::{CronJobDef, jobs};
use crate::error::Error;
use crate::runtime::{self, Runtime};
use crate::sqldb::{DatabaseDef, Migration};

/// The framework's cron database.
pub(crate) static DATABASE: DatabaseDef = DatabaseDef {
    name: "ovation_cron",
    module: "ovation::cron",
    migrations: &MIGRATIONS,
    folder: None,
    from_folder: false,
};

static MIGRATIONS: [Migration; 1] = [Migration {
    version: 1,
    file: "1_cron.up.sql",
    sql: "
    CREATE TABLE ovation_cron_runs (
        id BIGSERIAL PRIMARY KEY,
        job TEXT NOT NULL,
        -- The tick a scheduled run is for; NULL for a run started by hand.
        tick TIMESTAMPTZ,
        status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ,
        error TEXT,
        trace_id TEXT,
        UNIQUE (job, tick)
    );
    CREATE INDEX ovation_cron_runs_job ON ovation_cron_runs (job, id DESC);
    CREATE TABLE ovation_cron_jobs (
        job TEXT PRIMARY KEY,
        runs BIGINT NOT NULL DEFAULT 0
    );
",
}];

/// How often a running job's process says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A run without a heartbeat for this long is taken for dead: its process stopped.
const PRESUMED_DEAD_SECS: i64 = 10;
/// Runs kept per job (older ones are deleted; the count goes on).
const KEPT_RUNS: i64 = 200;

/// The cron database of a runtime.
#[derive(Debug)]
pub(crate) struct CronStore {
    pool: PgPool,
    /// Whether this runtime runs jobs on their schedule (off in tests unless asked).
    pub(crate) scheduled: bool,
}

impl CronStore {
    pub(crate) fn new(pool: PgPool, scheduled: bool) -> CronStore {
        CronStore { pool, scheduled }
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// Why a run is made.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Tick(DateTime<Utc>),
    Manual,
}

/// Claims a run of `job`: for `tick`, or by hand. `None` if another process has the tick, or the
/// job runs already (and is alive). One transaction, serialised per job by an advisory lock, so
/// a tick and a "Run now" cannot both start.
async fn claim(pool: &PgPool, job: &str, trigger: Trigger) -> Result<Option<i64>, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ovation-cron:' || $1))")
        .bind(job)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE ovation_cron_runs
            SET status = 'failed', finished_at = now(),
                error = 'the process running it stopped (no heartbeat)'
          WHERE job = $1 AND status = 'running'
            AND heartbeat_at < now() - make_interval(secs => $2)",
    )
    .bind(job)
    .bind(PRESUMED_DEAD_SECS as f64)
    .execute(&mut *tx)
    .await?;
    let tick = match trigger {
        Trigger::Tick(at) => Some(at),
        Trigger::Manual => None,
    };
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO ovation_cron_runs (job, tick, status)
         SELECT $1, $2, 'running'
          WHERE NOT EXISTS (
                SELECT 1 FROM ovation_cron_runs WHERE job = $1 AND status = 'running')
         ON CONFLICT (job, tick) DO NOTHING
         RETURNING id",
    )
    .bind(job)
    .bind(tick)
    .fetch_optional(&mut *tx)
    .await?;
    if id.is_some() {
        sqlx::query(
            "INSERT INTO ovation_cron_jobs (job, runs) VALUES ($1, 1)
             ON CONFLICT (job) DO UPDATE SET runs = ovation_cron_jobs.runs + 1",
        )
        .bind(job)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// Runs `job` as run `id` in `rt`: a trace root, with heartbeats, its outcome recorded.
async fn execute(
    rt: &'static Runtime,
    pool: &PgPool,
    job: &'static CronJobDef,
    id: i64,
) -> Result<(), Error> {
    let service = job.service();
    let started = std::time::Instant::now();
    let trace = crate::telemetry::request_span(None, || {
        tracing::info_span!(
            "cron",
            otel.name = %format!("cron {}", job.name),
            otel.kind = "internal",
            otel.status_code = tracing::field::Empty,
            service,
            cron.job = job.name,
            cron.run = id,
            error.code = tracing::field::Empty,
        )
    });
    let span = trace.span().clone();
    let work = trace.run(async move {
        if let Some(trace_id) = crate::telemetry::current_traceparent()
            .filter(|tp| tp.ends_with("-01"))
            .and_then(|tp| tp.get(3..35).map(str::to_owned))
        {
            let _ = sqlx::query("UPDATE ovation_cron_runs SET trace_id = $2 WHERE id = $1")
                .bind(id)
                .bind(trace_id)
                .execute(pool)
                .await;
        }
        // A task of its own: a panic is the run's failure, not the scheduler's end.
        let handle = tokio::spawn(
            runtime::scope(
                rt,
                Some(service),
                crate::auth::data::scope(None, (job.run)()),
            )
            .in_current_span(),
        );
        let abort = handle.abort_handle();
        let _abort_on_drop = AbortOnDrop(abort);
        let mut handle = std::pin::pin!(handle);
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.tick().await;
        loop {
            tokio::select! {
                joined = &mut handle => {
                    break match joined {
                        Ok(result) => result,
                        Err(e) if e.is_panic() => Err(Error::internal(format!(
                            "cron job `{}` panicked: {}",
                            job.name,
                            crate::error::panic_message(&*e.into_panic())
                        ))),
                        Err(_) => Err(Error::internal("the run was cancelled")),
                    };
                }
                _ = beat.tick() => {
                    let _ = sqlx::query(
                        "UPDATE ovation_cron_runs SET heartbeat_at = now() WHERE id = $1",
                    )
                    .bind(id)
                    .execute(pool)
                    .await;
                }
            }
        }
    });
    let result = work.await;
    rt.metrics
        .of(crate::metrics::Kind::CronRun, service, job.name)
        .record(started.elapsed(), result.as_ref().err().map(Error::code));
    if let Err(e) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("error.code", e.code().as_str());
        tracing::error!(job = job.name, service, code = %e.code(), error = %e.message(), "cron job failed");
    }
    let (status, error) = match &result {
        Ok(()) => ("succeeded", None),
        Err(e) => ("failed", Some(format!("{}: {}", e.code(), e.message()))),
    };
    record(pool, job.name, id, status, error).await;
    result
}

/// Records a run's outcome (retried a few times: a lost record would leave the run "running"
/// until its heartbeat is found stale) and prunes the job's old runs.
async fn record(pool: &PgPool, job: &str, id: i64, status: &str, error: Option<String>) {
    for attempt in 0..5u32 {
        let done = sqlx::query(
            "UPDATE ovation_cron_runs SET status = $2, error = $3, finished_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(&error)
        .execute(pool)
        .await;
        match done {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(job, "could not record a cron run ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
            }
        }
    }
    let _ = sqlx::query(
        "DELETE FROM ovation_cron_runs
          WHERE job = $1 AND status <> 'running'
            AND id < (SELECT id FROM ovation_cron_runs WHERE job = $1
                       ORDER BY id DESC OFFSET $2 LIMIT 1)",
    )
    .bind(job)
    .bind(KEPT_RUNS)
    .execute(pool)
    .await;
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `job` now, by hand ([`super::run_now`], the dashboard): recorded when the runtime has
/// the cron database, else simply run.
pub(crate) async fn run_manually(
    rt: &'static Runtime,
    job: &'static CronJobDef,
) -> Result<(), Error> {
    let Some(store) = rt.cron else {
        let started = std::time::Instant::now();
        let result = runtime::scope(rt, Some(job.service()), (job.run)()).await;
        rt.metrics
            .of(crate::metrics::Kind::CronRun, job.service(), job.name)
            .record(started.elapsed(), result.as_ref().err().map(Error::code));
        return result;
    };
    let id = claim(&store.pool, job.name, Trigger::Manual)
        .await?
        .ok_or_else(|| Error::aborted(format!("cron job `{}` is running already", job.name)))?;
    execute(rt, &store.pool, job, id).await
}

/// Starts the scheduler of every job of the services `rt` hosts; returns the tasks' handles,
/// aborted at shutdown.
pub(crate) fn start(rt: &'static Runtime) -> Vec<tokio::task::AbortHandle> {
    // Listed in the metrics at zero until they first run, as endpoints are.
    for job in jobs().into_iter().filter(|job| rt.hosts(job.service())) {
        rt.metrics
            .of(crate::metrics::Kind::CronRun, job.service(), job.name);
    }
    let Some(store) = rt.cron.filter(|s| s.scheduled) else {
        return Vec::new();
    };
    jobs()
        .into_iter()
        .filter(|job| rt.hosts(job.service()))
        .map(|job| tokio::spawn(schedule(rt, &store.pool, job)).abort_handle())
        .collect()
}

/// One job's scheduler in one process: at each tick, try to claim it and run it.
async fn schedule(rt: &'static Runtime, pool: &'static PgPool, job: &'static CronJobDef) {
    // A tick missed while nothing ran the service is run once, now; a job that never ran
    // waits for its first tick.
    let mut next = match last_tick(pool, job.name).await {
        Some(last) => {
            let due = job.latest_at_or_before(Utc::now());
            if due > last { due } else { job.next_after(due) }
        }
        None => job.next_after(Utc::now()),
    };
    loop {
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        match claim(pool, job.name, Trigger::Tick(next)).await {
            Ok(Some(id)) => {
                // Runs in its own task, so the next tick is looked at on time (and skipped,
                // since the job still runs, if this run lasts past it).
                tokio::spawn(async move {
                    let _ = execute(rt, pool, job, id).await;
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(job = job.name, "could not claim a cron tick: {e}"),
        }
        next = job
            .schedule
            .next_after(next.max(job.latest_at_or_before(Utc::now())));
    }
}

/// The latest tick any process ran (or started) of `job`.
async fn last_tick(pool: &PgPool, job: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT max(tick) FROM ovation_cron_runs WHERE job = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .ok()
        .flatten()
}

/// One run, as the dashboard shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Run {
    pub id: i64,
    pub tick: Option<DateTime<Utc>>,
    pub manual: bool,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub trace_id: Option<String>,
}

/// A job with its schedule, next tick and recent runs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobState {
    pub name: &'static str,
    pub service: &'static str,
    pub schedule: &'static str,
    pub next_run: DateTime<Utc>,
    pub runs: i64,
    pub last_run: Option<Run>,
    pub recent_runs: Vec<Run>,
}

/// Every job's state, from the runtime's cron database.
pub(crate) async fn state(rt: &Runtime) -> Result<Vec<JobState>, Error> {
    let mut out = Vec::new();
    for job in jobs() {
        let (runs, recent) = match rt.cron {
            Some(store) => {
                let runs: Option<i64> =
                    sqlx::query_scalar("SELECT runs FROM ovation_cron_jobs WHERE job = $1")
                        .bind(job.name)
                        .fetch_optional(&store.pool)
                        .await?;
                let recent: Vec<Run> = sqlx::query_as(
                    "SELECT id, tick, tick IS NULL AS manual, status, started_at, finished_at,
                            (extract(epoch FROM finished_at - started_at) * 1000)::bigint
                                AS duration_ms,
                            error, trace_id
                       FROM ovation_cron_runs WHERE job = $1 ORDER BY id DESC LIMIT 20",
                )
                .bind(job.name)
                .fetch_all(&store.pool)
                .await?;
                (runs.unwrap_or(0), recent)
            }
            None => (0, Vec::new()),
        };
        let mut recent = recent.into_iter();
        let last_run = recent.next();
        out.push(JobState {
            name: job.name,
            service: job.service(),
            schedule: job.schedule_text,
            next_run: job.next_after(Utc::now()),
            runs,
            last_run,
            recent_runs: recent.collect(),
        });
    }
    Ok(out)
}

/// Starts `job` by hand in the background (the dashboard's "Run now"): claimed before this
/// returns, so a second click while it runs is `aborted`.
pub(crate) async fn start_manually(
    rt: &'static Runtime,
    job: &'static CronJobDef,
) -> Result<i64, Error> {
    let store = rt.cron.ok_or_else(|| {
        Error::failed_precondition("this process keeps no cron runs (it hosts no service)")
    })?;
    let id = claim(&store.pool, job.name, Trigger::Manual)
        .await?
        .ok_or_else(|| Error::aborted(format!("cron job `{}` is running already", job.name)))?;
    tokio::spawn(async move {
        let _ = execute(rt, &store.pool, job, id).await;
    });
    Ok(id)
}
