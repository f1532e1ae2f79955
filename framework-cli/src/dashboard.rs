//! The local development dashboard: server-rendered pages on the dashboard port, next to the
//! trace API, behind [`crate::guard`]. Every asset is embedded in the binary; nothing is loaded
//! from the network.
//!
//! One file per page: `services` (endpoints with access and schema trees, databases, topics,
//! subscriptions), `explorer` (the API explorer), `traces` (the live list, filters, a trace's
//! waterfall), `architecture` (`crate::graph`), `databases` (tables, rows, the SQL box) and
//! `pubsub` (counts, dead letters, redrive), `cron` (jobs, their runs, "Run now"), `workflows`
//! (runs, their steps, "Retry"); `html` is the shell they share, with the status bar
//! showing the app's URL and whether it runs, rebuilds, or failed to compile. Anything else is a
//! 404 page. This file holds the router and what the pages ask of the app.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ovation::tooling::AppModel;
use serde::Serialize;

use self::html::{esc, shell};
use crate::guard::Guard;
use crate::traces::Store;

mod architecture;
mod cron;
pub mod databases;
mod explorer;
pub(crate) mod html;
mod pubsub;
mod services;
mod traces;
mod workflows;

const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// What the app is doing, for the status bar.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AppState {
    Starting,
    Running,
    Rebuilding,
    CompileError { message: String },
    Stopped,
}

/// The app as the dashboard sees it.
#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub url: String,
    #[serde(flatten)]
    pub state: AppState,
}

/// Shared between `ovation run` (which updates the status) and the pages.
pub type SharedStatus = Arc<RwLock<AppStatus>>;

#[derive(Clone)]
struct Dashboard {
    store: Store,
    status: SharedStatus,
    http: reqwest::Client,
    /// The app's folder, whose source the Architecture page reads.
    app: std::path::PathBuf,
    /// The Postgres server of the app's databases.
    databases: databases::Databases,
    /// The app's service-auth key: the explorer signs calls to private endpoints with it, and
    /// the pages their requests to the app's `/__ovation/*`.
    key: ovation::tooling::ServiceAuthKey,
    /// The checks in front of every page, and the token the pages carry.
    guard: Guard,
}

impl Dashboard {
    /// A request to the app's internal API (`/__ovation/...`), signed with the app's key as
    /// the app demands; `None` if `url` is not a URL.
    /// `GET` of the app's `path` (signed), as JSON: `None` if the app does not answer, `Err`
    /// with its refusal.
    async fn app_json(&self, path: &str) -> Option<Result<serde_json::Value, String>> {
        let status = current(&self.status);
        let request = self.internal(
            reqwest::Method::GET,
            &format!("{}{path}", status.url),
            Vec::new(),
        )?;
        let response = request
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return Some(Err(refusal(response).await));
        }
        response.json().await.ok().map(Ok)
    }

    fn internal(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Vec<u8>,
    ) -> Option<reqwest::RequestBuilder> {
        let url = reqwest::Url::parse(url).ok()?;
        let signature = self.key.sign(
            ovation::tooling::Signed {
                method: method.as_str(),
                path: url.path(),
                query: url.query().unwrap_or(""),
                body: &body,
            },
            "dashboard",
        );
        Some(
            self.http
                .request(method, url)
                .header(ovation::tooling::HEADER, signature)
                .body(body),
        )
    }
}

/// The dashboard's pages and assets, merged with the trace API.
pub fn router(
    store: Store,
    status: SharedStatus,
    app: std::path::PathBuf,
    databases: databases::Databases,
    key: ovation::tooling::ServiceAuthKey,
    guard: Guard,
) -> Router {
    let dashboard = Dashboard {
        store: store.clone(),
        status,
        http: reqwest::Client::new(),
        app,
        databases,
        key,
        guard: guard.clone(),
    };
    let pages = Router::new()
        .route(
            "/",
            axum::routing::get(|| async { Redirect::to("/services") }),
        )
        .route("/services", axum::routing::get(services::page))
        .route("/traces", axum::routing::get(traces::list))
        .route("/traces/{trace_id}", axum::routing::get(traces::trace))
        .route("/architecture", axum::routing::get(architecture::page))
        .route("/explorer", axum::routing::get(explorer::page))
        .route("/api/explorer", axum::routing::post(explorer::call))
        .route("/api/explorer/stream", axum::routing::get(explorer::stream))
        .route("/pubsub", axum::routing::get(pubsub::page))
        .route("/databases", axum::routing::get(databases::page))
        .route(
            "/databases/{db}/tables/{table}",
            axum::routing::get(databases::table),
        )
        .route(
            "/databases/{db}/query",
            axum::routing::post(databases::query_page),
        )
        .route(
            "/pubsub/{subscription}/redrive",
            axum::routing::post(pubsub::redrive),
        )
        .route("/cron", axum::routing::get(cron::page))
        .route("/cron/{job}/run", axum::routing::post(cron::run))
        .route("/api/cron", axum::routing::get(cron::api))
        .route("/workflows", axum::routing::get(workflows::page))
        .route("/workflows/runs/{id}", axum::routing::get(workflows::run))
        .route(
            "/workflows/runs/{id}/retry",
            axum::routing::post(workflows::retry),
        )
        .route("/api/workflows", axum::routing::get(workflows::api))
        .route("/api/status", axum::routing::get(app_status))
        .route(
            "/assets/style.css",
            axum::routing::get(|| async { asset("text/css", STYLE) }),
        )
        .route(
            "/assets/app.js",
            axum::routing::get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .fallback(not_found)
        .with_state(dashboard);
    guard.protect(crate::traces::api_router(store).merge(pages))
}

/// Why the app refused a page's request: its error's message, for the page's notice.
async fn refusal(response: reqwest::Response) -> String {
    response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "the app refused".into())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// What a page says while the app at `url` does not answer.
fn app_silent(url: &str) -> String {
    format!(
        "<p class=\"notice\">The app at <code>{}</code> does not answer yet.</p>",
        esc(url)
    )
}

/// What an `/api/*` route answers while the app does not answer: 503 `unavailable`.
fn app_unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "code": "unavailable",
            "message": "the app does not answer yet",
        })),
    )
        .into_response()
}

fn current(status: &SharedStatus) -> AppStatus {
    status.read().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn app_status(State(d): State<Dashboard>) -> axum::Json<AppStatus> {
    axum::Json(current(&d.status))
}

async fn not_found(State(d): State<Dashboard>, uri: axum::http::Uri) -> Response {
    let body = format!(
        "<h1>Not found</h1><p class=\"muted\">The dashboard has no page at <code>{}</code>.</p>\
         <p><a href=\"/services\">Services</a> · <a href=\"/traces\">Traces</a></p>",
        esc(uri.path())
    );
    (
        StatusCode::NOT_FOUND,
        shell(&d, "Not found", "", &current(&d.status), &body),
    )
        .into_response()
}

/// The app model from the app's `/__ovation/meta`; `None` while the app does not answer.
async fn app_model(d: &Dashboard, url: &str) -> Option<AppModel> {
    let response = d
        .internal(
            reqwest::Method::GET,
            &format!("{url}/__ovation/meta"),
            Vec::new(),
        )?
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success())?;
    response.json().await.ok()
}

/// The databases the app declares, (name, service), from its model.
async fn declared_databases(d: &Dashboard, url: &str) -> Option<Vec<(String, String)>> {
    let model = app_model(d, url).await?;
    Some(
        model
            .databases
            .into_iter()
            .map(|db| (db.name, db.service))
            .collect(),
    )
}
