//! What the tests of the shop's binary share: starting it on a port with settings, and a JSON
//! client with deadlines.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The cluster the tests use: `<target>/ovation`, beside `<target>/debug/shop-app`.
pub fn data_dir() -> std::path::PathBuf {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_shop-app"));
    exe.parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("ovation")
}

/// Every request of these tests has a deadline: a stuck app fails the test instead of hanging it.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct App {
    pub child: Child,
    pub base: String,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with the tests' settings and `envs`; stdout discarded, stderr piped.
pub fn command(envs: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shop-app"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("OVATION_PUBSUB")
        .env("OVATION_DATA_DIR", data_dir())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Spawns the binary with stderr piped: for tests that read it to the end.
pub fn spawn(envs: &[(&str, String)]) -> Child {
    command(envs).spawn().expect("the shop-app binary starts")
}

pub async fn start() -> App {
    start_on(free_port(), &[]).await
}

pub async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

pub async fn get_json(base: &str, path: &str) -> (u16, Value) {
    let r = http().get(format!("{base}{path}")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

pub fn sigkill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
}

/// Starts the binary on `port` (reusing the same port after a restart), with `extra` settings,
/// and waits until it is healthy.
///
/// Its log goes to a file: a pipe nobody reads fills up (64 KiB) and then blocks the app's
/// every write to stderr, freezing it. That froze the NATS crash test, whose app logs more.
pub async fn start_on(port: u16, extra: &[(&str, String)]) -> App {
    let mut envs = vec![("OVATION_LISTEN", format!("127.0.0.1:{port}"))];
    envs.extend(extra.iter().cloned());
    let logs = data_dir().with_file_name("shop-app-test-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join(format!("{port}-{}.log", uuid_like()));
    let mut cmd = command(&envs);
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let child = cmd.spawn().expect("the shop-app binary starts");
    let mut app = App {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = app.child.try_wait().unwrap() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("shop-app exited during start-up ({status}):\n{text}");
        }
        if let Ok(r) = http()
            .get(format!("{}/__ovation/health", app.base))
            .send()
            .await
            && r.status() == 200
        {
            return app;
        }
        assert!(
            Instant::now() < deadline,
            "shop-app not healthy within 60 s; log: {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique-enough suffix for emails in the shared binary-test databases.
pub fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// The confirmations sent to `user_id` so far: the ids of the orders they confirm, and all of
/// them (a duplicate shows as more entries than ids).
pub async fn confirmations(
    base: &str,
    user_id: &str,
) -> (std::collections::BTreeSet<String>, Vec<Value>) {
    let (_, sent) = get_json(base, &format!("/notifications/{user_id}")).await;
    let sent = sent["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let orders = sent
        .iter()
        .map(|n| n["orderId"].as_str().unwrap().to_owned())
        .collect();
    (orders, sent)
}
