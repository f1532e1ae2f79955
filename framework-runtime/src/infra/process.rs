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
/// Starts a watchdog that stops the server in `dir` once no process has held `clients.lock`
/// for [`IDLE_STOP`]: it runs `stop` (a shell command; `$1` is `dir`) while holding
/// `setup.lock` and seeing `clients.lock` free, so a process that is starting to use the server
/// never sees it stop. It exits when `alive` (a file in `dir`) is gone.
///
/// A tiny shell loop (util-linux `flock` does the locking) rather than a thread of ours,
/// because the process that started the server may exit long before the last one using it.
pub(super) fn spawn_idle_watchdog(
    dir: &Path,
    name: &str,
    alive: &str,
    stop: &str,
    account: Option<&Account>,
) {
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
