//! Ovation: backends as services, in Rust.
//!
//! A service is a top-level module of your app crate. Annotate plain async functions and they
//! become HTTP endpoints and typed calls other services make like function calls; declare a
//! database and it is created and migrated for you.
//!
//! ```no_run
//! // src/users/mod.rs (a service is a top-level module of the app crate)
//! # mod users {
//! use ovation::prelude::*;
//!
//! static DB: Database = ovation::database!("users");
//!
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! pub struct User {
//!     pub id: Uuid,
//!     pub email: String,
//! }
//!
//! /// Gets a user by id.
//! #[api(public, method = "GET", path = "/users/:id")]
//! pub async fn get(id: Uuid) -> Result<User, Error> {
//!     let (id, email) = ovation::sqlx::query_as("SELECT id, email FROM users WHERE id = $1")
//!         .bind(id)
//!         .fetch_one(DB.pool())
//!         .await?;
//!     Ok(User { id, email })
//! }
//! # }
//!
//! // src/main.rs
//! fn main() -> std::process::ExitCode {
//!     ovation::run()
//! }
//! ```
//!
//! With `migrations = "./migrations"`, `database!` embeds the `<n>_<name>.up.sql` files of that
//! folder (relative to the declaring file) and applies them at start-up.
//!
//! Another service calls `crate::users::get(id).await`: in the same process the handler runs
//! there; when `users` runs in another process it is a signed HTTP request. Either way the
//! request, the response and the error make the same JSON trip, so a call has the same outcome
//! wherever its callee runs (see `#[ovation::test(split)]`).
//!
//! What an app uses:
//!
//! | item | what it is |
//! |---|---|
//! | [`api`], [`database!`], [`topic!`], [`subscription`], [`on_start!`] | declare endpoints, databases, topics, subscriptions, start-up tasks |
//! | [`auth_handler`], [`auth`] | who the caller is: the app's auth handler, the request's auth data |
//! | [`Validate`] ([`validate`], [`garde`]) | rules a request must meet before its handler runs |
//! | [`Error`], [`ErrCode`] | errors with Encore's codes and HTTP statuses |
//! | [`Database`] ([`sqldb`]) | a service's Postgres database: its pool, transactions |
//! | [`Topic`] ([`pubsub`]) | publishing, the transactional outbox, dead letters and redrive |
//! | [`Secret`] ([`secret!`], [`secrets`]) | values kept out of code and config: env, local file, Kubernetes Secret |
//! | [`middleware`](macro@middleware) ([`mod@middleware`]) | code around the handlers of tagged (or all) endpoints |
//! | [`spawn`] | background work that keeps the request's trace and service |
//! | [`run`], [`start`], [`Config`] | the app's `main`, and serving from your own `main` |
//! | [`test`], [`testing`] | `#[ovation::test]` with databases of its own, end-to-end test support |
//!
//! How the runtime is built inside (the HTTP layer, the Pub/Sub engine, telemetry, the managed
//! servers) is described in the repository's `ARCHITECTURE.md`; none of it is public API.

#![warn(unreachable_pub)]

mod app;
pub mod auth;
pub mod cache;
mod call;
mod client;
mod compress;
pub mod config;
pub mod cron;
pub mod error;
mod http;
mod infra;
mod invoke;
mod metrics;
pub mod middleware;
mod model;
pub mod pubsub;
mod registry;
mod runtime;
pub mod secrets;
mod service_auth;
pub mod sqldb;
pub mod stream;
mod telemetry;
pub mod testing;
pub mod validate;
pub mod workflow;

pub use app::{Server, StartupError, run, start};
pub use client::Client;
pub use config::Config;
pub use error::{ErrCode, Error, Result};
pub use ovation_macros::{
    api, auth_handler, database, main, middleware, model, static_files, subscription, test,
    workflow,
};
pub use pubsub::{MessageId, Topic};
pub use registry::{Access, EndpointKind, Method};
pub use runtime::spawn;
pub use secrets::Secret;
pub use sqldb::Database;
pub use telemetry::dropped_spans;
pub use validate::Validate;
pub use workflow::{Workflow, idempotency_key, step};

/// Re-exports for everyday service code: `use ovation::prelude::*;`.
pub mod prelude {
    pub use crate::cache::CacheCluster;
    pub use crate::error::{ErrCode, Error};
    pub use crate::pubsub::Topic;
    pub use crate::secrets::Secret;
    pub use crate::sqldb::Database;
    pub use ovation_macros::{api, auth_handler, subscription};
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
    pub use uuid::Uuid;
}

/// axum, whose extractors and responses raw endpoints (`#[api(raw)]`) take and return.
pub use axum;
pub use garde;
pub use schemars;
pub use serde;
pub use sqlx;
pub use tracing;
pub use uuid;

/// What the `ovation` CLI, the repo's tests and benchmarks use of the runtime's internals: the
/// managed servers, the app model, service auth, the gateway's forwarding. Not public API: may
/// change in any release.
#[doc(hidden)]
pub mod tooling {
    pub use crate::http::gateway::{Forward, forward_to};
    pub use crate::http::listener::LingeringClose;
    pub use crate::infra::{IDLE_STOP, InfraError, ManagedNats, ManagedPostgres, ManagedRedis};
    pub use crate::metrics::otlp::{DROPPED_SPANS, proto as otlp_metrics};
    pub use crate::model::{
        AppModel, AuthModel, CacheModel, CredentialModel, CronJobModel, DatabaseModel,
        EndpointModel, SecretModel, SubscriptionModel, TopicModel, WorkflowModel, services,
    };
    pub use crate::registry::{endpoints, service_of};
    pub use crate::runtime::{Runtime, start_tasks};
    pub use crate::service_auth::{GATEWAY, HEADER, ServiceAuthKey, Signed, Verified};
    pub use crate::sqldb::server::{PgServer, SetupError};
    pub use crate::telemetry::{init, init_for_tests_exporting_to};
}

/// The request-decoding path, for the fuzz targets in `tests/fuzz`. Not public API.
#[doc(hidden)]
pub mod fuzzing {
    use serde::de::DeserializeOwned;

    use crate::error::Error;

    /// A JSON request body, as the server decodes it.
    pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
        crate::http::wire::decode_json(bytes)
    }

    /// A query string, as the server decodes it for `GET`/`DELETE`/`HEAD` requests.
    pub fn decode_query<T: DeserializeOwned>(query: &str) -> Result<T, Error> {
        crate::http::wire::decode_query(query)
    }

    /// Whether a request with this `Content-Type` may carry a JSON body.
    pub fn check_content_type(value: &[u8]) -> Result<(), Error> {
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(v) = axum::http::HeaderValue::from_bytes(value) {
            headers.insert(axum::http::header::CONTENT_TYPE, v);
        }
        crate::http::wire::check_json_content_type(&headers)
    }

    /// One path parameter, as the server parses it.
    pub fn parse_param<T: crate::registry::PathParam>(segment: &str) -> Result<T, Error> {
        crate::registry::parse_param("param", Some(&segment))
    }
}

/// What generated code names. Not public API: may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::auth::{
        AuthHandler, AuthHandlerEntry, Credential, HandlerFuture, authenticated,
        decode as decode_auth,
    };
    pub use crate::call::call;
    pub use crate::error::Error;
    pub use crate::http::static_files::{StaticDir, StaticFile, StaticRoute};
    pub use crate::http::stream::open as open_stream;
    pub use crate::http::wire::{decode_json, decode_query};
    pub use crate::middleware::{Middleware, MiddlewareEntry, MiddlewareFuture, Target};
    pub use crate::pubsub::{
        SubscriptionConfig, SubscriptionDef, SubscriptionEntry, Topic, TopicDef, TopicEntry,
        decode as decode_message,
    };
    pub use crate::registry::{
        Access, Endpoint, EndpointDecl, EndpointEntry, Method, NoParamSchema, ParamSchema,
        ParamSchemaOf, PathParam, Payload, RawEndpoint, RawEndpointDecl, RawEndpointIsNotCallable,
        StreamEndpoint, StreamEndpointDecl, parse_param,
    };
    pub use crate::registry::{EncodeError, EncodedRequest, encode_json, encode_query};
    pub use crate::runtime::{StartTask, StartTaskEntry};
    pub use crate::sqldb::{Database, DatabaseDef, DatabaseEntry, Migration};
    pub use crate::stream::StreamSide;
    pub use crate::testing::{run_split_test, run_test};
    pub use crate::validate::{NoValidate, ValidateOf, ValidateProbe};
    pub use axum;
    pub use inventory;
    pub use schemars;
    pub use serde_json;
    pub use std::boxed::Box;
    pub use std::future::Future;
    pub use std::option::Option;
    pub use std::pin::Pin;
    pub use std::result::Result;
    pub use std::string::String;
    pub use std::time::Duration;
    pub use std::vec::Vec;
}
