//! `ovation check`: builds the app and has its binary report what is wrong with it, without
//! starting it — no server, no database.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::deploy;
use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// The app's folder (holding its Cargo.toml).
    #[arg(long, default_value = ".")]
    app: PathBuf,
}

pub(super) fn run(args: CheckArgs) -> Result<ExitCode, CliError> {
    let exe = deploy::build(&super::manifest(&args.app)?, false)?;
    let report = deploy::describe_check(&exe)?;
    if report.problems.is_empty() {
        println!(
            "ok: {}, {}",
            count(report.services.len(), "service"),
            count(report.endpoints, "endpoint")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut message = format!("the app has {}:", count(report.problems.len(), "problem"));
    for problem in &report.problems {
        for (i, line) in problem.lines().enumerate() {
            message.push_str(if i == 0 { "\n  - " } else { "\n    " });
            message.push_str(line);
        }
    }
    Err(CliError::Failed(message))
}

/// `1 service`, `2 services`.
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}
