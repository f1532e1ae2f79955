//! Running the servers' processes: as the unprivileged `postgres` account when this process is
//! root, their files private, and the idle watchdog that stops a server no process uses.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::{IDLE_STOP, InfraError, io_err};

/// The unprivileged account Postgres runs as when this process is root.
#[derive(Debug)]
pub(super) struct Account {
    uid: u32,
    gid: u32,
}

impl Account {
    /// `None` when this process is not root: Postgres then runs as us.
    pub(super) fn for_postgres() -> Result<Option<Account>, InfraError> {
        if !running_as_root() {
            return Ok(None);
        }
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == "postgres")
            .and_then(|f| {
                Some(Account {
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })
            .map(Some)
            .ok_or(InfraError::NoUnprivilegedUser)
    }

    pub(super) fn chown(&self, path: &Path) -> Result<(), InfraError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(io_err(format!(
            "handing {} to the postgres account",
            path.display()
        )))
    }

    pub(super) fn check_traversable(&self, dir: &Path) -> Result<(), InfraError> {
        for ancestor in dir.ancestors().skip(1) {
            let Ok(meta) = fs::metadata(ancestor) else {
                continue;
            };
            let mode = meta.permissions().mode();
            use std::os::unix::fs::MetadataExt;
            let ok = mode & 0o001 != 0
                || (meta.uid() == self.uid && mode & 0o100 != 0)
                || (meta.gid() == self.gid && mode & 0o010 != 0);
            if !ok {
                return Err(InfraError::DataDirNotTraversable(ancestor.to_owned()));
            }
        }
        Ok(())
    }

    pub(super) fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }
}

pub(super) fn running_as_root() -> bool {
    // Without libc: the effective uid is on the `Uid:` line of /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

pub(super) fn open_lock_file(path: &Path) -> Result<File, InfraError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    // The watchdog, running as another account, must be able to open it too.
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o666));
    Ok(file)
}
/// Runs a command (as `account` if given) in `cwd`, failing with its output.
pub(super) fn run(
    mut cmd: Command,
    account: Option<&Account>,
    cwd: &Path,
    what: &str,
) -> Result<String, InfraError> {
    if let Some(account) = account {
        account.apply(&mut cmd);
    }
    cmd.current_dir(cwd).stdin(Stdio::null());
    let out = cmd.output().map_err(io_err(format!("running {what}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(InfraError::Command {
            command: what.to_owned(),
            status: out.status.to_string(),
            output: text.trim().to_owned(),
        })
    }
}
pub(super) fn write_private(path: &Path, contents: &str) -> Result<(), InfraError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    f.write_all(contents.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}
pub(super) fn free_port() -> Result<u16, InfraError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}
/// Shell text that is true when process `$pid` has `arg` (shell text, expanded) as one of its
/// arguments: [`process_has_arg`] for the watchdogs' stop commands.
pub(super) fn owns_sh(arg: &str) -> String {
    format!(r#"tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "{arg}""#)
}

/// How long a managed server keeps running after the last process using it exits:
/// [`IDLE_STOP`], or `OVATION_IDLE_STOP_SECS` (for tests of the watchdog itself).
pub(super) fn idle_stop() -> std::time::Duration {
    std::env::var("OVATION_IDLE_STOP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(IDLE_STOP, std::time::Duration::from_secs)
}

/// Starts a watchdog that stops the server in `dir` once no process has held `clients.lock`
/// for [`idle_stop`], unless one runs already.
///
/// It runs `stop` (a shell command; `$1` is `dir`) while holding `setup.lock` and seeing
/// `clients.lock` free, so a process that is starting to use the server never sees it stop.
/// `stop` must succeed when the server is already gone (it died by itself). Then the watchdog
/// removes its pid file, still under the lock (so the next set-up starts a new one), and exits:
/// it never outlives its server's users by more than the idle time, whatever happened to the
/// server meanwhile — an outage while processes use it does not end it, a server that died does
/// not keep it looping.
///
/// A tiny shell loop (util-linux `flock` does the locking) rather than a thread of ours,
/// because the process that started the server may exit long before the last one using it.
pub(super) fn spawn_idle_watchdog(dir: &Path, name: &str, stop: &str, account: Option<&Account>) {
    let pidfile = dir.join("watchdog.pid");
    if let Ok(pid) = fs::read_to_string(&pidfile)
        && let Ok(pid) = pid.trim().parse()
        && process_has_arg(pid, name)
    {
        return;
    }
    if !["/usr/bin/flock", "/bin/flock"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        tracing::debug!(
            "flock(1) not found: {} will not stop by itself",
            dir.display()
        );
        return;
    }
    // Gives up after 10 failed stops (a broken server binary, say) rather than loop forever.
    let script = r#"
idle=0; failed=0
while sleep 1; do
  if flock -n -x "$1/clients.lock" true; then idle=$((idle+1)); else idle=0; fi
  if [ "$idle" -ge "$2" ]; then
    if flock -x "$1/setup.lock" flock -n -x "$1/clients.lock" \
         sh -c "$3 && rm -f \"\$1/watchdog.pid\"" sh "$1" >/dev/null 2>&1; then
      exit 0
    fi
    idle=0; failed=$((failed+1))
    [ "$failed" -lt 10 ] || exit 1
  fi
done
"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(name)
        .arg(dir)
        .arg(idle_stop().as_secs().max(1).to_string())
        .arg(stop)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if let Some(account) = account {
        account.apply(&mut cmd);
    }
    match cmd.spawn() {
        Ok(child) => {
            let _ = fs::write(&pidfile, child.id().to_string());
        }
        Err(e) => tracing::debug!("could not start the watchdog of {}: {e}", dir.display()),
    }
}

/// Whether process `pid` runs with `arg` as one of its arguments: how Ovation tells its own
/// server or watchdog from an unrelated process that was given a recycled pid. (Linux: from
/// `/proc`; elsewhere a live pid counts.)
pub(super) fn process_has_arg(pid: u32, arg: &str) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    if !Path::new("/proc/self").exists() {
        return Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    // A zombie (exited, not yet reaped) has an empty command line: not running.
    fs::read(proc.join("cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
}

/// Whether process `pid` runs the program `name` (its `comm`, the executable's name, which a
/// program that rewrites its command line keeps) and has not exited (a zombie keeps its name
/// but has an empty command line). Elsewhere than Linux a live pid counts.
pub(super) fn process_is_named(pid: u32, name: &str) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    if !Path::new("/proc/self").exists() {
        return process_has_arg(pid, name);
    }
    fs::read_to_string(proc.join("comm")).is_ok_and(|comm| comm.trim_end() == name)
        && fs::read(proc.join("cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Keeps a managed server, running on `port`, running for as long as this process lives:
/// every second, `alive` says whether it runs; when it does not, `restart` starts it again and
/// returns its port (with backoff from 1 s to 30 s while it fails), and the outcome is logged.
/// One thread per server and process, whatever the number of async runtimes (a test binary has
/// one per test).
pub(super) fn keep_running(
    what: &'static str,
    dir: &Path,
    port: u16,
    alive: fn(&Path) -> bool,
    restart: impl Fn() -> Result<u16, InfraError> + Send + 'static,
) {
    static KEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if kept.iter().any(|d| d == dir) {
            return;
        }
        kept.push(dir.to_owned());
    }
    let dir = dir.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("ovation-keep-{what}"))
        .spawn(move || {
            let mut backoff = std::time::Duration::from_secs(1);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                // `ovation db stop` means it: a server stopped on purpose stays stopped.
                if alive(&dir) || dir.join(STOPPED_ON_PURPOSE).exists() {
                    continue;
                }
                tracing::warn!(
                    "the managed {what} in {} is not running; restarting it",
                    dir.display()
                );
                match restart() {
                    Ok(now) if now == port => {
                        tracing::warn!("the managed {what} is running again (port {port})");
                        backoff = std::time::Duration::from_secs(1);
                    }
                    Ok(now) => {
                        tracing::error!(
                            "the managed {what} is running again, but on port {now}: another \
                             program took {port}; restart this app to reconnect"
                        );
                        backoff = std::time::Duration::from_secs(1);
                    }
                    Err(e) => {
                        tracing::error!(
                            "could not restart the managed {what} (next try in {backoff:?}): {e}"
                        );
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("could not start the keeper of the managed {what}: {e}");
    }
}

/// A file in a server's folder saying it was stopped on purpose (`ovation db stop`): processes
/// using it do not restart it. The next set-up removes it.
pub(super) const STOPPED_ON_PURPOSE: &str = "stopped-on-purpose";

/// `port` if it is free on 127.0.0.1 (a restarted server keeps its clients' URLs), else a free
/// one.
pub(super) fn same_or_free_port(port: Option<u16>) -> Result<u16, InfraError> {
    if let Some(port) = port
        && TcpListener::bind(("127.0.0.1", port)).is_ok()
    {
        return Ok(port);
    }
    free_port()
}

/// The folder `<data_dir>/<name>` of a managed server (made if missing, the path resolved),
/// and its `setup.lock`, held: the caller sets the server up, alone, until it drops the file.
pub(super) fn lock_server_dir(data_dir: &Path, name: &str) -> Result<(PathBuf, File), InfraError> {
    fs::create_dir_all(data_dir).map_err(io_err(format!(
        "creating the data folder {}",
        data_dir.display()
    )))?;
    let dir = data_dir
        .canonicalize()
        .map_err(io_err(format!("resolving {}", data_dir.display())))?
        .join(name);
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let setup = open_lock_file(&dir.join("setup.lock"))?;
    setup
        .lock()
        .map_err(io_err(format!("locking the set-up of {}", dir.display())))?;
    Ok((dir, setup))
}

/// `name` on `PATH`, else in one of `extra`.
pub(super) fn find_binary(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(extra.iter().map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// The port the server of `dir` last ran on (`<dir>/port`).
pub(super) fn previous_port(dir: &Path) -> Option<u16> {
    fs::read_to_string(dir.join("port"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The port of the server in `dir`, if `alive` says it runs and it accepts connections.
pub(super) fn listening_port(dir: &Path, alive: fn(&Path) -> bool) -> Option<u16> {
    if !alive(dir) {
        return None;
    }
    let port = previous_port(dir)?;
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_secs(1),
    )
    .ok()?;
    Some(port)
}

/// Starts `cmd`, a server of `dir` that stays in the foreground, on `port`: detached (its own
/// process group, no terminal), reaped by a thread of this process when it exits (a zombie
/// would keep its pid), its port written to `<dir>/port`. Waits up to 20 s for it to listen
/// (`alive` and a connection), else fails pointing at `log` in `dir`.
pub(super) fn start_server(
    mut cmd: Command,
    what: &str,
    dir: &Path,
    port: u16,
    log: &str,
    alive: fn(&Path) -> bool,
) -> Result<u16, InfraError> {
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().map_err(io_err(format!("starting {what}")))?;
    let _ = std::thread::Builder::new()
        .name(format!("ovation-reaper-{what}"))
        .spawn(move || child.wait());
    fs::write(dir.join("port"), port.to_string())
        .map_err(io_err(format!("writing the {what} port")))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if listening_port(dir, alive).is_some() {
            return Ok(port);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(InfraError::Command {
        command: what.into(),
        status: "not listening".into(),
        output: format!(
            "it did not accept connections within 20 s; see {}",
            dir.join(log).display()
        ),
    })
}

/// `text` as one single-quoted shell word.
pub(super) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

pub(super) fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Shared locks on `clients.lock` held by this process, one per cluster folder, for the
/// process's lifetime: they tell the watchdog the server is in use.
static CLIENT_LOCKS: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

pub(super) fn hold_client_lock(dir: &Path) -> Result<(), InfraError> {
    let mut held = CLIENT_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    if held.iter().any(|(d, _)| d == dir) {
        return Ok(());
    }
    let file = open_lock_file(&dir.join("clients.lock"))?;
    file.lock_shared()
        .map_err(io_err("registering as a user of the managed Postgres"))?;
    held.push((dir.to_owned(), file));
    Ok(())
}
