//! The managed Postgres: found, initialised once, started on a free port of 127.0.0.1, shared by
//! every process of the app (and every test binary), and stopped by a watchdog once unused.

use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{
    Account, STOPPED_ON_PURPOSE, hold_client_lock, is_executable, keep_running, open_lock_file,
    owns_sh, process_has_arg, run, same_or_free_port, shell_quote, spawn_idle_watchdog,
    write_private,
};
use super::{InfraError, io_err};

/// The superuser of the managed cluster.
pub(super) const SUPERUSER: &str = "ovation";
/// A running managed Postgres cluster, ready for connections.
#[derive(Debug, Clone)]
pub struct ManagedPostgres {
    dir: PathBuf,
    port: u16,
    password: String,
}

impl ManagedPostgres {
    /// Makes the managed cluster in `data_dir` ready: initialises it on first use, starts the
    /// server if it is not running, and registers this process as one of its users.
    ///
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn ensure(data_dir: &Path) -> Result<ManagedPostgres, InfraError> {
        let bins = PgBinaries::find()?;
        let account = Account::for_postgres()?;
        let dir = Self::cluster_dir(data_dir)?;
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        if let Some(account) = &account {
            account.check_traversable(&dir)?;
            account.chown(&dir)?;
        }

        let setup = open_lock_file(&dir.join("setup.lock"))?;
        setup
            .lock()
            .map_err(io_err("locking the managed Postgres set-up"))?;

        let data = dir.join("data");
        if !data.join("PG_VERSION").exists() {
            init_cluster(&bins, account.as_ref(), &dir)?;
        }
        let password = fs::read_to_string(dir.join("password"))
            .map_err(io_err("reading the managed Postgres password"))?
            .trim()
            .to_owned();

        let port = match running_port(&dir) {
            Some(_) if started_unsafe(&dir) && unused(&dir) => {
                // Started by an older Ovation with asynchronous commits; nobody uses it.
                tracing::info!("restarting the managed Postgres with synchronous commits");
                stop_server(&bins, account.as_ref(), &dir)?;
                start_server(&bins, account.as_ref(), &dir)?
            }
            Some(port) => port,
            None => start_server(&bins, account.as_ref(), &dir)?,
        };
        let _ = fs::remove_file(dir.join(STOPPED_ON_PURPOSE));
        spawn_watchdog(&bins, account.as_ref(), &dir);
        hold_client_lock(&dir)?;
        // `setup` unlocks on drop, after our client lock is held: the watchdog stops the
        // server only while holding the set-up lock and seeing no client.
        drop(setup);
        Ok(ManagedPostgres {
            dir,
            port,
            password,
        })
    }

    /// The folder of the cluster of `data_dir`: `<data_dir>/postgres`, unless this process is
    /// root and the `postgres` account cannot enter `data_dir` (a checkout under `/root`, say):
    /// then a folder of its own under `/var/tmp`, one per data folder.
    pub fn cluster_dir(data_dir: &Path) -> Result<PathBuf, InfraError> {
        fs::create_dir_all(data_dir).map_err(io_err(format!(
            "creating the data folder {}",
            data_dir.display()
        )))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", data_dir.display())))?;
        let dir = data_dir.join("postgres");
        match Account::for_postgres()? {
            Some(account) if account.check_traversable(&dir).is_err() => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
                let fallback = PathBuf::from("/var/tmp")
                    .join(format!("ovation-{}", hex::encode(&digest[..6])))
                    .join("postgres");
                tracing::info!(
                    "the postgres account cannot enter {}; the managed cluster lives in {}",
                    data_dir.display(),
                    fallback.display()
                );
                Ok(fallback)
            }
            _ => Ok(dir),
        }
    }

    /// Stops the managed server in `data_dir`, if it runs. Returns whether it was running.
    pub fn stop(data_dir: &Path) -> Result<bool, InfraError> {
        let dir = Self::cluster_dir(data_dir)?;
        if running_port(&dir).is_none() {
            return Ok(false);
        }
        let bins = PgBinaries::find()?;
        let account = Account::for_postgres()?;
        let setup = open_lock_file(&dir.join("setup.lock"))?;
        setup
            .lock()
            .map_err(io_err("locking the managed Postgres set-up"))?;
        stop_server(&bins, account.as_ref(), &dir)?;
        // Processes using it see this and leave it stopped (see `keep_running`).
        let _ = fs::write(dir.join(STOPPED_ON_PURPOSE), "");
        Ok(true)
    }

    /// Restarts the server whenever it is found not running (killed, crashed, stopped by hand),
    /// for as long as this process lives, on the same port while it is free — so this
    /// process's connection pools reconnect to it by themselves. Not after `ovation db stop`.
    pub fn keep_running(&self, data_dir: &Path) {
        let data_dir = data_dir.to_owned();
        keep_running("Postgres", &self.dir, self.port, server_alive, move || {
            Ok(ManagedPostgres::ensure(&data_dir)?.port)
        });
    }

    /// The URL of database `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Paths of the Postgres server binaries.
#[derive(Debug)]
pub(super) struct PgBinaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl PgBinaries {
    pub(super) fn find() -> Result<PgBinaries, InfraError> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        // Debian and Ubuntu keep the server binaries off PATH; prefer the newest major version.
        for pattern in [
            "/usr/lib/postgresql",
            "/usr/local/pgsql",
            "/opt/homebrew/opt",
        ] {
            let mut versions: Vec<PathBuf> = fs::read_dir(pattern)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin"))
                .collect();
            versions.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
            dirs.extend(versions);
        }
        dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
        Self::find_in(dirs)
    }

    pub(super) fn find_in(dirs: Vec<PathBuf>) -> Result<PgBinaries, InfraError> {
        dirs.into_iter()
            .find(|d| is_executable(&d.join("initdb")) && is_executable(&d.join("pg_ctl")))
            .map(|d| PgBinaries {
                initdb: d.join("initdb"),
                pg_ctl: d.join("pg_ctl"),
            })
            .ok_or(InfraError::PostgresNotFound)
    }
}

pub(super) fn version_key(p: &Path) -> u32 {
    p.parent()
        .and_then(|v| v.file_name())
        .and_then(|v| v.to_str())
        // `16`, `9.6`, `postgresql@16`: the major version is the first run of digits.
        .and_then(|v| {
            let start = v.find(|c: char| c.is_ascii_digit())?;
            let digits: String = v[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

pub(super) fn init_cluster(
    bins: &PgBinaries,
    account: Option<&Account>,
    dir: &Path,
) -> Result<(), InfraError> {
    let data = dir.join("data");
    // A half-made cluster from an interrupted initdb: start over.
    if data.exists() {
        fs::remove_dir_all(&data).map_err(io_err(format!("removing {}", data.display())))?;
    }
    let password: String = {
        use rand::Rng;
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    };
    let password_file = dir.join("password");
    write_private(&password_file, &password)?;
    // initdb reads the password from a file the postgres account can read; removed afterwards.
    let pwfile = dir.join("initdb.pw");
    write_private(&pwfile, &password)?;
    if let Some(account) = account {
        account.chown(&pwfile)?;
    }
    let mut cmd = Command::new(&bins.initdb);
    cmd.arg("-D")
        .arg(&data)
        .args([
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    let result = run(cmd, account, dir, "initdb");
    let _ = fs::remove_file(&pwfile);
    result.map(drop)
}
/// The port of the server running on this cluster, if one runs and accepts connections.
pub(super) fn running_port(dir: &Path) -> Option<u16> {
    // postmaster.pid: line 1 the pid, line 4 the port (PostgreSQL's documented layout).
    let mut pidfile = String::new();
    File::open(dir.join("data/postmaster.pid"))
        .ok()?
        .read_to_string(&mut pidfile)
        .ok()?;
    let mut lines = pidfile.lines();
    let pid = lines.next()?.trim();
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    // Where /proc exists (Linux), a stale pid file is told apart at once; elsewhere the
    // connection attempt below decides.
    if Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists() {
        return None;
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    Some(port)
}
pub(super) fn start_server(
    bins: &PgBinaries,
    account: Option<&Account>,
    dir: &Path,
) -> Result<u16, InfraError> {
    let mut last_err = None;
    // Another program may take the port between our probe and the server's bind: retry.
    // A `postmaster.pid` left by a server that died, whose pid another process may have
    // taken since: Postgres would take that process for a server still running.
    if !server_alive(dir) {
        let _ = fs::remove_file(dir.join("data/postmaster.pid"));
    }
    let mut previous = previous_port(dir);
    for _ in 0..3 {
        let port = same_or_free_port(previous.take())?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c max_connections=300 -c shared_buffers=64MB"
        );
        // Commits are synchronous (Postgres's default): an answered write survives a crash of
        // the server. Only tests, whose databases are thrown away, turn that off, per
        // connection (`PgServer::throwaway`).
        let mut cmd = Command::new(&bins.pg_ctl);
        cmd.arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        // pg_ctl leaves the server running in the background; its own process group keeps
        // it out of the reach of a Ctrl-C sent to our terminal's foreground group.
        cmd.process_group(0);
        match run(cmd, account, dir, "pg_ctl start") {
            Ok(_) => {
                if let Some(port) = running_port(dir) {
                    return Ok(port);
                }
                last_err = Some(InfraError::Command {
                    command: "pg_ctl start".into(),
                    status: "started".into(),
                    output: format!(
                        "the server does not accept connections; see {}",
                        dir.join("postgres.log").display()
                    ),
                });
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.expect("at least one attempt"))
}
fn stop_server(bins: &PgBinaries, account: Option<&Account>, dir: &Path) -> Result<(), InfraError> {
    let mut cmd = Command::new(&bins.pg_ctl);
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-m", "fast", "-w", "stop"]);
    run(cmd, account, dir, "pg_ctl stop").map(drop)
}

/// The port the server last ran on, from the command line Postgres keeps in `postmaster.opts`.
fn previous_port(dir: &Path) -> Option<u16> {
    let opts = fs::read_to_string(dir.join("data/postmaster.opts")).ok()?;
    let mut words = opts.split_whitespace().map(|w| w.trim_matches('"'));
    words.find(|w| *w == "-p")?;
    words.next()?.parse().ok()
}

/// Whether the postmaster of the cluster in `dir` is running (its pid, from `postmaster.pid`,
/// is a process started on this cluster's data folder).
fn server_alive(dir: &Path) -> bool {
    let data = dir.join("data");
    fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|f| f.lines().next()?.trim().parse().ok())
        .is_some_and(|pid| process_has_arg(pid, &data.to_string_lossy()))
}

/// Whether the running server was started with `synchronous_commit=off` (by an earlier
/// Ovation): Postgres keeps its command line in `postmaster.opts`.
fn started_unsafe(dir: &Path) -> bool {
    fs::read_to_string(dir.join("data/postmaster.opts"))
        .is_ok_and(|opts| opts.contains("synchronous_commit=off"))
}

/// Whether no process holds `clients.lock` (call with `setup.lock` held).
fn unused(dir: &Path) -> bool {
    open_lock_file(&dir.join("clients.lock")).is_ok_and(|f| f.try_lock().is_ok())
}

/// Starts the idle watchdog of this cluster unless one is running.
pub(super) fn spawn_watchdog(bins: &PgBinaries, account: Option<&Account>, dir: &Path) {
    let pg_ctl = shell_quote(&bins.pg_ctl.to_string_lossy());
    // Stopped only if the pid in `postmaster.pid` is this cluster's postmaster (its command
    // line names the data folder): a server that died leaves a pid another process may reuse.
    let owns = owns_sh("$1/data");
    let stop = format!(
        r#"{{ pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null); if [ -n "$pid" ] && {owns}; then {pg_ctl} -D "$1/data" -m fast -w stop; fi; }}"#
    );
    spawn_idle_watchdog(dir, "ovation-pg-watchdog", &stop, account);
}
