//! `ovation gen`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

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
    /// A typed client of the app's public API, in the language asked for, built from the
    /// app's binary: one class per service, a method per public endpoint.
    Client {
        /// The client's language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// The app's folder (holding its Cargo.toml).
        #[arg(long, default_value = ".")]
        app: PathBuf,
        /// Write it to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A language `ovation gen client` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Lang {
    /// TypeScript, for browsers and Node.js 18+ (needs only `fetch`).
    Ts,
}

pub(super) fn run(command: GenCmd) -> Result<ExitCode, CliError> {
    let (app, out) = match &command {
        GenCmd::Openapi { app, out } | GenCmd::Client { app, out, .. } => (app, out),
    };
    let exe = deploy::build(&super::manifest(app)?, false)?;
    let spec = deploy::describe_openapi(&exe)?;
    let text = match command {
        GenCmd::Openapi { .. } => format!("{spec:#}\n"),
        GenCmd::Client { lang: Lang::Ts, .. } => crate::tsgen::typescript(&spec)?,
    };
    match out {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
