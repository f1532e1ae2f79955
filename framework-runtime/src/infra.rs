//! Managed local infrastructure: a private Postgres cluster, without Docker.
//!
//! When no `DATABASE_URL` is given, Ovation runs its own Postgres from the server binaries
//! installed on the machine:
//!
//! - the binaries are looked up on `PATH`, then in `/usr/lib/postgresql/*/bin` (Debian, Ubuntu)
//!   and a few other usual places;
//! - `initdb` runs once into `<data dir>/postgres/data`, with a generated password for the
//!   superuser `ovation` (kept in `<data dir>/postgres/password`, readable only by its owner);
//! - `postgres` listens on a free port on 127.0.0.1 only (no Unix socket), and later runs reuse
//!   the cluster and, while it runs, the server;
//! - a file lock serialises set-up, so parallel processes (test binaries, say) never race;
//! - every process using the cluster holds a shared lock on `clients.lock`; a small watchdog
//!   stops the server once no process has held it for [`IDLE_STOP`], so nothing is left running.
//!
//! Postgres refuses to run as root (`initdb: error: cannot be run as root`). When this process
//! is root (CI containers often are), `initdb`, `postgres` and the watchdog run as the
//! unprivileged `postgres` account, and the data folder is handed to it. Every folder above the
//! data folder must then be traversable by that account.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// How long the managed server keeps running after the last process using it exits.
pub const IDLE_STOP: Duration = Duration::from_secs(20);

/// The superuser of the managed cluster.
const SUPERUSER: &str = "ovation";

/// Why the managed Postgres could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH nor in \
         /usr/lib/postgresql/*/bin.\n  Install PostgreSQL's server (Debian/Ubuntu: `apt install \
         postgresql`, Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql@16`), \
         or set DATABASE_URL to a Postgres server on which Ovation may create databases."
    )]
    PostgresNotFound,
    #[error(
        "this process runs as root, and Postgres refuses to run as root; Ovation runs it as the \
         `postgres` account instead, but that account does not exist.\n  Create it (`useradd \
         --system postgres`), run as another user, or set DATABASE_URL."
    )]
    NoUnprivilegedUser,
    #[error(
        "the managed Postgres runs as `postgres`, which cannot enter {0} (root-only \
         permissions).\n  Set OVATION_DATA_DIR to a folder every user can traverse (e.g. under \
         /var/tmp), or set DATABASE_URL."
    )]
    DataDirNotTraversable(PathBuf),
    #[error(
        "the NATS backend was chosen (OVATION_PUBSUB=nats) but `nats-server` was not found on \
         PATH nor in /usr/sbin.\n  Install it (Debian/Ubuntu: `apt install nats-server`), give a \
         server with OVATION_PUBSUB=nats://HOST:PORT, or use the default Postgres backend."
    )]
    NatsNotFound,
    #[error("{action} failed: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
}

fn io_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> InfraError {
    move |source| InfraError::Io {
        action: action.into(),
        source,
    }
}

/// A running managed Postgres cluster, ready for connections.
#[derive(Debug, Clone)]
pub struct ManagedPostgres {
    dir: PathBuf,
    port: u16,
    password: String,
}

/// Shared locks on `clients.lock` held by this process, one per cluster folder, for the
/// process's lifetime: they tell the watchdog the server is in use.
static CLIENT_LOCKS: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

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
            Some(port) => port,
            None => start_server(&bins, account.as_ref(), &dir)?,
        };
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
        let mut cmd = Command::new(&bins.pg_ctl);
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(cmd, account.as_ref(), &dir, "pg_ctl stop")?;
        Ok(true)
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
struct PgBinaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl PgBinaries {
    fn find() -> Result<PgBinaries, InfraError> {
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

    fn find_in(dirs: Vec<PathBuf>) -> Result<PgBinaries, InfraError> {
        dirs.into_iter()
            .find(|d| is_executable(&d.join("initdb")) && is_executable(&d.join("pg_ctl")))
            .map(|d| PgBinaries {
                initdb: d.join("initdb"),
                pg_ctl: d.join("pg_ctl"),
            })
            .ok_or(InfraError::PostgresNotFound)
    }
}

fn version_key(p: &Path) -> u32 {
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

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The unprivileged account Postgres runs as when this process is root.
#[derive(Debug)]
struct Account {
    uid: u32,
    gid: u32,
}

impl Account {
    /// `None` when this process is not root: Postgres then runs as us.
    fn for_postgres() -> Result<Option<Account>, InfraError> {
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

    fn chown(&self, path: &Path) -> Result<(), InfraError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(io_err(format!(
            "handing {} to the postgres account",
            path.display()
        )))
    }

    fn check_traversable(&self, dir: &Path) -> Result<(), InfraError> {
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

    fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }
}

fn running_as_root() -> bool {
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

fn open_lock_file(path: &Path) -> Result<File, InfraError> {
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
fn run(
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

fn init_cluster(
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

fn write_private(path: &Path, contents: &str) -> Result<(), InfraError> {
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

/// The port of the server running on this cluster, if one runs and accepts connections.
fn running_port(dir: &Path) -> Option<u16> {
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

fn free_port() -> Result<u16, InfraError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}

fn start_server(
    bins: &PgBinaries,
    account: Option<&Account>,
    dir: &Path,
) -> Result<u16, InfraError> {
    let mut last_err = None;
    // Another program may take the port between our probe and the server's bind: retry.
    for _ in 0..3 {
        let port = free_port()?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c max_connections=300 -c shared_buffers=64MB -c synchronous_commit=off"
        );
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

/// Starts the idle watchdog of this cluster unless one is running.
fn spawn_watchdog(bins: &PgBinaries, account: Option<&Account>, dir: &Path) {
    let pg_ctl = shell_quote(&bins.pg_ctl.to_string_lossy());
    let stop = format!("{pg_ctl} -D \"$1/data\" -m fast -w stop");
    spawn_idle_watchdog(
        dir,
        "ovation-pg-watchdog",
        "data/postmaster.pid",
        &stop,
        account,
    );
}

/// Starts a watchdog that stops the server in `dir` once no process has held `clients.lock`
/// for [`IDLE_STOP`]: it runs `stop` (a shell command; `$1` is `dir`) while holding
/// `setup.lock` and seeing `clients.lock` free, so a process that is starting to use the server
/// never sees it stop. It exits when `alive` (a file in `dir`) is gone.
///
/// A tiny shell loop (util-linux `flock` does the locking) rather than a thread of ours,
/// because the process that started the server may exit long before the last one using it.
fn spawn_idle_watchdog(dir: &Path, name: &str, alive: &str, stop: &str, account: Option<&Account>) {
    let pidfile = dir.join("watchdog.pid");
    if let Ok(pid) = fs::read_to_string(&pidfile)
        && fs::read_to_string(Path::new("/proc").join(pid.trim()).join("cmdline"))
            .map(|c| c.contains(name))
            .unwrap_or(false)
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
    let script = r#"
idle=0
while sleep 1; do
  [ -e "$1/$2" ] || exit 0
  if flock -n -x "$1/clients.lock" true; then idle=$((idle+1)); else idle=0; fi
  if [ "$idle" -ge "$3" ]; then
    flock -x "$1/setup.lock" flock -n -x "$1/clients.lock" sh -c "$4" sh "$1" >/dev/null 2>&1
    idle=0
  fi
done
"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(name)
        .arg(dir)
        .arg(alive)
        .arg(IDLE_STOP.as_secs().to_string())
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

/// `text` as one single-quoted shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn hold_client_lock(dir: &Path) -> Result<(), InfraError> {
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

fn find_nats() -> Result<PathBuf, InfraError> {
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
fn nats_port(dir: &Path) -> Option<u16> {
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

fn start_nats(bin: &Path, dir: &Path) -> Result<u16, InfraError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_binaries_is_an_error_that_says_what_to_do() {
        let empty = std::env::temp_dir().join(format!("ovation-empty-{}", std::process::id()));
        fs::create_dir_all(&empty).unwrap();
        let err = PgBinaries::find_in(vec![empty.clone()]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, InfraError::PostgresNotFound));
        assert!(text.contains("apt install postgresql"), "{text}");
        assert!(text.contains("DATABASE_URL"), "{text}");
        let _ = fs::remove_dir(empty);
    }

    #[test]
    fn newest_postgres_version_sorts_first() {
        let mut dirs = [
            PathBuf::from("/usr/lib/postgresql/9.6/bin"),
            PathBuf::from("/usr/lib/postgresql/16/bin"),
            PathBuf::from("/usr/lib/postgresql/15/bin"),
        ];
        dirs.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
        assert_eq!(dirs[0], PathBuf::from("/usr/lib/postgresql/16/bin"));
    }
}
