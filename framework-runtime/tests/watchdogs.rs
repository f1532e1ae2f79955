//! The idle watchdogs of the managed servers, against the real servers: once no process uses a
//! server, it is stopped within the idle time and nothing of it is left running — after the
//! server died on its own, and after an outage (the watchdog lives through it).
//!
//! A process that makes a server ready is one of its users until it exits, so each set-up runs
//! in a child process: this test binary again, running only `helper` with
//! `OVATION_WATCHDOG_HELPER` set. Users are played by `flock -s clients.lock sleep N`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Seconds without users after which the watchdogs of these tests stop their server.
const IDLE: u64 = 2;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Postgres,
    Nats,
    Redis,
}

/// Not a test of its own: the set-up the tests run in a child process.
#[test]
#[ignore = "the set-up the other tests run in a child process"]
fn helper() {
    let Ok(job) = std::env::var("OVATION_WATCHDOG_HELPER") else {
        return;
    };
    let (kind, data_dir) = job.split_once(':').unwrap();
    let dir = match kind {
        "postgres" => ovation::tooling::ManagedPostgres::ensure(Path::new(data_dir))
            .unwrap()
            .dir()
            .to_owned(),
        "redis" => {
            ovation::tooling::ManagedRedis::ensure(Path::new(data_dir)).unwrap();
            Path::new(data_dir).canonicalize().unwrap().join("redis")
        }
        _ => {
            ovation::tooling::ManagedNats::ensure(Path::new(data_dir)).unwrap();
            Path::new(data_dir).canonicalize().unwrap().join("nats")
        }
    };
    println!("server-dir={}", dir.display());
}

/// Makes the server of `kind` in `data_dir` ready from a child process that then exits;
/// returns the server's folder.
fn ensure(kind: Kind, data_dir: &Path) -> PathBuf {
    let name = match kind {
        Kind::Postgres => "postgres",
        Kind::Nats => "nats",
        Kind::Redis => "redis",
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "OVATION_WATCHDOG_HELPER",
            format!("{name}:{}", data_dir.display()),
        )
        .env("OVATION_IDLE_STOP_SECS", IDLE.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "set-up failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("server-dir=").map(|(_, dir)| dir.trim()))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no server folder in:\n{stdout}"))
}

/// A fresh data folder under the target folder.
fn data_dir(test: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let dir = target.join(format!("ovation-watchdog-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The server's pid, from its pid file.
fn server_pid(kind: Kind, dir: &Path) -> u32 {
    let file = match kind {
        Kind::Postgres => dir.join("data/postmaster.pid"),
        Kind::Nats => dir.join("nats.pid"),
        Kind::Redis => dir.join("redis.pid"),
    };
    read_pid(&file).unwrap_or_else(|| panic!("no pid in {}", file.display()))
}

fn read_pid(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The processes whose command line names `dir`: the server and its watchdog.
fn processes_of(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}

fn kill(signal: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// A user of the server in `dir` for `secs` seconds.
fn user_for(dir: &Path, secs: u64) -> Child {
    Command::new("flock")
        .arg("-s")
        .arg(dir.join("clients.lock"))
        .args(["sleep", &secs.to_string()])
        .spawn()
        .unwrap()
}

/// Whether `pid` runs (a zombie, exited but not reaped, does not).
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Waits until nothing of the server in `dir` runs, at most `within`: no process naming `dir`,
/// and not `server` (Redis rewrites its command line to its address).
fn nothing_left_within(dir: &Path, server: u32, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut left = processes_of(dir);
        if alive(server) {
            left.push((server, "the server".into()));
        }
        if left.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "still running {within:?} after the last user left: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn died_on_its_own(kind: Kind) {
    let data = data_dir(&format!("died-{kind:?}"));
    let dir = ensure(kind, &data);
    assert!(
        read_pid(&dir.join("watchdog.pid")).is_some(),
        "a watchdog runs"
    );
    assert!(!processes_of(&dir).is_empty());
    // The server dies with nobody using it: the watchdog finds nothing to stop, and goes.
    let server = server_pid(kind, &dir);
    kill("-KILL", server);
    let took = nothing_left_within(&dir, server, Duration::from_secs(IDLE + 8));
    eprintln!("{kind:?}: nothing left {took:?} after the server died");
    let _ = std::fs::remove_dir_all(&data);
}

fn outage(kind: Kind) {
    let data = data_dir(&format!("outage-{kind:?}"));
    let dir = ensure(kind, &data);
    let watchdog = read_pid(&dir.join("watchdog.pid")).expect("a watchdog runs");
    let mut user = user_for(&dir, 6);
    // A 2 s outage while a process uses the server, then the server is back (started again
    // as an app's keeper would).
    let (signal, what) = match kind {
        Kind::Postgres => ("-QUIT", "crash"),
        Kind::Nats | Kind::Redis => ("-KILL", "kill"),
    };
    kill(signal, server_pid(kind, &dir));
    eprintln!("{kind:?}: {what}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ensure(kind, &data), dir);
    assert_eq!(
        read_pid(&dir.join("watchdog.pid")),
        Some(watchdog),
        "the watchdog did not live through the outage"
    );
    let server = server_pid(kind, &dir);
    user.wait().unwrap();
    // Stopped within the idle time (and a second per look) of the last user leaving.
    let took = nothing_left_within(&dir, server, Duration::from_secs(IDLE + 8));
    eprintln!("{kind:?}: stopped {took:?} after the last user left");
    assert!(!dir.join("watchdog.pid").exists());
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn the_postgres_watchdog_goes_when_its_server_died() {
    died_on_its_own(Kind::Postgres);
}

#[test]
fn the_nats_watchdog_goes_when_its_server_died() {
    died_on_its_own(Kind::Nats);
}

#[test]
fn the_postgres_watchdog_lives_through_an_outage_and_stops_the_server_on_time() {
    outage(Kind::Postgres);
}

#[test]
fn the_nats_watchdog_lives_through_an_outage_and_stops_the_server_on_time() {
    outage(Kind::Nats);
}

#[test]
fn the_redis_watchdog_goes_when_its_server_died() {
    died_on_its_own(Kind::Redis);
}

#[test]
fn the_redis_watchdog_lives_through_an_outage_and_stops_the_server_on_time() {
    outage(Kind::Redis);
}
