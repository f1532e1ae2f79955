//! The managed `redis-server`, for the app's caches when no `REDIS_URL` is given: the same life
//! as the managed Postgres, in `<data dir>/redis`.
//!
//! A cache needs no persistence, so the server keeps nothing on disk (`save ""`, no AOF): a
//! restart empties it, which a cache must survive anyway. It listens on 127.0.0.1 only and
//! requires a password, generated once and kept in `<data dir>/redis/redis.conf` (readable only
//! by its owner): a web page the developer has open can reach 127.0.0.1 too, and Redis speaks
//! to whatever connects.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::InfraError;
use super::process::{
    STOPPED_ON_PURPOSE, find_binary, hold_client_lock, keep_running, listening_port,
    lock_server_dir, previous_port, process_is_named, same_or_free_port, spawn_idle_watchdog,
    start_server, write_private,
};

/// A running managed `redis-server`, on 127.0.0.1 only.
#[derive(Clone)]
pub struct ManagedRedis {
    port: u16,
    password: String,
    dir: PathBuf,
}

impl std::fmt::Debug for ManagedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedRedis")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ManagedRedis {
    /// Makes the managed Redis of `data_dir` ready: starts it unless it runs, and registers this
    /// process as one of its users (the watchdog stops it after [`super::IDLE_STOP`] without
    /// users).
    pub fn ensure(data_dir: &Path) -> Result<ManagedRedis, InfraError> {
        let bin = find_redis()?;
        let (dir, setup) = lock_server_dir(data_dir, "redis")?;
        let password = password(&dir)?;
        let port = match redis_port(&dir) {
            Some(port) => port,
            None => start_redis(&bin, &dir, &password)?,
        };
        let _ = fs::remove_file(dir.join(STOPPED_ON_PURPOSE));
        // Stopped only if the pid in `redis.pid` is a `redis-server` (see `server_alive`), and
        // waited for; the pid file goes either way.
        let owns = r#"{ [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] && [ -n "$(tr -d '\0' < "/proc/$pid/cmdline" 2>/dev/null)" ]; }"#;
        let stop = format!(
            r#"{{ pid=$(cat "$1/redis.pid" 2>/dev/null); if [ -n "$pid" ] && {owns}; then kill "$pid"; n=0; while {owns} && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; fi; rm -f "$1/redis.pid"; }}"#
        );
        spawn_idle_watchdog(&dir, "ovation-redis-watchdog", &stop, None);
        hold_client_lock(&dir)?;
        drop(setup);
        Ok(ManagedRedis {
            port,
            password,
            dir,
        })
    }

    /// Restarts the server whenever it is found not running, for as long as this process lives,
    /// on the same port while it is free (the cache client reconnects by itself).
    pub fn keep_running(&self, data_dir: &Path) {
        let data_dir = data_dir.to_owned();
        keep_running(
            "redis-server",
            &self.dir,
            self.port,
            server_alive,
            move || Ok(ManagedRedis::ensure(&data_dir)?.port),
        );
    }

    /// The server's URL, with its password.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/", self.password, self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

pub(super) fn find_redis() -> Result<PathBuf, InfraError> {
    find_binary(
        "redis-server",
        &[
            "/usr/bin",
            "/usr/local/bin",
            "/usr/sbin",
            "/opt/homebrew/bin",
        ],
    )
    .ok_or(InfraError::RedisNotFound)
}

/// The server's password: made once, with the config file that holds it.
fn password(dir: &Path) -> Result<String, InfraError> {
    let file = dir.join("password");
    if let Ok(existing) = fs::read_to_string(&file)
        && existing.trim().len() >= 32
    {
        return Ok(existing.trim().to_owned());
    }
    let password: String = {
        use rand::Rng;
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    };
    write_private(&file, &password)?;
    Ok(password)
}

/// Whether the server of `dir` runs: the pid in `redis.pid` is a `redis-server`. (Not by its
/// arguments, as for Postgres and NATS: Redis rewrites its command line to its address. Its
/// name stays, and the pid file is this folder's own.)
fn server_alive(dir: &Path) -> bool {
    fs::read_to_string(dir.join("redis.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .is_some_and(|pid: u32| process_is_named(pid, "redis-server"))
}

/// The port of the managed Redis in `dir`, if it runs and accepts connections.
fn redis_port(dir: &Path) -> Option<u16> {
    listening_port(dir, server_alive)
}

fn start_redis(bin: &Path, dir: &Path, password: &str) -> Result<u16, InfraError> {
    let port = same_or_free_port(previous_port(dir))?;
    let _ = fs::remove_file(dir.join("redis.pid"));
    // The password goes in the config file, not on the command line, where `ps` would show it.
    let conf = dir.join("redis.conf");
    write_private(
        &conf,
        &format!(
            "bind 127.0.0.1\nport {port}\nrequirepass {password}\nprotected-mode yes\n\
             save \"\"\nappendonly no\ndaemonize no\ndir {dir}\npidfile {pid}\nlogfile {log}\n",
            dir = dir.display(),
            pid = dir.join("redis.pid").display(),
            log = dir.join("redis.log").display(),
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg(&conf);
    start_server(cmd, "redis-server", dir, port, "redis.log", server_alive)
}
