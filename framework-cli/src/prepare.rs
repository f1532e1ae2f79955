//! `ovation db prepare`: the data sqlx's `query!` macros check an app's SQL against, written
//! to `<app>/.sqlx` so the app builds without a database (CI, a fresh checkout).
//!
//! sqlx checks each query against one `DATABASE_URL`, while an Ovation app has a database per
//! service. So the prepare database holds every service's tables side by side: each database's
//! migrations — found in the source, since the app cannot build before its query data
//! exists: each `database!("name", migrations = "folder")`, the folder relative to the file —
//! run in one scratch database on the managed
//! Postgres (or `DATABASE_URL`'s server). A query naming another service's table would pass
//! there; that is what services calling each other instead of sharing tables avoids by design,
//! and two databases with a table of one name are refused with both named. Then `cargo check`
//! runs against it with `SQLX_OFFLINE_DIR` set, which makes sqlx write each query's data, and
//! the result replaces `.sqlx` (or, with `--check`, is compared with it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use ovation::tooling::{ManagedPostgres, PgServer};

use crate::error::CliError;

/// The scratch database's name: this process's own, so two prepares never share one.
fn scratch_name() -> String {
    format!("ovation_sqlx_prepare_{}", std::process::id())
}

pub(crate) fn run(app: &Path, data_dir: &Path, check: bool) -> Result<ExitCode, CliError> {
    let manifest = crate::manifest(app)?;
    let databases = declared_databases(&app.join("src"))?;
    if databases.is_empty() {
        return Err(CliError::Usage(format!(
            "{} declares no database with migrations (`ovation::database!(\"name\", migrations = \"./migrations\")`): there is nothing to check queries against",
            app.display()
        )));
    }
    let server_url = match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => url,
        None => ManagedPostgres::ensure(data_dir)?.url("postgres"),
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let server = PgServer::from_url(&server_url).map_err(|e| e.to_string())?;
    let scratch_db = scratch_name();
    tokio.block_on(scratch(&server, &scratch_db, &databases))?;
    let mut scratch_url = reqwest::Url::parse(&server_url)
        .map_err(|e| format!("the server's URL {server_url:?} is not valid: {e}"))?;
    scratch_url.set_path(&format!("/{scratch_db}"));

    let out = data_dir.join(format!("sqlx-prepare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    // sqlx writes a query's data only when its macro runs: touch the crate roots so cargo
    // compiles the app's own crate again (its dependencies stay built).
    for root in ["src/lib.rs", "src/main.rs"] {
        let file = app.join(root);
        if file.is_file() {
            let _ = std::fs::File::options()
                .append(true)
                .open(&file)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
    }
    eprintln!("checking the app's queries against {scratch_db}");
    let status = Command::new(crate::cargo())
        .args(["check", "--all-targets", "--manifest-path"])
        .arg(&manifest)
        .env("DATABASE_URL", scratch_url.as_str())
        .env("SQLX_OFFLINE", "false")
        .env("SQLX_OFFLINE_DIR", &out)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| CliError::MissingTool(format!("cannot run cargo: {e}")))?;
    let _ = tokio.block_on(server.drop_database(&scratch_db));
    if !status.success() {
        let _ = std::fs::remove_dir_all(&out);
        return Err(CliError::Build(
            "the app's queries do not check against its migrated databases (the compiler's \
             messages are above)"
                .into(),
        ));
    }
    let fresh = query_files(&out)?;
    let target = app.join(".sqlx");
    let committed = if target.is_dir() {
        query_files(&target)?
    } else {
        BTreeMap::new()
    };
    let result = if check {
        let added = fresh.keys().filter(|k| !committed.contains_key(*k)).count();
        let changed = fresh
            .iter()
            .filter(|(k, v)| committed.get(*k).is_some_and(|c| c != *v))
            .count();
        let unused = committed.keys().filter(|k| !fresh.contains_key(*k)).count();
        if added + changed + unused == 0 {
            println!(
                "{}: the data of {} queries is current",
                target.display(),
                fresh.len()
            );
            Ok(ExitCode::SUCCESS)
        } else {
            Err(CliError::Failed(format!(
                "{} is out of date ({added} queries new, {changed} changed, {unused} no longer \
                 in the app): run `ovation db prepare` and commit the folder",
                target.display()
            )))
        }
    } else {
        std::fs::create_dir_all(&target)
            .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        for name in committed.keys().filter(|k| !fresh.contains_key(*k)) {
            let _ = std::fs::remove_file(target.join(name));
        }
        for (name, text) in &fresh {
            std::fs::write(target.join(name), text)
                .map_err(|e| format!("cannot write {}: {e}", target.join(name).display()))?;
        }
        println!(
            "wrote the data of {} queries to {}: commit it, and the app builds without a \
             database",
            fresh.len(),
            target.display()
        );
        Ok(ExitCode::SUCCESS)
    };
    let _ = std::fs::remove_dir_all(&out);
    result
}

/// A fresh scratch database with every database's migrations applied, side by side.
async fn scratch(server: &PgServer, name: &str, databases: &[Declared]) -> Result<(), CliError> {
    server
        .drop_database(name)
        .await
        .map_err(|e| format!("cannot drop {name}: {e}"))?;
    server
        .create_database(name)
        .await
        .map_err(|e| format!("cannot create {name}: {e}"))?;
    let mut conn = {
        use ovation::sqlx::ConnectOptions;
        server
            .options(name)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {name}: {e}"))?
    };
    // Which database made each table, to name both of a clash.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for db in databases {
        let name = db.name.as_str();
        for (_, file, sql) in &db.migrations {
            if let Err(e) = ovation::sqlx::raw_sql(sql).execute(&mut conn).await {
                let clash = match &e {
                    ovation::sqlx::Error::Database(d) if d.code().as_deref() == Some("42P07") => {
                        let table = d.message().split('"').nth(1).unwrap_or_default();
                        owner.get(table).map(|first| {
                            format!(
                                ": databases `{first}` and `{name}` both have a `{table}`, and \
                                 checked queries see every service's tables in one database — \
                                 rename one"
                            )
                        })
                    }
                    _ => None,
                };
                return Err(CliError::Failed(format!(
                    "migration {file} of database `{name}` failed in the prepare database: {e}{}",
                    clash.unwrap_or_default()
                )));
            }
            let tables: Vec<String> = ovation::sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            )
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
            for table in tables {
                owner.entry(table).or_insert_with(|| name.to_owned());
            }
        }
    }
    Ok(())
}

/// A database the source declares, with its migrations.
struct Declared {
    name: String,
    migrations: Vec<(i64, String, String)>,
}

/// Every `database!("name", migrations = "folder")` under `src`, by name, with the migrations
/// of its folder (relative to the declaring file, as the macro reads it).
fn declared_databases(src: &Path) -> Result<Vec<Declared>, CliError> {
    let mut found: BTreeMap<String, Declared> = BTreeMap::new();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let mut rest = text.as_str();
        while let Some(at) = rest.find("database!(") {
            rest = &rest[at + "database!(".len()..];
            let args = rest.split(')').next().unwrap_or_default();
            let strings: Vec<&str> = args.split('"').skip(1).step_by(2).collect();
            let Some((name, folder)) = strings.first().zip(strings.get(1)) else {
                continue;
            };
            if !args.contains("migrations") {
                continue;
            }
            let dir = file.parent().unwrap_or(src).join(folder);
            let migrations = ovation::sqldb::migration_files(&dir).map_err(|e| {
                CliError::Failed(format!(
                    "the migrations of database `{name}` ({}): {e}",
                    dir.display()
                ))
            })?;
            found.insert(
                (*name).to_owned(),
                Declared {
                    name: (*name).to_owned(),
                    migrations,
                },
            );
        }
    }
    Ok(found.into_values().collect())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `query-*.json` files of `dir`, by name.
fn query_files(dir: &Path) -> Result<BTreeMap<String, String>, CliError> {
    let mut files = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("query-") && name.ends_with(".json") {
            let path: PathBuf = entry.path();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            files.insert(name, text);
        }
    }
    Ok(files)
}
