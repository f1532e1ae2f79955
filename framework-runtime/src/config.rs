//! The runtime config: which services this process hosts, where it listens, where the other
//! services and the database server are.
//!
//! Read from the JSON file `OVATION_CONFIG` names (the CLI writes one per process), then
//! overridden by the environment, so a bare `cargo run` works with defaults:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OVATION_CONFIG` | path of a JSON config file | none |
//! | `OVATION_LISTEN` | listen address | `127.0.0.1:4000` |
//! | `OVATION_HOSTED_SERVICES` | comma-separated services this process hosts (`none`: none) | all |
//! | `OVATION_SERVICE_URLS` | `name=url,...`: where the services not hosted here run (a name given twice: replicas, called in turn) | none |
//! | `DATABASE_URL` | Postgres server on which the service databases are created | managed local Postgres |
//! | `OVATION_DATA_DIR` | folder of the managed Postgres cluster | `.ovation/` |
//! | `OVATION_SERVICE_AUTH_KEY` | key signing service-to-service calls | random per process |
//! | `OVATION_SERVICE_AUTH_ACCEPTED_KEYS` | comma-separated keys also accepted (a rotation) | none |
//! | `REDIS_URL` | Redis server the caches live on, `redis://[:password@]host:port/[db]` | managed local `redis-server` |
//! | `OVATION_CRON` | `false`: cron jobs do not run on their schedule in this process | `true` (`false` in tests) |
//! | `OVATION_PUBSUB` | `postgres`, `nats` (managed `nats-server`) or `nats://host:port` | `postgres` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | OTLP/HTTP collector receiving traces, e.g. `http://127.0.0.1:4318` | none: no export |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION` | `gzip`: traces and metrics are sent gzip-compressed; `none` | `none` |
//! | `OVATION_TRACE_SAMPLING` | share of traces exported, 0.0 to 1.0 | 1.0 |
//! | `OVATION_GATEWAY` | `true`: also route public endpoints of services hosted elsewhere | `false` |
//! | `OVATION_DEPLOYMENT` | `true`: a deployment, where a secret that is not set stops start-up | `false` |
//! | `OVATION_CORS` | the whole `cors` setting, as JSON (`ovation run` passes `[cors]` of `ovation.toml` so) | none |
//! | `OVATION_CORS_ORIGINS` | comma-separated origins allowed cross-origin access (`cors.allowed_origins`) | none |
//! | `OVATION_SECRET_<NAME>` | the value of secret `<Name>` (`SessionKey` → `OVATION_SECRET_SESSION_KEY`) | see [`crate::secrets`] |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The runtime config of one process. Every field has a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (default `127.0.0.1:4000`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The services this process hosts; `None` hosts every service of the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_services: Option<Vec<String>>,
    /// Service discovery: base URL of each service hosted by another process; several,
    /// separated by commas, for a service with replicas (requests take them in turn).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, String>,
    /// The Postgres server on which service databases are created. `None`: managed Postgres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// The Redis server the app's caches live on. `None`: a managed `redis-server` (only
    /// started when the app declares a cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Folder of the managed Postgres cluster (default `.ovation/` under the current folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Key for signing service-to-service calls. Processes of one app must share it; without
    /// it each process picks a random key, so its private endpoints answer no other process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_auth_key: Option<String>,
    /// Keys whose signatures are still accepted besides `service_auth_key`'s, while a key is
    /// rotated: first add the new key here in every process, then make it `service_auth_key`
    /// (the old one listed here), then remove the old one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_auth_accepted_keys: Vec<String>,
    /// Largest request body accepted, in bytes (default 1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_limit_bytes: Option<usize>,
    /// Longest a request may run before it fails with `deadline_exceeded` (default 60 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_secs: Option<u64>,
    /// Longest a call to another process may take (default 30 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_timeout_secs: Option<u64>,
    /// How long a call keeps retrying a process whose port refuses connections (one that is
    /// restarting) before it fails with `unavailable` (default 5,000 ms; 0: no retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_retry_ms: Option<u64>,
    /// Longest a client may take to send a request's headers before its connection is closed:
    /// the defence against slow-loris clients (default 10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_secs: Option<u64>,
    /// Longest a client may take to send a request's body, counted within the request timeout,
    /// before it is answered 408 and its connection closed (default 10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_read_timeout_secs: Option<u64>,
    /// How long a stream's `send` waits for a client that reads nothing before the client is
    /// disconnected (default 5 s; see `ovation::stream`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_send_timeout_ms: Option<u64>,
    /// On SIGTERM, how long in-flight requests may run before their connections are closed
    /// (default 30 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// Connections per service database pool (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_db_connections: Option<u32>,
    /// The Pub/Sub backend: `postgres` (default), `nats` (a managed `nats-server`), or a
    /// `nats://host:port` URL.
    #[serde(skip_serializing_if = "PubSubBackend::is_default")]
    pub pubsub: PubSubBackend,
    /// Whether the cron jobs of the services hosted here run on their schedule (default: yes;
    /// in `#[ovation::test]`, no). Jobs can still be run by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<bool>,
    /// Gateway mode: besides its own services, this process serves every public (and `auth`)
    /// endpoint of the services hosted elsewhere by forwarding the request to the process
    /// service discovery names. Private endpoints are never forwarded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gateway: bool,
    /// The OTLP/HTTP collector traces are exported to (its base URL; `/v1/traces` is added).
    /// `None`: traces are not exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The share of traces exported, from 0.0 to 1.0 (default 1.0). A trace started elsewhere
    /// follows its caller's decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_sampling: Option<f64>,
    /// Whether what is sent to `otlp_endpoint` is gzip-compressed
    /// (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`; default: not, as OpenTelemetry's exporters).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub otlp_gzip: bool,
    /// How often metrics are exported to `otlp_endpoint`'s `/v1/metrics`, in milliseconds
    /// (`OTEL_METRIC_EXPORT_INTERVAL`; default 60 000, OpenTelemetry's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_export_interval_ms: Option<u64>,
    /// Part of a deployment (`ovation deploy` sets it): a secret that is not set stops
    /// start-up, where in development it gets a generated value (see [`crate::secrets`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deployment: bool,
    /// Which web pages of other origins may call the app's endpoints from a browser. By
    /// default none: no CORS headers are sent, and browsers refuse such calls.
    #[serde(skip_serializing_if = "Cors::is_default")]
    pub cors: Cors,
}

/// Cross-origin access from browsers (CORS), answered for preflights and on every response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cors {
    /// Origins allowed, e.g. `https://shop.example.com` (scheme, host and port, no path).
    /// `*` allows every origin, but not with `allow_credentials`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Request headers allowed besides `Content-Type` (e.g. `Authorization`, which bearer
    /// tokens need).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read besides the CORS-safelisted ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_headers: Vec<String>,
    /// Whether cookies and `Authorization` travel with cross-origin requests.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer, in seconds (default 600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
}

impl Cors {
    fn is_default(&self) -> bool {
        *self == Cors::default()
    }
}

/// Where Pub/Sub messages travel. Written in a config as `postgres`, `nats` or a
/// `nats://host:port` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PubSubBackend {
    /// Tables in the framework's own Postgres database (the default).
    #[default]
    Postgres,
    /// JetStream on a `nats-server` Ovation runs itself, beside its managed Postgres.
    ManagedNats,
    /// JetStream on the NATS server at this `nats://` URL.
    Nats(String),
}

impl PubSubBackend {
    fn is_default(&self) -> bool {
        *self == PubSubBackend::Postgres
    }
}

impl std::str::FromStr for PubSubBackend {
    type Err = String;

    fn from_str(text: &str) -> Result<PubSubBackend, String> {
        match text {
            "postgres" => Ok(PubSubBackend::Postgres),
            "nats" => Ok(PubSubBackend::ManagedNats),
            url if url.starts_with("nats://") => Ok(PubSubBackend::Nats(url.to_owned())),
            _ => Err("expected `postgres`, `nats` or a nats://host:port URL".into()),
        }
    }
}

impl TryFrom<String> for PubSubBackend {
    type Error = String;

    fn try_from(text: String) -> Result<PubSubBackend, String> {
        text.parse()
    }
}

impl From<PubSubBackend> for String {
    fn from(backend: PubSubBackend) -> String {
        match backend {
            PubSubBackend::Postgres => "postgres".into(),
            PubSubBackend::ManagedNats => "nats".into(),
            PubSubBackend::Nats(url) => url,
        }
    }
}

/// Why the config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path} (from OVATION_CONFIG): {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} (from OVATION_CONFIG) is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{var}={value:?} is not valid: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
}

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:4000";

impl Config {
    /// The config of this process: the `OVATION_CONFIG` file, then the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut config = match std::env::var_os("OVATION_CONFIG") {
            Some(path) => Config::from_file(PathBuf::from(path))?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Reads a JSON config file.
    pub fn from_file(path: PathBuf) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path, source })
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let env_err = |var: &'static str, value: &str, reason: String| ConfigError::Env {
            var,
            value: value.to_owned(),
            reason,
        };
        if let Some(v) = var("OVATION_LISTEN").filter(|v| !v.is_empty()) {
            self.listen = Some(v.parse().map_err(|e| {
                env_err(
                    "OVATION_LISTEN",
                    &v,
                    format!("{e} (expected e.g. 127.0.0.1:4000)"),
                )
            })?);
        }
        if let Some(v) = var("OVATION_HOSTED_SERVICES").filter(|v| !v.is_empty()) {
            // `none`: a process hosting no service, e.g. a gateway only.
            self.hosted_services = Some(
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty() && s != "none")
                    .collect(),
            );
        }
        if let Some(v) = var("OVATION_SERVICE_URLS").filter(|v| !v.is_empty()) {
            // Each service named here replaces the config file's URLs for it; a name given
            // again is another replica.
            let mut from_env: BTreeMap<String, String> = BTreeMap::new();
            for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, url) = pair.split_once('=').ok_or_else(|| {
                    env_err(
                        "OVATION_SERVICE_URLS",
                        &v,
                        format!("`{pair}` is not name=url"),
                    )
                })?;
                from_env
                    .entry(name.trim().to_owned())
                    .and_modify(|urls| {
                        urls.push(',');
                        urls.push_str(url.trim());
                    })
                    .or_insert_with(|| url.trim().to_owned());
            }
            self.services.extend(from_env);
        }
        if let Some(v) = var("DATABASE_URL").filter(|v| !v.is_empty()) {
            self.database_url = Some(v);
        }
        if let Some(v) = var("REDIS_URL").filter(|v| !v.is_empty()) {
            self.redis_url = Some(v);
        }
        if let Some(v) = var("OVATION_DATA_DIR").filter(|v| !v.is_empty()) {
            self.data_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("OVATION_SERVICE_AUTH_KEY").filter(|v| !v.is_empty()) {
            self.service_auth_key = Some(v);
        }
        if let Some(v) = var("OVATION_SERVICE_AUTH_ACCEPTED_KEYS").filter(|v| !v.is_empty()) {
            self.service_auth_accepted_keys = v
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = var("OVATION_PUBSUB").filter(|v| !v.is_empty()) {
            self.pubsub = v
                .parse()
                .map_err(|e: String| env_err("OVATION_PUBSUB", &v, e))?;
        }
        if let Some(v) = var("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.is_empty()) {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(env_err(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    &v,
                    "expected an http:// or https:// URL of an OTLP/HTTP collector".into(),
                ));
            }
            self.otlp_endpoint = Some(v);
        }
        if let Some(v) = var("OTEL_EXPORTER_OTLP_COMPRESSION").filter(|v| !v.is_empty()) {
            self.otlp_gzip = match v.trim() {
                "gzip" => true,
                "none" => false,
                _ => {
                    return Err(env_err(
                        "OTEL_EXPORTER_OTLP_COMPRESSION",
                        &v,
                        "expected `gzip` or `none`".into(),
                    ));
                }
            };
        }
        if let Some(v) = var("OTEL_METRIC_EXPORT_INTERVAL").filter(|v| !v.is_empty()) {
            let ms: u64 = v.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                env_err(
                    "OTEL_METRIC_EXPORT_INTERVAL",
                    &v,
                    "expected a number of milliseconds above 0".into(),
                )
            })?;
            self.metric_export_interval_ms = Some(ms);
        }
        if let Some(v) = var("OVATION_TRACE_SAMPLING").filter(|v| !v.is_empty()) {
            let ratio: f64 = v
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    env_err(
                        "OVATION_TRACE_SAMPLING",
                        &v,
                        "expected a number from 0.0 to 1.0".into(),
                    )
                })?;
            self.trace_sampling = Some(ratio);
        }
        if let Some(v) = var("OVATION_CRON").filter(|v| !v.is_empty()) {
            self.cron = Some(match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(env_err(
                        "OVATION_CRON",
                        &v,
                        "expected `true` or `false`".into(),
                    ));
                }
            });
        }
        for (name, field) in [
            ("OVATION_GATEWAY", &mut self.gateway),
            ("OVATION_DEPLOYMENT", &mut self.deployment),
        ] {
            if let Some(v) = var(name).filter(|v| !v.is_empty()) {
                *field = match v.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(env_err(name, &v, "expected `true` or `false`".into())),
                };
            }
        }
        if let Some(v) = var("OVATION_CORS").filter(|v| !v.is_empty()) {
            self.cors = serde_json::from_str(&v).map_err(|e| {
                env_err(
                    "OVATION_CORS",
                    &v,
                    format!("expected the `cors` setting as JSON: {e}"),
                )
            })?;
        }
        if let Some(v) = var("OVATION_CORS_ORIGINS").filter(|v| !v.is_empty()) {
            self.cors.allowed_origins = v
                .split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect();
        }
        Ok(())
    }

    pub(crate) fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"))
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".ovation"))
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.body_limit_bytes.unwrap_or(1024 * 1024)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.unwrap_or(60))
    }

    pub(crate) fn stream_send_timeout(&self) -> Duration {
        Duration::from_millis(self.stream_send_timeout_ms.unwrap_or(5_000))
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs.unwrap_or(30))
    }

    pub(crate) fn connect_retry(&self) -> Duration {
        Duration::from_millis(self.connect_retry_ms.unwrap_or(5_000))
    }

    pub(crate) fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs.unwrap_or(10).max(1))
            .min(self.request_timeout())
    }

    pub(crate) fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs.unwrap_or(10).max(1))
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs.unwrap_or(30))
    }

    pub(crate) fn max_db_connections(&self) -> u32 {
        self.max_db_connections.unwrap_or(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_overrides_defaults() {
        let mut c = Config::default();
        c.apply_env(env(&[
            ("OVATION_LISTEN", "127.0.0.1:5000"),
            ("OVATION_HOSTED_SERVICES", "users, products"),
            (
                "OVATION_SERVICE_URLS",
                "orders=http://127.0.0.1:1,gateway=http://127.0.0.1:2",
            ),
        ]))
        .unwrap();
        assert_eq!(c.listen_addr().port(), 5000);
        assert_eq!(
            c.hosted_services.as_deref(),
            Some(&["users".into(), "products".into()][..])
        );
        assert_eq!(c.services["gateway"], "http://127.0.0.1:2");

        let mut gateway = Config::default();
        gateway
            .apply_env(env(&[
                ("OVATION_HOSTED_SERVICES", "none"),
                ("OVATION_GATEWAY", "true"),
            ]))
            .unwrap();
        assert_eq!(gateway.hosted_services, Some(vec![]));
        assert!(gateway.gateway);
        let err = Config::default()
            .apply_env(env(&[("OVATION_GATEWAY", "maybe")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("expected `true` or `false`"),
            "{err}"
        );
    }

    #[test]
    fn a_service_named_twice_has_replicas_and_the_environment_replaces_the_file() {
        let mut c = Config::default();
        c.services
            .insert("users".into(), "http://127.0.0.1:9".into());
        c.services
            .insert("orders".into(), "http://127.0.0.1:8".into());
        c.apply_env(env(&[(
            "OVATION_SERVICE_URLS",
            "users=http://127.0.0.1:1, users=http://127.0.0.1:2",
        )]))
        .unwrap();
        assert_eq!(c.services["users"], "http://127.0.0.1:1,http://127.0.0.1:2");
        assert_eq!(c.services["orders"], "http://127.0.0.1:8");
        let replicas = crate::app::service_urls(&c.services).unwrap();
        let picked: Vec<u16> = (0..4)
            .map(|_| replicas["users"].pick().port().unwrap())
            .collect();
        assert_eq!(picked, [1, 2, 1, 2], "taken in turn");
    }

    #[test]
    fn bad_listen_address_names_the_variable() {
        let err = Config::default()
            .apply_env(env(&[("OVATION_LISTEN", "nope")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("OVATION_LISTEN=\"nope\" is not valid"),
            "{err}"
        );
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let err = serde_json::from_str::<Config>(r#"{"lisen": "127.0.0.1:1"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
    }

    #[test]
    fn the_pubsub_backend_is_one_of_three_and_reads_as_it_is_written() {
        for (text, backend) in [
            ("postgres", PubSubBackend::Postgres),
            ("nats", PubSubBackend::ManagedNats),
            (
                "nats://10.0.0.1:4222",
                PubSubBackend::Nats("nats://10.0.0.1:4222".into()),
            ),
        ] {
            let config: Config =
                serde_json::from_str(&format!(r#"{{"pubsub": "{text}"}}"#)).unwrap();
            assert_eq!(config.pubsub, backend);
            let mut from_env = Config::default();
            from_env
                .apply_env(env(&[("OVATION_PUBSUB", text)]))
                .unwrap();
            assert_eq!(from_env.pubsub, backend);
            let written = serde_json::to_value(&config).unwrap();
            assert_eq!(
                written.get("pubsub").and_then(|v| v.as_str()),
                (backend != PubSubBackend::Postgres).then_some(text),
                "the default is not written"
            );
        }
        let err = serde_json::from_str::<Config>(r#"{"pubsub": "kafka"}"#).unwrap_err();
        assert!(
            err.to_string().contains("expected `postgres`, `nats`"),
            "{err}"
        );
        let err = Config::default()
            .apply_env(env(&[("OVATION_PUBSUB", "kafka")]))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("OVATION_PUBSUB=\"kafka\""),
            "{err}"
        );
    }
}
