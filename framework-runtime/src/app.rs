//! Starting an app: config, databases, runtime, server, graceful shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{Config, ConfigError};
use crate::infra::{InfraError, ManagedPostgres};
use crate::registry;
use crate::runtime::{self, Runtime};
use crate::server::{self, RouteError};
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
/// databases, topics; see [`server::app_model`]) and exits: the CLI plans deployments with it.
/// With `OVATION_DESCRIBE=openapi` it prints the OpenAPI document of its public API.
pub fn run() -> ExitCode {
    match std::env::var_os("OVATION_DESCRIBE") {
        Some(v) if v == "1" => {
            println!("{}", server::app_model(None));
            return ExitCode::SUCCESS;
        }
        Some(v) if v == "openapi" => {
            println!("{:#}", crate::openapi::spec());
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
    let known = registry::services();
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

pub(crate) fn service_urls(
    services: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, reqwest::Url>, StartupError> {
    services
        .iter()
        .map(|(service, url)| {
            let bad = |reason: String| StartupError::BadServiceUrl {
                service: service.clone(),
                url: url.clone(),
                reason,
            };
            let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("expected an http:// or https:// URL".into()));
            }
            Ok((service.clone(), parsed))
        })
        .collect()
}

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // Never reuse a connection a draining server may be closing: see `serve`.
        .pool_idle_timeout(CLIENT_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client without TLS always builds")
}

/// The Postgres server the app's databases live on: `DATABASE_URL`, or the managed one.
pub async fn database_server(config: &Config) -> Result<sqldb::Server, StartupError> {
    let url = match &config.database_url {
        Some(url) => url.clone(),
        None => {
            let dir = config.data_dir();
            let pg = tokio::task::spawn_blocking(move || ManagedPostgres::ensure(&dir))
                .await
                .expect("managed Postgres set-up does not panic")?;
            tracing::info!(port = pg.port(), dir = %pg.dir().display(), "managed Postgres is ready");
            pg.url("postgres")
        }
    };
    Ok(sqldb::Server::from_url(&url)?)
}

/// The NATS server of the config's Pub/Sub backend, if it is NATS: a URL as given, or the
/// managed `nats-server` for `nats`.
pub(crate) async fn nats_url(config: &Config) -> Result<Option<String>, StartupError> {
    match config.pubsub.as_deref() {
        None | Some("postgres") => Ok(None),
        Some("nats") => {
            let dir = config.data_dir();
            let nats = tokio::task::spawn_blocking(move || crate::infra::ManagedNats::ensure(&dir))
                .await
                .expect("managed NATS set-up does not panic")?;
            Ok(Some(nats.url()))
        }
        Some(url) => Ok(Some(url.to_owned())),
    }
}

/// Builds this process's runtime from `config`: creates and migrates the databases of the
/// hosted services.
pub async fn build_runtime(config: &Config) -> Result<&'static Runtime, StartupError> {
    let hosted = hosted_services(config.hosted_services.as_deref())?;
    let discovery = service_urls(&config.services)?;
    let is_hosted = |s: &str| hosted.as_ref().is_none_or(|h| h.contains(s));
    let needed: Vec<_> = sqldb::declared()
        .into_iter()
        .filter(|d| is_hosted(d.service()))
        .collect();
    let mut pools = BTreeMap::new();
    let mut pubsub = None;
    // A process hosting no service (a gateway) publishes and receives nothing.
    let hosts_nothing = hosted.as_ref().is_some_and(BTreeSet::is_empty);
    let pubsub_needed = crate::pubsub::in_use() && !hosts_nothing;
    if !needed.is_empty() || pubsub_needed {
        let server = database_server(config).await?;
        for def in needed {
            pools.insert(
                def.name,
                server.open(def, config.max_db_connections()).await?,
            );
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
    let rt = Runtime {
        hosted,
        discovery,
        pools,
        auth: ServiceAuth::new(
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
        ),
        http: http_client(),
        call_timeout: config.call_timeout(),
        connect_retry: config.connect_retry(),
        header_read_timeout: config.header_read_timeout(),
        shutdown_grace: config.shutdown_grace(),
        request_timeout: config.request_timeout(),
        body_read_timeout: config.body_read_timeout(),
        body_limit: config.body_limit(),
        pubsub,
        gateway: config.gateway,
        tasks: Default::default(),
        writes: Default::default(),
    };
    let rt = rt.leak();
    runtime::set_global(rt);
    if let Some(pubsub) = pubsub {
        crate::pubsub::postgres::start(rt, pubsub);
    }
    Ok(rt)
}

/// Starts the app described by `config`: runtime, then the server on its listen address.
pub async fn start(config: Config) -> Result<Server, StartupError> {
    let rt = build_runtime(&config).await?;
    let addr = config.listen_addr();
    let listener = TcpListener::bind(addr).await.map_err(|source| StartupError::Bind {
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
    let services: Vec<&str> = registry::services()
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
    pub fn start(rt: &'static Runtime, listener: TcpListener) -> Result<Server, StartupError> {
        let router = server::router(rt)?;
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
    /// to finish.
    pub async fn shutdown_draining(mut self, drain: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(drain);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
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
        }
    }
}

/// Longest a process stopping on a signal drains its open connections (see [`serve`]).
const SIGNAL_DRAIN: Duration = Duration::from_secs(5);

/// Ovation's HTTP client drops a pooled connection idle this long instead of reusing it...
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// ...so a draining server may close a connection idle this long without a request racing
/// the close.
const SAFE_TO_CLOSE_IDLE: Duration = Duration::from_millis(1500);

/// What the accept loop knows of one connection: for the header read timeout and for draining.
#[derive(Debug)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// When the last response was sent (or the connection accepted), in ms since `epoch`.
    last_ms: std::sync::atomic::AtomicU64,
    /// Closes the connection (it is dropped where it waits).
    close: tokio::sync::Notify,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity {
            in_flight: Default::default(),
            last_ms: Default::default(),
            close: tokio::sync::Notify::new(),
        };
        a.touch(epoch);
        a
    }

    fn touch(&self, epoch: Instant) {
        let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// With no request in flight, how long since the last response (or the accept).
    fn idle(&self, epoch: Instant) -> Option<Duration> {
        (self.in_flight.load(Ordering::Relaxed) == 0).then(|| {
            epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
        })
    }

    fn quiet(&self, epoch: Instant) -> bool {
        self.idle(epoch)
            .is_some_and(|idle| idle >= SAFE_TO_CLOSE_IDLE)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(Duration::ZERO);
        }
    }
}

/// Accepts connections until `stop` fires with a drain period, then:
/// 1. stops accepting: the port refuses connections from now on, which callers retry;
/// 2. drains: requests on open keep-alive connections are still served, each answered with
///    `Connection: close`, until every connection left is idle for longer than Ovation's
///    client keeps an idle connection for reuse, or the drain period ran out — so a caller
///    never sends a request on a connection the server is closing under it (an HTTP/1.1 race
///    no client can tell apart from a crash, and so cannot safely retry);
/// 3. closes idle connections and lets in-flight requests finish, for `rt.shutdown_grace`.
///
/// A client gets `rt.header_read_timeout` to send its request headers, counted from the
/// accept or the previous response: the loop looks at every connection a few times per timeout
/// and closes those idle for longer, so a keep-alive connection left idle is closed too. (Not
/// hyper's own header timeout: that arms a timer for every request, a tenth of what the
/// framework adds to a small request.)
async fn serve(
    rt: &'static Runtime,
    router: axum::Router,
    listener: TcpListener,
    mut stop: oneshot::Receiver<Duration>,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let graceful = GracefulShutdown::new();
    let draining = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut connections: Vec<std::sync::Weak<Activity>> = Vec::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    let mut sweep = tokio::time::interval(
        (rt.header_read_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drain = loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => Ok(accepted),
            // A dropped sender (the `Server` dropped) means no drain.
            drain = &mut stop => Err(drain.unwrap_or_default()),
            _ = sweep.tick() => {
                connections.retain(|c| match c.upgrade() {
                    Some(c) => {
                        if c.idle(epoch).is_some_and(|idle| idle >= rt.header_read_timeout) {
                            c.close.notify_one();
                        }
                        true
                    }
                    None => false,
                });
                continue;
            }
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(drain) => break drain,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let draining = draining.clone();
        let activity = Arc::new(Activity::new(epoch));
        connections.push(Arc::downgrade(&activity));
        let (on_response, closing) = (activity.clone(), activity.clone());
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                activity.in_flight.fetch_add(1, Ordering::Relaxed);
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            })
            .map_response(move |mut res: axum::response::Response| {
                on_response.in_flight.fetch_sub(1, Ordering::Relaxed);
                on_response.touch(epoch);
                // A client too slow to send its body is not kept: the rest of its body
                // would hold the connection (see `server::read_body`).
                if draining.load(Ordering::Relaxed)
                    || res.status() == axum::http::StatusCode::REQUEST_TIMEOUT
                {
                    res.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                res
            });
        let conn = http.serve_connection(
            TokioIo::new(LingeringClose::new(stream)),
            TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                biased;
                closed = conn => {
                    if let Err(e) = closed {
                        tracing::debug!(%peer, "connection closed: {e}");
                    }
                }
                () = closing.close.notified() => {
                    tracing::debug!(%peer, "connection closed: no request headers within the header read timeout");
                }
            }
        });
    };
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    let drained_by = Instant::now() + drain;
    while Instant::now() < drained_by
        && !connections
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .all(|c| c.quiet(epoch))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let grace_ends = Instant::now() + rt.shutdown_grace;
    if tokio::time::timeout(rt.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running after the {:?} grace period: their connections are closed",
            rt.shutdown_grace
        );
    }
    // Writes whose clients hung up run on without a connection: they get the grace period too.
    while Arc::strong_count(&rt.writes) > 1 && Instant::now() < grace_ends {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&rt.writes) > 1 {
        tracing::warn!(
            "requests whose clients hung up still running after the {:?} grace period",
            rt.shutdown_grace
        );
    }
}

/// How long a closed connection's unread input is drained (see [`LingeringClose`]).
const LINGER: Duration = Duration::from_secs(1);

/// A connection that, when the server is done with it, closes the way a client can read the
/// last answer of: the server's side first (FIN), then whatever the client still sends is
/// read and discarded for up to [`LINGER`] before the socket goes. Closed with unread input
/// in its buffer, a socket sends a reset instead, and a client that is still sending (a body
/// the server refused with 408 or 413) loses the answer explaining why.
#[derive(Debug)]
pub struct LingeringClose(Option<tokio::net::TcpStream>);

impl LingeringClose {
    /// `stream`, to close lingering once dropped (inside a Tokio runtime).
    pub fn new(stream: tokio::net::TcpStream) -> LingeringClose {
        LingeringClose(Some(stream))
    }

    fn stream(&mut self) -> std::pin::Pin<&mut tokio::net::TcpStream> {
        std::pin::Pin::new(self.0.as_mut().expect("taken only on drop"))
    }
}

impl tokio::io::AsyncRead for LingeringClose {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for LingeringClose {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

impl Drop for LingeringClose {
    fn drop(&mut self) {
        let Some(mut stream) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if stream.shutdown().await.is_err() {
                return;
            }
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        });
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
