//! `ovation new NAME`: a new app — one service with its database, a migration, two endpoints
//! and a test — that builds, runs with `cargo run` and passes `cargo test`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct NewArgs {
    /// The app's name: its folder and its crate (letters, digits, `-` and `_`, starting with a
    /// letter).
    name: String,
    /// The folder to create the app in.
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// Where the `ovation` crate's source is, for an app built against a checkout rather than
    /// crates.io (default: the checkout this CLI was built from, while it exists).
    #[arg(long)]
    ovation_path: Option<PathBuf>,
}

pub(super) fn run(args: NewArgs) -> Result<ExitCode, CliError> {
    check_name(&args.name)?;
    let dir = args.path.join(&args.name);
    if dir.exists() {
        return Err(CliError::Usage(format!(
            "{} exists already: choose another name, or another --path",
            dir.display()
        )));
    }
    let ovation = match args.ovation_path.or_else(built_from) {
        Some(path) => {
            let path = std::fs::canonicalize(&path)
                .map_err(|e| CliError::Usage(format!("--ovation-path {}: {e}", path.display())))?;
            if !path.join("Cargo.toml").is_file() {
                return Err(CliError::Usage(format!(
                    "--ovation-path {} holds no Cargo.toml: point it at the `framework-runtime` \
                     folder of an Ovation checkout",
                    path.display()
                )));
            }
            // Crates.io dependencies with a local override: `cargo publish` keeps the version.
            let version = env!("CARGO_PKG_VERSION");
            let dylib = path.join("dylib");
            format!(
                "ovation = {{ version = \"{version}\", path = {:?} }}\n{DYLIB_COMMENT}\
                 ovation-dylib = {{ version = \"{version}\", path = {:?}, optional = true }}",
                path.display().to_string(),
                dylib.display().to_string()
            )
        }
        None => format!(
            "ovation = \"{version}\"\n{DYLIB_COMMENT}\
             ovation-dylib = {{ version = \"{version}\", optional = true }}",
            version = env!("CARGO_PKG_VERSION")
        ),
    };
    let crate_name = args.name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(&args.name, &ovation)),
        ("README.md", readme(&args.name)),
        (".gitignore", "/target\n/.ovation\n".to_owned()),
        (
            "build.rs",
            include_str!("../../templates/build.rs").to_owned(),
        ),
        (
            "src/lib.rs",
            format!(
                "//! {}: an Ovation app. Each top-level module is a service.\n\npub mod greetings;\n",
                args.name
            ),
        ),
        (
            "src/main.rs",
            "// Runs the app, with every service of the library linked in.\novation::main!();\n"
                .to_owned(),
        ),
        ("src/greetings/mod.rs", SERVICE.to_owned()),
        (
            "src/greetings/migrations/1_create_greetings.up.sql",
            MIGRATION.to_owned(),
        ),
    ];
    for (path, text) in &files {
        write(&dir.join(path), text)?;
    }
    println!(
        "created {} (crate `{crate_name}`): the `greetings` service with its database, two \
         endpoints and a test.\n\n  cd {}\n  cargo test          # the service's test, against a fresh copy of its database\n  \
         cargo run           # serves on http://127.0.0.1:4000\n  ovation run         # the same, with the dashboard on http://127.0.0.1:9400",
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The `framework-runtime` folder of the checkout this CLI was built from, if it still exists.
fn built_from() -> Option<PathBuf> {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("../framework-runtime");
    runtime.join("Cargo.toml").is_file().then_some(runtime)
}

/// A name cargo takes as a package's, and that is no Rust keyword once `-` is `_`.
fn check_name(name: &str) -> Result<(), CliError> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64
        && keyword(&name.replace('-', "_")).is_none();
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{name:?} is not a name for an app: use letters, digits, `-` and `_`, start with a \
             letter, and pick no Rust keyword (e.g. `my-shop`)"
        )))
    }
}

/// `Some` for a Rust keyword.
fn keyword(name: &str) -> Option<&'static str> {
    const KEYWORDS: &[&str] = &[
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "gen",
        "macro",
        "override",
        "priv",
        "try",
        "typeof",
        "unsized",
        "virtual",
        "yield",
        "test",
        "core",
        "std",
        "alloc",
        "proc_macro",
        "ovation",
    ];
    KEYWORDS.iter().copied().find(|k| *k == name)
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

/// Above the optional `ovation-dylib` dependency of a new app's manifest.
const DYLIB_COMMENT: &str = "# `ovation run` turns this on: the framework linked as one shared library, so a\n\
                             # rebuild links only your code. `cargo build` and releases leave it off.\n";

fn cargo_toml(name: &str, ovation: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\n{ovation}\n\n\
         # An app of its own, not a member of a workspace around it.\n[workspace]\n\n\
         # A quicker edit-compile loop: line numbers in backtraces of your own code, no debug\n\
         # info for dependencies (most of what a debug build links).\n\
         [profile.dev]\ndebug = \"line-tables-only\"\n\n\
         [profile.dev.package.\"*\"]\ndebug = false\n"
    )
}

fn readme(name: &str) -> String {
    format!(
        "# {name}\n\nAn [Ovation](https://github.com/ovation-rs/ovation) app.\n\n\
         ```sh\n\
         cargo test     # each #[ovation::test] against fresh copies of the databases\n\
         cargo run      # serves on http://127.0.0.1:4000 (OVATION_LISTEN to change it)\n\
         ovation run    # the same, with the dashboard on http://127.0.0.1:9400\n\
         ```\n\n\
         Without `DATABASE_URL`, Ovation starts its own Postgres in `.ovation/`.\n\n\
         ```sh\n\
         curl -X POST localhost:4000/greetings -H 'content-type: application/json' -d '{{\"name\": \"Ada\"}}'\n\
         curl localhost:4000/greetings/Ada\n\
         ```\n\n\
         Each top-level module of `src/` is a service: `src/greetings/` has its endpoints, its\n\
         database (`database!`) with its migrations, and its test. Add a service as a module of\n\
         its own; call another service's endpoint as a function (`greetings::get(name).await`).\n"
    )
}

const SERVICE: &str = r#"//! The `greetings` service: greetings by name, kept in its own database.

use ovation::prelude::*;

static DB: Database = ovation::database!("greetings", migrations = "./migrations");

/// A greeting, and how often it was asked for.
#[ovation::model(row)]
pub struct Greeting {
    pub name: String,
    pub message: String,
    pub times: i32,
}

#[ovation::model]
pub struct GreetParams {
    pub name: String,
}

/// Greets `name`, counting how often.
#[api(public, method = "POST", path = "/greetings")]
pub async fn greet(p: GreetParams) -> Result<Greeting, Error> {
    let name = p.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid_argument("`name` must be 1 to 100 characters"));
    }
    let greeting = ovation::sqlx::query_as::<_, Greeting>(
        "INSERT INTO greetings (name, message, times) VALUES ($1, $2, 1)
         ON CONFLICT (name) DO UPDATE SET times = greetings.times + 1
         RETURNING name, message, times",
    )
    .bind(name)
    .bind(format!("Hello, {name}!"))
    .fetch_one(DB.pool())
    .await?;
    Ok(greeting)
}

/// The greeting of `name`.
#[api(public, method = "GET", path = "/greetings/:name")]
pub async fn get(name: String) -> Result<Greeting, Error> {
    ovation::sqlx::query_as::<_, Greeting>(
        "SELECT name, message, times FROM greetings WHERE name = $1",
    )
    .bind(&name)
    .fetch_optional(DB.pool())
    .await?
    .ok_or_else(|| Error::not_found(format!("no greeting for {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[ovation::test]
    async fn greets_and_counts() {
        let first = greet(GreetParams { name: "Ada".into() }).await.unwrap();
        assert_eq!((first.message.as_str(), first.times), ("Hello, Ada!", 1));
        greet(GreetParams { name: " Ada ".into() }).await.unwrap();
        assert_eq!(get("Ada".into()).await.unwrap().times, 2);
        let missing = get("Grace".into()).await.unwrap_err();
        assert_eq!(missing.code(), ErrCode::NotFound);
        let empty = greet(GreetParams { name: " ".into() }).await.unwrap_err();
        assert_eq!(empty.code(), ErrCode::InvalidArgument);
    }
}
"#;

const MIGRATION: &str = "CREATE TABLE greetings (
    name TEXT PRIMARY KEY,
    message TEXT NOT NULL,
    times INT NOT NULL
);
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["shop", "my-shop", "uptime_monitor2"] {
            check_name(good).unwrap();
        }
        for bad in ["", "9lives", "my shop", "../x", "fn", "test", "ovation"] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }
}
