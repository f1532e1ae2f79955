//! The running app as one process sees it: which services it hosts, where the others are,
//! its database pools, and the context a request or call runs in.
//!
//! Code runs "inside" a runtime through a task-local [`Context`]. The server enters it for
//! each request, `#[ovation::test]` for each test, so two runtimes can live in one process
//! (two test "processes" in one test binary, or parallel tests with their own databases).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::PgPool;

use crate::error::Error;
use crate::service_auth::ServiceAuth;

/// The service a module belongs to: the first module under the crate root
/// (`shop_app::users::handlers` → `users`).
pub const fn service_of(module_path: &'static str) -> &'static str {
    /// Where the first `::` of `path` starts, if it has one.
    const fn separator(path: &str) -> Option<usize> {
        let bytes = path.as_bytes();
        let mut i = 0;
        while i + 1 < bytes.len() {
            if bytes[i] == b':' && bytes[i + 1] == b':' {
                return Some(i);
            }
            i += 1;
        }
        None
    }
    // A `const fn`, so that an endpoint's service is found when the app is compiled, not at
    // each of its requests.
    let Some(end_of_crate) = separator(module_path) else {
        return module_path;
    };
    let (_, rest) = module_path.split_at(end_of_crate + 2);
    match separator(rest) {
        Some(end) => rest.split_at(end).0,
        None => rest,
    }
}

/// Where a service hosted elsewhere runs: a base URL per replica, taken in turn, so calls and
/// the gateway's forwarding spread evenly over them.
#[derive(Debug)]
pub(crate) struct Replicas {
    urls: Vec<reqwest::Url>,
    next: std::sync::atomic::AtomicUsize,
}

impl Replicas {
    /// `urls` must not be empty (the config's parser never makes an empty one).
    pub(crate) fn new(urls: Vec<reqwest::Url>) -> Replicas {
        assert!(!urls.is_empty(), "a service has at least one URL");
        Replicas {
            urls,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The replica the next request goes to (round robin).
    pub(crate) fn pick(&self) -> &reqwest::Url {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.urls[i % self.urls.len()]
    }
}

/// One process's view of the app.
#[derive(Debug)]
pub struct Runtime {
    /// `None`: every service is hosted here.
    pub(crate) hosted: Option<BTreeSet<String>>,
    pub(crate) discovery: BTreeMap<String, Replicas>,
    pub(crate) pools: BTreeMap<&'static str, PgPool>,
    pub(crate) auth: ServiceAuth,
    pub(crate) http: reqwest::Client,
    pub(crate) call_timeout: Duration,
    /// How long calls retry a port that refuses connections.
    pub(crate) connect_retry: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) request_timeout: Duration,
    /// Longest a client may take to send a request's body (at most `request_timeout`).
    pub(crate) body_read_timeout: Duration,
    pub(crate) body_limit: usize,
    /// How long a stream's `send` waits for a client that reads nothing.
    pub(crate) stream_send_timeout: Duration,
    /// The open streams, closed at shutdown.
    pub(crate) streams: Streams,
    /// Pub/Sub, when the app declares topics or subscriptions.
    pub(crate) pubsub: Option<&'static crate::pubsub::postgres::PgPubSub>,
    /// The cron database, when the app declares a cron job and this process hosts a service.
    pub(crate) cron: Option<&'static crate::cron::store::CronStore>,
    /// The caches' Redis, when the app declares a cache and this process hosts a service.
    pub(crate) cache: Option<crate::cache::Store>,
    /// The workflow database, when the app declares a workflow and this process hosts a
    /// service.
    pub(crate) workflows: Option<&'static crate::workflow::store::WorkflowStore>,
    /// Gateway mode: forward public endpoints of services hosted elsewhere.
    pub(crate) gateway: bool,
    /// A program outside the app ([`crate::Client`]): its calls are unsigned, as any client's.
    pub(crate) external: bool,
    /// Cross-origin access from browsers.
    pub(crate) cors: crate::config::Cors,
    /// The running [`crate::on_start!`] tasks, aborted at shutdown.
    pub(crate) tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Held by each handler of a request that changes something, which runs in a task of its
    /// own and so may outlive its connection: shutdown waits for them (its strong count).
    pub(crate) writes: std::sync::Arc<()>,
    /// Counts and latencies of the requests served and the calls made here.
    pub(crate) metrics: crate::metrics::Metrics,
}

/// The streams a process serves: told to close when it shuts down, counted so it can wait for
/// them.
#[derive(Debug)]
pub(crate) struct Streams {
    closing: tokio::sync::watch::Sender<bool>,
    /// Held by each open stream (its strong count).
    pub(crate) open: std::sync::Arc<()>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            closing: tokio::sync::watch::Sender::new(false),
            open: std::sync::Arc::default(),
        }
    }
}

impl Streams {
    /// What an open stream watches for shutdown.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Closes every open stream (`1001 going away`); new ones close at once.
    pub(crate) fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// How many streams are open.
    pub(crate) fn count(&self) -> usize {
        std::sync::Arc::strong_count(&self.open) - 1
    }
}

/// A task a service runs from start-up to shutdown, declared with [`crate::on_start!`].
#[derive(Debug)]
pub struct StartTask {
    /// `module_path!()` of the declaring module; the service is its first module.
    pub module: &'static str,
    /// The function's name, for the log.
    pub name: &'static str,
    pub run: fn() -> Pin<Box<dyn Future<Output = ()> + Send>>,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct StartTaskEntry(pub &'static StartTask);

inventory::collect!(StartTaskEntry);

/// Every start-up task the app declares.
pub fn start_tasks() -> Vec<&'static StartTask> {
    inventory::iter::<StartTaskEntry>
        .into_iter()
        .map(|e| e.0)
        .collect()
}

/// Runs `task` (an `async fn()` of the declaring service) in the background of every process
/// that hosts the service, from the moment its server listens until shutdown, when it is
/// aborted.
///
/// For work that must survive a crash, such as resuming unfinished sagas: the task may be
/// aborted at any `.await`, so it must keep its progress in the service's database.
///
/// ```ignore
/// async fn resume_checkouts() { /* loop: find unfinished work, finish it, sleep */ }
/// ovation::on_start!(resume_checkouts);
/// ```
#[macro_export]
macro_rules! on_start {
    ($task:path) => {
        const _: () = {
            fn __ovation_start() -> $crate::__private::Pin<
                $crate::__private::Box<dyn $crate::__private::Future<Output = ()> + Send>,
            > {
                $crate::__private::Box::pin($task())
            }
            static __OVATION_START_TASK: $crate::__private::StartTask =
                $crate::__private::StartTask {
                    module: ::core::module_path!(),
                    name: ::core::stringify!($task),
                    run: __ovation_start,
                };
            $crate::__private::inventory::submit! {
                $crate::__private::StartTaskEntry(&__OVATION_START_TASK)
            }
        };
    };
}

impl Runtime {
    /// Whether `service` runs in this process.
    pub fn hosts(&self, service: &str) -> bool {
        self.hosted.as_ref().is_none_or(|h| h.contains(service))
    }

    pub(crate) fn pubsub(&self) -> Result<&'static crate::pubsub::postgres::PgPubSub, Error> {
        self.pubsub.ok_or_else(|| {
            Error::internal("Pub/Sub is not set up in this process: the app declares no topic")
        })
    }

    /// Waits, at most `grace`, for running subscription handlers to finish and be recorded.
    pub(crate) async fn drain_background(&self, grace: Duration) {
        if let Some(pubsub) = self.pubsub
            && !pubsub.drain(grace).await
        {
            tracing::warn!(
                "subscription handlers still running after {grace:?}: their messages will be \
                 delivered again"
            );
        }
    }

    /// Starts the [`crate::on_start!`] tasks of the services hosted here.
    pub(crate) fn start_tasks(&'static self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for task in start_tasks() {
            let service = service_of(task.module);
            if !self.hosts(service) {
                continue;
            }
            tracing::debug!(service, task = task.name, "starting task");
            let handle = tokio::spawn(scope(self, Some(service), (task.run)()));
            tasks.push(handle.abort_handle());
        }
        tasks.extend(crate::cron::store::start(self));
        tasks.extend(crate::workflow::runs::start_background(self));
    }

    /// Stops background work: start-up tasks, claiming messages, relaying the outbox.
    pub(crate) fn stop_background(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
        if let Some(pubsub) = self.pubsub {
            pubsub.stop();
        }
        if let Some(workflows) = self.workflows {
            workflows.stop();
        }
    }

    /// Gives up the workflow runs driven here, once no request waits for them any more: the
    /// process stops, and others resume them.
    pub(crate) fn abort_workflows(&self) {
        if let Some(workflows) = self.workflows {
            workflows.abort_runs();
        }
    }

    pub(crate) fn pool(&self, database: &str) -> Option<&PgPool> {
        self.pools.get(database)
    }

    pub(crate) fn leak(self) -> &'static Runtime {
        Box::leak(Box::new(self))
    }

    pub(crate) async fn close_pools(&self) {
        self.stop_background();
        self.drain_background(Duration::from_secs(5)).await;
        if let Some(pubsub) = self.pubsub {
            pubsub.close().await;
        }
        if let Some(cron) = self.cron {
            cron.close().await;
        }
        if let Some(workflows) = self.workflows {
            workflows.close().await;
        }
        for pool in self.pools.values() {
            pool.close().await;
        }
    }
}

/// Where code runs: the runtime, and the service whose code it is (`None` outside any
/// endpoint, e.g. in a test body).
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) rt: &'static Runtime,
    pub(crate) service: Option<&'static str>,
    /// The endpoint (or subscription) of `service` running, for log lines.
    pub(crate) label: Option<&'static str>,
    /// The idempotency key of the workflow step running, or of the request a step made.
    pub(crate) key: Option<std::sync::Arc<str>>,
    /// Whether calls made here carry `key`: in a step, yes; in its callee, no (the callee's
    /// own calls are other operations).
    pub(crate) propagate_key: bool,
}

tokio::task_local! {
    static CONTEXT: Context;
}

/// The runtime of `ovation::run`, for code outside any request (background tasks).
static GLOBAL: OnceLock<&'static Runtime> = OnceLock::new();

pub(crate) fn set_global(rt: &'static Runtime) {
    let _ = GLOBAL.set(rt);
}

const NO_RUNTIME: &str = "no Ovation runtime here: endpoints, calls and databases work inside \
    an app started with `ovation::run()` or a test marked `#[ovation::test]` (a task spawned \
    with `tokio::spawn` leaves that context; use `ovation::spawn`)";

pub(crate) fn context() -> Result<Context, Error> {
    CONTEXT
        .try_with(Clone::clone)
        .ok()
        .or_else(|| {
            GLOBAL.get().map(|rt| Context {
                rt,
                service: None,
                label: None,
                key: None,
                propagate_key: false,
            })
        })
        .ok_or_else(|| Error::internal(NO_RUNTIME))
}

pub(crate) fn current() -> Result<&'static Runtime, Error> {
    context().map(|c| c.rt)
}

/// Runs `fut` inside `rt`, as code of `service`.
pub(crate) fn scope<F: Future>(
    rt: &'static Runtime,
    service: Option<&'static str>,
    fut: F,
) -> impl Future<Output = F::Output> {
    CONTEXT.scope(
        Context {
            rt,
            service,
            label: None,
            key: None,
            propagate_key: false,
        },
        fut,
    )
}

/// [`scope`] for endpoint (or subscription) `label` of `service`.
pub(crate) fn scope_in<F: Future>(
    rt: &'static Runtime,
    service: &'static str,
    label: &'static str,
    fut: F,
) -> impl Future<Output = F::Output> {
    scope_keyed(rt, service, label, None, fut)
}

/// [`scope_in`] for a request that carries the idempotency key `key` (see
/// [`crate::workflow::idempotency_key`]).
pub(crate) fn scope_keyed<F: Future>(
    rt: &'static Runtime,
    service: &'static str,
    label: &'static str,
    key: Option<std::sync::Arc<str>>,
    fut: F,
) -> impl Future<Output = F::Output> {
    CONTEXT.scope(
        Context {
            rt,
            service: Some(service),
            label: Some(label),
            key,
            propagate_key: false,
        },
        fut,
    )
}

/// The current context with the idempotency key `key`, which calls made in it carry; `None`
/// outside any runtime.
pub(crate) fn keyed_context(key: std::sync::Arc<str>) -> Option<Context> {
    CONTEXT
        .try_with(Clone::clone)
        .ok()
        .or_else(|| context().ok())
        .map(|c| Context {
            key: Some(key),
            propagate_key: true,
            ..c
        })
}

/// Runs `fut` (made by `make`, which runs in the context too) in `ctx`.
pub(crate) fn in_context<F: Future>(
    ctx: Option<Context>,
    make: impl FnOnce() -> F,
) -> impl Future<Output = F::Output> {
    match ctx {
        Some(ctx) => {
            let fut = CONTEXT.sync_scope(ctx.clone(), make);
            futures_util::future::Either::Left(CONTEXT.scope(ctx, fut))
        }
        None => futures_util::future::Either::Right(make()),
    }
}

/// The idempotency key of the running step or request, and whether calls carry it.
pub(crate) fn current_key() -> Option<(std::sync::Arc<str>, bool)> {
    CONTEXT
        .try_with(|c| c.key.clone().map(|k| (k, c.propagate_key)))
        .ok()
        .flatten()
}

/// Where the code writing a log line runs: `(service, endpoint or subscription)`.
pub(crate) fn log_context() -> Option<(&'static str, Option<&'static str>)> {
    CONTEXT
        .try_with(|c| c.service.map(|s| (s, c.label)))
        .ok()
        .flatten()
}

/// `tokio::spawn`, keeping the current Ovation context (runtime, service and the
/// authenticated user) in the new task.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let fut = crate::auth::data::scope(crate::auth::data::current(), fut);
    match CONTEXT.try_with(Clone::clone) {
        Ok(ctx) => tokio::spawn(CONTEXT.scope(ctx, fut)),
        Err(_) => tokio::spawn(fut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_is_the_first_module_under_the_crate() {
        assert_eq!(service_of("shop_app::users"), "users");
        assert_eq!(service_of("shop_app::users::handlers"), "users");
        assert_eq!(service_of("shop_app"), "shop_app");
    }
}
