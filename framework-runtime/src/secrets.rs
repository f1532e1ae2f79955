//! Secrets: values an app needs and must not keep in its code or config, such as a key that
//! signs session tokens.
//!
//! ```ignore
//! static SESSION_KEY: Secret = ovation::secret!("SessionKey");
//! ...
//! let key: &str = SESSION_KEY.expose();
//! ```
//!
//! Every secret the app declares is read at start-up, from the first place that has it:
//!
//! 1. the environment: `OVATION_SECRET_<NAME>`, the name in upper snake case
//!    (`SessionKey` → `OVATION_SECRET_SESSION_KEY`); in Kubernetes the manifests set it from
//!    the Secret `<app>-secrets` (key: the secret's name);
//! 2. the app's local secrets file, `<app>/.ovation/secrets.json` (mode 0600, under the
//!    git-ignored `.ovation/`), which `ovation secret set NAME` writes;
//! 3. in development only (`cargo run`, `ovation run`, tests): a generated random value, kept
//!    in that file so it survives restarts, and said once in the log.
//!
//! In a deployment (`ovation deploy`, Kubernetes: `deployment` in the config) a secret found
//! nowhere stops start-up, naming it and how to set it. A secret's value never appears in
//! `Debug` output, the app model, logs or traces.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A secret the app declares with [`crate::secret!`].
#[derive(Clone, Copy)]
pub struct Secret(&'static SecretDef);

/// What `secret!` registers: the name and where the app's local secrets file is.
#[doc(hidden)]
pub struct SecretDef {
    pub name: &'static str,
    /// The app crate's folder (`CARGO_MANIFEST_DIR` where it was built).
    pub app_dir: &'static str,
    pub value: OnceLock<String>,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct SecretEntry(pub &'static SecretDef);

inventory::collect!(SecretEntry);

impl std::fmt::Debug for SecretDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Declares a secret: `static KEY: Secret = ovation::secret!("SessionKey");`. The name is
/// what `ovation secret set` and the Kubernetes Secret use; see [`secrets`](crate::secrets).
#[macro_export]
macro_rules! secret {
    ($name:literal) => {{
        static __OVATION_SECRET: $crate::secrets::SecretDef = $crate::secrets::SecretDef {
            name: $name,
            app_dir: ::core::env!("CARGO_MANIFEST_DIR"),
            value: ::std::sync::OnceLock::new(),
        };
        $crate::__private::inventory::submit! {
            $crate::secrets::SecretEntry(&__OVATION_SECRET)
        }
        $crate::secrets::Secret::__new(&__OVATION_SECRET)
    }};
}

impl Secret {
    #[doc(hidden)]
    pub const fn __new(def: &'static SecretDef) -> Secret {
        Secret(def)
    }

    /// The secret's name.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The value. Read at start-up; outside an app (a unit test without a runtime) it is read
    /// on first use, as in development.
    pub fn expose(&self) -> &'static str {
        let def = self.0;
        def.value
            .get_or_init(|| find(def).unwrap_or_else(|| generate(def)))
    }
}

/// Every secret the app declares.
pub(crate) fn declared() -> Vec<&'static SecretDef> {
    let mut all: Vec<&'static SecretDef> = inventory::iter::<SecretEntry>
        .into_iter()
        .map(|e| e.0)
        .collect();
    all.sort_by_key(|d| d.name);
    all.dedup_by_key(|d| d.name);
    all
}

/// The environment variable holding secret `name`: `SessionKey` → `OVATION_SECRET_SESSION_KEY`.
pub fn env_var(name: &str) -> String {
    let mut out = String::from("OVATION_SECRET_");
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c.is_ascii_uppercase()
            && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push('_');
        }
        out.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        });
        previous = Some(c);
    }
    out
}

/// Whether `name` can name a secret: a letter, then letters, digits and `_`.
pub fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The local secrets file of the app in `app_dir` (`OVATION_SECRETS_FILE` overrides it).
pub fn local_file(app_dir: &str) -> PathBuf {
    match std::env::var_os("OVATION_SECRETS_FILE") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(app_dir).join(".ovation").join("secrets.json"),
    }
}

/// Reads every declared secret: the start-up check. In a deployment, one set nowhere is an
/// error naming every such secret and how to set it.
pub(crate) fn load_all(deployment: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    for def in declared() {
        if !valid_name(def.name) {
            return Err(format!(
                "secret name {:?} is not valid: use letters, digits and `_`, starting with a \
                 letter (e.g. \"SessionKey\")",
                def.name
            ));
        }
        if def.value.get().is_some() {
            continue;
        }
        match find(def) {
            Some(value) => {
                let _ = def.value.set(value);
            }
            None if deployment => missing.push(format!(
                "secret `{0}` is not set: set {1} in the environment (in Kubernetes: key `{0}` \
                 of the Secret the manifests reference), or run `ovation secret set {0}` in \
                 the app's folder",
                def.name,
                env_var(def.name)
            )),
            None => {
                let _ = def.value.set(generate(def));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// The secret's value from the environment or the local file.
fn find(def: &SecretDef) -> Option<String> {
    if let Some(value) = std::env::var(env_var(def.name))
        .ok()
        .filter(|v| !v.is_empty())
    {
        return Some(value);
    }
    read_file(&local_file(def.app_dir))
        .ok()
        .and_then(|mut m| m.remove(def.name))
}

/// A development value for a secret set nowhere: random, kept in the local file (where a
/// process starting at the same time may have put one first).
fn generate(def: &SecretDef) -> String {
    let file = local_file(def.app_dir);
    let generated = hex::encode(rand::random::<[u8; 32]>());
    match store(&file, def.name, &generated, false) {
        Ok(value) => {
            if value == generated {
                tracing::info!(
                    "secret `{}` is not set: using a generated development value, kept in {} \
                     (set {} or run `ovation secret set {}` to choose one)",
                    def.name,
                    file.display(),
                    env_var(def.name),
                    def.name
                );
            }
            value
        }
        Err(e) => {
            tracing::warn!(
                "secret `{}` is not set, and {} cannot be written ({e}): using a generated \
                 value for this process only",
                def.name,
                file.display()
            );
            generated
        }
    }
}

/// The secrets in `file` (none when it does not exist).
pub fn read_file(file: &std::path::Path) -> std::io::Result<BTreeMap<String, String>> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a JSON object of strings: {e}", file.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// Sets `name` to `value` in `file` (mode 0600, its folder created 0700), under a lock so
/// processes starting together agree. Unless `replace`, a value already there wins; the value
/// the file ends up with is returned.
pub fn store(
    file: &std::path::Path,
    name: &str,
    value: &str,
    replace: bool,
) -> std::io::Result<String> {
    update(file, |secrets| match secrets.get(name) {
        Some(existing) if !replace => (existing.clone(), false),
        _ => {
            secrets.insert(name.to_owned(), value.to_owned());
            (value.to_owned(), true)
        }
    })
}

/// Removes `name` from `file`; whether it was there.
pub fn remove(file: &std::path::Path, name: &str) -> std::io::Result<bool> {
    update(file, |secrets| {
        let removed = secrets.remove(name).is_some();
        (removed, removed)
    })
}

/// Runs `change` on the secrets of `file` under the folder's lock, and writes them back when
/// it says it changed them.
fn update<T>(
    file: &std::path::Path,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> (T, bool),
) -> std::io::Result<T> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join("secrets.lock"))?;
    lock.lock()?;
    let mut secrets = read_file(file)?;
    let (outcome, changed) = change(&mut secrets);
    if changed {
        write_file(file, &secrets)?;
    }
    Ok(outcome)
}

/// Replaces `file` with `secrets`, atomically, mode 0600.
fn write_file(file: &std::path::Path, secrets: &BTreeMap<String, String>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = file.with_extension("json.tmp");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    out.write_all(&serde_json::to_vec_pretty(secrets).map_err(std::io::Error::other)?)?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_environment_variables() {
        assert_eq!(env_var("SessionKey"), "OVATION_SECRET_SESSION_KEY");
        assert_eq!(env_var("StripeAPIKey"), "OVATION_SECRET_STRIPE_APIKEY");
        assert_eq!(env_var("key2Name"), "OVATION_SECRET_KEY2_NAME");
        assert_eq!(env_var("db_password"), "OVATION_SECRET_DB_PASSWORD");
        assert!(valid_name("SessionKey"));
        assert!(!valid_name("2Key") && !valid_name("a-b") && !valid_name(""));
    }

    #[test]
    fn the_file_keeps_the_first_value_unless_replaced_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ovation-secrets-{}", std::process::id()));
        let file = dir.join("secrets.json");
        assert_eq!(store(&file, "A", "one", false).unwrap(), "one");
        assert_eq!(store(&file, "A", "two", false).unwrap(), "one");
        assert_eq!(store(&file, "A", "three", true).unwrap(), "three");
        store(&file, "B", "b", false).unwrap();
        let all = read_file(&file).unwrap();
        assert_eq!(all.get("A").map(String::as_str), Some("three"));
        assert_eq!(all.len(), 2);
        assert!(remove(&file, "B").unwrap());
        assert!(!remove(&file, "B").unwrap());
        assert_eq!(read_file(&file).unwrap().len(), 1);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_never_shows_the_value() {
        static DEF: SecretDef = SecretDef {
            name: "Key",
            app_dir: "/nonexistent",
            value: OnceLock::new(),
        };
        let _ = DEF.value.set("hunter2".into());
        let text = format!("{:?}", Secret(&DEF));
        assert!(
            !text.contains("hunter2") && text.contains("redacted"),
            "{text}"
        );
    }
}
