//! Where workflow runs and their steps are recorded: the framework's `ovation_workflows`
//! database. Starting, resuming and finishing runs; who owns which.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::watch;

use super::engine::{Halt, RunCtx, drive};
use super::{WorkflowDef, workflows};
use crate::error::Error;
use crate::runtime::{self, Runtime};
use crate::sqldb::{DatabaseDef, Migration};

/// The framework's workflow database.
pub(crate) static DATABASE: DatabaseDef = DatabaseDef {
    name: "ovation_workflows",
    module: "ovation::workflow",
    migrations: &MIGRATIONS,
    folder: None,
};

static MIGRATIONS: [Migration; 1] = [Migration {
    version: 1,
    file: "1_workflows.up.sql",
    sql: "
    CREATE TABLE ovation_workflow_runs (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        service TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('running', 'compensating', 'completed', 'failed')),
        input JSONB NOT NULL,
        output JSONB,
        error JSONB,
        -- The JSON of the end user's auth data the run was started for.
        auth BYTEA,
        -- The liveness key of the owning process (see `sqldb::liveness`), NULL when released.
        owner BIGINT,
        lease_until TIMESTAMPTZ NOT NULL,
        -- Executions: 1, plus one per resumption.
        executions INTEGER NOT NULL DEFAULT 1,
        trace_id TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ
    );
    CREATE INDEX ovation_workflow_runs_unfinished ON ovation_workflow_runs (lease_until)
        WHERE status IN ('running', 'compensating');
    CREATE INDEX ovation_workflow_runs_recent ON ovation_workflow_runs (created_at DESC);
    CREATE TABLE ovation_workflow_steps (
        run_id TEXT NOT NULL REFERENCES ovation_workflow_runs (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('call', 'step', 'sleep')),
        state TEXT NOT NULL CHECK (state IN ('retrying', 'succeeded', 'failed')),
        input JSONB,
        output JSONB,
        error JSONB,
        -- For a failed step: whether its error was final (the callee refused: nothing done).
        final_error BOOLEAN NOT NULL DEFAULT false,
        attempts INTEGER NOT NULL,
        compensated_at TIMESTAMPTZ,
        undo_attempts INTEGER NOT NULL DEFAULT 0,
        undo_error JSONB,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ,
        PRIMARY KEY (run_id, position)
    );
",
}];

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

/// The workflow database of a runtime, and the runs this process drives.
#[derive(Debug)]
pub(crate) struct WorkflowStore {
    pub(crate) pool: PgPool,
    /// This process's liveness key.
    owner: i64,
    /// Set when the process stops: no more runs are claimed.
    stop: watch::Sender<bool>,
    /// Set when the runs driven here are given up: the liveness lock goes.
    halt: watch::Sender<bool>,
    /// Whether this process holds its liveness lock: a run is started only then, or others
    /// would take it for a dead process's.
    live: watch::Sender<bool>,
    /// Runs driven here (or about to be), with their task once spawned.
    local: Mutex<HashMap<String, Option<tokio::task::AbortHandle>>>,
}

impl WorkflowStore {
    pub(crate) fn new(pool: PgPool) -> WorkflowStore {
        WorkflowStore {
            pool,
            owner: rand::random::<i64>(),
            stop: watch::channel(false).0,
            halt: watch::channel(false).0,
            live: watch::channel(false).0,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Holds this process's liveness lock from now on (until [`abort_runs`](Self::abort_runs)).
    pub(crate) fn start_liveness(&'static self) {
        tokio::spawn(crate::sqldb::liveness::hold_reporting(
            &self.pool,
            self.owner,
            self.halt.subscribe(),
            Some(&self.live),
        ));
    }

    /// Waits (a few seconds at most) until this process holds its liveness lock.
    async fn until_live(&self) -> Result<(), Error> {
        let mut live = self.live.subscribe();
        let held = tokio::time::timeout(Duration::from_secs(10), live.wait_for(|l| *l)).await;
        match held {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::unavailable(
                "the workflow database does not answer: no run can be started",
            )),
        }
    }

    /// Stops claiming runs; those driven here go on (requests being drained wait for theirs).
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Gives up the runs driven here, and the liveness lock: another process, or this one's
    /// successor, resumes them from their last checkpoint.
    pub(crate) fn abort_runs(&self) {
        let _ = self.halt.send(true);
        for task in self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .filter_map(|(_, t)| t)
        {
            task.abort();
        }
    }

    pub(crate) async fn close(&self) {
        self.stop();
        self.abort_runs();
        self.pool.close().await;
    }

    fn is_local(&self, id: &str) -> bool {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    fn local_ids(&self) -> Vec<String> {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Records a step's outcome, if this process still owns the run (`Ok(false)` if not).
    pub(crate) async fn record_step(
        &self,
        run: &RunCtx,
        step: StepOutcome<'_>,
        result: Result<&serde_json::Value, (&Error, bool, bool)>,
    ) -> Result<bool, Error> {
        let (state, output, error, final_error) = match result {
            Ok(output) => ("succeeded", Some(output), None, false),
            Err((e, final_error, retrying)) => (
                if retrying { "retrying" } else { "failed" },
                None,
                Some(error_json(e)),
                final_error,
            ),
        };
        // `FOR SHARE`: a claim by another process waits for this write, and this write sees
        // a claim that committed first.
        let written = sqlx::query(
            "INSERT INTO ovation_workflow_steps
                 (run_id, position, name, kind, state, input, output, error, final_error,
                  attempts, finished_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                    CASE WHEN $5 = 'retrying' THEN NULL ELSE now() END
               FROM ovation_workflow_runs WHERE id = $1 AND owner = $11
                FOR SHARE
             ON CONFLICT (run_id, position) DO UPDATE
                SET state = EXCLUDED.state, output = EXCLUDED.output, error = EXCLUDED.error,
                    final_error = EXCLUDED.final_error, attempts = EXCLUDED.attempts,
                    finished_at = EXCLUDED.finished_at",
        )
        .bind(&run.id)
        .bind(step.position)
        .bind(step.name)
        .bind(step.kind.as_str())
        .bind(state)
        .bind(step.input)
        .bind(output)
        .bind(error)
        .bind(final_error)
        .bind(step.attempts)
        .bind(self.owner)
        .execute(&self.pool)
        .await?;
        Ok(written.rows_affected() == 1)
    }

    /// Records an attempt of the undo of step `position`: done, or its error.
    pub(crate) async fn record_undo(
        &self,
        run: &RunCtx,
        position: i32,
        error: Option<&Error>,
    ) -> Result<bool, Error> {
        let written = sqlx::query(
            "UPDATE ovation_workflow_steps s
                SET undo_attempts = s.undo_attempts + 1, undo_error = $3,
                    compensated_at = CASE WHEN $3 IS NULL THEN now() END
               FROM ovation_workflow_runs r
              WHERE s.run_id = $1 AND s.position = $2 AND r.id = $1 AND r.owner = $4",
        )
        .bind(&run.id)
        .bind(position)
        .bind(error.map(error_json))
        .bind(self.owner)
        .execute(&self.pool)
        .await?;
        Ok(written.rows_affected() == 1)
    }

    async fn finish(
        &self,
        run: &RunCtx,
        status: &str,
        output: Option<&serde_json::Value>,
        error: Option<&Error>,
    ) -> Result<bool, Error> {
        let done = status == "completed" || status == "failed";
        let written = sqlx::query(
            "UPDATE ovation_workflow_runs
                SET status = $2, output = $3, error = $4, updated_at = now(),
                    owner = CASE WHEN $5 THEN NULL ELSE owner END,
                    finished_at = CASE WHEN $5 THEN now() END
              WHERE id = $1 AND owner = $6",
        )
        .bind(&run.id)
        .bind(status)
        .bind(output)
        .bind(error.map(error_json))
        .bind(done)
        .bind(self.owner)
        .execute(&self.pool)
        .await?;
        Ok(written.rows_affected() == 1)
    }

    pub(crate) async fn complete(
        &self,
        run: &RunCtx,
        output: &serde_json::Value,
    ) -> Result<bool, Error> {
        self.finish(run, "completed", Some(output), None).await
    }

    pub(crate) async fn fail(&self, run: &RunCtx, error: &Error) -> Result<bool, Error> {
        self.finish(run, "failed", None, Some(error)).await
    }

    pub(crate) async fn mark_compensating(
        &self,
        run: &RunCtx,
        error: &Error,
    ) -> Result<bool, Error> {
        self.finish(run, "compensating", None, Some(error)).await
    }

    /// Gives the run up: any process (this one included) resumes it after `delay`.
    pub(crate) async fn release(&self, run: &RunCtx, delay: Duration) {
        let _ = sqlx::query(
            "UPDATE ovation_workflow_runs
                SET owner = NULL, lease_until = now() + make_interval(secs => $2)
              WHERE id = $1 AND owner = $3",
        )
        .bind(&run.id)
        .bind(delay.as_secs_f64())
        .bind(self.owner)
        .execute(&self.pool)
        .await;
    }

    /// The outcome of a run that halted: a diverged run fails (no compensation: the code no
    /// longer says what to undo); one whose checkpoint failed is left to recovery.
    pub(crate) async fn halted(
        &self,
        run: &RunCtx,
        halt: Halt,
    ) -> Result<serde_json::Value, Error> {
        match halt {
            Halt::Diverged(e) => {
                tracing::error!(workflow = run.def.name, run = %run.id, "{}", e.message());
                let _ = self.fail(run, &e).await;
                Err(e)
            }
            Halt::Lost => Err(Error::aborted(
                "this workflow run was taken over by another process",
            )),
            Halt::Store(e) => {
                tracing::warn!(
                    workflow = run.def.name,
                    run = %run.id,
                    "a checkpoint could not be written, recovery will resume the run: {e}"
                );
                self.release(run, Duration::from_secs(2)).await;
                Err(Error::unavailable(format!(
                    "workflow `{}`: its progress could not be recorded; it will be resumed",
                    run.def.name
                )))
            }
        }
    }
}

/// The JSON an error is recorded as: what a caller receives.
fn error_json(e: &Error) -> serde_json::Value {
    serde_json::to_value(e).unwrap_or(serde_json::Value::Null)
}

fn error_from(json: Option<serde_json::Value>) -> Error {
    json.and_then(|j| serde_json::from_value(j).ok())
        .unwrap_or_else(|| Error::internal("the workflow failed (its error was not recorded)"))
}

/// What a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepKind {
    /// A typed service call.
    Call,
    /// `ovation::workflow::step`.
    Step,
    Sleep,
}

impl StepKind {
    fn as_str(self) -> &'static str {
        match self {
            StepKind::Call => "call",
            StepKind::Step => "step",
            StepKind::Sleep => "sleep",
        }
    }
}

/// A step's outcome as [`WorkflowStore::record_step`] writes it.
#[derive(Debug)]
pub(crate) struct StepOutcome<'a> {
    pub(crate) position: i32,
    pub(crate) name: &'a str,
    pub(crate) kind: StepKind,
    pub(crate) input: Option<&'a serde_json::Value>,
    pub(crate) attempts: i32,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Failed with a retryable error; tried again.
    Retrying,
    Succeeded,
    Failed,
}

/// A step as recorded, for replay.
#[derive(Debug)]
pub(crate) struct StepRecord {
    pub(crate) position: i32,
    pub(crate) name: String,
    pub(crate) state: StepState,
    pub(crate) output: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    pub(crate) final_error: bool,
    pub(crate) attempts: i32,
    pub(crate) compensated: bool,
}

impl StepRecord {
    pub(crate) fn error(&self) -> Error {
        error_from(self.error.clone())
    }
}

type StepRecordRow = (
    i32,
    String,
    String,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
    bool,
    i32,
    bool,
);

impl TryFrom<StepRecordRow> for StepRecord {
    type Error = Error;
    fn try_from(row: StepRecordRow) -> Result<Self, Error> {
        let (position, name, state, output, error, final_error, attempts, compensated) = row;
        Ok(StepRecord {
            position,
            name,
            state: StepState::try_from(state).map_err(Error::internal)?,
            output,
            error,
            final_error,
            attempts,
            compensated,
        })
    }
}

impl TryFrom<String> for StepState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "retrying" => Ok(StepState::Retrying),
            "succeeded" => Ok(StepState::Succeeded),
            "failed" => Ok(StepState::Failed),
            other => Err(format!("unknown step state {other:?}")),
        }
    }
}

impl TryFrom<String> for RunState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "running" => Ok(RunState::Running),
            "compensating" => Ok(RunState::Compensating),
            "completed" => Ok(RunState::Completed),
            "failed" => Ok(RunState::Failed),
            other => Err(format!("unknown run state {other:?}")),
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Its function failed; its undos are running.
    Compensating,
    Completed,
    Failed,
}

/// A run, as [`super::status`] and the dashboard show it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    pub id: String,
    pub workflow: String,
    pub service: String,
    pub state: RunState,
    pub input: serde_json::Value,
    pub output: Option<serde_json::Value>,
    pub error: Option<Error>,
    /// 1, plus one per time the run was resumed.
    pub executions: i32,
    pub trace_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepStatus>,
}

/// A step of a run.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    pub position: i32,
    pub name: String,
    /// `call` (a typed service call), `step` or `sleep`.
    pub kind: String,
    pub state: StepState,
    pub input: Option<serde_json::Value>,
    pub output: Option<serde_json::Value>,
    pub error: Option<Error>,
    pub attempts: i32,
    /// When its undo ran, if it did.
    pub compensated_at: Option<DateTime<Utc>>,
    pub undo_attempts: i32,
    pub undo_error: Option<Error>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A run's row.
#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    workflow: String,
    service: String,
    state: String,
    input: serde_json::Value,
    output: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    executions: i32,
    trace_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<RunRow> for RunStatus {
    type Error = Error;
    fn try_from(r: RunRow) -> Result<Self, Error> {
        Ok(RunStatus {
            id: r.id,
            workflow: r.workflow,
            service: r.service,
            state: RunState::try_from(r.state).map_err(Error::internal)?,
            input: r.input,
            output: r.output,
            error: r.error.map(|e| error_from(Some(e))),
            executions: r.executions,
            trace_id: r.trace_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            steps: Vec::new(),
        })
    }
}

/// A step's row.
#[derive(sqlx::FromRow)]
struct StepRow {
    position: i32,
    name: String,
    kind: String,
    state: String,
    input: Option<serde_json::Value>,
    output: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    attempts: i32,
    compensated_at: Option<DateTime<Utc>>,
    undo_attempts: i32,
    undo_error: Option<serde_json::Value>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<StepRow> for StepStatus {
    type Error = Error;
    fn try_from(r: StepRow) -> Result<Self, Error> {
        Ok(StepStatus {
            position: r.position,
            name: r.name,
            kind: r.kind,
            state: StepState::try_from(r.state).map_err(Error::internal)?,
            input: r.input,
            output: r.output,
            error: r.error.map(|e| error_from(Some(e))),
            attempts: r.attempts,
            compensated_at: r.compensated_at,
            undo_attempts: r.undo_attempts,
            undo_error: r.undo_error.map(|e| error_from(Some(e))),
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

const RUN_COLUMNS: &str = "id, workflow, service, status AS state, input, output, error, \
    executions, trace_id, created_at, updated_at, finished_at";

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
    let handle = tokio::spawn(async move {
        let result = work.await;
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
    status_in(store, id).await
}

pub(crate) async fn status_in(store: &WorkflowStore, id: &str) -> Result<RunStatus, Error> {
    let row: RunRow = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM ovation_workflow_runs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&store.pool)
    .await?
    .ok_or_else(|| Error::not_found(format!("no workflow run `{id}`")))?;
    let mut run = RunStatus::try_from(row)?;
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT position, name, kind, state, input, output, error, attempts, compensated_at,
                undo_attempts, undo_error, started_at, finished_at
           FROM ovation_workflow_steps WHERE run_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&store.pool)
    .await?;
    run.steps = steps
        .into_iter()
        .map(StepStatus::try_from)
        .collect::<Result<_, _>>()?;
    Ok(run)
}

/// The latest runs (newest first), of one workflow or all, without their steps.
pub(crate) async fn recent(
    store: &WorkflowStore,
    workflow: Option<&str>,
    limit: i64,
) -> Result<Vec<RunStatus>, Error> {
    let rows: Vec<RunRow> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM ovation_workflow_runs
          WHERE $1::text IS NULL OR workflow = $1
          ORDER BY created_at DESC, id LIMIT $2"
    ))
    .bind(workflow)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter().map(RunStatus::try_from).collect()
}

/// Counts of runs by workflow and state.
pub(crate) async fn counts(store: &WorkflowStore) -> Result<Vec<(String, String, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT workflow, status, count(*) FROM ovation_workflow_runs GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&store.pool)
    .await?)
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
