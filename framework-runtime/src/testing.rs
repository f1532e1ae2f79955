//! Test support: every test gets its own databases, cloned from migrated templates.
//!
//! `#[ovation::test]` runs its body in a [`TestEnv`] hosting every service locally. End-to-end
//! tests use `TestEnv` directly to serve the app over real HTTP, possibly as several "processes"
//! (runtimes hosting different services) that call each other over loopback.
//!
//! The databases live on `DATABASE_URL` when set, otherwise on a managed Postgres cluster in
//! `<cargo target dir>/ovation` (or `OVATION_DATA_DIR`), started on first use and stopped by its
//! watchdog shortly after the last test process exits. Templates are named by a hash of their
//! migrations, so they are built once and cloned (`CREATE DATABASE .. TEMPLATE`) per test.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::sync::OnceCell;

use crate::app::{self, Server};
use crate::config::Config;
use crate::error::Error;
use crate::runtime::{self, Runtime};
use crate::service_auth::{ServiceAuth, ServiceAuthKey};
use crate::sqldb;

/// Which services a test runtime hosts, where the others are, and any setting that differs
/// from the defaults: a [`Config`], read by the same code as the app's.
#[derive(Debug, Clone, Default)]
pub struct Hosting {
    config: Config,
    /// The signing key and the other accepted ones, instead of the environment's key.
    service_auth: Option<(ServiceAuthKey, Vec<ServiceAuthKey>)>,
}

/// `duration` in the whole seconds a config holds.
fn whole_seconds(duration: std::time::Duration) -> u64 {
    assert!(
        duration.subsec_nanos() == 0,
        "the config holds this setting in whole seconds, not {duration:?}"
    );
    duration.as_secs()
}

impl Hosting {
    /// Every service, in this runtime.
    pub fn all() -> Hosting {
        Hosting::default()
    }

    /// Whether cron jobs run on their schedule (off by default in tests: run one with
    /// [`crate::cron::run_now`]).
    pub fn cron_jobs(mut self, on: bool) -> Hosting {
        self.config.cron = Some(on);
        self
    }

    /// Only these services; calls to the others go over HTTP to their [`Hosting::remote`] URL.
    pub fn only<I, S>(services: I) -> Hosting
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut hosting = Hosting::default();
        hosting.config.hosted_services = Some(services.into_iter().map(Into::into).collect());
        hosting
    }

    /// No service: a gateway forwarding public endpoints to their [`Hosting::remote`] URLs.
    pub fn gateway() -> Hosting {
        let mut hosting = Hosting::default();
        hosting.config.hosted_services = Some(Vec::new());
        hosting.config.gateway = true;
        hosting
    }

    /// Where `service` (not hosted here) is served.
    pub fn remote(mut self, service: impl Into<String>, base_url: impl Into<String>) -> Hosting {
        self.config.services.insert(service.into(), base_url.into());
        self
    }

    /// How long a call to another process may take (default 30 s, as in production).
    pub fn call_timeout(mut self, timeout: std::time::Duration) -> Hosting {
        self.config.call_timeout_secs = Some(whole_seconds(timeout));
        self
    }

    /// How long calls retry a port that refuses connections (default 5 s, as in production).
    pub fn connect_retry(mut self, window: std::time::Duration) -> Hosting {
        self.config.connect_retry_ms = Some(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// How long a client may take to send its request headers (default 10 s).
    pub fn header_read_timeout(mut self, timeout: std::time::Duration) -> Hosting {
        self.config.header_read_timeout_secs = Some(whole_seconds(timeout));
        self
    }

    /// How long a client may take to send a request's body (default 10 s).
    pub fn body_read_timeout(mut self, timeout: std::time::Duration) -> Hosting {
        self.config.body_read_timeout_secs = Some(whole_seconds(timeout));
        self
    }

    /// The largest request body accepted, in bytes (default 1 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Hosting {
        self.config.body_limit_bytes = Some(bytes);
        self
    }

    /// How long a stream's `send` waits for a client that reads nothing (default 5 s).
    pub fn stream_send_timeout(mut self, timeout: std::time::Duration) -> Hosting {
        self.config.stream_send_timeout_ms =
            Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Which web pages of other origins may call the endpoints (default: none).
    pub fn cors(mut self, cors: crate::config::Cors) -> Hosting {
        self.config.cors = cors;
        self
    }

    #[doc(hidden)]
    /// Signs with `signing` and accepts it and `accepted`, instead of the environment's
    /// shared key: to test a key rotation.
    pub fn service_auth(
        mut self,
        signing: ServiceAuthKey,
        accepted: Vec<ServiceAuthKey>,
    ) -> Hosting {
        self.service_auth = Some((signing, accepted));
        self
    }
}

/// A set of fresh databases (one per declared database) and the runtimes using them.
#[derive(Debug)]
pub struct TestEnv {
    server: sqldb::PgServer,
    /// Declared database name → this environment's database.
    databases: BTreeMap<&'static str, String>,
    auth_key: ServiceAuthKey,
    runtimes: Mutex<Vec<&'static Runtime>>,
    /// The NATS transport of Pub/Sub, for [`TestEnv::with_nats`].
    nats: Option<crate::pubsub::nats::Nats>,
    /// The caches, with keys of this environment's own (deleted by [`TestEnv::close`]).
    cache: Option<crate::cache::Store>,
}

static SERVER: OnceCell<sqldb::PgServer> = OnceCell::const_new();
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
const TEST_DB_PREFIX: &str = "ovt_";

fn test_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OVATION_DATA_DIR") {
        return PathBuf::from(dir);
    }
    // Test binaries live in <target>/<profile>/deps/; cargo marks <target> with CACHEDIR.TAG.
    // Doctests run from a temporary folder: they get a cluster in the temp dir.
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|a| a.join("CACHEDIR.TAG").is_file())
                .map(|t| t.join("ovation"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("ovation-test"))
}

/// The Redis tests' caches live on: `REDIS_URL`, or the managed `redis-server` in the tests'
/// data folder (started on first use, stopped when idle).
async fn test_redis_url() -> Result<&'static str, Error> {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_try_init(|| async {
        let config = Config {
            redis_url: std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()),
            data_dir: Some(test_data_dir()),
            ..Config::default()
        };
        app::redis_url(&config)
            .await
            .map_err(|e| Error::unavailable(format!("ovation test set-up failed: {e}")))
    })
    .await
    .map(String::as_str)
}

#[doc(hidden)]
/// The Postgres server tests use (started on first use; see the module docs).
pub async fn test_server() -> Result<&'static sqldb::PgServer, Error> {
    SERVER
        .get_or_try_init(|| async {
            let config = Config {
                database_url: std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()),
                data_dir: Some(test_data_dir()),
                ..Config::default()
            };
            let server = app::database_server(&config)
                .await
                .map_err(|e| Error::unavailable(format!("test database server: {e}")))?
                .throwaway();
            drop_orphans(&server).await;
            Ok(server)
        })
        .await
}

/// Drops the test databases of test processes that exited before theirs were all dropped:
/// in the background, or right away when so many have piled up that the background could fall
/// behind.
async fn drop_orphans(server: &sqldb::PgServer) {
    let Ok(names) = server.databases_with_prefix(TEST_DB_PREFIX).await else {
        return;
    };
    let orphans: Vec<String> = names
        .into_iter()
        .filter(|name| {
            let pid = name
                .strip_prefix(TEST_DB_PREFIX)
                .and_then(|r| r.split('_').next());
            pid.is_some_and(|pid| !std::path::Path::new("/proc").join(pid).exists())
        })
        .collect();
    if orphans.len() > MAX_ORPHANS {
        for chunk in orphans.chunks(DROP_BATCH) {
            drop_all(server, chunk).await;
        }
    } else {
        for name in orphans {
            drop_later(server, name);
        }
    }
}

/// Orphans tolerated before a test process drops them before running its tests.
const MAX_ORPHANS: usize = 32;
/// Databases dropped side by side: Postgres coalesces their checkpoint requests.
const DROP_BATCH: usize = 16;

async fn drop_all(server: &sqldb::PgServer, names: &[String]) {
    for (name, result) in names
        .iter()
        .zip(join_all(names.iter().map(|n| server.drop_database(n))).await)
    {
        if let Err(e) = result {
            tracing::debug!("could not drop test database {name}: {e}");
        }
    }
}

/// Drops `database` on a background thread of this process.
///
/// On Postgres 15 `DROP DATABASE` waits for a checkpoint, which costs a test more than its body
/// does (measured: the 16 shop-app tests took 11 s with inline drops, 2.5 s without). The
/// thread drops what is queued in batches; what is still queued when the process exits is
/// orphaned, and dropped by the next test process.
fn drop_later(server: &sqldb::PgServer, database: String) {
    static QUEUE: Background<(sqldb::PgServer, String)> = Background::new("db-dropper");
    QUEUE.send((server.clone(), database), |tokio, jobs| {
        for batch in jobs.chunks(DROP_BATCH) {
            let names: Vec<String> = batch.iter().map(|(_, n)| n.clone()).collect();
            tokio.block_on(drop_all(&batch[0].0, &names));
        }
    });
}

/// Spare copies kept of each database's template: enough for the tests that start side by
/// side (nextest runs one per core).
const SPARES: usize = 2;

/// Makes [`SPARES`] spare copies of each of `defs` on a background thread of this process,
/// for the next test environment to take (see [`sqldb::PgServer::claim_spare`]). Copies cut
/// short by the process's exit are not left half-made: `CREATE DATABASE` is all or nothing.
fn spares_later(server: &sqldb::PgServer, defs: Vec<&'static sqldb::DatabaseDef>) {
    static QUEUE: Background<(sqldb::PgServer, Vec<&'static sqldb::DatabaseDef>)> =
        Background::new("db-spares");
    QUEUE.send((server.clone(), defs), |tokio, jobs| {
        // Environments made meanwhile asked for the same: once is enough.
        let Some((server, defs)) = jobs.last() else {
            return;
        };
        for def in defs {
            if let Err(e) = tokio.block_on(server.make_spares(def, SPARES)) {
                tracing::debug!("no spare copy of {}: {e}", def.name);
            }
        }
    });
}

/// Work on test databases done on a thread of its own, started with the first job: each time
/// it wakes it takes every job queued and hands them to the function the jobs are sent with.
struct Background<J> {
    name: &'static str,
    queue: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<J>>>,
}

impl<J: Send + 'static> Background<J> {
    const fn new(name: &'static str) -> Self {
        Background {
            name,
            queue: std::sync::OnceLock::new(),
        }
    }

    fn send(&self, job: J, work: fn(&tokio::runtime::Runtime, Vec<J>)) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<J>();
            let spawned = std::thread::Builder::new()
                .name(format!("ovation-test-{}", self.name))
                .spawn(move || {
                    let Ok(tokio) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    while let Ok(first) = rx.recv() {
                        work(
                            &tokio,
                            std::iter::once(first).chain(rx.try_iter()).collect(),
                        );
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(
                    "no background thread for test databases ({}): {e}",
                    self.name
                );
            }
            Mutex::new(tx)
        });
        let _ = queue.lock().unwrap_or_else(|p| p.into_inner()).send(job);
    }
}

/// Runs futures concurrently on the current task; their outputs in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

impl TestEnv {
    /// Like [`TestEnv::new`], with Pub/Sub on NATS JetStream: a managed `nats-server` (started
    /// on first use, stopped when idle), with streams and consumers named for this
    /// environment alone.
    pub async fn with_nats() -> Result<TestEnv, Error> {
        static URL: OnceCell<String> = OnceCell::const_new();
        let url = URL
            .get_or_try_init(|| async {
                let config = Config {
                    pubsub: crate::config::PubSubBackend::ManagedNats,
                    data_dir: Some(test_data_dir()),
                    ..Config::default()
                };
                app::nats_url(&config)
                    .await
                    .map_err(|e| Error::unavailable(e.to_string()))?
                    .ok_or_else(|| Error::internal("no NATS URL"))
            })
            .await?;
        let mut env = TestEnv::new().await?;
        let prefix = format!(
            "ovt{}x{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let nats = crate::pubsub::nats::Nats::connect(url, prefix).await?;
        for topic in crate::pubsub::topics() {
            nats.ensure_stream(topic.name).await?;
        }
        env.nats = Some(nats);
        Ok(env)
    }

    /// Fresh, migrated copies of every database the app declares.
    pub async fn new() -> Result<TestEnv, Error> {
        crate::telemetry::init_for_tests();
        app::check().map_err(|e| Error::internal(format!("the app is not valid:\n{e}")))?;
        let server = test_server().await?.clone();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut databases = BTreeMap::new();
        let mut defs = sqldb::declared();
        if crate::pubsub::in_use() {
            defs.push(&crate::pubsub::postgres::DATABASE);
        }
        if crate::cron::in_use() {
            defs.push(&crate::cron::store::DATABASE);
        }
        if crate::workflow::in_use() {
            defs.push(&crate::workflow::store::DATABASE);
        }
        // A spare copy made while an earlier test ran is taken by renaming it; the others are
        // copied from their templates all at once (each copy is mostly the server writing
        // files). Then new spares are made in the background, for the next test.
        let clones = defs.iter().map(|def| {
            let name = format!("{TEST_DB_PREFIX}{pid}_{id}_{}", def.name);
            let server = &server;
            async move {
                def.current_migrations()?;
                if !server.claim_spare(def, &name).await? {
                    server.clone_from_template(def, &name).await?;
                }
                Ok::<_, Error>((def.name, name))
            }
        });
        for (def, name) in futures_util::future::try_join_all(clones).await? {
            databases.insert(def, name);
        }
        spares_later(&server, defs);
        let cache = if crate::cache::in_use() {
            let url = test_redis_url().await?;
            let store = crate::cache::Store::open(url, format!("ovt{pid}x{id}:"))
                .map_err(Error::internal)?;
            Some(store)
        } else {
            None
        };
        Ok(TestEnv {
            server,
            databases,
            auth_key: ServiceAuthKey::random(),
            runtimes: Mutex::new(Vec::new()),
            nats: None,
            cache,
        })
    }

    #[doc(hidden)]
    /// The service-auth key the runtimes of this environment share.
    pub fn service_auth_key(&self) -> &ServiceAuthKey {
        &self.auth_key
    }

    #[doc(hidden)]
    /// A runtime over this environment's databases, hosting what `hosting` says.
    pub fn runtime(&self, hosting: Hosting) -> Result<&'static Runtime, Error> {
        // A runtime hosting nothing is a gateway: it has no Pub/Sub.
        let hosts_nothing = hosting
            .config
            .hosted_services
            .as_ref()
            .is_some_and(Vec::is_empty);
        self.runtime_with(hosting, !hosts_nothing)
    }

    fn runtime_with(&self, hosting: Hosting, with_pubsub: bool) -> Result<&'static Runtime, Error> {
        let builder = app::RuntimeBuilder::from_config(&hosting.config)
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        let pubsub_db = crate::pubsub::postgres::DATABASE.name;
        let pubsub = self
            .databases
            .get(pubsub_db)
            .filter(|_| with_pubsub)
            .map(|db| {
                let pool = sqldb::pool_options(5).connect_lazy_with(self.server.options(db));
                let mut backend = crate::pubsub::postgres::PgPubSub::new(pool);
                if let Some(nats) = &self.nats {
                    backend = backend.with_nats(nats.clone());
                }
                &*Box::leak(Box::new(backend))
            });
        let cron_db = crate::cron::store::DATABASE.name;
        let cron = self
            .databases
            .get(cron_db)
            .filter(|_| with_pubsub)
            .map(|db| {
                let pool = sqldb::pool_options(3).connect_lazy_with(self.server.options(db));
                // Off unless the test asks: a test decides when its jobs run.
                let scheduled = hosting.config.cron.unwrap_or(false);
                &*Box::leak(Box::new(crate::cron::store::CronStore::new(
                    pool, scheduled,
                )))
            });
        let workflows_db = crate::workflow::store::DATABASE.name;
        let workflows = self
            .databases
            .get(workflows_db)
            .filter(|_| with_pubsub)
            .map(|db| {
                let pool = sqldb::pool_options(5).connect_lazy_with(self.server.options(db));
                &*Box::leak(Box::new(crate::workflow::store::WorkflowStore::new(pool)))
            });
        let pools = self
            .databases
            .iter()
            .filter(|(name, _)| ![pubsub_db, cron_db, workflows_db].contains(*name))
            .map(|(name, db)| {
                (
                    *name,
                    sqldb::pool_options(5).connect_lazy_with(self.server.options(db)),
                )
            })
            .collect();
        let (signing, accepted) = hosting
            .service_auth
            .unwrap_or_else(|| (self.auth_key.clone(), Vec::new()));
        // Like Pub/Sub, the caches are for runtimes hosting services.
        let cache = self.cache.clone().filter(|_| with_pubsub);
        let rt = builder
            .pools(pools)
            .pubsub(pubsub)
            .cache(cache)
            .cron(cron)
            .workflows(workflows)
            .auth(ServiceAuth::new(signing, accepted))
            .build();
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rt);
        Ok(rt)
    }

    /// Serves `hosting`'s services over HTTP on a free port of 127.0.0.1, and starts their
    /// [`crate::on_start!`] tasks, as a process of the app would.
    pub async fn serve(&self, hosting: Hosting) -> Result<Server, Error> {
        let rt = self.runtime(hosting)?;
        let listener = crate::http::listener::bind(([127, 0, 0, 1], 0).into())
            .await
            .map_err(|e| Error::unavailable(format!("cannot listen on 127.0.0.1: {e}")))?;
        let server = Server::start(rt, listener)
            .map_err(|e| Error::internal(e.to_string()))?
            .with_background(rt);
        rt.start_tasks();
        Ok(server)
    }

    /// Every service in a runtime of its own, served over HTTP on loopback and calling the
    /// others there, as if each ran in a process of its own. Returns the runtime a test body
    /// runs in — it hosts nothing, so its calls go over HTTP too, but it reaches every
    /// database and publishes to topics — and each service's server, which stops when dropped.
    #[doc(hidden)]
    pub async fn split(&self) -> Result<(&'static Runtime, Vec<(&'static str, Server)>), Error> {
        let services = crate::model::services();
        let mut listeners = Vec::with_capacity(services.len());
        let mut urls = Vec::with_capacity(services.len());
        for _ in &services {
            let listener = crate::http::listener::bind(([127, 0, 0, 1], 0).into())
                .await
                .map_err(|e| Error::unavailable(format!("cannot listen on 127.0.0.1: {e}")))?;
            let addr = listener
                .local_addr()
                .map_err(|e| Error::unavailable(format!("cannot listen on 127.0.0.1: {e}")))?;
            urls.push(format!("http://{addr}"));
            listeners.push(listener);
        }
        let elsewhere = |mut hosting: Hosting, here: Option<&str>| {
            for (service, url) in services.iter().zip(&urls) {
                if Some(*service) != here {
                    hosting = hosting.remote(*service, url.clone());
                }
            }
            hosting
        };
        let mut servers = Vec::with_capacity(services.len());
        for (service, listener) in services.iter().zip(listeners) {
            let rt = self.runtime(elsewhere(Hosting::only([*service]), Some(service)))?;
            let server = Server::start(rt, listener).map_err(|e| Error::internal(e.to_string()))?;
            servers.push((*service, server));
        }
        let body = self.runtime_with(elsewhere(Hosting::only(Vec::<String>::new()), None), true)?;
        Ok((body, servers))
    }

    /// Runs `fut` inside `rt`, one of this environment's runtimes.
    #[doc(hidden)]
    pub async fn run_in<F: Future>(&self, rt: &'static Runtime, fut: F) -> F::Output {
        runtime::scope(rt, None, fut).await
    }

    /// Runs `fut` inside a runtime hosting every service, as a test body does.
    pub async fn run<F: Future>(&self, fut: F) -> Result<F::Output, Error> {
        let rt = self.runtime(Hosting::all())?;
        Ok(runtime::scope(rt, None, fut).await)
    }

    /// Runs `fut` inside a runtime hosting what `hosting` says: calls to the other services go
    /// over HTTP to their remote URLs.
    pub async fn run_hosting<F: Future>(
        &self,
        hosting: Hosting,
        fut: F,
    ) -> Result<F::Output, Error> {
        let rt = self.runtime(hosting)?;
        Ok(runtime::scope(rt, None, fut).await)
    }

    /// The name of this environment's copy of the declared database `name`.
    pub fn database_name(&self, name: &str) -> Option<&str> {
        self.databases.get(name).map(String::as_str)
    }

    /// Closes the pools and drops the databases (in the background, so a test does not wait for Postgres to drop them).
    pub async fn close(self) {
        let runtimes =
            std::mem::take(&mut *self.runtimes.lock().unwrap_or_else(|p| p.into_inner()));
        for rt in runtimes {
            rt.close_pools().await;
        }
        // The test's spans reach the collector before the test process ends.
        let _ = tokio::task::spawn_blocking(|| {
            crate::telemetry::flush(std::time::Duration::from_secs(5))
        })
        .await;
        if let Some(cache) = &self.cache {
            cache.delete_all().await;
        }
        if let Some(nats) = &self.nats {
            let topics: Vec<&str> = crate::pubsub::topics().iter().map(|t| t.name).collect();
            nats.delete_streams(&topics).await;
        }
        for db in self.databases.into_values() {
            drop_later(&self.server, db);
        }
    }
}

/// What a test body may return: `()` or `Result<(), E: Debug>`.
pub trait TestOutput {
    fn check(self);
}

impl TestOutput for () {
    fn check(self) {}
}

impl<E: std::fmt::Debug> TestOutput for Result<(), E> {
    fn check(self) {
        if let Err(e) = self {
            panic!("test returned an error: {e:?}");
        }
    }
}

/// Catches a panic of the wrapped future, so the test's databases are dropped before the
/// panic continues.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Whether `OVATION_TEST_SPLIT=1` asks every `#[ovation::test]` to run split.
fn split_requested() -> bool {
    std::env::var("OVATION_TEST_SPLIT").is_ok_and(|v| v == "1" || v == "true")
}

/// The body of a `#[ovation::test]`: own databases, every service local — or, with
/// `OVATION_TEST_SPLIT=1`, each in a runtime of its own (see [`TestEnv::split`]).
#[doc(hidden)]
pub fn run_test<F, Fut>(test: F)
where
    F: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: TestOutput,
{
    run_placed(test, split_requested());
}

/// The body of a `#[ovation::test(split)]`: own databases, each service in a runtime of its
/// own, talking over loopback HTTP.
#[doc(hidden)]
pub fn run_split_test<F, Fut>(test: F)
where
    F: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: TestOutput,
{
    run_placed(test, true);
}

fn run_placed<F, Fut>(test: F, split: bool)
where
    F: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: TestOutput,
{
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the test's async runtime starts");
    let outcome = tokio.block_on(async {
        let env = match TestEnv::new().await {
            Ok(env) => env,
            Err(e) => panic!(
                "ovation test set-up failed: {}",
                crate::http::client::error_chain(&e)
            ),
        };
        let placed = if split {
            env.split().await
        } else {
            env.runtime(Hosting::all()).map(|rt| (rt, Vec::new()))
        };
        let (rt, servers) = match placed {
            Ok(placed) => placed,
            Err(e) => panic!(
                "ovation test set-up failed: {}",
                crate::http::client::error_chain(&e)
            ),
        };
        let outcome = CatchUnwind(Box::pin(runtime::scope(rt, None, test()))).await;
        drop(servers);
        env.close().await;
        outcome
    });
    match outcome {
        Ok(output) => output.check(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
