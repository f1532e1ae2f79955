//! The `ovation` command.
//!
//! `ovation run` and `ovation test` build and run an app folder with cargo; the app itself
//! starts the managed Postgres it needs (in `<app>/.ovation/`). `ovation db` manages that
//! Postgres directly. `commands/` parses the command line, one file a command; the modules
//! beside it do the work.

#![warn(unreachable_pub)]

mod commands;
pub mod dashboard;
pub mod deploy;
pub mod dev;
pub mod error;
pub mod graph;
pub mod guard;
mod prepare;
pub mod traces;
mod tsgen;

pub use commands::{Cli, main, run};
pub use error::CliError;

pub(crate) use commands::{cargo, data_dir, manifest};
