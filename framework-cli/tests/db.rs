//! `ovation db` against a real managed Postgres in a temporary folder.

use std::process::Command;

fn ovation(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ovation"))
        .args(args)
        .env("OVATION_DATA_DIR", data_dir)
        .output()
        .unwrap()
}

#[test]
fn db_start_url_and_stop() {
    // Under the target folder, which the `postgres` account can traverse when we are root.
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_ovation"));
    let dir = exe
        .parent()
        .unwrap()
        .join(format!("ovation-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let out = ovation(&["db", "start"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    assert!(
        url.starts_with("postgres://ovation:") && url.trim_end().ends_with("/postgres"),
        "{url}"
    );

    let out = ovation(&["db", "url", "users"], &dir);
    assert!(out.status.success());
    let users = String::from_utf8(out.stdout).unwrap();
    assert!(users.trim_end().ends_with("/users"), "{users}");

    // Reset drops what is there, and says so when nothing is.
    let out = ovation(&["db", "reset", "users"], &dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no database `users`"));
    let out = ovation(&["db", "reset"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "no database to drop"
    );
    let server = ovation::tooling::PgServer::from_url(url.trim()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(server.create_database("users")).unwrap();
    let out = ovation(&["db", "reset", "users"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "dropped users");
    assert!(rt.block_on(server.databases()).unwrap().is_empty());

    let out = ovation(&["db", "stop"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "stopped");
    let out = ovation(&["db", "stop"], &dir);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "not running");
    let _ = std::fs::remove_dir_all(&dir);
}
