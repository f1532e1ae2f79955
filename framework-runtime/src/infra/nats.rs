//! The managed `nats-server` (JetStream), for `OVATION_PUBSUB=nats`: the same life as the
//! managed Postgres, in `<data dir>/nats`.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{
    free_port, hold_client_lock, is_executable, open_lock_file, spawn_idle_watchdog,
};
use super::{InfraError, io_err};

/// A running managed `nats-server` with JetStream, on 127.0.0.1 only.
#[derive(Debug, Clone)]
pub struct ManagedNats {
    port: u16,
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
        spawn_idle_watchdog(
            &dir,
            "ovation-nats-watchdog",
            "nats.pid",
            r#"kill "$(cat "$1/nats.pid")" && rm -f "$1/nats.pid""#,
            None,
        );
        hold_client_lock(&dir)?;
        drop(setup);
        Ok(ManagedNats { port })
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

/// The port of the managed NATS server in `dir`, if it runs and accepts connections.
pub(super) fn nats_port(dir: &Path) -> Option<u16> {
    let pid = fs::read_to_string(dir.join("nats.pid")).ok()?;
    if Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.trim()).exists() {
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
    let port = free_port()?;
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
    cmd.spawn().map_err(io_err("starting nats-server"))?;
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
