//! `ovation deploy`: the app as separate processes, one per service or group.
//!
//! Both targets start from the same plan: the release binary, the app model it prints under
//! `OVATION_DESCRIBE=1`, and the groups of the app's `ovation.toml`:
//!
//! ```toml
//! # Services that share a process (a Deployment on Kubernetes); every other service gets
//! # its own. The Ovation gateway is always a process of its own, `ovation-gateway`.
//! [groups]
//! catalog = ["users", "products"]
//!
//! # How many processes run a group or service (default 1): the gateway and callers take
//! # them in turn. `ovation deploy --replicas users=2` overrides it.
//! [replicas]
//! users = 2
//! ```
//!
//! - [`local`]: every process on 127.0.0.1 under a supervisor that restarts what dies;
//! - [`kubernetes`]: manifests and a Dockerfile, written to a folder.

pub mod kubernetes;
pub mod local;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The name of the gateway process; `ovation-` names are reserved for Ovation's own.
pub const GATEWAY: &str = "ovation-gateway";

/// What the app's binary says about itself (`OVATION_DESCRIBE=1`).
pub use ovation::tooling::AppModel;

use crate::error::CliError;

/// The app's `ovation.toml`. Optional; every field has a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppManifest {
    /// Group name → the services deployed together in it.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// `[cors]`: which web pages of other origins may call the app (see `ovation::config::Cors`),
    /// for `ovation run` and both deploy targets.
    #[serde(default)]
    pub cors: ovation::config::Cors,
    /// `[replicas]`: group or service name → how many processes run it (default 1).
    #[serde(default)]
    pub replicas: BTreeMap<String, u32>,
}

impl AppManifest {
    /// Reads `<app>/ovation.toml`, or the defaults when there is none.
    pub fn load(app: &Path) -> Result<AppManifest, String> {
        let path = app.join("ovation.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppManifest::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// One process of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// The group's name, the service's name, or [`GATEWAY`].
    pub name: String,
    /// The services it hosts (none for the gateway).
    pub services: Vec<String>,
    /// Whether it is the gateway.
    pub gateway: bool,
    /// How many processes run it (the gateway: one locally, two in Kubernetes).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Most processes one unit may have: more is a typo, and each is a process of this machine.
const MAX_REPLICAS: u32 = 16;

/// Parses `--replicas users=2,catalog=3` into the manifest's `[replicas]`, over its values.
pub fn parse_replicas(text: &str, into: &mut BTreeMap<String, u32>) -> Result<(), String> {
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, n) = pair
            .split_once('=')
            .ok_or_else(|| format!("--replicas: `{pair}` is not NAME=COUNT (e.g. users=2)"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("--replicas: `{n}` in `{pair}` is not a count"))?;
        into.insert(name.trim().to_owned(), n);
    }
    Ok(())
}

/// The processes of a deployment: the groups of `manifest`, a process for each service in no
/// group, in the app's service order, then the gateway.
pub fn plan(services: &[String], manifest: &AppManifest) -> Result<Vec<Unit>, String> {
    let known: BTreeSet<&str> = services.iter().map(String::as_str).collect();
    let mut group_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (group, members) in &manifest.groups {
        check_name(group)?;
        if members.is_empty() {
            return Err(format!(
                "ovation.toml: group `{group}` lists no service; remove it or name its services"
            ));
        }
        if known.contains(group.as_str()) && !members.iter().any(|m| m == group) {
            return Err(format!(
                "ovation.toml: group `{group}` has the name of a service it does not hold; \
                 rename the group"
            ));
        }
        for member in members {
            if !known.contains(member.as_str()) {
                return Err(format!(
                    "ovation.toml: group `{group}` names `{member}`, which is not a service of \
                     the app; its services are: {}",
                    services.join(", ")
                ));
            }
            if let Some(other) = group_of.insert(member, group) {
                return Err(format!(
                    "ovation.toml: service `{member}` is in two groups, `{other}` and `{group}`; \
                     a service runs in one"
                ));
            }
        }
    }
    let mut units: Vec<Unit> = Vec::new();
    for service in services {
        match group_of.get(service.as_str()) {
            Some(group) => {
                if !units.iter().any(|u| u.name == *group) {
                    units.push(Unit {
                        name: (*group).to_owned(),
                        services: manifest.groups[*group].clone(),
                        gateway: false,
                        replicas: 1,
                    });
                }
            }
            None => units.push(Unit {
                name: service.clone(),
                services: vec![service.clone()],
                gateway: false,
                replicas: 1,
            }),
        }
    }
    for (name, &n) in &manifest.replicas {
        let Some(unit) = units.iter_mut().find(|u| u.name == *name) else {
            let grouped = group_of
                .get(name.as_str())
                .map(|g| format!(" (`{name}` runs in group `{g}`: give the group's count)"))
                .unwrap_or_default();
            return Err(format!(
                "replicas: `{name}` is not a process of the deployment{grouped}; the processes \
                 are: {}",
                units
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if !(1..=MAX_REPLICAS).contains(&n) {
            return Err(format!(
                "replicas: `{name}` = {n}; a process runs 1 to {MAX_REPLICAS} times"
            ));
        }
        unit.replicas = n;
    }
    units.push(Unit {
        name: GATEWAY.to_owned(),
        services: Vec::new(),
        gateway: true,
        replicas: 1,
    });
    Ok(units)
}

/// Group names become process, file and Kubernetes object names: DNS labels.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        return Err(format!(
            "ovation.toml: group name `{name}` must be lowercase letters, digits and `-` \
             (at most 40), as it names processes and Kubernetes objects"
        ));
    }
    if name.starts_with("ovation-") {
        return Err(format!(
            "ovation.toml: group name `{name}`: names starting with `ovation-` are Ovation's own"
        ));
    }
    Ok(())
}

/// A service name as a DNS label (`_` is common in Rust module names, not allowed there).
pub fn dns_label(name: &str) -> String {
    name.replace('_', "-")
}

/// Builds the app at `manifest` in release mode, showing cargo's progress, and returns the
/// path of its binary.
pub fn build_release(manifest: &Path) -> Result<PathBuf, CliError> {
    build(manifest, true)
}

/// Builds the app at `manifest` (release or dev profile), showing cargo's progress, and
/// returns the path of its binary.
pub fn build(manifest: &Path, release: bool) -> Result<PathBuf, CliError> {
    let profile = if release { "release" } else { "dev" };
    eprintln!("building {} ({profile} profile)", manifest.display());
    let mut command = Command::new(crate::cargo());
    // Plain JSON: the compiler's messages come to us, and we print them (and keep the first
    // error for whoever shows the build's outcome, such as the dashboard's status bar).
    command.args(["build", "--message-format=json"]);
    if release {
        command.arg("--release");
    } else if links_dylib(manifest)? {
        // Development only: the binary links the framework as one shared library.
        command.args(["--features", DYLIB]);
    }
    let mut child = command
        .arg("--manifest-path")
        .arg(manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CliError::MissingTool(format!(
                "cannot run cargo: {e}\n  install Rust with rustup (https://rustup.rs), or set CARGO"
            ))
        })?;
    let wanted = std::fs::canonicalize(manifest)
        .map_err(|e| format!("cannot resolve {}: {e}", manifest.display()))?;
    let mut executables = Vec::new();
    let mut first_error: Option<String> = None;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-message" {
            let rendered = message["message"]["rendered"].as_str().unwrap_or_default();
            eprint!("{rendered}");
            if message["message"]["level"] == "error" && first_error.is_none() {
                first_error = Some(rendered.lines().next().unwrap_or_default().to_owned());
            }
            continue;
        }
        let is_bin = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        let ours = message["manifest_path"]
            .as_str()
            .is_some_and(|p| Path::new(p) == wanted);
        if message["reason"] == "compiler-artifact"
            && is_bin
            && ours
            && let Some(exe) = message["executable"].as_str()
        {
            executables.push(PathBuf::from(exe));
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cargo did not finish: {e}"))?;
    if !status.success() {
        return Err(CliError::Build(match first_error {
            Some(error) => format!("the build failed: {error} (the compiler's messages are above)"),
            None => format!("the build failed ({status}); cargo's messages are above"),
        }));
    }
    match executables.as_slice() {
        [exe] => Ok(exe.clone()),
        [] => Err(CliError::Usage(format!(
            "{} builds no binary: an Ovation app has a `src/main.rs` calling `ovation::run()`",
            manifest.display()
        ))),
        many => Err(CliError::Usage(format!(
            "{} builds several binaries ({}); deploy needs exactly one",
            manifest.display(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The crate (and feature) that links Ovation as one shared library: an app that has it as an
/// optional dependency is built with it in development (`ovation run`, `ovation check`), which
/// makes each rebuild's link a fraction of a static one. Releases stand alone.
const DYLIB: &str = "ovation-dylib";

/// Whether the app's manifest has `ovation-dylib` as an optional dependency.
fn links_dylib(manifest: &Path) -> Result<bool, CliError> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let parsed: toml::Table = text
        .parse()
        .map_err(|e| CliError::Usage(format!("{} is not valid TOML: {e}", manifest.display())))?;
    let optional = parsed
        .get("dependencies")
        .and_then(|d| d.get(DYLIB))
        .and_then(|d| d.get("optional"))
        .and_then(toml::Value::as_bool);
    Ok(optional == Some(true))
}

/// A command that runs an app's binary. One built with `ovation-dylib` finds the framework's
/// shared library among the binary's dependencies, and Rust's standard library in the
/// toolchain that built it, as under `cargo run`.
pub fn app_command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command.envs(library_path(exe));
    command
}

/// The loader's search path for `exe`, when it is a binary built with `ovation-dylib`.
pub fn library_path(exe: &Path) -> Option<(&'static str, std::ffi::OsString)> {
    use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
    let var = if cfg!(target_os = "macos") {
        "DYLD_FALLBACK_LIBRARY_PATH"
    } else if cfg!(windows) {
        "PATH"
    } else {
        "LD_LIBRARY_PATH"
    };
    let deps = exe.parent()?.join("deps");
    let library = format!("{DLL_PREFIX}{}{DLL_SUFFIX}", DYLIB.replace('-', "_"));
    if !deps.join(library).is_file() {
        return None;
    }
    // The toolchain's libraries: `rustc` from where the binary was built, so a
    // `rust-toolchain.toml` of the app's picks the same toolchain.
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let std_dir = Command::new(rustc)
        .args(["--print", "target-libdir"])
        .current_dir(exe.parent()?)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let inherited = std::env::var_os(var);
    let paths = [Some(deps), std_dir]
        .into_iter()
        .flatten()
        .chain(inherited.iter().flat_map(std::env::split_paths));
    Some((var, std::env::join_paths(paths).ok()?))
}

/// Asks the app's binary for its model.
pub fn describe(exe: &Path) -> Result<AppModel, String> {
    serde_json::from_value(ask(exe, "1")?).map_err(|e| {
        format!(
            "{} printed no app model under OVATION_DESCRIBE=1 ({e}): is its main \
             `ovation::run()`?",
            exe.display()
        )
    })
}

/// What the app's binary finds wrong with itself (`OVATION_DESCRIBE=check`).
#[derive(Debug, serde::Deserialize)]
pub struct CheckReport {
    pub services: Vec<String>,
    pub endpoints: usize,
    pub problems: Vec<String>,
}

/// Asks the app's binary what is wrong with it.
pub fn describe_check(exe: &Path) -> Result<CheckReport, String> {
    serde_json::from_value(ask(exe, "check")?).map_err(|e| {
        format!(
            "{} printed no check report under OVATION_DESCRIBE=check ({e}): is its main \
             `ovation::run()`, with an Ovation as recent as this CLI?",
            exe.display()
        )
    })
}

/// Asks the app's binary for the OpenAPI document of its public endpoints.
pub fn describe_openapi(exe: &Path) -> Result<serde_json::Value, String> {
    ask(exe, "openapi")
}

/// Runs the app's binary with `OVATION_DESCRIBE=what` and parses what it prints.
fn ask(exe: &Path, what: &str) -> Result<serde_json::Value, String> {
    let output = app_command(exe)
        .env("OVATION_DESCRIBE", what)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} did not describe itself ({}): is it an Ovation app whose main calls \
             `ovation::run()`?\n{}",
            exe.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "{} printed no JSON under OVATION_DESCRIBE={what} ({e}): is its main \
             `ovation::run()`, with an Ovation as recent as this CLI?",
            exe.display()
        )
    })
}

/// A fresh service-auth key: 32 random bytes, hex-encoded.
pub fn generate_key() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    hex::encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> Vec<String> {
        ["users", "products", "orders", "checkout"]
            .map(String::from)
            .to_vec()
    }

    fn manifest(toml: &str) -> AppManifest {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn without_groups_each_service_gets_a_process_and_the_gateway_comes_last() {
        let units = plan(&services(), &AppManifest::default()).unwrap();
        let names: Vec<_> = units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            ["users", "products", "orders", "checkout", "ovation-gateway"]
        );
        assert!(units[4].gateway && units[4].services.is_empty());
        assert_eq!(units[0].services, ["users"]);
    }

    #[test]
    fn groups_share_a_process() {
        let m = manifest("[groups]\ncatalog = [\"products\", \"users\"]\n");
        let units = plan(&services(), &m).unwrap();
        assert_eq!(units[0].name, "catalog");
        assert_eq!(units[0].services, ["products", "users"]);
        assert_eq!(units.len(), 4);
    }

    #[test]
    fn bad_groups_are_explained() {
        let err = plan(&services(), &manifest("[groups]\na = [\"nope\"]\n")).unwrap_err();
        assert!(err.contains("`nope`, which is not a service"), "{err}");
        let err = plan(
            &services(),
            &manifest("[groups]\na = [\"users\"]\nb = [\"users\"]\n"),
        )
        .unwrap_err();
        assert!(err.contains("in two groups"), "{err}");
        let err = plan(&services(), &manifest("[groups]\nBad_Name = [\"users\"]\n")).unwrap_err();
        assert!(err.contains("lowercase"), "{err}");
        let err = plan(&services(), &manifest("[groups]\norders = [\"users\"]\n")).unwrap_err();
        assert!(err.contains("name of a service"), "{err}");
        let err = plan(&services(), &manifest("[groups]\nx = []\n")).unwrap_err();
        assert!(err.contains("lists no service"), "{err}");
        let err = toml::from_str::<AppManifest>("[grups]\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn replicas_apply_to_processes_and_the_flag_overrides_the_file() {
        let mut m =
            manifest("[groups]\ncatalog = [\"products\", \"users\"]\n[replicas]\ncatalog = 3\n");
        parse_replicas("orders=2", &mut m.replicas).unwrap();
        let units = plan(&services(), &m).unwrap();
        let count = |name: &str| units.iter().find(|u| u.name == name).unwrap().replicas;
        assert_eq!(
            (count("catalog"), count("orders"), count("checkout")),
            (3, 2, 1)
        );
        parse_replicas("catalog=1", &mut m.replicas).unwrap();
        assert_eq!(plan(&services(), &m).unwrap()[0].replicas, 1);

        let err = plan(&services(), &manifest("[replicas]\nnope = 2\n")).unwrap_err();
        assert!(err.contains("`nope` is not a process"), "{err}");
        let err = plan(
            &services(),
            &manifest("[groups]\ncatalog = [\"users\"]\n[replicas]\nusers = 2\n"),
        )
        .unwrap_err();
        assert!(err.contains("runs in group `catalog`"), "{err}");
        let err = plan(&services(), &manifest("[replicas]\nusers = 0\n")).unwrap_err();
        assert!(err.contains("1 to 16"), "{err}");
        assert!(
            parse_replicas("users", &mut m.replicas)
                .unwrap_err()
                .contains("NAME=COUNT")
        );
        assert!(
            parse_replicas("users=two", &mut m.replicas)
                .unwrap_err()
                .contains("not a count")
        );
    }
}
