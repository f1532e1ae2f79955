//! The shop's own test suite, run split: every `#[ovation::test]` with each service in a
//! runtime of its own, calling the others over loopback HTTP (`OVATION_TEST_SPLIT=1`). The
//! suite passes in one process (`cargo test`) and split alike, so moving a service to a
//! process of its own changes nothing it checks.

mod util;

use std::process::Command;

use util::{target_dir, workspace};

/// The shop's unit-test binary, built (or found up to date) with the workspace's features.
fn shop_test_binary() -> std::path::PathBuf {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--workspace",
            "--lib",
            "--no-run",
            "--message-format=json",
        ])
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the shop's tests failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "shop_app"
                && m["profile"]["test"] == true
        })
        .and_then(|m| m["executable"].as_str().map(Into::into))
        .expect("cargo names the shop's unit-test binary")
}

#[test]
fn the_shops_own_tests_pass_with_every_service_in_a_process_of_its_own_whatever_the_http_proxy() {
    // A proxy in the developer's environment (here one that refuses every connection) is not
    // for calls between the app's own services: they go straight to each other.
    let dead_proxy = format!("http://127.0.0.1:{}", util::free_port());
    let out = Command::new(shop_test_binary())
        .env("OVATION_TEST_SPLIT", "1")
        .env("http_proxy", &dead_proxy)
        .env("HTTP_PROXY", &dead_proxy)
        .env("all_proxy", &dead_proxy)
        .env("ALL_PROXY", &dead_proxy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = stdout.lines().filter(|l| l.ends_with("... ok")).count();
    assert!(passed >= 30, "only {passed} tests ran:\n{stdout}");
    assert!(stdout.contains("test result: ok."), "{stdout}");
}
