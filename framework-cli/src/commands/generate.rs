//! `ovation gen`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::deploy;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub(super) enum GenCmd {
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

pub(super) fn run(command: GenCmd) -> Result<ExitCode, CliError> {
    let GenCmd::Openapi { app, out } = command;
    let exe = deploy::build(&super::manifest(&app)?, false)?;
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
