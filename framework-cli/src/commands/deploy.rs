//! `ovation deploy`: build once, then run as separate processes locally or write Kubernetes
//! manifests; `status`, `restart` and `stop` of the local deployment.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use ovation::tooling::ManagedPostgres;

use crate::deploy::{self, kubernetes, local};
use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct DeployArgs {
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
    /// How many processes run a service or group, over `[replicas]` in ovation.toml:
    /// `--replicas users=2,catalog=3`. The gateway and callers take them in turn.
    #[arg(long, value_name = "NAME=COUNT,...")]
    replicas: Option<String>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// One process per service or group on 127.0.0.1, the gateway on --port.
    Local,
    /// Kubernetes manifests and a Dockerfile, written to --out.
    Kubernetes,
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

pub(super) fn run(args: DeployArgs) -> Result<ExitCode, CliError> {
    if let Some(command) = args.command {
        return manage(command);
    }
    let manifest = super::manifest(&args.app)?;
    let exe = deploy::build_release(&manifest)?;
    let model = deploy::describe(&exe)?;
    let mut app_manifest = deploy::AppManifest::load(&args.app)?;
    if let Some(replicas) = &args.replicas {
        deploy::parse_replicas(replicas, &mut app_manifest.replicas).map_err(CliError::Usage)?;
    }
    let units = deploy::plan(&model.services, &app_manifest)?;
    match args.target {
        Target::Local => {
            let options = local::Options {
                app: std::path::absolute(&args.app).map_err(|e| e.to_string())?,
                data_dir: std::path::absolute(super::data_dir(&args.app))
                    .map_err(|e| e.to_string())?,
                port: args.port,
                stop_with_pid: args.stop_with_pid,
                cors: app_manifest.cors.clone(),
            };
            check_secrets(&model, &options.app)?;
            if std::env::var_os("DATABASE_URL").is_none() {
                let pg = ManagedPostgres::ensure(&options.data_dir)?;
                eprintln!("managed Postgres on 127.0.0.1:{}", pg.port());
            }
            let deployment = local::deploy(&exe, units, &options)?;
            remember_data_dir(&args.app, &options.data_dir);
            print_status(&deployment);
            eprintln!(
                "\nthe app answers on http://127.0.0.1:{port}; logs in {}\n\
                 `ovation deploy status --app {a}` shows the processes, \
                 `ovation deploy stop --app {a}` stops them",
                local::state_dir(&options.data_dir).join("logs").display(),
                port = args.port,
                a = args.app.display(),
            );
        }
        Target::Kubernetes => {
            let out = args.out.ok_or_else(|| {
                CliError::Usage("--target kubernetes needs --out <folder>".to_owned())
            })?;
            let package = kubernetes::package_name(&manifest)?;
            let binary = exe
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| package.clone());
            let options = kubernetes::Options {
                image: args.image.unwrap_or_else(|| format!("{package}:latest")),
                app: package.clone(),
                binary,
                package,
                host: args.host,
                otlp_endpoint: args.otlp_endpoint,
                out,
                cors: app_manifest.cors.clone(),
            };
            let files = kubernetes::write(&model, &units, &options)?;
            for file in &files {
                println!("{}", file.display());
            }
            eprintln!(
                "wrote {} files for Kubernetes {}; next steps in {}",
                files.len(),
                kubernetes::KUBERNETES_VERSION,
                options.out.join("NOTES.md").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses to deploy locally when a secret the app declares is set neither in the environment
/// nor in the app's local secrets file: every process would stop at start-up over it.
fn check_secrets(
    model: &ovation::tooling::AppModel,
    app: &std::path::Path,
) -> Result<(), CliError> {
    let app = app.canonicalize().unwrap_or_else(|_| app.to_owned());
    let file = ovation::secrets::local_file(&app.to_string_lossy());
    let stored = ovation::secrets::read_file(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let missing: Vec<String> = model
        .secrets
        .iter()
        .filter(|s| {
            std::env::var_os(&s.env).is_none_or(|v| v.is_empty()) && !stored.contains_key(&s.name)
        })
        .map(|s| {
            format!(
                "`{}` ({} or `ovation secret set {}`)",
                s.name, s.env, s.name
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "the app's secrets are not all set, and a deployment does not make them up: {}. Set \
         each in the environment, or in {} with `ovation secret set NAME --app {}`",
        missing.join(", "),
        file.display(),
        app.display()
    )))
}

/// The file in the app's default data folder naming the data folder of its last deployment,
/// when `OVATION_DATA_DIR` put it elsewhere.
fn pointer(app: &std::path::Path) -> std::path::PathBuf {
    app.join(".ovation/deployed-data-dir")
}

/// Remembers where `app` was deployed from, so that `status`, `restart` and `stop` find it
/// without the same `OVATION_DATA_DIR`.
fn remember_data_dir(app: &std::path::Path, data_dir: &std::path::Path) {
    let default = std::path::absolute(app.join(".ovation")).unwrap_or_default();
    if data_dir == default {
        let _ = std::fs::remove_file(pointer(app));
    } else if std::fs::create_dir_all(app.join(".ovation")).is_ok() {
        let _ = std::fs::write(pointer(app), data_dir.as_os_str().as_encoded_bytes());
    }
}

/// The data folder of `app`'s local deployment: `OVATION_DATA_DIR` when set; else the app's own
/// `.ovation`, unless the last deployment was made from another one and still runs.
fn deployed_data_dir(app: &std::path::Path) -> std::path::PathBuf {
    let default = super::data_dir(app);
    if std::env::var_os("OVATION_DATA_DIR").is_some()
        || local::state_dir(&default).join("deployment.json").exists()
    {
        return default;
    }
    std::fs::read_to_string(pointer(app))
        .ok()
        .map(std::path::PathBuf::from)
        .filter(|dir| local::state_dir(dir).join("deployment.json").exists())
        .unwrap_or(default)
}

/// `status`, `restart`, `stop` and the hidden `supervise`.
fn manage(command: DeployCmd) -> Result<ExitCode, CliError> {
    match command {
        DeployCmd::Status { app, json } => {
            let dir = local::state_dir(&deployed_data_dir(&app));
            let Some(deployment) = local::load(&dir)? else {
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
            let supervisor = local::supervisor_running(&deployment);
            if json {
                let health = local::health_of(&deployment);
                let mut value = serde_json::to_value(&deployment).expect("state serializes");
                value["supervisor"] = serde_json::json!({
                    "pid": deployment.supervisor_pid,
                    "running": supervisor.is_some(),
                });
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
                match (supervisor, deployment.supervisor_pid) {
                    (Some(pid), _) => println!("supervisor: running (pid {pid})\n"),
                    (None, pid) => println!(
                        "supervisor: NOT RUNNING{}: nothing restarts a process that exits\n",
                        pid.map(|p| format!(" (pid {p} is gone)"))
                            .unwrap_or_default()
                    ),
                }
                print_status(&deployment);
            }
            if supervisor.is_none() {
                return Err(CliError::Failed(format!(
                    "the deployment's supervisor is not running, so neither are its processes; \
                     deploy again with `ovation deploy --app {}` (or remove it with \
                     `ovation deploy stop --app {}`)",
                    app.display(),
                    app.display()
                )));
            }
        }
        DeployCmd::Restart { process, app } => {
            let (old, new) =
                local::restart(&deployed_data_dir(&app), &process, Duration::from_secs(60))?;
            eprintln!("restarted {process}: pid {old} → {new}, healthy");
        }
        DeployCmd::Stop { app } => {
            let data_dir = deployed_data_dir(&app);
            let stopped = local::stop(&data_dir)?;
            if data_dir != super::data_dir(&app) {
                let _ = std::fs::remove_file(pointer(&app));
            }
            eprintln!(
                "{}",
                if stopped {
                    "stopped"
                } else {
                    "no local deployment runs"
                }
            );
        }
        DeployCmd::Supervise { state } => local::supervise(&state)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(deployment: &local::Deployment) {
    let health = local::health_of(deployment);
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

#[cfg(test)]
mod tests {
    use super::*;

    // `status`, `restart` and `stop` found no deployment made with another OVATION_DATA_DIR,
    // and said "no local deployment runs" while one ran.
    #[test]
    fn a_deployment_from_another_data_folder_is_found_from_the_app() {
        if std::env::var_os("OVATION_DATA_DIR").is_some() {
            eprintln!("skipped: OVATION_DATA_DIR is set, and it wins by design");
            return;
        }
        let root = std::env::temp_dir().join(format!("ovation-pointer-{}", std::process::id()));
        let (app, elsewhere) = (root.join("app"), root.join("elsewhere"));
        std::fs::create_dir_all(&app).unwrap();
        std::fs::create_dir_all(local::state_dir(&elsewhere)).unwrap();
        assert_eq!(deployed_data_dir(&app), app.join(".ovation"));

        std::fs::write(local::state_dir(&elsewhere).join("deployment.json"), "{}").unwrap();
        remember_data_dir(&app, &elsewhere);
        assert_eq!(deployed_data_dir(&app), elsewhere);

        // Stopped (its state removed): back to the app's own folder.
        std::fs::remove_file(local::state_dir(&elsewhere).join("deployment.json")).unwrap();
        assert_eq!(deployed_data_dir(&app), app.join(".ovation"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
