//! The CLI's errors: each says what went wrong and what to do, and its kind sets the exit code
//! a script can branch on.

use std::process::ExitCode;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line names something that is not there: a folder without `Cargo.toml`, a
    /// process or database the deployment does not have. Exit code 2, as for clap's own usage
    /// errors.
    #[error("{0}")]
    Usage(String),
    /// The app did not build; the compiler's messages were printed above. Exit code 3.
    #[error("{0}")]
    Build(String),
    /// A port Ovation was told to listen on is taken. Exit code 4.
    #[error("{0}")]
    PortInUse(String),
    /// A program Ovation runs is missing or would not start: cargo, psql, the PostgreSQL or
    /// NATS server binaries. Exit code 5.
    #[error("{0}")]
    MissingTool(String),
    /// Anything else that went wrong while the command ran. Exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Build(_) => 3,
            CliError::PortInUse(_) => 4,
            CliError::MissingTool(_) => 5,
        }
    }
}

impl From<CliError> for ExitCode {
    fn from(e: CliError) -> ExitCode {
        ExitCode::from(e.exit_code())
    }
}

impl From<String> for CliError {
    fn from(message: String) -> CliError {
        CliError::Failed(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> CliError {
        CliError::Failed(message.to_owned())
    }
}

impl From<ovation::tooling::InfraError> for CliError {
    fn from(e: ovation::tooling::InfraError) -> CliError {
        use ovation::tooling::InfraError;
        match e {
            InfraError::PostgresNotFound | InfraError::NatsNotFound => {
                CliError::MissingTool(e.to_string())
            }
            other => CliError::Failed(other.to_string()),
        }
    }
}

/// What `--help` says of exit codes.
pub(crate) const EXIT_CODES: &str = "\
Exit codes: 0 done; 1 failed; 2 a usage error (an argument names something that is not there); \
3 the app did not build; 4 a port is taken; 5 a program Ovation needs is missing. \
`ovation test` and `ovation db shell` exit with cargo's and psql's own code.";
