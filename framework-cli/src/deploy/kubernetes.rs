//! `ovation deploy --target kubernetes --out DIR`: manifests for a cluster, and a Dockerfile.
//!
//! What is written (one file per object group, YAML, for `kubectl apply -f DIR`):
//!
//! - `config.yaml`: a ConfigMap with each process's runtime config (`<unit>.json`): its
//!   services, service discovery by Service DNS name, NATS as the Pub/Sub backend;
//! - `secret.yaml`: the Secret holding the service-auth key, generated here (mode 0600; do
//!   not commit it). Database credentials are *referenced*: every Deployment reads
//!   `DATABASE_URL` from the Secret `<app>-database` (key `url`) that the operator creates;
//! - `<unit>.yaml`: a Deployment and a Service per process (group or service), with probes on
//!   `/__ovation/health`, resource requests and a locked-down security context;
//! - `ovation-gateway.yaml`: the gateway's Deployment and Service, and the Ingress;
//! - `nats.yaml`: a one-node NATS JetStream StatefulSet and its Service;
//! - `redis.yaml`, when the app declares a cache: a Redis Deployment (no persistence: a cache)
//!   and its Service, with a password generated into `secret.yaml`; processes get `REDIS_URL`
//!   built from it. To use a managed Redis instead, drop `redis.yaml` and set `REDIS_URL`;
//! - `Dockerfile`: the app image, built from the workspace root;
//! - `NOTES.md`: the commands to build, create the database Secret and apply.
//!
//! Objects are built as JSON values and written as YAML by [`to_yaml`] (a JSON string is a
//! valid YAML scalar, so every string is quoted and nothing is ambiguous).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{AppModel, Unit, dns_label};

/// The Kubernetes version the manifests are written for and validated against.
pub const KUBERNETES_VERSION: &str = "1.34.0";

/// The port every Ovation process listens on in its container.
const CONTAINER_PORT: u16 = 8080;

/// Options of the manifests.
#[derive(Debug, Clone)]
pub struct Options {
    /// The app's name (its package name): prefixes every object.
    pub app: String,
    /// The binary's name in the image.
    pub binary: String,
    /// The package to build in the Dockerfile.
    pub package: String,
    /// The image every Deployment runs.
    pub image: String,
    /// The host the Ingress answers for (`None`: any host).
    pub host: Option<String>,
    /// Where traces go (OTLP/HTTP).
    pub otlp_endpoint: String,
    /// The `[cors]` of the app's `ovation.toml`.
    pub cors: ovation::config::Cors,
    pub out: PathBuf,
}

/// Writes the manifests for `units`; returns the files written.
pub fn write(model: &AppModel, units: &[Unit], options: &Options) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(&options.out)
        .map_err(|e| format!("cannot create {}: {e}", options.out.display()))?;
    let app = dns_label(&options.app);
    let mut files = Vec::new();
    let mut put = |name: &str, text: String, private: bool| -> Result<(), String> {
        let path = options.out.join(name);
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(true);
        if private {
            open.mode(0o600);
        }
        open.open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        files.push(path);
        Ok(())
    };

    put(
        "config.yaml",
        to_yaml(&[config_map(&app, units, &options.cors)]),
        false,
    )?;
    let uses_cache = !model.caches.is_empty();
    put(
        "secret.yaml",
        to_yaml(&[secret(
            &app,
            &super::generate_key(),
            uses_cache.then(super::generate_key).as_deref(),
        )]),
        true,
    )?;
    for unit in units {
        let mut objects = vec![
            deployment(&app, unit, model, options),
            service(&app, &unit.name),
        ];
        if unit.gateway {
            objects.push(ingress(&app, options.host.as_deref()));
        }
        put(&format!("{}.yaml", unit.name), to_yaml(&objects), false)?;
    }
    put("nats.yaml", to_yaml(&nats(&app)), false)?;
    if uses_cache {
        put("redis.yaml", to_yaml(&redis(&app)), false)?;
    }
    put("Dockerfile", dockerfile(options), false)?;
    put("NOTES.md", notes(&app, model, options), false)?;
    Ok(files)
}

fn labels(app: &str, component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "ovation",
    })
}

fn object_name(app: &str, unit: &str) -> String {
    format!("{app}-{}", dns_label(unit))
}

/// The runtime config of each process, as Ovation reads it from `OVATION_CONFIG`.
fn config_map(app: &str, units: &[Unit], cors: &ovation::config::Cors) -> Value {
    let discovery: BTreeMap<&str, String> = units
        .iter()
        .flat_map(|u| {
            let url = format!("http://{}", object_name(app, &u.name));
            u.services.iter().map(move |s| (s.as_str(), url.clone()))
        })
        .collect();
    let data: BTreeMap<String, String> = units
        .iter()
        .map(|u| {
            let config = ovation::Config {
                listen: Some(([0, 0, 0, 0], CONTAINER_PORT).into()),
                hosted_services: Some(u.services.clone()),
                services: discovery
                    .iter()
                    .filter(|(s, _)| !u.services.iter().any(|h| h == *s))
                    .map(|(s, url)| ((*s).to_owned(), url.clone()))
                    .collect(),
                pubsub: ovation::config::PubSubBackend::Nats(format!("nats://{app}-nats:4222")),
                gateway: u.gateway,
                deployment: true,
                cors: cors.clone(),
                ..ovation::Config::default()
            };
            let text = serde_json::to_string_pretty(&config).expect("the config serializes");
            (format!("{}.json", u.name), text)
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": format!("{app}-config"), "labels": labels(app, "config") },
        "data": data,
    })
}

/// The generated Secret: the service-auth key and, with a cache, the Redis password.
fn secret(app: &str, key: &str, redis_password: Option<&str>) -> Value {
    let mut data = json!({ "service-auth-key": base64(key.as_bytes()) });
    if let Some(password) = redis_password {
        data["redis-password"] = json!(base64(password.as_bytes()));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": format!("{app}-service-auth"), "labels": labels(app, "secret") },
        "type": "Opaque",
        "data": data,
    })
}

/// The Redis password from the generated Secret, as an env entry.
fn redis_password_env(app: &str) -> Value {
    json!({
        "name": "REDIS_PASSWORD",
        "valueFrom": { "secretKeyRef": { "name": format!("{app}-service-auth"), "key": "redis-password" } },
    })
}

/// A one-replica Redis for the caches: nothing persisted (a cache is rebuilt from the source of
/// truth), a password, and a memory cap with LRU eviction so a full cache evicts rather than
/// fails writes.
fn redis(app: &str) -> Vec<Value> {
    let name = format!("{app}-redis");
    let selector = json!({ "app.kubernetes.io/name": app, "app.kubernetes.io/component": "redis" });
    vec![
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name, "labels": labels(app, "redis") },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": selector },
                "template": {
                    "metadata": { "labels": labels(app, "redis") },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "containers": [{
                            "name": "redis",
                            "image": "redis:7-alpine",
                            "args": [
                                "--requirepass", "$(REDIS_PASSWORD)",
                                "--save", "", "--appendonly", "no",
                                "--maxmemory", "200mb", "--maxmemory-policy", "allkeys-lru",
                            ],
                            "env": [redis_password_env(app)],
                            "ports": [{ "name": "redis", "containerPort": 6379, "protocol": "TCP" }],
                            "readinessProbe": { "tcpSocket": { "port": "redis" }, "periodSeconds": 5 },
                            "livenessProbe": { "tcpSocket": { "port": "redis" }, "initialDelaySeconds": 10, "periodSeconds": 10 },
                            "resources": { "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "memory": "256Mi" } },
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": 999,
                                "allowPrivilegeEscalation": false,
                                "capabilities": { "drop": ["ALL"] },
                            },
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "labels": labels(app, "redis") },
            "spec": {
                "selector": selector,
                "ports": [{ "name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP" }],
            },
        }),
    ]
}

fn deployment(app: &str, unit: &Unit, model: &AppModel, options: &Options) -> Value {
    let name = object_name(app, &unit.name);
    let mut env = vec![
        json!({ "name": "OVATION_CONFIG", "value": format!("/etc/ovation/{}.json", unit.name) }),
        json!({
            "name": "OVATION_SERVICE_AUTH_KEY",
            "valueFrom": { "secretKeyRef": { "name": format!("{app}-service-auth"), "key": "service-auth-key" } },
        }),
        json!({ "name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": options.otlp_endpoint }),
        json!({ "name": "OTEL_SERVICE_NAME", "value": name }),
        json!({ "name": "RUST_LOG", "value": "info,sqlx=warn" }),
    ];
    // The app's secrets, from the Secret the operator creates (see NOTES.md); a missing key
    // keeps the pod from starting, and the app names it.
    for secret in &model.secrets {
        env.push(json!({
            "name": secret.env,
            "valueFrom": { "secretKeyRef": { "name": format!("{app}-secrets"), "key": secret.name } },
        }));
    }
    // Processes with a database, with Pub/Sub, a cron job or a workflow (which keep their
    // bookkeeping in Postgres) need the database server.
    let needs_database = !unit.gateway
        && (!model.topics.is_empty()
            || model
                .databases
                .iter()
                .any(|d| unit.services.contains(&d.service))
            || model
                .cron_jobs
                .iter()
                .any(|j| unit.services.contains(&j.service))
            || model
                .workflows
                .iter()
                .any(|w| unit.services.contains(&w.service)));
    if needs_database {
        env.push(json!({
            "name": "DATABASE_URL",
            "valueFrom": { "secretKeyRef": { "name": format!("{app}-database"), "key": "url" } },
        }));
    }
    // Every process hosting a service reaches the caches (a keyspace is used by whichever
    // service refers to it); `$(REDIS_PASSWORD)` is expanded by Kubernetes from the entry
    // before it.
    if !unit.gateway && !model.caches.is_empty() {
        env.push(redis_password_env(app));
        env.push(json!({
            "name": "REDIS_URL",
            "value": format!("redis://:$(REDIS_PASSWORD)@{app}-redis:6379/"),
        }));
    }
    let probe = |initial: u32, period: u32| {
        json!({
            "httpGet": { "path": "/__ovation/health", "port": "http" },
            "initialDelaySeconds": initial,
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        })
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "labels": labels(app, &unit.name) },
        "spec": {
            "replicas": if unit.gateway { 2 } else { unit.replicas.max(1) },
            "selector": { "matchLabels": {
                "app.kubernetes.io/name": app,
                "app.kubernetes.io/component": unit.name,
            } },
            "template": {
                "metadata": {
                    "labels": labels(app, &unit.name),
                    "annotations": { "ovation.dev/services": unit.services.join(",") },
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532 },
                    "containers": [{
                        "name": "app",
                        "image": options.image,
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{ "name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP" }],
                        "env": env,
                        "volumeMounts": [{ "name": "config", "mountPath": "/etc/ovation", "readOnly": true }],
                        "readinessProbe": probe(2, 5),
                        "livenessProbe": probe(10, 10),
                        "resources": {
                            "requests": { "cpu": "100m", "memory": "128Mi" },
                            "limits": { "memory": "512Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                    "volumes": [{
                        "name": "config",
                        "configMap": {
                            "name": format!("{app}-config"),
                            "items": [{ "key": format!("{}.json", unit.name), "path": format!("{}.json", unit.name) }],
                        },
                    }],
                },
            },
        },
    })
}

fn service(app: &str, unit: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": object_name(app, unit), "labels": labels(app, unit) },
        "spec": {
            "type": "ClusterIP",
            "selector": { "app.kubernetes.io/name": app, "app.kubernetes.io/component": unit },
            "ports": [{ "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" }],
        },
    })
}

fn ingress(app: &str, host: Option<&str>) -> Value {
    let mut rule = json!({
        "http": { "paths": [{
            "path": "/",
            "pathType": "Prefix",
            "backend": { "service": {
                "name": object_name(app, super::GATEWAY),
                "port": { "name": "http" },
            } },
        }] },
    });
    if let Some(host) = host {
        rule["host"] = json!(host);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": { "name": app, "labels": labels(app, super::GATEWAY) },
        "spec": { "rules": [rule] },
    })
}

fn nats(app: &str) -> Vec<Value> {
    let name = format!("{app}-nats");
    vec![
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": { "name": name, "labels": labels(app, "nats") },
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": { "matchLabels": { "app.kubernetes.io/name": app, "app.kubernetes.io/component": "nats" } },
                "template": {
                    "metadata": { "labels": labels(app, "nats") },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "containers": [{
                            "name": "nats",
                            "image": "nats:2.10-alpine",
                            "args": ["--jetstream", "--store_dir", "/data", "--http_port", "8222"],
                            "ports": [
                                { "name": "client", "containerPort": 4222, "protocol": "TCP" },
                                { "name": "monitor", "containerPort": 8222, "protocol": "TCP" },
                            ],
                            "readinessProbe": { "httpGet": { "path": "/healthz?js-enabled-only=true", "port": "monitor" }, "periodSeconds": 5 },
                            "livenessProbe": { "httpGet": { "path": "/healthz", "port": "monitor" }, "initialDelaySeconds": 10, "periodSeconds": 10 },
                            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "memory": "512Mi" } },
                            "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                        }],
                    },
                },
                "volumeClaimTemplates": [{
                    "metadata": { "name": "data" },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": { "requests": { "storage": "1Gi" } },
                    },
                }],
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "labels": labels(app, "nats") },
            "spec": {
                "selector": { "app.kubernetes.io/name": app, "app.kubernetes.io/component": "nats" },
                "ports": [{ "name": "client", "port": 4222, "targetPort": "client", "protocol": "TCP" }],
            },
        }),
    ]
}

fn dockerfile(o: &Options) -> String {
    format!(
        "# The image of {app}: build it from the workspace root (the folder whose Cargo.toml\n\
         # lists the app), e.g. `docker build -f {out}/Dockerfile -t {image} .`\n\
         FROM rust:1-bookworm AS build\n\
         WORKDIR /src\n\
         COPY . .\n\
         RUN --mount=type=cache,target=/usr/local/cargo/registry \\\n    \
         cargo build --release --locked -p {package} \\\n \
         && cp target/release/{binary} /app\n\
         \n\
         FROM debian:bookworm-slim\n\
         RUN apt-get update \\\n \
         && apt-get install -y --no-install-recommends ca-certificates \\\n \
         && rm -rf /var/lib/apt/lists/*\n\
         COPY --from=build /app /usr/local/bin/{binary}\n\
         USER 65532:65532\n\
         ENV OVATION_LISTEN=0.0.0.0:{port}\n\
         EXPOSE {port}\n\
         ENTRYPOINT [\"/usr/local/bin/{binary}\"]\n",
        app = o.app,
        out = o.out.display(),
        image = o.image,
        package = o.package,
        binary = o.binary,
        port = CONTAINER_PORT,
    )
}

fn notes(app: &str, model: &AppModel, o: &Options) -> String {
    let secrets = if model.secrets.is_empty() {
        String::new()
    } else {
        let literals: Vec<String> = model
            .secrets
            .iter()
            .map(|s| format!("--from-literal={}='...'", s.name))
            .collect();
        format!(
            "   And the app's own secrets (`ovation::secret!`), one key each:\n\n   \
             kubectl create secret generic {app}-secrets {}\n\n",
            literals.join(" ")
        )
    };
    format!(
        "# Deploying {app} to Kubernetes {KUBERNETES_VERSION}\n\n\
         1. Build and push the image (from the workspace root):\n\n   \
         docker build -f {out}/Dockerfile -t {image} . && docker push {image}\n\n\
         2. Create the database Secret the Deployments reference (a Postgres server whose\n   \
         user may create databases; each service creates and migrates its own):\n\n   \
         kubectl create secret generic {app}-database --from-literal=url='postgres://USER:PASSWORD@HOST:5432/postgres'\n\n\
         {secrets}\
         3. Apply: `kubectl apply -f {out}`\n\n\
         `secret.yaml` holds the generated service-auth key: keep it out of version control\n\
         (or delete it and create `{app}-service-auth` yourself, key `service-auth-key`).\n\
         Traces go to `{otlp}` over OTLP/HTTP. Each Deployment scales on its own\n\
         (`kubectl scale deployment/{app}-<process> --replicas=N`): the processes are\n\
         stateless, Pub/Sub subscriptions share work across replicas.\n",
        out = o.out.display(),
        image = o.image,
        otlp = o.otlp_endpoint,
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes `documents` as one YAML stream.
pub fn to_yaml(documents: &[Value]) -> String {
    let mut out = String::new();
    for doc in documents {
        out.push_str("---\n");
        write_value(&mut out, doc, 0);
    }
    out
}

fn scalar(value: &Value) -> String {
    match value {
        // JSON's string syntax is YAML's double-quoted scalar.
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => value.to_string(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        _ => unreachable!("only scalars and empty collections are written inline"),
    }
}

fn is_inline(value: &Value) -> bool {
    match value {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => true,
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        && k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if plain {
        k.to_owned()
    } else {
        Value::String(k.to_owned()).to_string()
    }
}

/// Writes `value` (a map or a list) at `indent`.
fn write_value(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                if is_inline(v) {
                    out.push_str(&format!("{pad}{}: {}\n", key(k), scalar(v)));
                } else {
                    out.push_str(&format!("{pad}{}:\n", key(k)));
                    write_value(out, v, indent + 2);
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_inline(item) {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                } else {
                    // The item's first line goes after the dash; the rest is indented past it.
                    let mut nested = String::new();
                    write_value(&mut nested, item, indent + 2);
                    let nested = nested.trim_start_matches(' ');
                    out.push_str(&format!("{pad}- {nested}"));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// The package name in `manifest` (the app's Cargo.toml).
pub fn package_name(manifest: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{} is not valid: {e}", manifest.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no [package] name", manifest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn yaml_nests_maps_and_lists() {
        let doc = json!({
            "a": 1,
            "b": { "c": "x: y", "d": [] },
            "e": [{ "f": true, "g": ["h"] }, "i"],
            "j/k": {},
        });
        assert_eq!(
            to_yaml(&[doc]),
            "---\na: 1\nb:\n  c: \"x: y\"\n  d: []\ne:\n  - f: true\n    g:\n      - \"h\"\n  - \"i\"\nj/k: {}\n"
        );
    }
}
