//! `ovation run` and `ovation test`: the app on this machine with its infrastructure, and the
//! trace store behind the dashboard port.
//!
//! `run` builds the app (cargo's progress on the terminal), makes sure the managed Postgres
//! runs (unless `DATABASE_URL` names a server), serves the OTLP receiver and the trace API on
//! the dashboard port, and starts the app with its OTLP exporter pointed there; the app's logs
//! stream to the terminal. Ctrl-C (or SIGTERM) stops the app gracefully, then the CLI.
//!
//! With `--watch` the CLI itself listens on the app port and forwards to the app on an internal
//! port. A change to a `.rs`, `.sql` or `Cargo.toml` file under the app folder rebuilds it;
//! once the new build answers its health check, new requests go to it and the old process is
//! stopped gracefully, finishing what it had in flight. The port never stops answering, and a
//! build that fails leaves the old process serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ovation::tooling::ManagedPostgres;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::dashboard::{AppState, AppStatus, SharedStatus};
use crate::error::CliError;
use crate::traces::Store;

/// Options of `ovation run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub app: PathBuf,
    pub port: u16,
    pub dashboard_port: u16,
    pub watch: bool,
    /// Host names the dashboard answers besides the loopback ones.
    pub allowed_hosts: Vec<String>,
}

fn tokio() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

async fn bind(port: u16, what: &str, flag: &str) -> Result<TcpListener, CliError> {
    TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
        let message = format!(
            "cannot listen on 127.0.0.1:{port} for the {what} ({e}): stop what uses it, or \
             choose another port with {flag}"
        );
        if e.kind() == std::io::ErrorKind::AddrInUse {
            CliError::PortInUse(message)
        } else {
            CliError::Failed(message)
        }
    })
}

/// The Postgres server of the app's databases and of the trace store.
async fn database_server(data_dir: &Path) -> Result<ovation::tooling::PgServer, CliError> {
    let url = match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => url,
        None => {
            let dir = data_dir.to_owned();
            let pg = tokio::task::spawn_blocking(move || ManagedPostgres::ensure(&dir))
                .await
                .map_err(|e| e.to_string())??;
            pg.keep_running(data_dir);
            eprintln!("managed Postgres on 127.0.0.1:{}", pg.port());
            pg.url("postgres")
        }
    };
    Ok(ovation::tooling::PgServer::from_url(&url).map_err(|e| e.to_string())?)
}

/// Starts the trace store and its server on `listener`: the whole dashboard when there is an
/// app status to show, the trace receiver and API alone otherwise.
async fn start_dashboard(
    data_dir: &Path,
    listener: TcpListener,
    status: Option<(SharedStatus, String)>,
    app: &Path,
    allowed_hosts: &[String],
) -> Result<(), CliError> {
    let server = database_server(data_dir).await?;
    let store = Store::open(&server).await?;
    match status {
        Some((status, key)) => {
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let guard = crate::guard::Guard::new(port, allowed_hosts);
            let dashboard = crate::dashboard::router(
                store,
                status,
                app.to_owned(),
                crate::dashboard::databases::Databases::new(server),
                ovation::tooling::ServiceAuthKey::new(&key),
                guard,
            );
            crate::traces::serve_router(dashboard, listener)
        }
        None => crate::traces::serve(store, listener, allowed_hosts),
    };
    Ok(())
}

fn set_state(status: &SharedStatus, state: AppState) {
    status.write().unwrap_or_else(|p| p.into_inner()).state = state;
}

/// A built binary, and the loader's search path it needs (see [`crate::deploy::library_path`]).
type Built = (PathBuf, Option<(&'static str, std::ffi::OsString)>);

/// Builds the app's binary (dev profile) on a blocking thread.
async fn build(manifest: &Path) -> Result<Built, CliError> {
    let manifest = manifest.to_owned();
    tokio::task::spawn_blocking(move || {
        let exe = crate::deploy::build(&manifest, false)?;
        let library_path = crate::deploy::library_path(&exe);
        Ok((exe, library_path))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `ovation run`.
pub fn run(options: RunOptions) -> Result<ExitCode, CliError> {
    let manifest = crate::manifest(&options.app)?;
    let data_dir = std::path::absolute(crate::data_dir(&options.app)).map_err(|e| e.to_string())?;
    let package = crate::deploy::kubernetes::package_name(&manifest)?;
    tokio()?.block_on(async move {
        // Both ports first: a clear error before a long build.
        let dashboard = bind(options.dashboard_port, "dashboard", "--dashboard-port").await?;
        let front = bind(options.port, "app", "--port").await?;
        let status: SharedStatus = Arc::new(RwLock::new(AppStatus {
            url: format!("http://127.0.0.1:{}", options.port),
            state: AppState::Starting,
        }));
        let auth_key = crate::deploy::generate_key();
        start_dashboard(
            &data_dir,
            dashboard,
            Some((status.clone(), auth_key.clone())),
            &options.app,
            &options.allowed_hosts,
        )
        .await?;
        let (exe, library_path) = match build(&manifest).await {
            Ok(built) => built,
            Err(e) => {
                set_state(
                    &status,
                    AppState::CompileError {
                        message: e.to_string(),
                    },
                );
                return Err(e);
            }
        };
        let cors = crate::deploy::AppManifest::load(&options.app)?.cors;
        let env = AppEnv {
            auth_key,
            exe,
            library_path,
            app: options.app.clone(),
            data_dir,
            otlp: format!("http://127.0.0.1:{}", options.dashboard_port),
            service_name: package,
            cors: (!cors.allowed_origins.is_empty())
                .then(|| serde_json::to_string(&cors).expect("the cors setting serializes")),
        };
        if options.watch {
            watch(env, manifest, front, &options, &status).await
        } else {
            // The app takes the port itself.
            drop(front);
            let mut child = env.start(options.port)?;
            if let Err(e) = wait_healthy(&mut child, options.port).await {
                stop(child).await;
                return Err(e.into());
            }
            set_state(&status, AppState::Running);
            announce(&options);
            let signal = shutdown_signal();
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_err(|e| e.to_string())?;
                    eprintln!("the app exited ({status})");
                    Ok(exit_code(status.code()))
                }
                () = signal => {
                    eprintln!("stopping the app");
                    Ok(exit_code(stop(child).await))
                }
            }
        }
    })
}

fn announce(options: &RunOptions) {
    eprintln!(
        "\n  app:       http://127.0.0.1:{}\n  dashboard: http://127.0.0.1:{}  (traces: /api/traces)\n",
        options.port, options.dashboard_port
    );
    if options.watch {
        eprintln!("watching {} for changes", options.app.display());
    }
}

fn exit_code(code: Option<i32>) -> ExitCode {
    match code {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

/// How the app is started.
struct AppEnv {
    /// The service-auth key the app runs with (the dashboard's explorer signs with it).
    auth_key: String,
    exe: PathBuf,
    /// Where the loader finds the framework, for a binary built with `ovation-dylib`.
    library_path: Option<(&'static str, std::ffi::OsString)>,
    app: PathBuf,
    data_dir: PathBuf,
    otlp: String,
    service_name: String,
    /// `[cors]` of `ovation.toml`, as JSON, when it allows any origin.
    cors: Option<String>,
}

impl AppEnv {
    fn start(&self, port: u16) -> Result<Child, String> {
        Command::new(&self.exe)
            .envs(self.library_path.iter().map(|(var, path)| (var, path)))
            .current_dir(&self.app)
            .env("OVATION_LISTEN", format!("127.0.0.1:{port}"))
            // Development: hints in the log a deployment would not give (see `hint_private`).
            .env("OVATION_DEV", "1")
            .env("OVATION_DATA_DIR", &self.data_dir)
            .env("OVATION_SERVICE_AUTH_KEY", &self.auth_key)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &self.otlp)
            .env("OTEL_SERVICE_NAME", &self.service_name)
            // The dashboard's sparklines have a slot of 10 s: export twice per slot, unless
            // the developer chose otherwise.
            .envs(
                std::env::var_os("OTEL_METRIC_EXPORT_INTERVAL")
                    .is_none()
                    .then_some(("OTEL_METRIC_EXPORT_INTERVAL", "5000")),
            )
            .envs(self.cors.iter().map(|c| ("OVATION_CORS", c)))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))
    }
}

/// Waits until the app answers its health check on `port`, or exits.
async fn wait_healthy(child: &mut Child, port: u16) -> Result<(), String> {
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/__ovation/health");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the app exited before it answered ({status}); its messages are above"
            ));
        }
        let answered = http
            .get(&url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the app did not answer on 127.0.0.1:{port} within 120 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then SIGKILL after 20 s; returns the exit code.
async fn stop(mut child: Child) -> Option<i32> {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(Ok(status)) => status.code(),
        _ => {
            let _ = child.kill().await;
            None
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A free port on 127.0.0.1 for the app behind the watch proxy.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// `--watch`: the proxy on the app port, the app behind it, rebuilt and swapped on changes.
async fn watch(
    env: AppEnv,
    manifest: PathBuf,
    front: TcpListener,
    options: &RunOptions,
    status: &SharedStatus,
) -> Result<ExitCode, CliError> {
    let mut port = free_port()?;
    let mut child = env.start(port)?;
    if let Err(e) = wait_healthy(&mut child, port).await {
        stop(child).await;
        return Err(e.into());
    }
    let target = Arc::new(RwLock::new(
        reqwest::Url::parse(&format!("http://127.0.0.1:{port}")).expect("a valid URL"),
    ));
    serve_proxy(front, target.clone());
    set_state(status, AppState::Running);
    announce(options);

    let mut seen = snapshot(&env.app);
    // Whether the current process exited by itself (reported once).
    let mut exited = false;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => {
                eprintln!("stopping the app");
                return Ok(exit_code(stop(child).await));
            }
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        if !exited && let Ok(Some(exit)) = child.try_wait() {
            exited = true;
            eprintln!("the app exited ({exit}); fix it and save: it is rebuilt on the next change");
            set_state(status, AppState::Stopped);
        }
        let now = snapshot(&env.app);
        if now == seen {
            continue;
        }
        // Let an editor finish writing (several files, or a file in steps).
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = snapshot(&env.app);
        eprintln!("change detected: rebuilding");
        set_state(status, AppState::Rebuilding);
        let (exe, library_path) = match build(&manifest).await {
            Ok(built) => built,
            Err(e) => {
                eprintln!("{e}\nstill serving the previous build");
                set_state(
                    status,
                    AppState::CompileError {
                        message: e.to_string(),
                    },
                );
                continue;
            }
        };
        let next_env = AppEnv {
            auth_key: env.auth_key.clone(),
            exe,
            library_path,
            app: env.app.clone(),
            data_dir: env.data_dir.clone(),
            otlp: env.otlp.clone(),
            service_name: env.service_name.clone(),
            cors: env.cors.clone(),
        };
        let next_port = free_port()?;
        let mut next = next_env.start(next_port)?;
        if let Err(e) = wait_healthy(&mut next, next_port).await {
            eprintln!("the new build did not start: {e}\nstill serving the previous build");
            stop(next).await;
            set_state(status, AppState::Running);
            continue;
        }
        *target.write().unwrap_or_else(|p| p.into_inner()) =
            reqwest::Url::parse(&format!("http://127.0.0.1:{next_port}")).expect("a valid URL");
        let old = std::mem::replace(&mut child, next);
        exited = false;
        port = next_port;
        // The old process finishes its in-flight requests, then exits.
        tokio::spawn(stop(old));
        set_state(status, AppState::Running);
        eprintln!("swapped in the new build (internal port {port})");
    }
}

/// Forwards every request on `listener` to the current `target`.
fn serve_proxy(listener: TcpListener, target: Arc<RwLock<reqwest::Url>>) {
    // The app's redirects go to the client as they are; no proxy between us and loopback.
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client without TLS always builds");
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (http, target) = (http.clone(), target.clone());
        async move {
            let base = target.read().unwrap_or_else(|p| p.into_inner()).clone();
            let options = ovation::tooling::Forward {
                body_limit: 64 * 1024 * 1024,
                body_read_timeout: Duration::from_secs(10),
                timeout: Duration::from_secs(300),
                // The app may be starting: wait for it rather than fail the request.
                connect_retry: Duration::from_secs(5),
                // The proxy stands for the app itself: the dashboard's signed calls pass.
                keep_signature: true,
            };
            ovation::tooling::forward_to(&http, "app", &base, req, &options)
                .await
                .unwrap_or_else(axum::response::IntoResponse::into_response)
        }
    });
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            eprintln!("error: the app port stopped answering: {e}");
        }
    });
}

/// Modification times and sizes of the files a rebuild depends on: `.rs`, `.sql` and
/// `Cargo.toml` under the app folder, outside `target/` and hidden folders.
fn snapshot(app: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![app.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") || name.ends_with(".sql") || name == "Cargo.toml" {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.insert(path, (modified, meta.len()));
            }
        }
    }
    files
}

/// `ovation test`: the infrastructure, the trace store, then `cargo test`; cargo's status.
pub fn test(
    app: &Path,
    dashboard_port: u16,
    allowed_hosts: &[String],
    cargo_args: &[String],
) -> Result<ExitCode, CliError> {
    let manifest = crate::manifest(app)?;
    let data_dir = std::path::absolute(crate::data_dir(app)).map_err(|e| e.to_string())?;
    tokio()?.block_on(async move {
        // Reuse the dashboard of an `ovation run` if one answers; else serve our own.
        let otlp = match TcpListener::bind(("127.0.0.1", dashboard_port)).await {
            Ok(listener) => {
                start_dashboard(&data_dir, listener, None, app, allowed_hosts).await?;
                format!("http://127.0.0.1:{dashboard_port}")
            }
            Err(_) if dashboard_answers(dashboard_port).await => {
                eprintln!("test traces go to the dashboard on 127.0.0.1:{dashboard_port}");
                format!("http://127.0.0.1:{dashboard_port}")
            }
            Err(_) => {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
                let port = listener.local_addr().map_err(|e| e.to_string())?.port();
                start_dashboard(&data_dir, listener, None, app, allowed_hosts).await?;
                format!("http://127.0.0.1:{port}")
            }
        };
        let status = Command::new(crate::cargo())
            .arg("test")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(cargo_args)
            .env("OVATION_DATA_DIR", &data_dir)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .status()
            .await
            .map_err(|e| format!("cannot run cargo test: {e}"))?;
        Ok(exit_code(status.code()))
    })
}

async fn dashboard_answers(port: u16) -> bool {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/traces?limit=1"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
