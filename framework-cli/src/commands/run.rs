//! `ovation run` and `ovation test`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::dev;
use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
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
}

#[derive(Debug, Args)]
pub(super) struct TestArgs {
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
    pub(super) cargo_args: Vec<String>,
}

pub(super) fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    dev::run(dev::RunOptions {
        app: args.app,
        port: args.port,
        dashboard_port: args.dashboard_port,
        watch: args.watch,
        allowed_hosts: args.allowed_hosts,
    })
}

pub(super) fn test(args: TestArgs) -> Result<ExitCode, CliError> {
    dev::test(
        &args.app,
        args.dashboard_port,
        &args.allowed_hosts,
        &args.cargo_args,
    )
}
