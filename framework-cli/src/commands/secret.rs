//! `ovation secret`: the app's local secrets file, `<app>/.ovation/secrets.json` (mode 0600,
//! git-ignored), which `cargo run`, `ovation run`, tests and `ovation deploy --target local`
//! read after the environment (see `ovation::secrets`).

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::error::CliError;

#[derive(Debug, Args)]
pub(super) struct SecretArgs {
    #[command(subcommand)]
    command: SecretCmd,
    /// The app's folder; its secrets file is `<app>/.ovation/secrets.json`.
    #[arg(long, global = true, default_value = ".")]
    app: PathBuf,
}

#[derive(Debug, Subcommand)]
enum SecretCmd {
    /// Set a secret: its value is read from standard input (never from the command line,
    /// where it would stay in the shell's history and the process list).
    Set {
        /// The secret's name, as `ovation::secret!` declares it, e.g. `SessionKey`.
        name: String,
    },
    /// List the secrets set in the file, and which the environment overrides. Values are
    /// never printed.
    List,
    /// Remove a secret from the file.
    Unset {
        /// The secret's name.
        name: String,
    },
}

pub(super) fn run(args: SecretArgs) -> Result<ExitCode, CliError> {
    super::manifest(&args.app)?;
    let app = args.app.canonicalize().map_err(|e| {
        CliError::Usage(format!(
            "cannot open the app folder {}: {e}",
            args.app.display()
        ))
    })?;
    let file = ovation::secrets::local_file(&app.to_string_lossy());
    let check = |name: &str| {
        if ovation::secrets::valid_name(name) {
            Ok(())
        } else {
            Err(CliError::Usage(format!(
                "{name:?} is not a secret name: use letters, digits and `_`, starting with a \
                 letter, as in `ovation::secret!(\"SessionKey\")`"
            )))
        }
    };
    match args.command {
        SecretCmd::Set { name } => {
            check(&name)?;
            let value = read_value(&name)?;
            ovation::secrets::store(&file, &name, &value, true)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            eprintln!(
                "secret `{name}` set in {} ({} overrides it when set)",
                file.display(),
                ovation::secrets::env_var(&name)
            );
        }
        SecretCmd::List => {
            let secrets = ovation::secrets::read_file(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            if secrets.is_empty() {
                eprintln!("no secret is set in {}", file.display());
            }
            for name in secrets.keys() {
                let var = ovation::secrets::env_var(name);
                let overridden = std::env::var_os(&var).is_some_and(|v| !v.is_empty());
                if overridden {
                    println!("{name}\t(file; {var} is set and overrides it)");
                } else {
                    println!("{name}\t(file)");
                }
            }
        }
        SecretCmd::Unset { name } => {
            check(&name)?;
            let removed = ovation::secrets::remove(&file, &name)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            if !removed {
                return Err(CliError::Usage(format!(
                    "secret `{name}` is not set in {}",
                    file.display()
                )));
            }
            eprintln!("secret `{name}` removed from {}", file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value on standard input: one line from a terminal (after a prompt), or everything
/// piped in, without the final newline.
fn read_value(name: &str) -> Result<String, CliError> {
    let mut stdin = std::io::stdin();
    let mut value = String::new();
    if stdin.is_terminal() {
        eprint!("value of secret `{name}`: ");
        let _ = std::io::stderr().flush();
        stdin
            .read_line(&mut value)
            .map_err(|e| format!("cannot read the value: {e}"))?;
    } else {
        stdin
            .read_to_string(&mut value)
            .map_err(|e| format!("cannot read the value from standard input: {e}"))?;
    }
    let value = value.strip_suffix('\n').unwrap_or(&value);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(CliError::Usage(format!(
            "no value for secret `{name}`: pipe it in, e.g. `printf %s \"$VALUE\" | ovation \
             secret set {name}`"
        )));
    }
    Ok(value.to_owned())
}
