//! What the dashboard and `ovation::workflow::status` show of runs and their steps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::store::{WorkflowStore, error_from};
use crate::error::Error;

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Failed with a retryable error; tried again.
    Retrying,
    Succeeded,
    Failed,
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

pub(super) const RUN_COLUMNS: &str = "id, workflow, service, status AS state, input, output, error, \
    executions, trace_id, created_at, updated_at, finished_at";

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
