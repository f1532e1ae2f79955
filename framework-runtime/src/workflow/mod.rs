//! Durable workflows: an async function of a service whose progress survives crashes, kept in
//! the Postgres the app already has. No workflow server to run.
//!
//! ```ignore
//! #[ovation::workflow]
//! pub async fn checkout(p: CheckoutInput) -> Result<Order, Error> {
//!     step("reserve", || products::reserve_inventory(p.product_id, reserve.clone()))
//!         .compensate_with(move || products::release_inventory(product, release.clone()))
//!         .await?;
//!     let charge = payments::charge(charge_params).await?;   // a typed call: a step by itself
//!     orders::place(p.checkout_id, order).await
//! }
//!
//! let order = checkout.run(input).await?;          // started and awaited, from an endpoint
//! let id = checkout.start(input).await?;           // started and left; `checkout.result(&id)`
//! ```
//!
//! **Steps.** Every typed service call made in a workflow is a step, and [`step`] makes any
//! other code one. A step's outcome is checkpointed (the framework's `ovation_workflows`
//! database, on the server the service databases live on) while the next step's first attempt
//! runs, and the last step's with the run's outcome, in the statement that records it. A run
//! that is resumed runs its function again from the top: each completed step returns its
//! recorded output without running, the first unfinished one runs. So the code between steps
//! must be deterministic: the same input takes the same steps in the same order. A resumed run
//! whose code no longer matches its record (another step at a position) stops with an error
//! naming the workflow, the position and both steps rather than do something else.
//!
//! **At least once, keyed.** A step cut off by a crash runs again. Its idempotency key (the
//! run's id and the step's position, `<run>/<n>`) reaches the endpoints it calls, where
//! [`idempotency_key`] reads it, so they can do their work once. One side effect per step:
//! calls made inside one [`step`] share its key.
//!
//! **Retries.** A step that fails with `unavailable`, `deadline_exceeded`, `internal`,
//! `unknown`, `aborted`, `canceled` or `resource_exhausted` is retried with backoff ([`Retry`],
//! 5 attempts by default); any other code (`invalid_argument`, `failed_precondition`, ...) is
//! final at once: the callee refused, and retrying would not change its mind.
//!
//! **Compensation.** When the function returns an error, the undos registered with
//! [`Step::compensate_with`] run newest first: those of the steps that succeeded, and that of
//! a step whose outcome is unknown (it failed with a retryable error, so it may have done its
//! work); not that of a step refused with a final error. Each undo is recorded once done and
//! retried until it succeeds, across crashes. The run ends `failed` with the function's error.
//!
//! **Ownership.** The process that starts a run owns it: its liveness key (a session advisory
//! lock, as Pub/Sub uses) and a lease it renews. Every process hosting the workflow's service
//! looks each second for runs whose owner is gone (its lock disappeared: within a second of a
//! SIGKILL) or whose lease ran out, and resumes them. Each checkpoint is written only while
//! the writer still owns the run, so a run is never driven by two processes at once.
//!
//! **Durable sleep.** [`sleep`] records when it ends: a run resumed after a restart sleeps
//! only what is left.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

pub(crate) mod engine;
pub(crate) mod runs;
pub(crate) mod status;
pub(crate) mod store;

pub use engine::{Retry, Step, idempotency_key, sleep, step};
pub(crate) use engine::{call_step, current_run, outgoing_key};
pub use status::{RunState, RunStatus, StepState, StepStatus};

/// A run of a workflow's function, as [`crate::workflow`] registers it.
#[doc(hidden)]
pub type RunFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, Error>> + Send>>;

/// What `#[ovation::workflow]` registers.
#[doc(hidden)]
pub struct WorkflowDef {
    pub name: &'static str,
    /// `module_path!()` of the declaration: its service is the first module.
    pub module: &'static str,
    /// Decodes a run's input and starts the function on it.
    pub run: fn(serde_json::Value) -> Result<RunFuture, Error>,
    pub file: &'static str,
    pub line: u32,
}

impl std::fmt::Debug for WorkflowDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowDef")
            .field("name", &self.name)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

impl WorkflowDef {
    /// The service whose processes run (and resume) the workflow.
    pub fn service(&self) -> &'static str {
        crate::runtime::service_of(self.module)
    }
}

#[doc(hidden)]
#[derive(Debug)]
pub struct WorkflowEntry(pub &'static WorkflowDef);

inventory::collect!(WorkflowEntry);

/// A workflow, as `#[ovation::workflow]` makes it of an `async fn(I) -> Result<O, Error>`:
/// the function's name is this value, and the function is started through it.
pub struct Workflow<I, O> {
    def: &'static WorkflowDef,
    types: PhantomData<fn(I) -> O>,
}

impl<I, O> std::fmt::Debug for Workflow<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Workflow").field(&self.def.name).finish()
    }
}

impl<I, O> Workflow<I, O> {
    #[doc(hidden)]
    pub const fn new(def: &'static WorkflowDef) -> Self {
        Workflow {
            def,
            types: PhantomData,
        }
    }

    /// The workflow's name.
    pub fn name(&self) -> &'static str {
        self.def.name
    }
}

impl<I, O> Workflow<I, O>
where
    I: Serialize,
    O: DeserializeOwned,
{
    /// Runs the workflow on `input` under a new id and waits for its outcome: its output, or
    /// its error once its compensations ran (if one keeps failing, recovery finishes it later).
    pub async fn run(&self, input: I) -> Result<O, Error> {
        self.run_with_id(&new_id(), input).await
    }

    /// [`run`](Self::run) under the id `id`, which makes it idempotent: while a run with this
    /// id exists, another start waits for it and gets its outcome instead of running again.
    /// `id` is up to 200 characters (letters, digits and `-_.:@`).
    pub async fn run_with_id(&self, id: &str, input: I) -> Result<O, Error> {
        let input = encode(self.def, "input", &input)?;
        // Boxed: the caller's future stays shallow (its layout is computed for every endpoint).
        let output = Box::pin(runs::run(self.def, id, input)).await?;
        decode(self.def, output)
    }

    /// Starts the workflow on `input` under a new id and returns the id at once; the run goes
    /// on in the background (and survives this process).
    pub async fn start(&self, input: I) -> Result<String, Error> {
        self.start_with_id(&new_id(), input).await
    }

    /// [`start`](Self::start) under the id `id`: starting an id that exists starts nothing.
    pub async fn start_with_id(&self, id: &str, input: I) -> Result<String, Error> {
        let input = encode(self.def, "input", &input)?;
        Box::pin(runs::start(self.def, id, input)).await?;
        Ok(id.to_owned())
    }

    /// Waits for run `id` of this workflow to end: its output, or its error. `not_found` if
    /// there is no such run.
    pub async fn result(&self, id: &str) -> Result<O, Error> {
        let output = Box::pin(runs::wait(self.def, id)).await?;
        decode(self.def, output)
    }
}

/// Run `id`'s state, steps included; `not_found` if there is no such run.
pub async fn status(id: &str) -> Result<RunStatus, Error> {
    runs::status(id).await
}

/// Resumes, now, the runs of this runtime's services whose owner is gone or whose lease ran
/// out (what every process does each second), and returns how many it took. For tests: they
/// decide when recovery runs.
pub async fn recover_now() -> Result<usize, Error> {
    runs::recover_now().await
}

/// Runs failed run `id` again from its failed step: the steps before it keep their recorded
/// outputs. Refused (`failed_precondition`) when the run is not failed, or when its
/// compensations ran (the steps before were undone: start a new run instead).
pub async fn retry(id: &str) -> Result<(), Error> {
    runs::retry(id).await
}

/// Every workflow the app declares, by name.
pub fn workflows() -> Vec<&'static WorkflowDef> {
    let mut all: Vec<&'static WorkflowDef> = inventory::iter::<WorkflowEntry>
        .into_iter()
        .map(|e| e.0)
        .collect();
    all.sort_by_key(|w| w.name);
    all
}

/// The workflow named `name`.
pub(crate) fn workflow(name: &str) -> Option<&'static WorkflowDef> {
    inventory::iter::<WorkflowEntry>
        .into_iter()
        .map(|e| e.0)
        .find(|w| w.name == name)
}

/// Whether the app declares a workflow: then processes hosting a service need its database.
pub(crate) fn in_use() -> bool {
    inventory::iter::<WorkflowEntry>
        .into_iter()
        .next()
        .is_some()
}

/// The declarations' mistakes, found before the app serves: a name used twice.
pub(crate) fn check_setup() -> Result<(), String> {
    let all = workflows();
    if let Some(pair) = all.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(format!(
            "workflow `{}` is declared twice, at {}:{} and at {}:{}; give one another name \
             (`#[ovation::workflow(name = \"...\")]`)",
            pair[0].name, pair[0].file, pair[0].line, pair[1].file, pair[1].line
        ));
    }
    Ok(())
}

/// The registered form of a workflow's function: decodes the input, runs, encodes the output.
#[doc(hidden)]
pub fn entry<I, O, F, Fut>(
    def: &'static WorkflowDef,
    input: serde_json::Value,
    body: F,
) -> Result<RunFuture, Error>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(I) -> Fut,
    Fut: Future<Output = Result<O, Error>> + Send + 'static,
{
    let input: I = serde_json::from_value(input).map_err(|e| {
        Error::internal(format!(
            "workflow `{}`: its recorded input does not decode as the function's input \
             (changed since the run started?): {e}",
            def.name
        ))
    })?;
    let run = body(input);
    Ok(Box::pin(async move {
        let output = run.await?;
        encode(def, "output", &output)
    }))
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn encode<T: Serialize>(
    def: &WorkflowDef,
    what: &str,
    value: &T,
) -> Result<serde_json::Value, Error> {
    serde_json::to_value(value).map_err(|e| {
        Error::internal(format!(
            "workflow `{}`: its {what} cannot be recorded as JSON: {e}",
            def.name
        ))
    })
}

fn decode<T: DeserializeOwned>(def: &WorkflowDef, value: serde_json::Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| {
        Error::internal(format!(
            "workflow `{}`: its recorded output does not decode: {e}",
            def.name
        ))
    })
}
