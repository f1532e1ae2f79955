//! `ovation deploy --target local`: one process per service or group on 127.0.0.1, the
//! gateway on the public port, and a supervisor that restarts what dies.
//!
//! Everything lives in `<app>/.ovation/deploy/`: `deployment.json` (the processes, their
//! ports and pids; the supervisor keeps it current), one runtime config per process (mode
//! 0600: they hold the service-auth key) and `logs/<process>.log`. The supervisor is the
//! `ovation` binary itself (`ovation deploy supervise`), detached from the terminal in a
//! process group of its own; `ovation deploy stop` sends it SIGTERM and it stops the
//! processes gracefully.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ovation::Config;
use serde::{Deserialize, Serialize};

use super::Unit;

/// The state of a local deployment, in `deployment.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// The app's folder.
    pub app: PathBuf,
    /// The release binary every process runs.
    pub exe: PathBuf,
    /// The supervisor's pid, once it runs.
    pub supervisor_pid: Option<u32>,
    /// Another process whose exit stops the deployment (`--stop-with-pid`), for scripts and
    /// tests that must not leave it running.
    #[serde(default)]
    pub stop_with_pid: Option<u32>,
    /// When it was deployed (Unix seconds).
    pub deployed_at: u64,
    pub processes: Vec<Process>,
}

/// One supervised process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    #[serde(flatten)]
    pub unit: Unit,
    pub port: u16,
    pub url: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The pid of the running instance; `None` while it waits to be restarted.
    pub pid: Option<u32>,
    /// How many times the supervisor restarted it.
    pub restarts: u32,
}

/// Options of a local deployment.
#[derive(Debug, Clone)]
pub struct Options {
    pub app: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    pub stop_with_pid: Option<u32>,
    /// The `[cors]` of the app's `ovation.toml`.
    pub cors: ovation::config::Cors,
}

pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("deploy")
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("deployment.json")
}

/// Reads the deployment in `dir`, if there is one.
pub fn load(dir: &Path) -> Result<Option<Deployment>, String> {
    let path = state_file(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is damaged ({e}); delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the state atomically (a reader never sees half a file).
fn save(dir: &Path, deployment: &Deployment) -> Result<(), String> {
    let path = state_file(dir);
    let tmp = dir.join(".deployment.json.tmp");
    let json = serde_json::to_vec_pretty(deployment).expect("the state serializes");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Whether `pid` runs (a zombie, exited but not yet reaped by its parent, does not).
fn alive(pid: u32) -> bool {
    if kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether `pid` still runs `exe` (and is not an unrelated process that reused the pid).
fn runs(pid: u32, exe: &Path) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|link| link.to_string_lossy().starts_with(&*exe.to_string_lossy()))
        .unwrap_or(false)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A free port on 127.0.0.1 for a process, released for it to take and kept across its
/// restarts. Taken below the kernel's ephemeral range: the OS gives every outgoing connection
/// (and every `bind` to port 0) a port from that range, so one there could be handed to another
/// program's connection between our check and the process's bind, or while it restarts.
fn free_port() -> Result<u16, String> {
    let ephemeral = ephemeral_range_start().unwrap_or(32768);
    let low = 10_000.min(ephemeral / 2);
    for _ in 0..64 {
        let port = rand::random_range(low..ephemeral);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // Everything tried is taken: let the OS pick.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// The first port of Linux's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_range_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Deploys: writes the configs, starts the supervisor, waits until every process answers its
/// health check, and returns the deployment.
pub fn deploy(exe: &Path, units: Vec<Unit>, options: &Options) -> Result<Deployment, String> {
    let dir = state_dir(&options.data_dir);
    if load(&dir)?.is_some() {
        eprintln!("replacing the running deployment");
        stop(&options.data_dir)?;
    }
    if let Err(e) = TcpListener::bind(("127.0.0.1", options.port)) {
        return Err(format!(
            "port {} on 127.0.0.1 is not free ({e}): stop what uses it, or deploy the gateway \
             on another with --port",
            options.port
        ));
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    // Restart requests a dead supervisor never took: not for this deployment's processes.
    for stale in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if stale.file_name().to_string_lossy().ends_with(".request") {
            let _ = std::fs::remove_file(stale.path());
        }
    }

    // Every process reaches every service it does not host through service discovery. A unit
    // with replicas is a process per replica, `<unit>.1`, `<unit>.2`, ...
    let mut processes = Vec::new();
    for unit in units {
        let replicas = unit.replicas.max(1);
        for i in 1..=replicas {
            let mut unit = unit.clone();
            if replicas > 1 {
                unit.name = format!("{}.{i}", unit.name);
            }
            let port = if unit.gateway {
                options.port
            } else {
                free_port()?
            };
            processes.push(Process {
                url: format!("http://127.0.0.1:{port}"),
                config: dir.join(format!("{}.config.json", unit.name)),
                log: logs.join(format!("{}.log", unit.name)),
                unit,
                port,
                pid: None,
                restarts: 0,
            });
        }
    }
    // A service with replicas has their URLs, comma-separated: requests take them in turn.
    let mut discovery: std::collections::BTreeMap<String, String> = Default::default();
    for p in &processes {
        for s in &p.unit.services {
            discovery
                .entry(s.clone())
                .and_modify(|urls| {
                    urls.push(',');
                    urls.push_str(&p.url);
                })
                .or_insert_with(|| p.url.clone());
        }
    }
    let key = super::generate_key();
    let database_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    let pubsub: ovation::config::PubSubBackend = match std::env::var("OVATION_PUBSUB") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|e| format!("OVATION_PUBSUB={v:?} is not valid: {e}"))?,
        _ => Default::default(),
    };
    let otlp_endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|u| !u.is_empty());
    let data_dir = std::path::absolute(&options.data_dir)
        .map_err(|e| format!("cannot resolve {}: {e}", options.data_dir.display()))?;
    for p in &processes {
        let config = Config {
            listen: Some(([127, 0, 0, 1], p.port).into()),
            hosted_services: Some(p.unit.services.clone()),
            services: discovery
                .iter()
                .filter(|(s, _)| !p.unit.services.contains(s))
                .map(|(s, u)| (s.clone(), u.clone()))
                .collect(),
            database_url: database_url.clone(),
            redis_url: redis_url.clone(),
            data_dir: Some(data_dir.clone()),
            service_auth_key: Some(key.clone()),
            pubsub: pubsub.clone(),
            gateway: p.unit.gateway,
            otlp_endpoint: otlp_endpoint.clone(),
            deployment: true,
            cors: options.cors.clone(),
            ..Config::default()
        };
        let json = serde_json::to_vec_pretty(&config).expect("the config serializes");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p.config)
            .and_then(|mut f| f.write_all(&json))
            .map_err(|e| format!("cannot write {}: {e}", p.config.display()))?;
    }
    let deployment = Deployment {
        app: options.app.clone(),
        exe: exe.to_owned(),
        supervisor_pid: None,
        stop_with_pid: options.stop_with_pid,
        deployed_at: unix_now(),
        processes,
    };
    save(&dir, &deployment)?;

    // The supervisor: this binary, detached from the terminal's process group so Ctrl-C in
    // the shell that deployed does not reach it.
    let me = std::env::current_exe().map_err(|e| format!("cannot find the ovation binary: {e}"))?;
    let supervisor_log = File::create(logs.join("supervisor.log"))
        .map_err(|e| format!("cannot create the supervisor's log: {e}"))?;
    let supervisor = std::process::Command::new(me)
        .arg("deploy")
        .arg("supervise")
        .arg("--state")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(supervisor_log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the deploy supervisor: {e}"))?;
    let supervisor_pid = supervisor.id();
    drop(supervisor);

    wait_healthy(&dir, supervisor_pid)
}

/// Waits until every process answers `/__ovation/health`; on a crash loop or a timeout, stops
/// the deployment and says which process failed and why (its log's last lines).
fn wait_healthy(dir: &Path, supervisor_pid: u32) -> Result<Deployment, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = load(dir)?.ok_or("the deploy supervisor removed the deployment")?;
        if !alive(supervisor_pid) {
            return Err(format!(
                "the deploy supervisor exited; its log: {}",
                dir.join("logs/supervisor.log").display()
            ));
        }
        let health = health_of(&state);
        if health.iter().all(|h| *h == Health::Healthy) {
            return Ok(state);
        }
        let crashing = state.processes.iter().find(|p| p.restarts >= 3);
        if crashing.is_some() || Instant::now() > deadline {
            let failing = crashing
                .or_else(|| {
                    state
                        .processes
                        .iter()
                        .zip(&health)
                        .find(|(_, h)| **h != Health::Healthy)
                        .map(|(p, _)| p)
                })
                .expect("some process is not healthy");
            let why = if crashing.is_some() {
                format!("keeps exiting ({} restarts)", failing.restarts)
            } else {
                "did not become healthy within 120 s".to_owned()
            };
            let tail = log_tail(&failing.log, 20);
            let _ = stop(dir.parent().unwrap_or(dir));
            return Err(format!(
                "process `{}` {why}; the deployment is stopped. The end of {}:\n{tail}",
                failing.unit.name,
                failing.log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What a health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    /// The process runs but does not answer (yet).
    Starting,
    /// No process: it exited and waits for its restart.
    Down,
}

/// `GET /__ovation/health` on 127.0.0.1:`port`, answered 200 within a second.
fn answers_health(port: u16) -> bool {
    use std::io::Read;
    let timeout = Duration::from_secs(1);
    let Ok(mut stream) =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = "GET /__ovation/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
}

/// The health of each process of `state`.
pub fn health_of(state: &Deployment) -> Vec<Health> {
    state
        .processes
        .iter()
        .map(|p| match p.pid {
            None => Health::Down,
            Some(pid) if !alive(pid) => Health::Down,
            Some(_) if answers_health(p.port) => Health::Healthy,
            Some(_) => Health::Starting,
        })
        .collect()
}

/// Stops the deployment of `data_dir`: SIGTERM to the supervisor, which stops its processes;
/// if the supervisor is gone, its processes are stopped directly. Returns whether one ran.
pub fn stop(data_dir: &Path) -> Result<bool, String> {
    let dir = state_dir(data_dir);
    let Some(state) = load(&dir)? else {
        return Ok(false);
    };
    if let Some(pid) = state.supervisor_pid.filter(|p| alive(*p)) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            return Err(format!(
                "the deploy supervisor (pid {pid}) did not stop within 40 s of SIGTERM"
            ));
        }
    }
    // Processes left by a supervisor that was killed.
    let orphans: Vec<u32> = state
        .processes
        .iter()
        .filter_map(|p| p.pid)
        .filter(|pid| runs(*pid, &state.exe))
        .collect();
    terminate_all(&orphans, Duration::from_secs(20));
    let _ = std::fs::remove_file(state_file(&dir));
    Ok(true)
}

/// SIGTERM to each of `pids`, SIGKILL to those still running after `grace`.
fn terminate_all(pids: &[u32], grace: Duration) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in pids.iter().filter(|p| alive(**p)) {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
}

/// How long the supervisor waits before restarting a process that exited `failures` times in
/// a row: 0.5 s, doubling, at most 30 s. A process that ran for a minute starts over.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_millis(500 * (1 << exp)).min(Duration::from_secs(30))
}

const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One process under supervision.
#[derive(Debug)]
struct Slot {
    child: Option<tokio::process::Child>,
    started: Instant,
    failures: u32,
    restart_at: Option<Instant>,
    /// Asked to stop by `ovation deploy restart`: started again at once when it exits.
    restarting: bool,
}

/// The file `ovation deploy restart NAME` leaves for the supervisor.
fn restart_request(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("restart-{name}.request"))
}

/// Restarts process `name` of the deployment of `data_dir` gracefully: the supervisor sends
/// it SIGTERM (it stops accepting, finishes its requests and messages) and starts it again as
/// soon as it exited. Returns once the new instance answers its health check, with the old and
/// new pids.
pub fn restart(data_dir: &Path, name: &str, within: Duration) -> Result<(u32, u32), String> {
    let dir = state_dir(data_dir);
    let state = load(&dir)?.ok_or("no local deployment runs; start one with `ovation deploy`")?;
    let Some(process) = state.processes.iter().find(|p| p.unit.name == name) else {
        let names: Vec<&str> = state
            .processes
            .iter()
            .map(|p| p.unit.name.as_str())
            .collect();
        return Err(format!(
            "the deployment has no process `{name}`; its processes are: {}",
            names.join(", ")
        ));
    };
    let old = process
        .pid
        .ok_or_else(|| format!("`{name}` is down, waiting for the supervisor to restart it"))?;
    if !state.supervisor_pid.is_some_and(alive) {
        return Err(
            "the deployment's supervisor is not running: redeploy with `ovation deploy`".into(),
        );
    }
    let request = restart_request(&dir, name);
    std::fs::write(&request, b"")
        .map_err(|e| format!("cannot write {}: {e}", request.display()))?;
    let deadline = Instant::now() + within;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = load(&dir)?.ok_or("the deployment stopped during the restart")?;
        let p = now
            .processes
            .iter()
            .find(|p| p.unit.name == name)
            .ok_or("the deployment changed during the restart")?;
        if let Some(new) = p.pid
            && new != old
            && alive(new)
            && answers_health(p.port)
        {
            return Ok((old, new));
        }
        if Instant::now() > deadline {
            let _ = std::fs::remove_file(&request);
            return Err(format!(
                "`{name}` did not come back healthy within {within:?}; see {}",
                p.log.display()
            ));
        }
    }
}

/// The supervisor (`ovation deploy supervise`): starts every process of the deployment in
/// `dir`, restarts those that exit with backoff, and on SIGTERM or Ctrl-C stops them all
/// (SIGTERM, then SIGKILL after 20 s) and removes the deployment.
pub fn supervise(dir: &Path) -> Result<(), String> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    tokio.block_on(supervise_async(dir))
}

async fn supervise_async(dir: &Path) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut state = load(dir)?.ok_or("no deployment to supervise")?;
    state.supervisor_pid = Some(std::process::id());
    let mut slots: Vec<Slot> = Vec::new();
    for i in 0..state.processes.len() {
        let child = start(&state, i)?;
        state.processes[i].pid = child.id();
        slots.push(Slot {
            child: Some(child),
            started: Instant::now(),
            failures: 0,
            restart_at: None,
            restarting: false,
        });
    }
    save(dir, &state)?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        if state.stop_with_pid.is_some_and(|pid| !alive(pid)) {
            eprintln!(
                "process {:?} exited: stopping the deployment",
                state.stop_with_pid
            );
            break;
        }
        let mut changed = false;
        for (i, slot) in slots.iter_mut().enumerate() {
            let name = &state.processes[i].unit.name;
            if let Some(child) = &mut slot.child {
                let request = restart_request(dir, name);
                if !slot.restarting && request.exists() {
                    let _ = std::fs::remove_file(&request);
                    if let Some(pid) = child.id() {
                        eprintln!("{name}: restarting on request");
                        slot.restarting = true;
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    }
                }
                let Ok(Some(status)) = child.try_wait() else {
                    continue;
                };
                if std::mem::take(&mut slot.restarting) {
                    eprintln!("{name} stopped ({status}); starting it again");
                    slot.child = None;
                    slot.restart_at = Some(Instant::now());
                    state.processes[i].pid = None;
                    changed = true;
                    continue;
                }
                if slot.started.elapsed() >= STABLE_AFTER {
                    slot.failures = 0;
                }
                slot.failures += 1;
                let delay = backoff(slot.failures);
                eprintln!("{name} exited ({status}); restarting in {delay:?}");
                slot.child = None;
                slot.restart_at = Some(Instant::now() + delay);
                state.processes[i].pid = None;
                changed = true;
            } else if slot.restart_at.is_some_and(|at| Instant::now() >= at) {
                match start(&state, i) {
                    Ok(child) => {
                        state.processes[i].pid = child.id();
                        state.processes[i].restarts += 1;
                        slot.child = Some(child);
                        slot.started = Instant::now();
                        slot.restart_at = None;
                    }
                    Err(e) => {
                        slot.failures += 1;
                        slot.restart_at = Some(Instant::now() + backoff(slot.failures));
                        eprintln!("{name}: {e}");
                    }
                }
                changed = true;
            }
        }
        if changed {
            save(dir, &state)?;
        }
    }

    eprintln!("stopping the deployment");
    let pids: Vec<u32> = slots
        .iter()
        .filter_map(|s| s.child.as_ref().and_then(tokio::process::Child::id))
        .collect();
    tokio::task::spawn_blocking(move || terminate_all(&pids, Duration::from_secs(20)))
        .await
        .map_err(|e| e.to_string())?;
    for slot in &mut slots {
        if let Some(child) = &mut slot.child {
            let _ = child.wait().await;
        }
    }
    let _ = std::fs::remove_file(state_file(dir));
    Ok(())
}

/// Starts process `i` of `state`, its output appended to its log.
fn start(state: &Deployment, i: usize) -> Result<tokio::process::Child, String> {
    let p = &state.processes[i];
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .map_err(|e| format!("cannot open {}: {e}", p.log.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", p.log.display()))?;
    let mut cmd = command_dying_with_supervisor(&state.exe);
    // The config file says everything; variables in the supervisor's environment would
    // override it.
    for var in [
        "OVATION_LISTEN",
        "OVATION_HOSTED_SERVICES",
        "OVATION_SERVICE_URLS",
        "OVATION_GATEWAY",
        "OVATION_SERVICE_AUTH_KEY",
        "OVATION_DATA_DIR",
        "OVATION_PUBSUB",
        "OVATION_TRACE_SAMPLING",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "DATABASE_URL",
        "REDIS_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("OVATION_CONFIG", &p.config)
        .env("OTEL_SERVICE_NAME", &p.unit.name)
        .current_dir(&state.app)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", state.exe.display()))
}

/// The command that starts `exe` so that it gets SIGTERM (a graceful stop) when the
/// supervisor dies, however it dies: a process nobody supervises would run on unseen, never
/// restarted, and hold its port against the next deployment. util-linux's `setpriv` sets the
/// parent-death signal and then becomes `exe` (this crate has no `unsafe` for a `pre_exec`).
/// Without `setpriv` (not Linux), `ovation deploy status` still says when the supervisor is
/// gone, and the next `ovation deploy` or `stop` ends its processes.
fn command_dying_with_supervisor(exe: &Path) -> tokio::process::Command {
    match ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    {
        Some(setpriv) => {
            let mut cmd = tokio::process::Command::new(setpriv);
            cmd.args(["--pdeathsig", "TERM", "--"]).arg(exe);
            cmd
        }
        None => tokio::process::Command::new(exe),
    }
}

/// Whether the deployment's supervisor runs: `Some(pid)` if it does, `None` if it is gone (its
/// processes are not restarted, and on Linux they were stopped with it).
pub fn supervisor_running(state: &Deployment) -> Option<u32> {
    state.supervisor_pid.filter(|pid| alive(*pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_up_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn a_zombie_or_a_missing_process_is_not_alive() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
