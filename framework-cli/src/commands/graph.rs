//! `ovation graph`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::error::CliError;
use crate::graph;

#[derive(Debug, Args)]
pub(super) struct GraphArgs {
    /// The app's folder (holding its Cargo.toml).
    #[arg(long, default_value = ".")]
    app: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Svg)]
    format: GraphFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Svg,
    Dot,
    Mermaid,
}

pub(super) fn run(args: GraphArgs) -> Result<ExitCode, CliError> {
    super::manifest(&args.app)?;
    let graph = graph::read(&args.app)?;
    let text = match args.format {
        GraphFormat::Svg => graph::to_svg(&graph),
        GraphFormat::Dot => graph::to_dot(&graph),
        GraphFormat::Mermaid => graph::to_mermaid(&graph),
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
