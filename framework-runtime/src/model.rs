//! The app model: what the app declares — services, endpoints with their schemas, databases,
//! topics, subscriptions — gathered into one description. The server serves it at
//! `/__ovation/meta` (to signed requests), and `OVATION_DESCRIBE=1 <app binary>` prints it for the
//! CLI to plan deployments with.
//!
//! It sits above the declarations (`registry`, `sqldb`, `pubsub`), which know nothing of one
//! another, and below the HTTP layer and the app, which read it.

use serde::{Deserialize, Serialize};

use crate::registry;
use crate::runtime::Runtime;
use crate::runtime::service_of;

/// Every service of the app: the modules with endpoints, databases, topics or subscriptions.
pub fn services() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = registry::endpoints()
        .iter()
        .map(|e| e.info().service)
        .collect();
    all.extend(crate::sqldb::declared().iter().map(|d| d.service()));
    all.extend(crate::pubsub::topics().iter().map(|t| service_of(t.module)));
    all.extend(crate::pubsub::subscriptions().iter().map(|s| s.service()));
    all.extend(
        crate::cache::declared()
            .iter()
            .map(|c| service_of(c.module)),
    );
    all.extend(crate::cron::jobs().iter().map(|j| j.service()));
    all.sort_unstable();
    all.dedup();
    all
}

/// The app model: services, endpoints with their schemas, databases, topics, subscriptions.
/// One typed description, written by the app (`/__ovation/meta`, `OVATION_DESCRIBE=1`) and read
/// by the CLI (deploy plans, the dashboard) as the same type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppModel {
    pub services: Vec<String>,
    pub endpoints: Vec<EndpointModel>,
    pub databases: Vec<DatabaseModel>,
    pub topics: Vec<TopicModel>,
    pub subscriptions: Vec<SubscriptionModel>,
    /// The app's auth handler, if it has one.
    #[serde(default)]
    pub auth: Option<AuthModel>,
    /// The secrets the app declares (names only: values never leave the process).
    #[serde(default)]
    pub secrets: Vec<SecretModel>,
    /// The cache clusters the app declares.
    #[serde(default)]
    pub caches: Vec<CacheModel>,
    /// The cron jobs the app declares.
    #[serde(default)]
    pub cron_jobs: Vec<CronJobModel>,
    /// The workflows the app declares.
    #[serde(default)]
    pub workflows: Vec<WorkflowModel>,
}

/// A workflow of the [`AppModel`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowModel {
    pub name: String,
    pub service: String,
}

/// A cron job of the [`AppModel`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronJobModel {
    pub name: String,
    pub service: String,
    /// As written: `every 1m`, `0 3 * * *`.
    pub schedule: String,
}

/// A cache cluster of the [`AppModel`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheModel {
    pub name: String,
    pub service: String,
}

/// The app's auth handler in the [`AppModel`]: where it is and where it reads the credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthModel {
    pub service: String,
    pub handler: String,
    /// In order of preference: `{"kind": "bearer"}`, `{"kind": "cookie", "name": "session"}`,
    /// `{"kind": "header", "name": "x-api-key"}`.
    pub credentials: Vec<CredentialModel>,
}

/// Where an auth handler reads the credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialModel {
    /// `bearer`, `cookie` or `header`.
    pub kind: String,
    /// The cookie's or header's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A secret of the [`AppModel`]: its name and the environment variable that sets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretModel {
    pub name: String,
    pub env: String,
}

/// One endpoint of the [`AppModel`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointModel {
    pub service: String,
    pub name: String,
    pub method: registry::Method,
    /// The pattern, `:name` and `*rest` segments included.
    pub path: String,
    pub access: registry::Access,
    pub path_params: Vec<String>,
    /// Whether the process that described the app serves it (`None`: not asked of a process).
    pub hosted: Option<bool>,
    /// What it exchanges: JSON (`typed`), raw HTTP (`raw`), or messages over a WebSocket
    /// (`stream-in`, `stream-out`, `stream-in-out`).
    #[serde(default = "typed")]
    pub kind: registry::EndpointKind,
    /// The JSON Schema of the request (a stream's: its handshake; `None` for an endpoint that
    /// takes none).
    pub request_schema: Option<serde_json::Value>,
    /// The JSON Schema of the response (a stream's: the messages the server sends; `None` for a
    /// raw endpoint).
    pub response_schema: Option<serde_json::Value>,
    /// The JSON Schema of the messages a stream's client sends.
    #[serde(default)]
    pub incoming_schema: Option<serde_json::Value>,
    /// Its tags, which select middleware.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn typed() -> registry::EndpointKind {
    registry::EndpointKind::Typed
}

/// One database of the [`AppModel`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseModel {
    pub name: String,
    pub service: String,
    /// Its migration files, in order.
    pub migrations: Vec<String>,
}

/// One topic of the [`AppModel`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicModel {
    pub name: String,
    pub service: String,
}

/// One subscription of the [`AppModel`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionModel {
    pub name: String,
    pub service: String,
    pub topic: String,
    /// Its delivery settings (durations in milliseconds).
    pub config: serde_json::Value,
    pub hosted: Option<bool>,
}

/// The app's [`AppModel`]. With a runtime, each endpoint and subscription says whether it is
/// hosted there.
pub(crate) fn app_model(rt: Option<&Runtime>) -> AppModel {
    let schema = |s: schemars::Schema| serde_json::to_value(s).unwrap_or_default();
    AppModel {
        services: services().into_iter().map(str::to_owned).collect(),
        endpoints: registry::endpoints()
            .iter()
            .map(|e| {
                let i = e.info();
                EndpointModel {
                    service: i.service.to_owned(),
                    name: i.name.to_owned(),
                    method: i.method,
                    path: i.path.to_owned(),
                    access: i.access,
                    path_params: i.path_params.iter().map(|p| (*p).to_owned()).collect(),
                    hosted: rt.map(|rt| rt.hosts(i.service)),
                    kind: i.kind,
                    request_schema: e.request_schema().map(schema),
                    response_schema: e.response_schema().map(schema),
                    incoming_schema: e.incoming_schema().map(schema),
                    tags: i.tags.iter().map(|t| (*t).to_owned()).collect(),
                }
            })
            .collect(),
        databases: crate::sqldb::declared()
            .iter()
            .map(|d| DatabaseModel {
                name: d.name.to_owned(),
                service: d.service().to_owned(),
                migrations: d
                    .current_migrations()
                    .unwrap_or(d.migrations)
                    .iter()
                    .map(|m| m.file.to_owned())
                    .collect(),
            })
            .collect(),
        topics: crate::pubsub::topics()
            .iter()
            .map(|t| TopicModel {
                name: t.name.to_owned(),
                service: service_of(t.module).to_owned(),
            })
            .collect(),
        subscriptions: crate::pubsub::subscriptions()
            .iter()
            .map(|s| SubscriptionModel {
                name: s.name.to_owned(),
                service: s.service().to_owned(),
                topic: (s.topic)().to_owned(),
                config: serde_json::to_value(s.config).unwrap_or_default(),
                hosted: rt.map(|rt| rt.hosts(s.service())),
            })
            .collect(),
        auth: crate::auth::handler().map(|h| AuthModel {
            service: service_of(h.module).to_owned(),
            handler: h.name.to_owned(),
            credentials: h
                .credentials
                .iter()
                .map(|c| {
                    let (kind, name) = match c {
                        crate::auth::Credential::Bearer => ("bearer", None),
                        crate::auth::Credential::Cookie(n) => ("cookie", Some(*n)),
                        crate::auth::Credential::Header(n) => ("header", Some(*n)),
                    };
                    CredentialModel {
                        kind: kind.to_owned(),
                        name: name.map(str::to_owned),
                    }
                })
                .collect(),
        }),
        secrets: crate::secrets::declared()
            .iter()
            .map(|s| SecretModel {
                name: s.name.to_owned(),
                env: crate::secrets::env_var(s.name),
            })
            .collect(),
        caches: crate::cache::declared()
            .iter()
            .map(|c| CacheModel {
                name: c.name.to_owned(),
                service: service_of(c.module).to_owned(),
            })
            .collect(),
        cron_jobs: crate::cron::jobs()
            .iter()
            .map(|j| CronJobModel {
                name: j.name.to_owned(),
                service: j.service().to_owned(),
                schedule: j.schedule_text.to_owned(),
            })
            .collect(),
        workflows: crate::workflow::workflows()
            .iter()
            .map(|w| WorkflowModel {
                name: w.name.to_owned(),
                service: w.service().to_owned(),
            })
            .collect(),
    }
}
