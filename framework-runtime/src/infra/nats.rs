//! The managed `nats-server` (JetStream), for `OVATION_PUBSUB=nats`: the same life as the
//! managed Postgres, in `<data dir>/nats`.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{
    STOPPED_ON_PURPOSE, hold_client_lock, is_executable, keep_running, open_lock_file, owns_sh,
    process_has_arg, same_or_free_port, spawn_idle_watchdog,
};
use super::{InfraError, io_err};

/// A running managed `nats-server` with JetStream, on 127.0.0.1 only.
#[derive(Debug, Clone)]
pub struct ManagedNats {
    port: u16,
    dir: PathBuf,
}

impl ManagedNats {
    /// Makes the managed NATS server of `data_dir` ready: starts it unless it runs, and
    /// registers this process as one of its users (the watchdog stops it after [`IDLE_STOP`]
    /// without users, as for Postgres).
    pub fn ensure(data_dir: &Path) -> Result<ManagedNats, InfraError> {
        let bin = find_nats()?;
        fs::create_dir_all(data_dir).map_err(io_err(format!(
            "creating the data folder {}",
            data_dir.display()
        )))?;
        let dir = data_dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", data_dir.display())))?
            .join("nats");
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let setup = open_lock_file(&dir.join("setup.lock"))?;
        setup
            .lock()
            .map_err(io_err("locking the managed NATS set-up"))?;
        let port = match nats_port(&dir) {
            Some(port) => port,
            None => start_nats(&bin, &dir)?,
        };
        let _ = fs::remove_file(dir.join(STOPPED_ON_PURPOSE));
        // Stopped only if the pid in `nats.pid` is this folder's server (its command line
        // names its JetStream folder), and waited for; the pid file goes either way.
        let owns = owns_sh("$1/jetstream");
        let stop = format!(
            r#"{{ pid=$(cat "$1/nats.pid" 2>/dev/null); if [ -n "$pid" ] && {owns}; then kill "$pid"; n=0; while {owns} && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; fi; rm -f "$1/nats.pid"; }}"#
        );
        spawn_idle_watchdog(&dir, "ovation-nats-watchdog", &stop, None);
        hold_client_lock(&dir)?;
        drop(setup);
        Ok(ManagedNats { port, dir })
    }

    /// Restarts the server whenever it is found not running, for as long as this process
    /// lives, on the same port while it is free (the NATS client reconnects by itself).
    pub fn keep_running(&self, data_dir: &Path) {
        let data_dir = data_dir.to_owned();
        keep_running(
            "nats-server",
            &self.dir,
            self.port,
            server_alive,
            move || Ok(ManagedNats::ensure(&data_dir)?.port),
        );
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

pub(super) fn find_nats() -> Result<PathBuf, InfraError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| is_executable(p))
        .ok_or(InfraError::NatsNotFound)
}

/// Whether the server of `dir` runs: the pid in `nats.pid` is a process started on this
/// folder's JetStream store.
fn server_alive(dir: &Path) -> bool {
    fs::read_to_string(dir.join("nats.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .is_some_and(|pid| process_has_arg(pid, &dir.join("jetstream").to_string_lossy()))
}

/// The port the server last ran on.
fn previous_port(dir: &Path) -> Option<u16> {
    fs::read_to_string(dir.join("port"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The port of the managed NATS server in `dir`, if it runs and accepts connections.
pub(super) fn nats_port(dir: &Path) -> Option<u16> {
    if !server_alive(dir) {
        return None;
    }
    let port: u16 = fs::read_to_string(dir.join("port"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    Some(port)
}

pub(super) fn start_nats(bin: &Path, dir: &Path) -> Result<u16, InfraError> {
    let port = same_or_free_port(previous_port(dir))?;
    let _ = fs::remove_file(dir.join("nats.pid"));
    let mut cmd = Command::new(bin);
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-sd")
        .arg(dir.join("jetstream"))
        .arg("-P")
        .arg(dir.join("nats.pid"))
        .arg("-l")
        .arg(dir.join("nats.log"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().map_err(io_err("starting nats-server"))?;
    // Reaped when it exits, so that it is not left a zombie of this process (which would still
    // hold its pid).
    let _ = std::thread::Builder::new()
        .name("ovation-nats-reaper".into())
        .spawn(move || child.wait());
    fs::write(dir.join("port"), port.to_string()).map_err(io_err("writing the NATS port"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if nats_port(dir).is_some() {
            return Ok(port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(InfraError::Command {
        command: "nats-server".into(),
        status: "not listening".into(),
        output: format!(
            "it did not accept connections within 20 s; see {}",
            dir.join("nats.log").display()
        ),
    })
}
