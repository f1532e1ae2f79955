//! `ovation new`: an app made in a clean folder builds, passes its test with `cargo test`, and
//! serves with `cargo run`; the framework's crates carry what crates.io needs to publish them.

mod util;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{free_port, ovation, target_dir, workspace};

#[tokio::test]
async fn ovation_new_makes_an_app_that_passes_its_test_and_serves() {
    let parent = target_dir().join(format!("ovation-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let new = |name: &str| {
        Command::new(ovation())
            .args(["new", name, "--path"])
            .arg(&parent)
            .arg("--ovation-path")
            .arg(workspace().join("framework-runtime"))
            .output()
            .unwrap()
    };
    let made = new("hello-app");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(String::from_utf8_lossy(&made.stdout).contains("cargo test"));
    let app = parent.join("hello-app");
    for file in [
        "Cargo.toml",
        "README.md",
        ".gitignore",
        "build.rs",
        "src/main.rs",
        "src/lib.rs",
        "src/greetings/mod.rs",
        "src/greetings/migrations/1_create_greetings.up.sql",
    ] {
        assert!(app.join(file).is_file(), "no {file}");
    }
    let manifest = std::fs::read_to_string(app.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("ovation = { version = \"0.1.0\", path = "),
        "{manifest}"
    );
    assert!(!manifest.contains("serde") && !manifest.contains("schemars"));
    assert!(
        manifest.contains("ovation-dylib = { version = \"0.1.0\", path = ")
            && manifest.contains("optional = true"),
        "{manifest}"
    );

    // Again, or a name that is none: a usage error saying why, nothing overwritten.
    let again = new("hello-app");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let bad = new("9 lives");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a name for an app"));

    // Built with the workspace's lock file and target folder, so nothing is fetched anew.
    std::fs::copy(workspace().join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    let data_dir = target_dir().join("ovation-deploy-test");
    let tested = Command::new(env!("CARGO"))
        .arg("test")
        .current_dir(&app)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("OVATION_DATA_DIR", &data_dir)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(text.contains("greets_and_counts ... ok"), "{text}");

    // Served as `ovation run` builds it: linked against the framework's shared library.
    let port = free_port();
    let mut served = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--features", "ovation-dylib"])
        .current_dir(&app)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("OVATION_DATA_DIR", &data_dir)
        .env("OVATION_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("DATABASE_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !http
        .get(format!("{base}/__ovation/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            served.try_wait().unwrap().is_none(),
            "cargo run exited early"
        );
        assert!(Instant::now() < deadline, "the new app never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let name = format!("Ada{}", std::process::id());
    let greeted: serde_json::Value = http
        .post(format!("{base}/greetings"))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(greeted["message"], format!("Hello, {name}!"));
    let exe = std::fs::read(target_dir().join("debug/hello-app")).unwrap();
    assert!(
        exe.windows(16).any(|w| w == b"libovation_dylib"),
        "the binary does not link the shared library"
    );
    // Its build script links it with packed relative relocations where glibc loads them.
    match glibc_version() {
        Some(version) if version >= (2, 36) => {
            let dynamic = Command::new("readelf")
                .arg("--dynamic")
                .arg(target_dir().join("debug/hello-app"))
                .output()
                .expect("readelf (binutils) runs");
            let dynamic = String::from_utf8_lossy(&dynamic.stdout);
            assert!(
                dynamic.contains("(RELR)"),
                "no DT_RELR in the new app's binary, on glibc {version:?}:\n{dynamic}"
            );
        }
        version => eprintln!("glibc {version:?}: the new app is linked without DT_RELR"),
    }
    let read: serde_json::Value = http
        .get(format!("{base}/greetings/{name}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["times"], 1);
    let _ = Command::new("kill").arg(served.id().to_string()).status();
    let _ = served.wait();
    let _ = std::fs::remove_dir_all(&parent);
}

/// What crates.io needs of each publishable crate's manifest — description, license,
/// repository, readme, keywords and categories — and `cargo package` of the four.
#[test]
fn the_framework_crates_carry_what_crates_io_needs() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace())
        .output()
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["ovation", "ovation-macros", "ovation-cli", "ovation-dylib"] {
        let package = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no package {name}"));
        for field in ["description", "license", "repository", "readme"] {
            assert!(
                package[field].as_str().is_some_and(|v| !v.is_empty()),
                "{name} has no {field}"
            );
        }
        for field in ["keywords", "categories"] {
            let list = package[field].as_array().unwrap();
            assert!(
                !list.is_empty() && list.len() <= 5,
                "{name}: {field} {list:?}"
            );
        }
        let readme = std::path::Path::new(package["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap()
            .join(package["readme"].as_str().unwrap());
        assert!(readme.is_file(), "{name}: {}", readme.display());
    }
    // And cargo packages them together, warning of nothing.
    let packaged = Command::new(env!("CARGO"))
        .args([
            "package",
            "--no-verify",
            "--allow-dirty",
            "-p",
            "ovation-macros",
            "-p",
            "ovation",
            "-p",
            "ovation-cli",
            "-p",
            "ovation-dylib",
            "--target-dir",
        ])
        .arg(target_dir().join("ovation-package-check"))
        .current_dir(workspace())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&packaged.stderr);
    assert!(packaged.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// This host's glibc version, from `getconf GNU_LIBC_VERSION` (`glibc 2.36`).
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
