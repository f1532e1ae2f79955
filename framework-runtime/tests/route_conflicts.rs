//! Two endpoints on one route, or paths that differ only in a parameter's name, fail every
//! `#[ovation::test]` and the app's own check, naming both endpoints in the app's `:param`
//! syntax — not only at start-up, and not only one of them.

use std::process::Command;

mod status {
    use ovation::prelude::*;

    #[api(public, method = "GET", path = "/status")]
    pub async fn status() -> Result<(), Error> {
        Ok(())
    }

    #[api(public, method = "GET", path = "/site/:site_id")]
    pub async fn site(site_id: u32) -> Result<u32, Error> {
        Ok(site_id)
    }
}

mod health {
    use ovation::prelude::*;

    #[api(public, method = "GET", path = "/status")]
    pub async fn health() -> Result<(), Error> {
        Ok(())
    }

    // axum's syntax reads as `:id`.
    #[api(public, method = "DELETE", path = "/site/{id}")]
    pub async fn forget(id: u32) -> Result<(), Error> {
        let _ = id;
        Ok(())
    }
}

/// Cannot set up, the routes conflicting: run by the test below, in a child process.
#[ovation::test]
#[ignore = "run by conflicting_routes_fail_every_test_naming_both_endpoints"]
async fn any_test_of_the_app() {}

/// The app's binary under `OVATION_DESCRIBE=check` (what `ovation check` runs): run by the
/// test below, in a child process.
#[test]
#[ignore = "run by the_app_check_reports_every_conflict"]
fn describe_check() {
    assert_eq!(ovation::run(), std::process::ExitCode::SUCCESS);
}

fn child(test: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--ignored", "--nocapture"])
        .env("OVATION_DESCRIBE", "check")
        .output()
        .unwrap()
}

const DUPLICATE: &str =
    "two endpoints serve GET /status: health.health (framework-runtime/tests/route_conflicts.rs:";
const RENAMED: &str =
    "the paths /site/:id of health.forget (framework-runtime/tests/route_conflicts.rs:";

#[test]
fn conflicting_routes_fail_every_test_naming_both_endpoints() {
    let out = child("any_test_of_the_app");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "ovation test set-up failed",
        "the app is not valid",
        DUPLICATE,
        "and status.status (framework-runtime/tests/route_conflicts.rs:",
        RENAMED,
        "and /site/:site_id of status.site (framework-runtime/tests/route_conflicts.rs:",
        "differ only in their parameters' names",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("{id}"), "axum's syntax in:\n{stderr}");
}

#[test]
fn the_app_check_reports_every_conflict() {
    let out = child("describe_check");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    assert_eq!(report["services"], serde_json::json!(["health", "status"]));
    assert_eq!(report["endpoints"], 4);
    let problems: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with(RENAMED), "{problems:?}");
    assert!(problems[1].starts_with(DUPLICATE), "{problems:?}");
}
