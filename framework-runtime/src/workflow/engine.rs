//! Running a workflow's function: steps replayed from their records or run and recorded, the
//! idempotency keys they pass on, and the compensation when the function fails.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::WorkflowDef;
use super::status::StepState;
use super::store::{StepKind, StepRecord, WorkflowStore};
use crate::error::{ErrCode, Error, panic_message};

tokio::task_local! {
    /// The run whose function is running: set in its body, cleared in its steps (and so in
    /// their callees).
    static WORKFLOW: Option<Arc<RunCtx>>;
}

/// The idempotency key of the request being served, when a workflow's step made it: the run's
/// id and the step's position (`<run>/<n>`), the same each time the step is retried, also
/// after a crash. An endpoint that records it with its effect (a unique column) can do its
/// work once however often the step runs. Inside a [`step`]'s own code it is that step's key.
pub fn idempotency_key() -> Option<String> {
    crate::runtime::current_key().map(|(k, _)| k.to_string())
}

/// The key a call made here carries to its callee: the step's, not a callee's own.
pub(crate) fn outgoing_key() -> Option<Arc<str>> {
    crate::runtime::current_key().and_then(|(k, propagate)| propagate.then_some(k))
}

/// Runs `make()`'s future as the code of a step (or undo) with key `key`: outside the
/// workflow's body, in the runtime's context with the key.
fn keyed<F: Future>(key: &Arc<str>, make: impl FnOnce() -> F) -> impl Future<Output = F::Output> {
    let ctx = crate::runtime::keyed_context(key.clone());
    let fut = WORKFLOW.sync_scope(None, || crate::runtime::in_context(ctx, make));
    WORKFLOW.scope(None, fut)
}

/// The run whose function runs here (not inside one of its steps).
pub(crate) fn current_run() -> Option<Arc<RunCtx>> {
    WORKFLOW.try_with(Clone::clone).ok().flatten()
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type UndoFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;

/// How a step is retried after a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait after the first failure, doubled after each further one...
    pub min_backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
}

impl Retry {
    /// 5 attempts, waiting 100 ms, 200 ms, 400 ms, 800 ms between them.
    pub const DEFAULT: Retry = Retry {
        attempts: 5,
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
    };

    /// One attempt: any error is the step's outcome.
    pub const NONE: Retry = Retry::attempts(1);

    /// [`Retry::DEFAULT`] with `n` attempts in all.
    pub const fn attempts(n: u32) -> Retry {
        Retry {
            attempts: if n == 0 { 1 } else { n },
            ..Retry::DEFAULT
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        self.min_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry::DEFAULT
    }
}

/// Whether an error may go away if the step runs again (the callee was down, slow, broken or
/// busy), rather than being the callee's answer.
pub(crate) fn is_retryable(e: &Error) -> bool {
    matches!(
        e.code(),
        ErrCode::Unavailable
            | ErrCode::DeadlineExceeded
            | ErrCode::Internal
            | ErrCode::Unknown
            | ErrCode::Aborted
            | ErrCode::Canceled
            | ErrCode::ResourceExhausted
    )
}

/// A step of a workflow, made by [`step`]; `.await` it.
#[must_use = "a step does nothing until it is awaited"]
pub struct Step<'a, T> {
    name: String,
    make: Box<dyn FnMut() -> BoxFuture<'a, Result<T, Error>> + Send + 'a>,
    retry: Retry,
    undo: Option<UndoFn>,
}

impl<T> std::fmt::Debug for Step<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("retry", &self.retry)
            .field("undo", &self.undo.is_some())
            .finish_non_exhaustive()
    }
}

/// Makes `f` a step of the running workflow: its output (`T`, serde) is recorded once it
/// succeeds, and a resumed run gets the recorded output back without running `f` again.
///
/// ```ignore
/// let receipt = ovation::workflow::step("send-receipt", || mailer::send(&receipt_mail))
///     .retry(Retry::attempts(10))
///     .await?;
/// let hold = ovation::workflow::step("hold-funds", || bank::hold(amount))
///     .compensate_with(move || bank::release(amount))
///     .await?;
/// ```
///
/// `f` is called once per attempt; a step cut off by a crash runs again, with the same
/// [`idempotency_key`]. Outside a workflow, `f` simply runs once.
pub fn step<'a, T, F, Fut>(name: impl Into<String>, mut f: F) -> Step<'a, T>
where
    T: Serialize + DeserializeOwned + Send + 'a,
    F: FnMut() -> Fut + Send + 'a,
    Fut: Future<Output = Result<T, Error>> + Send + 'a,
{
    Step {
        name: name.into(),
        make: Box::new(move || Box::pin(f())),
        retry: Retry::DEFAULT,
        undo: None,
    }
}

impl<'a, T> Step<'a, T> {
    /// How the step is retried after a retryable error (default: [`Retry::DEFAULT`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// What undoes the step if the workflow fails later (see [`crate::workflow`]): called
    /// until it succeeds, with an idempotency key of its own, so it must be safe to repeat.
    pub fn compensate_with<U, UFut>(mut self, undo: U) -> Self
    where
        U: Fn() -> UFut + Send + Sync + 'static,
        UFut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.undo = Some(Arc::new(move || Box::pin(undo())));
        self
    }
}

impl<'a, T> IntoFuture for Step<'a, T>
where
    T: Serialize + DeserializeOwned + Send + 'a,
{
    type Output = Result<T, Error>;
    type IntoFuture = BoxFuture<'a, Result<T, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        let Step {
            name,
            mut make,
            retry,
            undo,
        } = self;
        Box::pin(async move {
            match current_run() {
                Some(run) => run_step(&run, name, StepKind::Step, None, retry, make, undo).await,
                None => make().await,
            }
        })
    }
}

/// A typed call made by a workflow's function: a step named `<service>.<endpoint>`.
pub(crate) async fn call_step<T, M, Fut>(
    run: Arc<RunCtx>,
    name: String,
    input: Option<serde_json::Value>,
    make: M,
) -> Result<T, Error>
where
    T: Serialize + DeserializeOwned + Send,
    M: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T, Error>> + Send,
{
    run_step(
        &run,
        name,
        StepKind::Call,
        input,
        Retry::DEFAULT,
        make,
        None,
    )
    .await
}

/// Sleeps `duration`, durably: the end is recorded, so a run resumed after a crash sleeps only
/// what is left. Outside a workflow, simply sleeps.
pub async fn sleep(duration: Duration) -> Result<(), Error> {
    let Some(run) = current_run() else {
        tokio::time::sleep(duration).await;
        return Ok(());
    };
    let name = format!("sleep {duration:?}");
    let until: chrono::DateTime<chrono::Utc> = run_step(
        &run,
        name,
        StepKind::Sleep,
        None,
        Retry::NONE,
        || async move {
            let d = chrono::Duration::from_std(duration)
                .map_err(|_| Error::invalid_argument("the sleep is too long"))?;
            Ok(chrono::Utc::now() + d)
        },
        None,
    )
    .await?;
    let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left).await;
    Ok(())
}

/// Why a run stopped before its function's outcome could be recorded.
#[derive(Debug)]
pub(crate) enum Halt {
    /// The function no longer matches the run's record.
    Diverged(Error),
    /// Another process owns the run now.
    Lost,
    /// A checkpoint could not be written.
    Store(Error),
}

/// An undo registered by a step.
struct Undo {
    position: i32,
    name: String,
    done: bool,
    run: UndoFn,
}

/// One run being driven in this process.
pub(crate) struct RunCtx {
    pub(crate) id: String,
    pub(crate) def: &'static WorkflowDef,
    pub(crate) store: &'static WorkflowStore,
    /// The steps recorded before this execution, by position.
    records: HashMap<i32, StepRecord>,
    /// Whether the run was compensating when this execution took it: its function replays
    /// to its recorded failure, then the undos left run.
    pub(crate) compensating: bool,
    next: AtomicI32,
    undos: Mutex<Vec<Undo>>,
    halt: Mutex<Option<Halt>>,
    /// Steps that succeeded and are not written yet: a step's checkpoint is written while the
    /// next step's first attempt runs, or with the run's outcome (one statement for the last
    /// step and the completion). A crash before it is written runs the step again, as a crash
    /// between a step's work and its checkpoint always has.
    unwritten: Mutex<Vec<Checkpoint>>,
}

/// A succeeded step's checkpoint, not yet written.
pub(crate) struct Checkpoint {
    pub(crate) position: i32,
    pub(crate) name: String,
    pub(crate) kind: StepKind,
    pub(crate) input: Option<serde_json::Value>,
    pub(crate) output: serde_json::Value,
    pub(crate) attempts: i32,
}

impl Checkpoint {
    pub(crate) fn outcome(&self) -> super::store::StepOutcome<'_> {
        super::store::StepOutcome {
            position: self.position,
            name: &self.name,
            kind: self.kind,
            input: self.input.as_ref(),
            attempts: self.attempts,
        }
    }
}

impl RunCtx {
    pub(crate) fn new(
        id: String,
        def: &'static WorkflowDef,
        store: &'static WorkflowStore,
        records: Vec<StepRecord>,
        compensating: bool,
    ) -> RunCtx {
        RunCtx {
            id,
            def,
            store,
            records: records.into_iter().map(|r| (r.position, r)).collect(),
            compensating,
            next: AtomicI32::new(0),
            undos: Mutex::new(Vec::new()),
            halt: Mutex::new(None),
            unwritten: Mutex::new(Vec::new()),
        }
    }

    fn take_unwritten(&self) -> Vec<Checkpoint> {
        std::mem::take(&mut *self.unwritten.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Writes `checkpoints`, in order; the run halts if one cannot be.
    async fn write(&self, checkpoints: impl IntoIterator<Item = Checkpoint>) -> Result<(), Error> {
        for checkpoint in checkpoints {
            let written = self
                .store
                .record_step(self, checkpoint.outcome(), Ok(&checkpoint.output))
                .await;
            record(self, written)?;
        }
        Ok(())
    }

    fn halted(&self) -> Option<Error> {
        self.halt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|h| match h {
                Halt::Diverged(e) | Halt::Store(e) => e.clone_received(),
                Halt::Lost => lost(),
            })
    }

    fn halt(&self, halt: Halt) -> Error {
        let mut slot = self.halt.lock().unwrap_or_else(|p| p.into_inner());
        let err = match &halt {
            Halt::Diverged(e) | Halt::Store(e) => e.clone_received(),
            Halt::Lost => lost(),
        };
        slot.get_or_insert(halt);
        err
    }

    pub(crate) fn take_halt(&self) -> Option<Halt> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn register_undo(&self, position: i32, name: &str, undo: Option<UndoFn>, done: bool) {
        if let Some(run) = undo {
            self.undos
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Undo {
                    position,
                    name: name.to_owned(),
                    done,
                    run,
                });
        }
    }

    fn diverged(&self, position: i32, recorded: Option<&str>, now: &str) -> Error {
        let what = match recorded {
            Some(recorded) => {
                format!("recorded step `{recorded}` there, and the code now runs `{now}`")
            }
            None => format!(
                "recorded no step there (the run failed before it), and the code now runs `{now}`"
            ),
        };
        let e = Error::failed_precondition(format!(
            "workflow `{}` run `{}` no longer matches its code at step {position}: the run {what}. \
             Resumed runs replay their steps in order, so the code between steps must take the \
             same steps for the same input; finish or cancel runs before changing their steps",
            self.def.name, self.id
        ));
        self.halt(Halt::Diverged(e))
    }
}

fn lost() -> Error {
    Error::aborted("this workflow run was taken over by another process")
}

/// Runs (or replays) one step of `run`.
async fn run_step<T, M, Fut>(
    run: &Arc<RunCtx>,
    name: String,
    kind: StepKind,
    input: Option<serde_json::Value>,
    retry: Retry,
    mut make: M,
    undo: Option<UndoFn>,
) -> Result<T, Error>
where
    T: Serialize + DeserializeOwned,
    M: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    if let Some(e) = run.halted() {
        return Err(e);
    }
    let position = run.next.fetch_add(1, Ordering::Relaxed);
    // What came before this step is written while its first attempt runs; before anything
    // else, for a step that replays or halts. Steps are at least once: a crash before that
    // write runs the step before again, as a crash between a step's work and its checkpoint
    // always has, so nothing waits for it that did not before. A write that fails halts the
    // run once the attempt is over.
    let mut before = Some(run.take_unwritten());
    let executes = match run.records.get(&position) {
        None => !run.compensating,
        Some(rec) => rec.name == name && rec.state == StepState::Retrying,
    };
    if !executes && let Some(checkpoints) = before.take() {
        run.write(checkpoints).await?;
    }
    let mut attempt = 0;
    match run.records.get(&position) {
        Some(rec) if rec.name != name => {
            return Err(run.diverged(position, Some(&rec.name), &name));
        }
        Some(rec) => match rec.state {
            StepState::Succeeded => {
                run.register_undo(position, &name, undo, rec.compensated);
                let output = rec.output.clone().unwrap_or(serde_json::Value::Null);
                return serde_json::from_value(output).map_err(|e| {
                    run.halt(Halt::Diverged(Error::failed_precondition(format!(
                        "workflow `{}` run `{}`: the recorded output of step {position} \
                         (`{name}`) does not decode as the code's type now: {e}",
                        run.def.name, run.id
                    ))))
                });
            }
            StepState::Failed => {
                if !rec.final_error {
                    run.register_undo(position, &name, undo, rec.compensated);
                }
                return Err(rec.error());
            }
            StepState::Retrying => attempt = rec.attempts.max(0) as u32,
        },
        None if run.compensating => return Err(run.diverged(position, None, &name)),
        None => {}
    }
    let key: Arc<str> = format!("{}/{position}", run.id).into();
    loop {
        attempt += 1;
        // The closure's own code runs in the step's scope too, not only its future.
        let result = match before.take() {
            Some(checkpoints) if !checkpoints.is_empty() => {
                let (written, result) =
                    tokio::join!(run.write(checkpoints), keyed(&key, &mut make));
                written?;
                result
            }
            _ => keyed(&key, &mut make).await,
        };
        let step = super::store::StepOutcome {
            position,
            name: &name,
            kind,
            input: input.as_ref(),
            attempts: attempt as i32,
        };
        match result {
            Ok(value) => {
                let output = serde_json::to_value(&value).map_err(|e| {
                    Error::internal(format!(
                        "workflow `{}`: the output of step `{name}` cannot be recorded as JSON: {e}",
                        run.def.name
                    ))
                })?;
                if kind == StepKind::Sleep {
                    // Its end is what a resumed run sleeps until: written before the sleep.
                    record(run, run.store.record_step(run, step, Ok(&output)).await)?;
                } else {
                    run.unwritten
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Checkpoint {
                            position,
                            name: name.clone(),
                            kind,
                            input,
                            output,
                            attempts: attempt as i32,
                        });
                }
                run.register_undo(position, &name, undo, false);
                return Ok(value);
            }
            Err(e) => {
                let retryable = is_retryable(&e);
                if !retryable || attempt >= retry.attempts {
                    record(
                        run,
                        run.store
                            .record_step(run, step, Err((&e, !retryable, false)))
                            .await,
                    )?;
                    if retryable {
                        // It may have done its work before failing: undo that too.
                        run.register_undo(position, &name, undo, false);
                    }
                    return Err(e);
                }
                record(
                    run,
                    run.store
                        .record_step(run, step, Err((&e, false, true)))
                        .await,
                )?;
                tracing::info!(
                    workflow = run.def.name,
                    run = %run.id,
                    step = %name,
                    attempt,
                    "step failed, retrying: {e}"
                );
                tokio::time::sleep(retry.backoff(attempt)).await;
            }
        }
    }
}

/// A checkpoint's outcome: written, or the run halts.
fn record(run: &RunCtx, written: Result<bool, Error>) -> Result<(), Error> {
    match written {
        Ok(true) => Ok(()),
        Ok(false) => Err(run.halt(Halt::Lost)),
        Err(e) => Err(run.halt(Halt::Store(e))),
    }
}

/// Runs the workflow's function `body` for `run` to its outcome, and records it: the output;
/// or, on an error, the compensations, then the error. `recorded_error` is the error of a run
/// that was compensating already.
pub(crate) async fn drive(
    run: Arc<RunCtx>,
    body: super::RunFuture,
    recorded_error: Option<Error>,
) -> Result<serde_json::Value, Error> {
    let outcome = std::panic::AssertUnwindSafe(WORKFLOW.scope(Some(run.clone()), body))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(Error::internal(format!(
                "workflow `{}` panicked: {}",
                run.def.name,
                panic_message(&*panic)
            )))
        });
    let store = run.store;
    if let Some(halt) = run.take_halt() {
        return store.halted(&run, halt).await;
    }
    // The last step's checkpoint goes with the outcome; any before it (steps run side by
    // side) first.
    let mut unwritten = run.take_unwritten();
    let last = unwritten.pop();
    if let Err(e) = run.write(unwritten).await {
        return halted_writing(&run, e).await;
    }
    let error = match (outcome, recorded_error) {
        (Ok(output), None) => {
            return match store.complete(&run, &output, last.as_ref()).await {
                Ok(true) => Ok(output),
                Ok(false) => Err(lost()),
                Err(e) => store.halted(&run, Halt::Store(e)).await,
            };
        }
        (Ok(_), Some(_)) => {
            let e = Error::failed_precondition(format!(
                "workflow `{}` run `{}` no longer matches its code: the run failed, and its \
                 function now succeeds on replay",
                run.def.name, run.id
            ));
            return store.halted(&run, Halt::Diverged(e)).await;
        }
        (Err(_), Some(recorded)) => recorded,
        (Err(e), None) => e,
    };
    // Compensation records its undos on the steps' rows: the last one is written first.
    if let Err(e) = run.write(last).await {
        return halted_writing(&run, e).await;
    }
    compensate(&run, error).await
}

/// The outcome of a run whose checkpoint `e` could not be written ([`RunCtx::write`] halted it).
async fn halted_writing(run: &RunCtx, e: Error) -> Result<serde_json::Value, Error> {
    let halt = run.take_halt().unwrap_or(Halt::Store(e));
    run.store.halted(run, halt).await
}

/// Undoes, newest first, what the run's steps did, then records the run failed with `error`.
/// An undo is tried a few times here; if it still fails the run is left to recovery, which
/// tries again later (in any process hosting the service).
async fn compensate(run: &Arc<RunCtx>, error: Error) -> Result<serde_json::Value, Error> {
    let store = run.store;
    let undos = std::mem::take(&mut *run.undos.lock().unwrap_or_else(|p| p.into_inner()));
    let pending: Vec<Undo> = undos.into_iter().rev().filter(|u| !u.done).collect();
    if !pending.is_empty() && !run.compensating {
        match store.mark_compensating(run, &error).await {
            Ok(true) => {}
            Ok(false) => return Err(lost()),
            Err(e) => return store.halted(run, Halt::Store(e)).await,
        }
    }
    const TRIES_HERE: u32 = 5;
    let backoff = Retry::DEFAULT;
    for undo in pending {
        let key: Arc<str> = format!("{}/{}/undo", run.id, undo.position).into();
        let mut tries = 0;
        loop {
            tries += 1;
            let result = std::panic::AssertUnwindSafe(keyed(&key, &*undo.run))
                .catch_unwind()
                .await
                .unwrap_or_else(|p| {
                    Err(Error::internal(format!("panicked: {}", panic_message(&*p))))
                });
            let written = store
                .record_undo(run, undo.position, result.as_ref().err())
                .await;
            match written {
                Ok(true) => {}
                Ok(false) => return Err(lost()),
                Err(e) => return store.halted(run, Halt::Store(e)).await,
            }
            match result {
                Ok(()) => break,
                Err(e) if tries >= TRIES_HERE => {
                    tracing::warn!(
                        workflow = run.def.name,
                        run = %run.id,
                        step = %undo.name,
                        "undo failed {tries} times, recovery will retry it: {e}"
                    );
                    store.release(run, Duration::from_secs(5)).await;
                    return Err(error);
                }
                Err(e) => {
                    tracing::info!(
                        workflow = run.def.name,
                        run = %run.id,
                        step = %undo.name,
                        "undo failed, retrying: {e}"
                    );
                    tokio::time::sleep(backoff.backoff(tries)).await;
                }
            }
        }
    }
    match store.fail(run, &error).await {
        Ok(true) => Err(error),
        Ok(false) => Err(lost()),
        Err(e) => store.halted(run, Halt::Store(e)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let r = Retry::DEFAULT;
        assert_eq!(r.backoff(1), Duration::from_millis(100));
        assert_eq!(r.backoff(2), Duration::from_millis(200));
        assert_eq!(r.backoff(4), Duration::from_millis(800));
        assert_eq!(r.backoff(40), Duration::from_secs(5));
        assert_eq!(Retry::attempts(0).attempts, 1);
    }

    #[test]
    fn client_codes_are_final_and_server_codes_retried() {
        assert!(!is_retryable(&Error::invalid_argument("x")));
        assert!(!is_retryable(&Error::failed_precondition("x")));
        assert!(!is_retryable(&Error::not_found("x")));
        assert!(is_retryable(&Error::unavailable("x")));
        assert!(is_retryable(&Error::internal("x")));
        assert!(is_retryable(&Error::deadline_exceeded("x")));
    }
}
