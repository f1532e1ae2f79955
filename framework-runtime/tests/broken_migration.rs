//! A migration that fails says where, in a test's panic: the file, Postgres's message and the
//! line and column it points at (without them, every test of the app panicked with a bare
//! "database set-up failed").

use std::process::Command;

mod broken {
    use ovation::prelude::*;

    pub static DB: Database = ovation::database!("broken", migrations = "./broken_migrations");
}

/// Needs the broken database, so it cannot set up: run by the test below, in a child process.
#[ovation::test]
#[ignore = "run by a_failing_migration_says_which_file_line_and_why, which checks its panic"]
async fn needs_the_broken_database() {
    let _ = broken::DB.pool();
}

#[test]
fn a_failing_migration_says_which_file_line_and_why() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "needs_the_broken_database",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "ovation test set-up failed",
        "migration 1_create.up.sql of database `broken` failed",
        "syntax error at or near \"NUL\"",
        "(line 4, column 17)",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
}
