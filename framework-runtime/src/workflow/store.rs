//! Where workflow runs and their steps are recorded: the framework's `ovation_workflows`
//! database, and each checkpoint's statement, written only while this process owns the run.
//! The checkpoints are not traced as statements: they are the framework's bookkeeping, and a
//! trace shows the workflow's span and its steps' calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument as _;

use super::engine::{Checkpoint, Halt, RunCtx};
use super::status::StepState;
use crate::error::Error;
use crate::sqldb::{DatabaseDef, Migration};

/// The framework's workflow database.
pub(crate) static DATABASE: DatabaseDef = DatabaseDef {
    name: "ovation_workflows",
    module: "ovation::workflow",
    migrations: &MIGRATIONS,
    folder: None,
    from_folder: false,
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

/// The workflow database of a runtime, and the runs this process drives.
#[derive(Debug)]
pub(crate) struct WorkflowStore {
    pub(crate) pool: PgPool,
    /// This process's liveness key.
    pub(super) owner: i64,
    /// Set when the process stops: no more runs are claimed.
    pub(super) stop: watch::Sender<bool>,
    /// Set when the runs driven here are given up: the liveness lock goes.
    pub(super) halt: watch::Sender<bool>,
    /// Whether this process holds its liveness lock: a run is started only then, or others
    /// would take it for a dead process's.
    pub(super) live: watch::Sender<bool>,
    /// Runs driven here (or about to be), with their task once spawned.
    pub(super) local: Mutex<HashMap<String, Option<tokio::task::AbortHandle>>>,
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
    pub(super) async fn until_live(&self) -> Result<(), Error> {
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

    pub(super) fn is_local(&self, id: &str) -> bool {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    pub(super) fn local_ids(&self) -> Vec<String> {
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
        .instrument(tracing::Span::none())
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
        .instrument(tracing::Span::none())
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
        .instrument(tracing::Span::none())
        .await?;
        Ok(written.rows_affected() == 1)
    }

    /// Records the run completed with `output`, and, in the same statement, the checkpoint of
    /// its last step if that is not written yet.
    pub(crate) async fn complete(
        &self,
        run: &RunCtx,
        output: &serde_json::Value,
        last_step: Option<&Checkpoint>,
    ) -> Result<bool, Error> {
        let Some(step) = last_step else {
            return self.finish(run, "completed", Some(output), None).await;
        };
        // The run's row is locked by the update, so no claim comes between the two.
        let completed: i64 = sqlx::query_scalar(
            "WITH done AS (
                 UPDATE ovation_workflow_runs
                    SET status = 'completed', output = $2, error = NULL, updated_at = now(),
                        owner = NULL, finished_at = now()
                  WHERE id = $1 AND owner = $3
              RETURNING id
             ), step AS (
                 INSERT INTO ovation_workflow_steps
                        (run_id, position, name, kind, state, input, output, attempts, finished_at)
                 SELECT id, $4, $5, $6, 'succeeded', $7, $8, $9, now() FROM done
                 ON CONFLICT (run_id, position) DO UPDATE
                    SET state = EXCLUDED.state, output = EXCLUDED.output, error = NULL,
                        final_error = false, attempts = EXCLUDED.attempts,
                        finished_at = EXCLUDED.finished_at
             )
             SELECT count(*) FROM done",
        )
        .bind(&run.id)
        .bind(output)
        .bind(self.owner)
        .bind(step.position)
        .bind(&step.name)
        .bind(step.kind.as_str())
        .bind(step.input.as_ref())
        .bind(&step.output)
        .bind(step.attempts)
        .fetch_one(&self.pool)
        .instrument(tracing::Span::none())
        .await?;
        Ok(completed == 1)
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
pub(super) fn error_json(e: &Error) -> serde_json::Value {
    serde_json::to_value(e).unwrap_or(serde_json::Value::Null)
}

pub(super) fn error_from(json: Option<serde_json::Value>) -> Error {
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

pub(super) type StepRecordRow = (
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
