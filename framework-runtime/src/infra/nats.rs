//! The managed `nats-server` (JetStream), for `OVATION_PUBSUB=nats`: the same life as the
//! managed Postgres, in `<data dir>/nats`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::InfraError;
use super::process::{
    STOPPED_ON_PURPOSE, find_binary, hold_client_lock, keep_running, listening_port,
    lock_server_dir, owns_sh, previous_port, process_has_arg, same_or_free_port,
    spawn_idle_watchdog, start_server,
};

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
        let (dir, setup) = lock_server_dir(data_dir, "nats")?;
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
    find_binary("nats-server", &["/usr/sbin", "/usr/local/bin", "/usr/bin"])
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

/// The port of the managed NATS server in `dir`, if it runs and accepts connections.
pub(super) fn nats_port(dir: &Path) -> Option<u16> {
    listening_port(dir, server_alive)
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
        .arg(dir.join("nats.log"));
    start_server(cmd, "nats-server", dir, port, "nats.log", server_alive)
}
