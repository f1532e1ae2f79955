//! The `ovation` command.
//!
//! `ovation run` and `ovation test` build and run an app folder with cargo; the app itself
//! starts the managed Postgres it needs (in `<app>/.ovation/`). `ovation db` manages that
//! Postgres directly.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use ovation::tooling::ManagedPostgres;

pub mod dashboard;
pub mod deploy;
pub mod dev;
pub mod graph;
pub mod guard;
pub mod traces;

/// Backends as services, in Rust.
#[derive(Debug, Parser)]
#[command(name = "ovation", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build and run the app, hosting every service in one process.
    Run {
        /// The app's folder (holding its Cargo.toml).
        #[arg(long, default_value = ".")]
        app: PathBuf,
        /// Port to serve the app on, on 127.0.0.1.
        #[arg(long, default_value_t = 4000)]
        port: u16,
        /// Port of the dashboard and the trace receiver, on 127.0.0.1.
        #[arg(long, default_value_t = 9400)]
        dashboard_port: u16,
        /// Rebuild on every change to a .rs, .sql or Cargo.toml file and swap the new build
        /// in while the port keeps answering.
        #[arg(long)]
        watch: bool,
        /// Also answer the dashboard under this host name (`name` or `name:port`), e.g. of a
        /// tunnel. Only loopback names are answered otherwise: see docs/security.md.
        #[arg(long = "allow-host", value_name = "HOST")]
        allowed_hosts: Vec<String>,
    },
    /// Run the app's tests (each `#[ovation::test]` gets its own databases).
    Test {
        /// The app's folder (holding its Cargo.toml).
        #[arg(long, default_value = ".")]
        app: PathBuf,
        /// Port of the trace receiver the tests export to (an `ovation run` dashboard already
        /// there is used).
        #[arg(long, default_value_t = 9400)]
        dashboard_port: u16,
        /// Also answer the trace receiver under this host name (`name` or `name:port`).
        #[arg(long = "allow-host", value_name = "HOST")]
        allowed_hosts: Vec<String>,
        /// Arguments passed on to `cargo test`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Deploy the app as separate processes: locally under a supervisor, or as Kubernetes
    /// manifests.
    #[command(args_conflicts_with_subcommands = true)]
    Deploy {
        #[command(subcommand)]
        command: Option<DeployCmd>,
        /// Where to deploy.
        #[arg(long, value_enum, default_value_t = Target::Local)]
        target: Target,
        /// The app's folder (holding its Cargo.toml).
        #[arg(long, default_value = ".")]
        app: PathBuf,
        /// local: the gateway's port on 127.0.0.1.
        #[arg(long, default_value_t = 4000)]
        port: u16,
        /// local: stop the deployment when this process exits (for scripts and tests).
        #[arg(long, value_name = "PID")]
        stop_with_pid: Option<u32>,
        /// kubernetes: the folder to write the manifests to.
        #[arg(long, required_if_eq("target", "kubernetes"))]
        out: Option<PathBuf>,
        /// kubernetes: the image the Deployments run (default `<app>:latest`).
        #[arg(long)]
        image: Option<String>,
        /// kubernetes: the host name the Ingress answers for (default: any).
        #[arg(long)]
        host: Option<String>,
        /// kubernetes: the OTLP/HTTP collector traces go to.
        #[arg(long, default_value = "http://otel-collector:4318")]
        otlp_endpoint: String,
    },
    /// Draw the app's architecture from its source: services, databases, calls, topics.
    Graph {
        /// The app's folder (holding its Cargo.toml).
        #[arg(long, default_value = ".")]
        app: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Svg)]
        format: GraphFormat,
    },
    /// Generate artefacts from the app.
    Gen {
        #[command(subcommand)]
        command: GenCmd,
    },
    /// Manage the app's local Postgres.
    Db {
        #[command(subcommand)]
        command: DbCmd,
        /// The app's folder; its cluster lives in `<app>/.ovation/`.
        #[arg(long, global = true, default_value = ".")]
        app: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// One process per service or group on 127.0.0.1, the gateway on --port.
    Local,
    /// Kubernetes manifests and a Dockerfile, written to --out.
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Svg,
    Dot,
    Mermaid,
}

#[derive(Debug, Subcommand)]
enum DeployCmd {
    /// Show the processes of the local deployment and whether each answers.
    Status {
        /// The app's folder.
        #[arg(long, default_value = ".")]
        app: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restart one process of the local deployment gracefully: it stops accepting, finishes
    /// its requests, and is started again at once; callers retry its port meanwhile.
    Restart {
        /// The process, as `ovation deploy status` names it.
        process: String,
        /// The app's folder.
        #[arg(long, default_value = ".")]
        app: PathBuf,
    },
    /// Stop the local deployment.
    Stop {
        /// The app's folder.
        #[arg(long, default_value = ".")]
        app: PathBuf,
    },
    /// Run the supervisor of a local deployment (started by `ovation deploy`).
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        state: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum GenCmd {
    /// The OpenAPI 3.1 document of the app's public endpoints (what the app serves at
    /// `/__ovation/openapi.json`), built from the app's binary.
    Openapi {
        /// The app's folder (holding its Cargo.toml).
        #[arg(long, default_value = ".")]
        app: PathBuf,
        /// Write it to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
    /// Open psql on a database.
    Shell {
        /// A service database, e.g. `users`.
        database: Option<String>,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Cmd::Run {
            app,
            port,
            dashboard_port,
            watch,
            allowed_hosts,
        } => dev::run(dev::RunOptions {
            app,
            port,
            dashboard_port,
            watch,
            allowed_hosts,
        }),
        Cmd::Test {
            app,
            dashboard_port,
            allowed_hosts,
            cargo_args,
        } => dev::test(&app, dashboard_port, &allowed_hosts, &cargo_args),
        Cmd::Deploy {
            command: Some(command),
            ..
        } => deploy_command(command),
        Cmd::Deploy {
            command: None,
            target,
            app,
            port,
            stop_with_pid,
            out,
            image,
            host,
            otlp_endpoint,
        } => {
            let manifest = manifest(&app)?;
            let exe = deploy::build_release(&manifest)?;
            let model = deploy::describe(&exe)?;
            let units = deploy::plan(&model.services, &deploy::AppManifest::load(&app)?)?;
            match target {
                Target::Local => {
                    let options = deploy::local::Options {
                        app: std::path::absolute(&app).map_err(|e| e.to_string())?,
                        data_dir: std::path::absolute(data_dir(&app)).map_err(|e| e.to_string())?,
                        port,
                        stop_with_pid,
                    };
                    if std::env::var_os("DATABASE_URL").is_none() {
                        let pg = ManagedPostgres::ensure(&options.data_dir)
                            .map_err(|e| e.to_string())?;
                        eprintln!("managed Postgres on 127.0.0.1:{}", pg.port());
                    }
                    let deployment = deploy::local::deploy(&exe, units, &options)?;
                    print_status(&deployment);
                    eprintln!(
                        "\nthe app answers on http://127.0.0.1:{port}; logs in {}\n\
                         `ovation deploy status --app {a}` shows the processes, \
                         `ovation deploy stop --app {a}` stops them",
                        deploy::local::state_dir(&options.data_dir)
                            .join("logs")
                            .display(),
                        a = app.display(),
                    );
                }
                Target::Kubernetes => {
                    let out = out.expect("clap requires --out for kubernetes");
                    let package = deploy::kubernetes::package_name(&manifest)?;
                    let binary = exe
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| package.clone());
                    let options = deploy::kubernetes::Options {
                        image: image.unwrap_or_else(|| format!("{package}:latest")),
                        app: package.clone(),
                        binary,
                        package,
                        host,
                        otlp_endpoint,
                        out,
                    };
                    let files = deploy::kubernetes::write(&model, &units, &options)?;
                    for file in &files {
                        println!("{}", file.display());
                    }
                    eprintln!(
                        "wrote {} files for Kubernetes {}; next steps in {}",
                        files.len(),
                        deploy::kubernetes::KUBERNETES_VERSION,
                        options.out.join("NOTES.md").display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Graph { app, format } => {
            manifest(&app)?;
            let graph = graph::read(&app)?;
            let text = match format {
                GraphFormat::Svg => graph::to_svg(&graph),
                GraphFormat::Dot => graph::to_dot(&graph),
                GraphFormat::Mermaid => graph::to_mermaid(&graph),
            };
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gen {
            command: GenCmd::Openapi { app, out },
        } => {
            let exe = deploy::build(&manifest(&app)?, false)?;
            let spec = deploy::describe_openapi(&exe)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, format!("{spec:#}\n"))
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => println!("{spec:#}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Db { command, app } => {
            let dir = data_dir(&app);
            match command {
                DbCmd::Start => {
                    let pg = ManagedPostgres::ensure(&dir).map_err(|e| e.to_string())?;
                    println!("{}", pg.url("postgres"));
                    eprintln!(
                        "managed Postgres runs on 127.0.0.1:{} (data in {}); it stops by itself \
                         {} s after the last Ovation process using it exits",
                        pg.port(),
                        pg.dir().display(),
                        ovation::tooling::IDLE_STOP.as_secs()
                    );
                }
                DbCmd::Stop => {
                    let was_running = ManagedPostgres::stop(&dir).map_err(|e| e.to_string())?;
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
                    let pg = ManagedPostgres::ensure(&dir).map_err(|e| e.to_string())?;
                    println!("{}", pg.url(database.as_deref().unwrap_or("postgres")));
                }
                DbCmd::Reset { database } => {
                    let pg = ManagedPostgres::ensure(&dir).map_err(|e| e.to_string())?;
                    let dropped = reset(&pg, database.as_deref())?;
                    if dropped.is_empty() {
                        eprintln!("no database to drop");
                    }
                    for name in dropped {
                        eprintln!("dropped {name}");
                    }
                }
                DbCmd::Shell { database } => {
                    let pg = ManagedPostgres::ensure(&dir).map_err(|e| e.to_string())?;
                    let url = pg.url(database.as_deref().unwrap_or("postgres"));
                    let mut cmd = Command::new("psql");
                    cmd.arg(url);
                    return status(cmd, "psql").map_err(|e| {
                        format!("{e}\n  psql comes with PostgreSQL's client package (Debian: `apt install postgresql-client`)")
                    });
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn deploy_command(command: DeployCmd) -> Result<ExitCode, String> {
    match command {
        DeployCmd::Status { app, json } => {
            let dir = deploy::local::state_dir(&data_dir(&app));
            let Some(deployment) = deploy::local::load(&dir)? else {
                if json {
                    println!("null");
                } else {
                    eprintln!(
                        "no local deployment of {} runs; start one with `ovation deploy --app {}`",
                        app.display(),
                        app.display()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            };
            if json {
                let health = deploy::local::health_of(&deployment);
                let mut value = serde_json::to_value(&deployment).expect("state serializes");
                for (p, h) in value["processes"]
                    .as_array_mut()
                    .expect("processes is a list")
                    .iter_mut()
                    .zip(health)
                {
                    p["health"] = serde_json::to_value(h).expect("health serializes");
                }
                println!("{value:#}");
            } else {
                print_status(&deployment);
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCmd::Restart { process, app } => {
            let (old, new) = deploy::local::restart(
                &data_dir(&app),
                &process,
                std::time::Duration::from_secs(60),
            )?;
            eprintln!("restarted {process}: pid {old} → {new}, healthy");
            Ok(ExitCode::SUCCESS)
        }
        DeployCmd::Stop { app } => {
            let stopped = deploy::local::stop(&data_dir(&app))?;
            eprintln!(
                "{}",
                if stopped {
                    "stopped"
                } else {
                    "no local deployment runs"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        DeployCmd::Supervise { state } => {
            deploy::local::supervise(&state)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_status(deployment: &deploy::local::Deployment) {
    let health = deploy::local::health_of(deployment);
    println!(
        "{:<18} {:<28} {:<24} {:>8} {:<9} {:>8}",
        "PROCESS", "SERVICES", "URL", "PID", "HEALTH", "RESTARTS"
    );
    for (p, h) in deployment.processes.iter().zip(health) {
        let services = if p.unit.gateway {
            "(public endpoints)".to_owned()
        } else {
            p.unit.services.join(",")
        };
        let pid = p.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<18} {:<28} {:<24} {:>8} {:<9} {:>8}",
            p.unit.name,
            services,
            p.url,
            pid,
            format!("{h:?}").to_lowercase(),
            p.restarts
        );
    }
}

/// Drops `only`, or every database of the cluster but Postgres' own.
fn reset(pg: &ManagedPostgres, only: Option<&str>) -> Result<Vec<String>, String> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    tokio.block_on(async {
        let server =
            ovation::tooling::PgServer::from_url(&pg.url("postgres")).map_err(|e| e.to_string())?;
        let all = server
            .databases()
            .await
            .map_err(|e| format!("cannot list databases: {e}"))?;
        let targets: Vec<String> = match only {
            Some(name) if all.iter().any(|d| d == name) => vec![name.to_owned()],
            Some(name) => {
                return Err(format!(
                    "there is no database `{name}` on the managed Postgres; it has: {}",
                    all.join(", ")
                ));
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

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn manifest(app: &Path) -> Result<PathBuf, String> {
    let manifest = app.join("Cargo.toml");
    if manifest.is_file() {
        Ok(manifest)
    } else {
        Err(format!(
            "{} has no Cargo.toml: point --app at the folder of an Ovation app (e.g. --app examples/shop-app)",
            app.display()
        ))
    }
}

fn data_dir(app: &Path) -> PathBuf {
    std::env::var_os("OVATION_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| app.join(".ovation"))
}

fn status(mut cmd: Command, what: &str) -> Result<ExitCode, String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["ovation", "test", "--app", "x", "--", "--nocapture"]);
        assert!(
            matches!(cli.command, Cmd::Test { ref cargo_args, .. } if cargo_args == &["--nocapture"])
        );
    }

    #[test]
    fn a_folder_without_cargo_toml_is_a_clear_error() {
        let err = manifest(Path::new("/nonexistent-app")).unwrap_err();
        assert!(err.contains("--app"), "{err}");
    }
}
