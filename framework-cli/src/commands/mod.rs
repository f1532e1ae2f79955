//! The command line: one file a command, each with its arguments and what it does.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

use crate::error::{CliError, EXIT_CODES};

mod check;
mod db;
mod deploy;
mod generate;
mod graph;
mod new;
mod run;
mod secret;

/// Backends as services, in Rust.
#[derive(Debug, Parser)]
#[command(name = "ovation", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a new app: one service with its database, two endpoints and a test.
    New(new::NewArgs),
    /// Build and run the app, hosting every service in one process.
    Run(run::RunArgs),
    /// Run the app's tests (each `#[ovation::test]` gets its own databases).
    Test(run::TestArgs),
    /// Build the app and report what is wrong with it without starting it: conflicting
    /// routes, bad declarations, a migration the build does not hold, a binary with no service.
    Check(check::CheckArgs),
    /// Deploy the app as separate processes: locally under a supervisor, or as Kubernetes
    /// manifests.
    #[command(args_conflicts_with_subcommands = true)]
    Deploy(deploy::DeployArgs),
    /// Draw the app's architecture from its source: services, databases, calls, topics.
    Graph(graph::GraphArgs),
    /// Generate artefacts from the app.
    Gen {
        #[command(subcommand)]
        command: generate::GenCmd,
    },
    /// Manage the app's local Postgres.
    Db(db::DbArgs),
    /// Manage the app's local secrets (`ovation::secret!`).
    Secret(secret::SecretArgs),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.into()
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Cmd::New(args) => new::run(args),
        Cmd::Run(args) => run::run(args),
        Cmd::Test(args) => run::test(args),
        Cmd::Check(args) => check::run(args),
        Cmd::Deploy(args) => deploy::run(args),
        Cmd::Graph(args) => graph::run(args),
        Cmd::Gen { command } => generate::run(command),
        Cmd::Db(args) => db::run(args),
        Cmd::Secret(args) => secret::run(args),
    }
}

/// The app's `Cargo.toml`, or a usage error saying what `--app` must point at.
pub(crate) fn manifest(app: &Path) -> Result<PathBuf, CliError> {
    let manifest = app.join("Cargo.toml");
    if manifest.is_file() {
        Ok(manifest)
    } else {
        Err(CliError::Usage(format!(
            "{} has no Cargo.toml: point --app at the folder of an Ovation app (e.g. --app examples/shop-app)",
            app.display()
        )))
    }
}

/// Where the app's managed servers and local state live: `OVATION_DATA_DIR`, else
/// `<app>/.ovation`.
pub(crate) fn data_dir(app: &Path) -> PathBuf {
    std::env::var_os("OVATION_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| app.join(".ovation"))
}

/// The cargo to build and test with: the one running us, if any.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs `cmd` to its end and exits with its code.
fn status(mut cmd: Command, what: &str, hint: &str) -> Result<ExitCode, CliError> {
    let status = cmd
        .status()
        .map_err(|e| CliError::MissingTool(format!("cannot run {what}: {e}\n  {hint}")))?;
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
        assert!(matches!(cli.command, Cmd::Test(ref args) if args.cargo_args == ["--nocapture"]));
    }

    #[test]
    fn a_folder_without_cargo_toml_is_a_usage_error() {
        let err = manifest(Path::new("/nonexistent-app")).unwrap_err();
        assert!(err.to_string().contains("--app"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
