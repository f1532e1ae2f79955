//! Starting an app: config, databases, runtime, server, graceful shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{Config, ConfigError, PubSubBackend};
use crate::http::client::http_client;
use crate::http::listener::serve;
use crate::http::{self, RouteError};
use crate::infra::{InfraError, ManagedPostgres};
use crate::runtime::{self, Runtime};
use crate::service_auth::{ServiceAuth, ServiceAuthKey};
use crate::sqldb::{self, SetupError};

/// Why an app could not start. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error(transparent)]
    Database(#[from] SetupError),
    #[error(transparent)]
    Routes(#[from] RouteError),
    #[error("unknown service `{name}` in the hosted services; the app's services are: {known}")]
    UnknownService { name: String, known: String },
    #[error("the URL {url:?} of service `{service}` is not valid: {reason}")]
    BadServiceUrl {
        service: String,
        url: String,
        reason: String,
    },
    #[error("Pub/Sub: {0}")]
    PubSub(String),
    #[error("{0}")]
    Secrets(String),
    #[error("cache: {0}")]
    Cache(String),
    #[error("{0}")]
    Cron(String),
    #[error("{0}")]
    Workflow(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
}

/// Runs the app from the process's config (`OVATION_CONFIG` and the environment) until
/// Ctrl-C or SIGTERM. This is the whole `main` of an Ovation app:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     ovation::run()
/// }
/// ```
///
/// With `OVATION_DESCRIBE=1` it prints the app model as JSON instead (services, endpoints,
/// databases, topics) and exits: the CLI plans
/// deployments with it.
/// With `OVATION_DESCRIBE=openapi` it prints the OpenAPI document of its public API.
/// With `OVATION_DESCRIBE=check` it prints what is wrong with the app, found without starting
/// it (`ovation check`).
pub fn run() -> ExitCode {
    match std::env::var_os("OVATION_DESCRIBE") {
        Some(v) if v == "1" => {
            return match serde_json::to_string(&crate::model::app_model(None)) {
                Ok(model) => {
                    println!("{model}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: the app model could not be written: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(v) if v == "check" => {
            let problems = problems();
            let services = crate::model::services();
            let report = serde_json::json!({
                "services": services,
                "endpoints": crate::registry::endpoints().len(),
                "problems": problems,
            });
            println!("{report}");
            return ExitCode::SUCCESS;
        }
        Some(v) if v == "openapi" => {
            println!("{:#}", crate::http::openapi::spec());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::telemetry::init(&config);
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio.block_on(async {
        let server = start(config).await?;
        server.run_until_signal().await;
        Ok::<(), StartupError>(())
    });
    crate::telemetry::flush(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The services this process hosts, checked against the app's services.
pub(crate) fn hosted_services(
    names: Option<&[String]>,
) -> Result<Option<BTreeSet<String>>, StartupError> {
    let Some(names) = names else { return Ok(None) };
    let known = crate::model::services();
    for name in names {
        if !known.contains(&name.as_str()) {
            return Err(StartupError::UnknownService {
                name: name.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(Some(names.iter().cloned().collect()))
}

/// Service discovery from the config: each service's base URL, or several separated by commas
/// (one per replica).
pub(crate) fn service_urls(
    services: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, crate::runtime::Replicas>, StartupError> {
    services
        .iter()
        .map(|(service, urls)| {
            let bad = |url: &str, reason: String| StartupError::BadServiceUrl {
                service: service.clone(),
                url: url.to_owned(),
                reason,
            };
            let parsed = urls
                .split(',')
                .map(str::trim)
                .map(|url| {
                    let parsed = reqwest::Url::parse(url).map_err(|e| bad(url, e.to_string()))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(bad(url, "expected an http:// or https:// URL".into()));
                    }
                    Ok(parsed)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((service.clone(), crate::runtime::Replicas::new(parsed)))
        })
        .collect()
}

/// The Postgres server the app's databases live on: `DATABASE_URL`, or the managed one.
pub(crate) async fn database_server(config: &Config) -> Result<sqldb::PgServer, StartupError> {
    let url = match &config.database_url {
        Some(url) => url.clone(),
        None => {
            let dir = config.data_dir();
            let pg = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || ManagedPostgres::ensure(&dir))
                    .await
                    .expect("managed Postgres set-up does not panic")?
            };
            pg.keep_running(&dir);
            tracing::info!(port = pg.port(), dir = %pg.dir().display(), "managed Postgres is ready");
            pg.url("postgres")
        }
    };
    Ok(sqldb::PgServer::from_url(&url)?)
}

/// The NATS server of the config's Pub/Sub backend, if it is NATS: a URL as given, or the
/// managed `nats-server` for `nats`.
pub(crate) async fn nats_url(config: &Config) -> Result<Option<String>, StartupError> {
    match &config.pubsub {
        PubSubBackend::Postgres => Ok(None),
        PubSubBackend::ManagedNats => {
            let dir = config.data_dir();
            let nats = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || crate::infra::ManagedNats::ensure(&dir))
                    .await
                    .expect("managed NATS set-up does not panic")?
            };
            nats.keep_running(&dir);
            Ok(Some(nats.url()))
        }
        PubSubBackend::Nats(url) => Ok(Some(url.clone())),
    }
}

/// The Redis the app's caches live on: `REDIS_URL`, or the managed `redis-server`.
pub(crate) async fn redis_url(config: &Config) -> Result<String, StartupError> {
    if let Some(url) = &config.redis_url {
        return Ok(url.clone());
    }
    let dir = config.data_dir();
    let redis = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::infra::ManagedRedis::ensure(&dir))
            .await
            .expect("managed Redis set-up does not panic")?
    };
    redis.keep_running(&dir);
    tracing::info!(port = redis.port(), "managed Redis is ready");
    Ok(redis.url())
}

/// What is wrong with the app as its code declares it, found without starting it: no service
/// at all (the app's crate not linked into the binary), two endpoints on one route or paths
/// that conflict, two auth handlers, bad cache, cron or workflow declarations, a migration
/// file this build does not hold. Every problem, one a line. Start-up, each test's set-up and
/// `ovation check` (`OVATION_DESCRIBE=check`) run it.
pub(crate) fn check() -> Result<(), String> {
    let problems = problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The problems [`check`] reports, each on its own.
fn problems() -> Vec<String> {
    if crate::model::services().is_empty() {
        return vec![
            "this binary declares no service: no endpoint, database, topic, \
                    subscription, cache or cron job of the app is linked into it. If the \
                    services live in the package's library, write `ovation::main!();` as the \
                    binary's main (or `use app_crate as _;` above it)"
                .to_owned(),
        ];
    }
    let mut problems = Vec::new();
    if let Err(e) = http::check_routes(&crate::registry::endpoints()) {
        problems.extend(e.0.lines().map(str::to_owned));
    }
    for check in [
        crate::auth::check_setup,
        crate::cache::check_setup,
        crate::cron::check_setup,
        crate::workflow::check_setup,
    ] {
        if let Err(e) = check() {
            problems.push(e);
        }
    }
    for def in sqldb::declared() {
        if let Err(e) = def.current_migrations() {
            problems.push(e.to_string());
        }
    }
    problems
}

/// Builds this process's runtime from `config`: creates and migrates the databases of the
/// hosted services.
pub(crate) async fn build_runtime(config: &Config) -> Result<&'static Runtime, StartupError> {
    check().map_err(StartupError::Invalid)?;
    crate::secrets::load_all(config.deployment).map_err(StartupError::Secrets)?;
    let builder = RuntimeBuilder::from_config(config)?;
    let is_hosted = |s: &str| builder.hosts(s);
    let needed: Vec<_> = sqldb::declared()
        .into_iter()
        .filter(|d| is_hosted(d.service()))
        .collect();
    let mut pools = BTreeMap::new();
    let mut pubsub = None;
    // A process hosting no service (a gateway) publishes and receives nothing.
    let hosts_nothing = config.hosted_services.as_ref().is_some_and(Vec::is_empty);
    let pubsub_needed = crate::pubsub::in_use() && !hosts_nothing;
    // The cron database, for a process hosting a job's service.
    let cron_needed = crate::cron::jobs().iter().any(|j| is_hosted(j.service()));
    let mut cron = None;
    // The workflow database, for a process hosting a workflow's service.
    let workflows_needed = crate::workflow::workflows()
        .iter()
        .any(|w| is_hosted(w.service()));
    let mut workflows = None;
    if !needed.is_empty() || pubsub_needed || cron_needed || workflows_needed {
        let server = database_server(config).await?;
        for def in needed {
            pools.insert(
                def.name,
                server.open(def, config.max_db_connections()).await?,
            );
        }
        if cron_needed {
            let pool = server.open(&crate::cron::store::DATABASE, 3).await?;
            let store = crate::cron::store::CronStore::new(pool, config.cron.unwrap_or(true));
            cron = Some(&*Box::leak(Box::new(store)));
        }
        if workflows_needed {
            let pool = server
                .open(
                    &crate::workflow::store::DATABASE,
                    config.max_db_connections(),
                )
                .await?;
            let store = crate::workflow::store::WorkflowStore::new(pool);
            workflows = Some(&*Box::leak(Box::new(store)));
        }
        if pubsub_needed {
            let pool = server
                .open(
                    &crate::pubsub::postgres::DATABASE,
                    config.max_db_connections(),
                )
                .await?;
            let mut backend = crate::pubsub::postgres::PgPubSub::new(pool);
            if let Some(url) = nats_url(config).await? {
                let nats = crate::pubsub::nats::Nats::connect(&url, "ovation".into())
                    .await
                    .map_err(|e| StartupError::PubSub(e.message().to_owned()))?;
                for topic in crate::pubsub::topics() {
                    nats.ensure_stream(topic.name)
                        .await
                        .map_err(|e| StartupError::PubSub(e.message().to_owned()))?;
                }
                tracing::info!(%url, "Pub/Sub on NATS JetStream");
                backend = backend.with_nats(nats);
            }
            pubsub = Some(&*Box::leak(Box::new(backend)));
        }
    }
    let cache = if crate::cache::in_use() && !hosts_nothing {
        let url = redis_url(config).await?;
        Some(crate::cache::Store::open(&url, String::new()).map_err(StartupError::Cache)?)
    } else {
        None
    };
    let rt = builder
        .pools(pools)
        .pubsub(pubsub)
        .cache(cache)
        .cron(cron)
        .workflows(workflows)
        .global()
        .build();
    Ok(rt)
}

/// Makes a [`Runtime`], the only way one is made: by the app from its config, and by
/// `#[ovation::test]` from a [`crate::testing::Hosting`], which is a config too. Every setting
/// is read here from the [`Config`], so a new one cannot reach the app and miss the tests. (In
/// `app`, not `runtime`, because reading a config is start-up's business: unknown services and
/// bad URLs are [`StartupError`]s.)
#[derive(Debug)]
pub(crate) struct RuntimeBuilder {
    runtime: Runtime,
    /// Whether the runtime is the process's own (see [`runtime::set_global`]).
    global: bool,
}

impl RuntimeBuilder {
    /// A runtime as `config` describes it, with no database and no Pub/Sub yet.
    pub(crate) fn from_config(config: &Config) -> Result<RuntimeBuilder, StartupError> {
        let auth = ServiceAuth::new(
            config
                .service_auth_key
                .as_deref()
                .map(ServiceAuthKey::new)
                .unwrap_or_else(ServiceAuthKey::random),
            config
                .service_auth_accepted_keys
                .iter()
                .map(|k| ServiceAuthKey::new(k))
                .collect(),
        );
        Ok(RuntimeBuilder {
            runtime: Runtime {
                hosted: hosted_services(config.hosted_services.as_deref())?,
                discovery: service_urls(&config.services)?,
                pools: BTreeMap::new(),
                auth,
                http: http_client(),
                call_timeout: config.call_timeout(),
                connect_retry: config.connect_retry(),
                header_read_timeout: config.header_read_timeout(),
                shutdown_grace: config.shutdown_grace(),
                request_timeout: config.request_timeout(),
                body_read_timeout: config.body_read_timeout(),
                body_limit: config.body_limit(),
                stream_send_timeout: config.stream_send_timeout(),
                streams: Default::default(),
                pubsub: None,
                cache: None,
                cron: None,
                workflows: None,
                gateway: config.gateway,
                external: false,
                cors: config.cors.clone(),
                tasks: Default::default(),
                writes: Default::default(),
                metrics: Default::default(),
            },
            global: false,
        })
    }

    /// Whether the runtime hosts `service`.
    pub(crate) fn hosts(&self, service: &str) -> bool {
        self.runtime.hosts(service)
    }

    /// The pools of the service databases, by declared name.
    pub(crate) fn pools(mut self, pools: BTreeMap<&'static str, sqlx::PgPool>) -> RuntimeBuilder {
        self.runtime.pools = pools;
        self
    }

    /// Pub/Sub, when the app declares topics or subscriptions and this process hosts a service.
    pub(crate) fn pubsub(
        mut self,
        pubsub: Option<&'static crate::pubsub::postgres::PgPubSub>,
    ) -> RuntimeBuilder {
        self.runtime.pubsub = pubsub;
        self
    }

    /// The cron database, when the app declares a cron job and this process hosts a service.
    pub(crate) fn cron(
        mut self,
        cron: Option<&'static crate::cron::store::CronStore>,
    ) -> RuntimeBuilder {
        self.runtime.cron = cron;
        self
    }

    /// The workflow database, when the app declares a workflow and this process hosts a
    /// service.
    pub(crate) fn workflows(
        mut self,
        workflows: Option<&'static crate::workflow::store::WorkflowStore>,
    ) -> RuntimeBuilder {
        self.runtime.workflows = workflows;
        self
    }

    /// The caches' store, when the app declares a cache and this process hosts a service.
    pub(crate) fn cache(mut self, cache: Option<crate::cache::Store>) -> RuntimeBuilder {
        self.runtime.cache = cache;
        self
    }

    /// Signs and verifies with `auth` instead of the config's keys.
    pub(crate) fn auth(mut self, auth: ServiceAuth) -> RuntimeBuilder {
        self.runtime.auth = auth;
        self
    }

    /// Makes the runtime the process's own: code outside any request finds it.
    pub(crate) fn global(mut self) -> RuntimeBuilder {
        self.global = true;
        self
    }

    /// A runtime for a program outside the app (see [`crate::Client`]).
    pub(crate) fn external(mut self) -> RuntimeBuilder {
        self.runtime.external = true;
        self
    }

    /// The runtime, for the rest of the process, with its Pub/Sub workers started.
    pub(crate) fn build(self) -> &'static Runtime {
        let rt = self.runtime.leak();
        if self.global {
            runtime::set_global(rt);
        }
        if let Some(pubsub) = rt.pubsub {
            crate::pubsub::postgres::start(rt, pubsub);
        }
        if let Some(workflows) = rt.workflows {
            workflows.start_liveness();
        }
        rt
    }
}

/// Starts the app described by `config`: runtime, then the server on its listen address.
pub async fn start(config: Config) -> Result<Server, StartupError> {
    let rt = build_runtime(&config).await?;
    let addr = config.listen_addr();
    let listener = crate::http::listener::bind(addr).await.map_err(|source| StartupError::Bind {
        addr,
        hint: if source.kind() == std::io::ErrorKind::AddrInUse {
            "\n  Another program uses this port: stop it, or pick another with OVATION_LISTEN=127.0.0.1:PORT."
        } else {
            ""
        },
        source,
    })?;
    let mut server = Server::start(rt, listener)?;
    server.rt = Some(rt);
    rt.start_tasks();
    if let Some(endpoint) = &config.otlp_endpoint {
        let interval = Duration::from_millis(config.metric_export_interval_ms.unwrap_or(60_000));
        if let Some(task) = crate::metrics::otlp::start(
            &rt.metrics,
            (endpoint, interval, config.otlp_gzip),
            crate::telemetry::service_name(),
            crate::telemetry::dropped_spans,
        ) {
            rt.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task);
        }
    }
    let services: Vec<&str> = crate::model::services()
        .into_iter()
        .filter(|s| rt.hosts(s))
        .collect();
    tracing::info!(
        "serving {} on http://{}",
        services.join(", "),
        server.addr()
    );
    Ok(server)
}

/// A running server. Dropping it stops the server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    /// Sends the drain period (see [`serve`]).
    shutdown: Option<oneshot::Sender<Duration>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Background work to stop with the server, for the app's own server.
    rt: Option<&'static Runtime>,
}

impl Server {
    /// Serves `rt`'s endpoints on `listener`.
    #[doc(hidden)]
    pub fn start(rt: &'static Runtime, listener: TcpListener) -> Result<Server, StartupError> {
        let router = http::router(rt)?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
            hint: "",
        })?;
        let (tx, rx) = oneshot::channel::<Duration>();
        let task = tokio::spawn(serve(rt, router, listener, rx));
        Ok(Server {
            addr,
            shutdown: Some(tx),
            task: Some(task),
            rt: None,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's base URL, e.g. `http://127.0.0.1:4000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn shutdown(self) {
        self.shutdown_draining(Duration::ZERO).await;
    }

    /// Stops accepting connections, serves requests already arriving on open connections
    /// (answered with `Connection: close`) for up to `drain`, then waits for in-flight requests
    /// to finish, and stops the background work of a server that has it (start-up tasks, cron
    /// schedulers, workflow runs, claiming messages), as the process would stop.
    pub async fn shutdown_draining(mut self, drain: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(drain);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(rt) = self.rt {
            rt.stop_background();
            rt.abort_workflows();
        }
    }

    /// The server stops `rt`'s background work when it shuts down.
    pub(crate) fn with_background(mut self, rt: &'static Runtime) -> Server {
        self.rt = Some(rt);
        self
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests, claiming no more messages");
        let rt = self.rt;
        if let Some(rt) = rt {
            rt.stop_background();
        }
        self.shutdown_draining(SIGNAL_DRAIN).await;
        if let Some(rt) = rt {
            rt.drain_background(std::time::Duration::from_secs(10))
                .await;
            crate::metrics::otlp::flush(&rt.metrics, Duration::from_secs(2)).await;
        }
    }
}

/// Longest a process stopping on a signal drains its open connections (see [`serve`]).
const SIGNAL_DRAIN: Duration = Duration::from_secs(5);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(Duration::ZERO);
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
