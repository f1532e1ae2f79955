//! A run's life in this process: started (awaited or not), waited for, resumed after its
//! owner died, retried from its failed step; and the background work that resumes runs.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use super::engine::{RunCtx, drive};
use super::status::RunStatus;
use super::store::{StepRecord, StepRecordRow, WorkflowStore, error_from};
use super::{WorkflowDef, workflows};
use crate::error::Error;
use crate::runtime::{self, Runtime};

/// How long a run's owner may go without renewing its lease before others take the run over
/// (only matters for an owner alive but stuck: a dead one's runs are taken within a second).
const LEASE: Duration = Duration::from_secs(30);
/// How often the owner renews its leases.
const RENEW: Duration = Duration::from_secs(5);
/// How often each process looks for runs to resume.
const POLL: Duration = Duration::from_secs(1);
/// Finished runs are deleted this long after they ended.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const CLAIM_BATCH: i64 = 20;

/// The store of the current runtime, which must host the workflow's service.
fn here(def: &WorkflowDef) -> Result<(&'static Runtime, &'static WorkflowStore), Error> {
    let rt = runtime::current()?;
    let store = store_of(rt)?;
    let service = def.service();
    if !rt.hosts(service) {
        return Err(Error::internal(format!(
            "workflow `{}` belongs to service `{service}`, which this process does not host: \
             start it from the code of `{service}` (an endpoint of it)",
            def.name
        )));
    }
    Ok((rt, store))
}

fn store_of(rt: &Runtime) -> Result<&'static WorkflowStore, Error> {
    rt.workflows.ok_or_else(|| {
        Error::internal("workflows are not set up in this process: it hosts no service")
    })
}

fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "{id:?} is not a workflow run id: use 1 to 200 letters, digits and `-_.:@`"
        )))
    }
}

/// Records a new run owned by this process; `false` if the id exists.
async fn insert(
    store: &WorkflowStore,
    def: &WorkflowDef,
    id: &str,
    input: &serde_json::Value,
    trace_id: Option<&str>,
) -> Result<bool, Error> {
    let user = crate::auth::current();
    let inserted = sqlx::query(
        "INSERT INTO ovation_workflow_runs
             (id, workflow, service, status, input, auth, owner, lease_until, trace_id)
         VALUES ($1, $2, $3, 'running', $4, $5, $6, now() + make_interval(secs => $7), $8)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(def.name)
    .bind(def.service())
    .bind(input)
    .bind(user.as_ref().map(|u| u.json()))
    .bind(store.owner)
    .bind(LEASE.as_secs_f64())
    .bind(trace_id)
    .execute(&store.pool)
    .instrument(tracing::Span::none())
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A run's trace: a child of the caller's when started, a root of its own when resumed.
fn run_trace(def: &WorkflowDef, id: &str, started: bool) -> crate::telemetry::RequestTrace {
    let parent = started
        .then(crate::telemetry::current_traceparent)
        .flatten();
    crate::telemetry::request_span(parent.as_deref(), || {
        tracing::info_span!(
            "workflow",
            otel.name = %format!("workflow {}", def.name),
            otel.kind = "internal",
            otel.status_code = tracing::field::Empty,
            service = def.service(),
            workflow.name = def.name,
            workflow.run = %id,
            workflow.resumed = !started,
            error.code = tracing::field::Empty,
        )
    })
}

fn trace_id_in(trace: &crate::telemetry::RequestTrace) -> Option<String> {
    trace
        .span()
        .in_scope(crate::telemetry::current_traceparent)
        .filter(|tp| tp.ends_with("-01"))
        .and_then(|tp| tp.get(3..35).map(str::to_owned))
}

/// Drives run `id` in a task of its own, registered as local.
#[allow(clippy::too_many_arguments)]
fn spawn_run(
    rt: &'static Runtime,
    store: &'static WorkflowStore,
    def: &'static WorkflowDef,
    id: String,
    input: serde_json::Value,
    user: Option<crate::auth::Authenticated>,
    records: Vec<StepRecord>,
    recorded_error: Option<Error>,
    trace: crate::telemetry::RequestTrace,
) -> tokio::task::JoinHandle<Result<serde_json::Value, Error>> {
    let compensating = recorded_error.is_some();
    let run = Arc::new(RunCtx::new(id.clone(), def, store, records, compensating));
    let span = trace.span().clone();
    let work = trace.run(async move {
        let result = match (def.run)(input) {
            Ok(body) => drive(run.clone(), body, recorded_error).await,
            Err(e) => {
                let _ = store.fail(&run, &e).await;
                Err(e)
            }
        };
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("error.code", e.code().as_str());
        }
        result
    });
    let work = runtime::scope(rt, Some(def.service()), crate::auth::scope(user, work));
    let local_id = id.clone();
    let stats = rt
        .metrics
        .of(crate::metrics::Kind::WorkflowRun, def.service(), def.name);
    let handle = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = work.await;
        stats.record(started.elapsed(), result.as_ref().err().map(Error::code));
        store
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&local_id);
        result
    });
    if let Some(slot) = store
        .local
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&id)
    {
        *slot = Some(handle.abort_handle());
    }
    handle
}

fn reserve_local(store: &WorkflowStore, id: &str) -> bool {
    let mut local = store.local.lock().unwrap_or_else(|p| p.into_inner());
    if local.contains_key(id) {
        return false;
    }
    local.insert(id.to_owned(), None);
    true
}

fn unreserve_local(store: &WorkflowStore, id: &str) {
    store
        .local
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
}

/// Starts run `id` here if it does not exist; its task if it was started.
async fn begin(
    def: &'static WorkflowDef,
    id: &str,
    input: serde_json::Value,
) -> Result<Option<tokio::task::JoinHandle<Result<serde_json::Value, Error>>>, Error> {
    check_id(id)?;
    let (rt, store) = here(def)?;
    store.until_live().await?;
    if !reserve_local(store, id) {
        return Ok(None);
    }
    let trace = run_trace(def, id, true);
    let trace_id = trace_id_in(&trace);
    match insert(store, def, id, &input, trace_id.as_deref()).await {
        Ok(true) => {}
        Ok(false) => {
            unreserve_local(store, id);
            return Ok(None);
        }
        Err(e) => {
            unreserve_local(store, id);
            return Err(e);
        }
    }
    let user = crate::auth::current();
    Ok(Some(spawn_run(
        rt,
        store,
        def,
        id.to_owned(),
        input,
        user,
        Vec::new(),
        None,
        trace,
    )))
}

pub(super) async fn run(
    def: &'static WorkflowDef,
    id: &str,
    input: serde_json::Value,
) -> Result<serde_json::Value, Error> {
    match begin(def, id, input).await? {
        Some(task) => task
            .await
            .unwrap_or_else(|_| Err(Error::unavailable("the workflow's task stopped"))),
        None => wait(def, id).await,
    }
}

pub(super) async fn start(
    def: &'static WorkflowDef,
    id: &str,
    input: serde_json::Value,
) -> Result<(), Error> {
    begin(def, id, input).await.map(drop)
}

/// Waits for run `id` of `def` to end.
pub(super) async fn wait(def: &WorkflowDef, id: &str) -> Result<serde_json::Value, Error> {
    let rt = runtime::current()?;
    let store = store_of(rt)?;
    let mut pause = Duration::from_millis(10);
    loop {
        let row: Option<(
            String,
            String,
            Option<serde_json::Value>,
            Option<serde_json::Value>,
        )> = sqlx::query_as(
            "SELECT workflow, status, output, error FROM ovation_workflow_runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
        let Some((workflow, status, output, error)) = row else {
            // Being started here: its row is not committed yet.
            if store.is_local(id) {
                tokio::time::sleep(pause).await;
                continue;
            }
            return Err(Error::not_found(format!("no workflow run `{id}`")));
        };
        if workflow != def.name {
            return Err(Error::failed_precondition(format!(
                "run `{id}` is a run of workflow `{workflow}`, not `{}`",
                def.name
            )));
        }
        match status.as_str() {
            "completed" => return Ok(output.unwrap_or(serde_json::Value::Null)),
            "failed" => return Err(error_from(error)),
            _ => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

pub(super) async fn status(id: &str) -> Result<RunStatus, Error> {
    let store = store_of(runtime::current()?)?;
    super::status::status_in(store, id).await
}

pub(super) async fn recover_now() -> Result<usize, Error> {
    let rt = runtime::current()?;
    let store = store_of(rt)?;
    let tasks = claim_and_spawn(rt, store).await?;
    let n = tasks.len();
    for task in tasks {
        let _ = task.await;
    }
    Ok(n)
}

pub(super) async fn retry(id: &str) -> Result<(), Error> {
    let rt = runtime::current()?;
    retry_in(rt, id).await
}

/// Makes failed run `id` resumable from its failed step (see [`super::retry`]).
pub(crate) async fn retry_in(rt: &'static Runtime, id: &str) -> Result<(), Error> {
    let store = store_of(rt)?;
    let mut tx = store.pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM ovation_workflow_runs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match status.as_deref() {
        None => return Err(Error::not_found(format!("no workflow run `{id}`"))),
        Some("failed") => {}
        Some(other) => {
            return Err(Error::failed_precondition(format!(
                "run `{id}` is {other}: only a failed run can be retried"
            )));
        }
    }
    let undone: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ovation_workflow_steps
                         WHERE run_id = $1 AND compensated_at IS NOT NULL)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if undone {
        return Err(Error::failed_precondition(format!(
            "run `{id}` was compensated (its earlier steps were undone): start a new run instead"
        )));
    }
    sqlx::query(
        "DELETE FROM ovation_workflow_steps
          WHERE run_id = $1 AND position >= coalesce(
                (SELECT min(position) FROM ovation_workflow_steps
                  WHERE run_id = $1 AND state <> 'succeeded'), 2147483647)",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE ovation_workflow_runs
            SET status = 'running', error = NULL, output = NULL, finished_at = NULL,
                owner = NULL, lease_until = now(), updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(run = id, "workflow run retried from its failed step");
    Ok(())
}

/// Claims the runs of `rt`'s services that need a driver, and drives each in a task.
async fn claim_and_spawn(
    rt: &'static Runtime,
    store: &'static WorkflowStore,
) -> Result<Vec<tokio::task::JoinHandle<Result<serde_json::Value, Error>>>, Error> {
    let names: Vec<&str> = workflows()
        .into_iter()
        .filter(|w| rt.hosts(w.service()))
        .map(|w| w.name)
        .collect();
    if names.is_empty() || *store.stop.borrow() {
        return Ok(Vec::new());
    }
    type Claimed = (
        String,
        String,
        String,
        serde_json::Value,
        Option<serde_json::Value>,
        Option<Vec<u8>>,
    );
    let claimed: Vec<Claimed> = sqlx::query_as(&format!(
        "UPDATE ovation_workflow_runs r
            SET owner = $1, lease_until = now() + make_interval(secs => $2),
                executions = r.executions + 1, updated_at = now()
          WHERE r.id IN (
                SELECT id FROM ovation_workflow_runs
                 WHERE status IN ('running', 'compensating')
                   AND workflow = ANY($3) AND id <> ALL($4)
                   AND CASE WHEN owner IS NULL THEN lease_until <= now()
                            ELSE lease_until < now() OR owner <> ALL ({live}) END
                 ORDER BY lease_until LIMIT $5
                   FOR UPDATE SKIP LOCKED)
         RETURNING r.id, r.workflow, r.status, r.input, r.error, r.auth",
        live = crate::sqldb::liveness::LIVE_KEYS
    ))
    .bind(store.owner)
    .bind(LEASE.as_secs_f64())
    .bind(&names)
    .bind(store.local_ids())
    .bind(CLAIM_BATCH)
    .fetch_all(&store.pool)
    .await?;
    let mut tasks = Vec::with_capacity(claimed.len());
    for (id, workflow, status, input, error, auth) in claimed {
        let Some(def) = super::workflow(&workflow) else {
            continue;
        };
        if !reserve_local(store, &id) {
            continue;
        }
        let records: Vec<StepRecordRow> = match sqlx::query_as(
            "SELECT position, name, state, output, error, final_error, attempts,
                    compensated_at IS NOT NULL AS compensated
               FROM ovation_workflow_steps WHERE run_id = $1 ORDER BY position",
        )
        .bind(&id)
        .fetch_all(&store.pool)
        .await
        {
            Ok(records) => records,
            Err(e) => {
                unreserve_local(store, &id);
                return Err(e.into());
            }
        };
        let records: Vec<StepRecord> = match records.into_iter().map(StepRecord::try_from).collect()
        {
            Ok(records) => records,
            Err(e) => {
                unreserve_local(store, &id);
                return Err(e);
            }
        };
        let user = match (auth, crate::auth::handler()) {
            (Some(json), Some(handler)) => (handler.decode)(&json).ok(),
            _ => None,
        };
        let recorded_error = (status == "compensating").then(|| error_from(error));
        tracing::info!(workflow = def.name, run = %id, steps = records.len(), "resuming workflow run");
        let trace = run_trace(def, &id, false);
        if let Some(trace_id) = trace_id_in(&trace) {
            let _ = sqlx::query("UPDATE ovation_workflow_runs SET trace_id = $2 WHERE id = $1")
                .bind(&id)
                .bind(trace_id)
                .execute(&store.pool)
                .await;
        }
        tasks.push(spawn_run(
            rt,
            store,
            def,
            id,
            input,
            user,
            records,
            recorded_error,
            trace,
        ));
    }
    Ok(tasks)
}

/// The background work of a process hosting a workflow's service: resuming runs, renewing
/// the leases of its own, deleting old finished runs. Returns the tasks, aborted at shutdown.
pub(crate) fn start_background(rt: &'static Runtime) -> Vec<tokio::task::AbortHandle> {
    // Listed in the metrics at zero until they first run, as endpoints are.
    for def in workflows().into_iter().filter(|w| rt.hosts(w.service())) {
        rt.metrics
            .of(crate::metrics::Kind::WorkflowRun, def.service(), def.name);
    }
    let Some(store) = rt.workflows else {
        return Vec::new();
    };
    if !workflows().iter().any(|w| rt.hosts(w.service())) {
        return Vec::new();
    }
    let resume = tokio::spawn(async move {
        let mut stop = store.stop.subscribe();
        loop {
            if let Err(e) = claim_and_spawn(rt, store).await {
                tracing::debug!("looking for workflow runs to resume failed: {e}");
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
    });
    let renew = tokio::spawn(async move {
        let mut stop = store.stop.subscribe();
        let mut round = 0u64;
        loop {
            tokio::select! {
                () = tokio::time::sleep(RENEW) => {}
                _ = stop.changed() => return,
            }
            let _ = sqlx::query(
                "UPDATE ovation_workflow_runs SET lease_until = now() + make_interval(secs => $2)
                  WHERE owner = $1 AND status IN ('running', 'compensating')",
            )
            .bind(store.owner)
            .bind(LEASE.as_secs_f64())
            .execute(&store.pool)
            .await;
            round += 1;
            if round.is_multiple_of(12) {
                let _ = sqlx::query(
                    "DELETE FROM ovation_workflow_runs
                      WHERE status IN ('completed', 'failed')
                        AND finished_at < now() - make_interval(secs => $1)",
                )
                .bind(RETENTION.as_secs_f64())
                .execute(&store.pool)
                .await;
            }
        }
    });
    vec![resume.abort_handle(), renew.abort_handle()]
}
