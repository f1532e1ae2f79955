//! Compile-time checked SQL: `ovation db prepare` writes the data sqlx's `query!` macros check
//! an app's SQL against, from every database's migrations, so the app builds offline; `--check`
//! fails when that data is out of date, and a query that does not fit the schema fails the
//! prepare with the compiler's message.

mod util;

use std::path::Path;
use std::process::{Command, Output};

use util::{ovation, target_dir, workspace};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn prepare(app: &Path, check: bool) -> Output {
    let mut cmd = Command::new(ovation());
    cmd.args(["db", "prepare", "--app"]).arg(app);
    if check {
        cmd.arg("--check");
    }
    cmd.env("CARGO_TARGET_DIR", target_dir())
        .env("OVATION_DATA_DIR", target_dir().join("ovation-deploy-test"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

#[test]
fn the_shops_query_data_is_current() {
    let out = prepare(&workspace().join("examples/shop-app"), true);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("queries is current"), "{}", text(&out));
}

/// A one-service app with one checked query, in a folder of its own.
fn notes_app(query: &str) -> std::path::PathBuf {
    let dir = target_dir().join(format!("ovation-checked-sql-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src/notes/migrations")).unwrap();
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let sqlx = manifest
        .lines()
        .find(|l| l.starts_with("sqlx = "))
        .unwrap()
        .replace("\"derive\"]", "\"derive\", \"macros\"]");
    let profiles = &manifest[manifest.find("[profile.").unwrap()..];
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"notes-app\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\novation = {{ path = {:?} }}\n{sqlx}\n\n[workspace]\n\n{profiles}",
            workspace().join("framework-runtime"),
        ),
    )
    .unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    std::fs::write(dir.join("src/main.rs"), "mod notes;\n\novation::main!();\n").unwrap();
    std::fs::write(
        dir.join("src/notes/migrations/1_create_notes.up.sql"),
        "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/notes/mod.rs"),
        format!(
            "use ovation::prelude::*;\n\n\
             static DB: Database = ovation::database!(\"notes\", migrations = \"./migrations\");\n\n\
             #[api(public, method = \"GET\", path = \"/notes/count\")]\n\
             pub async fn count() -> Result<i64, Error> {{\n    \
                 Ok(sqlx::query_scalar!({query:?}).fetch_one(DB.pool()).await?)\n\
             }}\n"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn prepare_writes_checks_and_refuses_what_does_not_fit() {
    let app = notes_app(r#"SELECT count(*) AS "n!" FROM notes"#);
    let _ = std::fs::remove_dir_all(app.join(".sqlx"));
    let build = || {
        Command::new(env!("CARGO"))
            .args(["build", "--quiet"])
            .current_dir(&app)
            .env("CARGO_TARGET_DIR", target_dir())
            .env("SQLX_OFFLINE", "true")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    // No data yet: the offline build says what is missing.
    let offline = build();
    assert!(!offline.status.success());
    assert!(
        text(&offline).contains("no cached data for this query"),
        "{}",
        text(&offline)
    );

    let written = prepare(&app, false);
    assert!(written.status.success(), "{}", text(&written));
    assert!(
        text(&written).contains("wrote the data of 1 queries"),
        "{}",
        text(&written)
    );
    assert!(
        build().status.success(),
        "the app builds offline once prepared"
    );
    let check = prepare(&app, true);
    assert!(check.status.success(), "{}", text(&check));

    // Another query: the data is out of date, and says how.
    let app = notes_app("SELECT count(*) AS \"n!\" FROM notes WHERE body <> ''");
    let stale = prepare(&app, true);
    assert_eq!(stale.status.code(), Some(1), "{}", text(&stale));
    assert!(
        text(&stale).contains("out of date (1 queries new, 0 changed, 1 no longer in the app)"),
        "{}",
        text(&stale)
    );

    // A query that does not fit the schema: the compiler's message, and the build's exit code.
    let app = notes_app(r#"SELECT count(title) AS "n!" FROM notes"#);
    let wrong = prepare(&app, false);
    assert_eq!(wrong.status.code(), Some(3), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("column \"title\" does not exist"),
        "{}",
        text(&wrong)
    );
    let _ = std::fs::remove_dir_all(&app);
}
