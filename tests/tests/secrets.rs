//! Secrets with the real CLI: `ovation secret`, and a local deployment refused without them.
//! Apart from `deploy.rs`, so that these CLI runs do not compete with its traced deployment.

mod util;

use std::path::Path;
use std::process::{Command, Output};

use util::{ovation, target_dir, workspace};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `ovation ARGS` as `deploy.rs` does, with `env` on top.
fn cli_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(ovation())
        .args(args)
        .env("OVATION_DATA_DIR", data_dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("DATABASE_URL")
        .env_remove("OVATION_PUBSUB")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("OVATION_SECRETS_FILE", data_dir.join("no-secrets.json"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn a_local_deployment_without_its_secrets_is_refused_naming_them() {
    let out = cli_with(
        &target_dir().join("ovation-secrets-test"),
        &[
            "deploy",
            "--target",
            "local",
            "--app",
            &workspace().join("examples/shop-app").display().to_string(),
            "--port",
            &free_port().to_string(),
        ],
        &[("OVATION_SECRET_SESSION_KEY", "")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "`SessionKey` (OVATION_SECRET_SESSION_KEY or `ovation secret set SessionKey`)"
        ),
        "{stderr}"
    );
}

#[test]
fn ovation_secret_sets_lists_and_unsets_without_printing_values() {
    let file = target_dir().join(format!("ovation-secrets-{}.json", std::process::id()));
    let app = workspace().join("examples/shop-app").display().to_string();
    let secret = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(ovation())
            .arg("secret")
            .args(args)
            .args(["--app", &app])
            .env("OVATION_SECRETS_FILE", &file)
            .env_remove("OVATION_SECRET_SESSION_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A command that refuses its arguments exits without reading its input: the pipe may
        // be closed by then, and its exit status is what the test looks at.
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("{e}"),
            _ => {}
        }
        child.wait_with_output().unwrap()
    };
    let set = secret(&["set", "SessionKey"], "s3cret value\n");
    assert!(set.status.success(), "{}", text(&set.stderr));
    let stored = ovation::secrets::read_file(&file).unwrap();
    assert_eq!(stored["SessionKey"], "s3cret value");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let list = secret(&["list"], "");
    let listed = text(&list.stdout);
    assert!(
        listed.contains("SessionKey") && !listed.contains("s3cret"),
        "{listed}"
    );
    let bad = secret(&["set", "not-a-name"], "x");
    assert_eq!(bad.status.code(), Some(2));
    let empty = secret(&["set", "Other"], "");
    assert_eq!(empty.status.code(), Some(2), "{}", text(&empty.stderr));
    let unset = secret(&["unset", "SessionKey"], "");
    assert!(unset.status.success());
    assert!(ovation::secrets::read_file(&file).unwrap().is_empty());
    let again = secret(&["unset", "SessionKey"], "");
    assert_eq!(again.status.code(), Some(2));
    let _ = std::fs::remove_file(&file);
}
