//! `ovation db`: the app's managed Postgres.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Args, Subcommand};
use ovation::tooling::{IDLE_STOP, ManagedPostgres, PgServer};

use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct DbArgs {
    #[command(subcommand)]
    command: DbCmd,
    /// The app's folder; its cluster lives in `<app>/.ovation/`.
    #[arg(long, global = true, default_value = ".")]
    app: PathBuf,
}

#[derive(Debug, Subcommand)]
enum DbCmd {
    /// Start the managed Postgres (initialising it on first use) and print its URL.
    Start,
    /// Stop the managed Postgres.
    Stop,
    /// Print the URL of a database (default: the `postgres` maintenance database).
    Url {
        /// A service database, e.g. `users`.
        database: Option<String>,
    },
    /// Drop the app's databases (or one of them): the next start creates and migrates them
    /// anew.
    Reset {
        /// A service database, e.g. `users`; all of them when omitted.
        database: Option<String>,
    },
    /// Write the data sqlx's `query!` macros check the app's SQL against to `<app>/.sqlx`,
    /// from every database's migrations: the app then builds without a database.
    Prepare {
        /// Compare with `<app>/.sqlx` instead of writing it; fail if it is out of date.
        #[arg(long)]
        check: bool,
    },
    /// Open psql on a database.
    Shell {
        /// A service database, e.g. `users`.
        database: Option<String>,
    },
}

pub(super) fn run(args: DbArgs) -> Result<ExitCode, CliError> {
    let dir = super::data_dir(&args.app);
    match args.command {
        DbCmd::Start => {
            let pg = ManagedPostgres::ensure(&dir)?;
            println!("{}", pg.url("postgres"));
            eprintln!(
                "managed Postgres runs on 127.0.0.1:{} (data in {}); it stops by itself \
                 {} s after the last Ovation process using it exits",
                pg.port(),
                pg.dir().display(),
                IDLE_STOP.as_secs()
            );
        }
        DbCmd::Stop => {
            let was_running = ManagedPostgres::stop(&dir)?;
            eprintln!(
                "{}",
                if was_running {
                    "stopped"
                } else {
                    "not running"
                }
            );
        }
        DbCmd::Url { database } => {
            let pg = ManagedPostgres::ensure(&dir)?;
            println!("{}", pg.url(database.as_deref().unwrap_or("postgres")));
        }
        DbCmd::Reset { database } => {
            let pg = ManagedPostgres::ensure(&dir)?;
            let dropped = reset(&pg, database.as_deref())?;
            if dropped.is_empty() {
                eprintln!("no database to drop");
            }
            for name in dropped {
                eprintln!("dropped {name}");
            }
        }
        DbCmd::Prepare { check } => return crate::prepare::run(&args.app, &dir, check),
        DbCmd::Shell { database } => {
            let pg = ManagedPostgres::ensure(&dir)?;
            let mut cmd = Command::new("psql");
            cmd.arg(pg.url(database.as_deref().unwrap_or("postgres")));
            return super::status(
                cmd,
                "psql",
                "psql comes with PostgreSQL's client package (Debian: `apt install postgresql-client`)",
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Drops `only`, or every database of the cluster but Postgres' own.
fn reset(pg: &ManagedPostgres, only: Option<&str>) -> Result<Vec<String>, CliError> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    tokio.block_on(async {
        let server = PgServer::from_url(&pg.url("postgres")).map_err(|e| e.to_string())?;
        let all = server
            .databases()
            .await
            .map_err(|e| format!("cannot list databases: {e}"))?;
        let targets: Vec<String> = match only {
            Some(name) if all.iter().any(|d| d == name) => vec![name.to_owned()],
            Some(name) => {
                return Err(CliError::Usage(format!(
                    "there is no database `{name}` on the managed Postgres; it has: {}",
                    all.join(", ")
                )));
            }
            None => all,
        };
        for name in &targets {
            server
                .drop_database(name)
                .await
                .map_err(|e| format!("cannot drop {name}: {e}"))?;
        }
        Ok(targets)
    })
}
