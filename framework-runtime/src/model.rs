//! The app model: what the app declares — services, endpoints with their schemas, databases,
//! topics, subscriptions — gathered into one description. The server serves it at
//! `/__ovation/meta` (to signed requests), and `OVATION_DESCRIBE=1 <app binary>` prints it for the
//! CLI to plan deployments with.
//!
//! It sits above the declarations (`registry`, `sqldb`, `pubsub`), which know nothing of one
//! another, and below the HTTP layer and the app, which read it.

use serde_json::json;

use crate::registry::{self, service_of};
use crate::runtime::Runtime;

/// Every service of the app: the modules with endpoints, databases, topics or subscriptions.
pub fn services() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = registry::endpoints()
        .iter()
        .map(|e| e.info().service)
        .collect();
    all.extend(crate::sqldb::declared().iter().map(|d| d.service()));
    all.extend(crate::pubsub::topics().iter().map(|t| service_of(t.module)));
    all.extend(crate::pubsub::subscriptions().iter().map(|s| s.service()));
    all.sort_unstable();
    all.dedup();
    all
}

/// The app model: services, endpoints with their schemas, databases, topics, subscriptions.
/// With a runtime, each endpoint and subscription says whether it is hosted there. The CLI
/// reads it from `OVATION_DESCRIBE=1 <app binary>` to plan deployments.
pub fn app_model(rt: Option<&Runtime>) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = registry::endpoints()
        .iter()
        .map(|e| {
            let i = e.info();
            json!({
                "service": i.service,
                "name": i.name,
                "method": i.method,
                "path": i.path,
                "access": i.access,
                "pathParams": i.path_params,
                "hosted": rt.map(|rt| rt.hosts(i.service)),
                "requestSchema": e.request_schema(),
                "responseSchema": e.response_schema(),
            })
        })
        .collect();
    let databases: Vec<serde_json::Value> = crate::sqldb::declared()
        .iter()
        .map(|d| {
            json!({
                "name": d.name,
                "service": d.service(),
                "migrations": d.migrations.iter().map(|m| m.file).collect::<Vec<_>>(),
            })
        })
        .collect();
    let topics: Vec<serde_json::Value> = crate::pubsub::topics()
        .iter()
        .map(|t| json!({ "name": t.name, "service": crate::runtime::service_of(t.module) }))
        .collect();
    let subscriptions: Vec<serde_json::Value> = crate::pubsub::subscriptions()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "service": s.service(),
                "topic": (s.topic)(),
                "config": s.config,
                "hosted": rt.map(|rt| rt.hosts(s.service())),
            })
        })
        .collect();
    json!({
        "services": services(),
        "endpoints": endpoints,
        "databases": databases,
        "topics": topics,
        "subscriptions": subscriptions,
    })
}
