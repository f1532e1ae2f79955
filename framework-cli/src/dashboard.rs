//! The local development dashboard: server-rendered pages on the dashboard port, next to the
//! trace API. Every asset is embedded in the binary; nothing is loaded from the network.
//!
//! Pages: **Services** (endpoints with access and schema trees, databases, topics,
//! subscriptions), **API explorer** (`explorer`), **Traces** (live list, filters) and a trace's
//! **waterfall**, **Architecture** (`crate::graph`), **Databases** (`databases`) and
//! **Pub/Sub** (counts, dead letters, redrive). A status bar shows the app's URL and whether it
//! runs, rebuilds, or failed to compile. Anything else is a 404 page.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Serialize;
use serde_json::Value;

use crate::guard::Guard;
use crate::traces::{ListQuery, Store};

pub mod databases;
mod explorer;

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
    key: ovation::service_auth::ServiceAuthKey,
    /// The checks in front of every page, and the token the pages carry.
    guard: Guard,
}

impl Dashboard {
    /// A request to the app's internal API (`/__ovation/...`), signed with the app's key as
    /// the app demands; `None` if `url` is not a URL.
    fn internal(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Vec<u8>,
    ) -> Option<reqwest::RequestBuilder> {
        let url = reqwest::Url::parse(url).ok()?;
        let signature = self.key.sign(
            ovation::service_auth::Signed {
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
                .header(ovation::service_auth::HEADER, signature)
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
    key: ovation::service_auth::ServiceAuthKey,
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
        .route("/services", axum::routing::get(services))
        .route("/traces", axum::routing::get(traces))
        .route("/traces/{trace_id}", axum::routing::get(trace))
        .route("/architecture", axum::routing::get(architecture))
        .route("/explorer", axum::routing::get(explorer_page))
        .route("/api/explorer", axum::routing::post(explorer_call))
        .route("/pubsub", axum::routing::get(pubsub))
        .route("/databases", axum::routing::get(databases_page))
        .route(
            "/databases/{db}/tables/{table}",
            axum::routing::get(table_page),
        )
        .route("/databases/{db}/query", axum::routing::post(query_page))
        .route(
            "/pubsub/{subscription}/redrive",
            axum::routing::post(redrive),
        )
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

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `text` with HTML's special characters escaped.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(d: &Dashboard, title: &str, active: &str, status: &AppStatus, body: &str) -> Html<String> {
    let nav: String = [
        ("services", "Services"),
        ("explorer", "API explorer"),
        ("traces", "Traces"),
        ("architecture", "Architecture"),
        ("databases", "Databases"),
        ("pubsub", "Pub/Sub"),
    ]
    .iter()
    .map(|(href, label)| {
        let class = if *href == active {
            " class=\"active\""
        } else {
            ""
        };
        format!("<a href=\"/{href}\"{class}>{label}</a>")
    })
    .collect();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"ovation-csrf\" content=\"{token}\">\
         <title>{title} · Ovation</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body><header><span class=\"brand\">Ovation</span><nav>{nav}</nav></header>\
         <main>{body}</main>{bar}<script src=\"/assets/app.js\"></script></body></html>",
        title = esc(title),
        bar = status_bar(status),
        token = esc(d.guard.token()),
    ))
}

fn status_bar(status: &AppStatus) -> String {
    let (class, text) = match &status.state {
        AppState::Starting => ("starting", "starting".to_owned()),
        AppState::Running => ("running", "running".to_owned()),
        AppState::Rebuilding => ("rebuilding", "rebuilding".to_owned()),
        AppState::CompileError { message } => ("error", format!("compile error: {message}")),
        AppState::Stopped => ("stopped", "stopped".to_owned()),
    };
    format!(
        "<footer id=\"status\" class=\"{class}\"><span class=\"dot\"></span>\
         <span id=\"status-text\">{}</span><a id=\"status-url\" href=\"{url}\">{url}</a></footer>",
        esc(&text),
        url = esc(&status.url),
    )
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
        page(&d, "Not found", "", &current(&d.status), &body),
    )
        .into_response()
}

async fn services(State(d): State<Dashboard>) -> Response {
    let status = current(&d.status);
    let Some(model) = app_model(&d, &status.url).await else {
        let body = format!(
            "<h1>Services</h1><p class=\"notice\">The app at <code>{}</code> does not answer \
             yet; this page fills in once it runs.</p>",
            esc(&status.url)
        );
        return page(&d, "Services", "services", &status, &body).into_response();
    };
    page(
        &d,
        "Services",
        "services",
        &status,
        &render_services(&model),
    )
    .into_response()
}

/// The Services page's body from the app model.
pub fn render_services(model: &Value) -> String {
    let list = |key: &str| model[key].as_array().cloned().unwrap_or_default();
    let (endpoints, databases, topics, subscriptions) = (
        list("endpoints"),
        list("databases"),
        list("topics"),
        list("subscriptions"),
    );
    let mut out = String::from("<h1>Services</h1><div class=\"cards\">");
    for service in list("services") {
        let name = service.as_str().unwrap_or_default();
        let of = |items: &[Value]| -> Vec<Value> {
            items
                .iter()
                .filter(|i| i["service"] == name)
                .cloned()
                .collect()
        };
        let _ = write!(
            out,
            "<section class=\"card\" id=\"service-{id}\"><h2>{name}</h2>",
            id = esc(name),
            name = esc(name)
        );
        let mine = of(&endpoints);
        if !mine.is_empty() {
            out.push_str("<h3>Endpoints</h3><ul class=\"endpoints\">");
            for e in &mine {
                let access = e["access"].as_str().unwrap_or("public");
                let _ = write!(
                    out,
                    "<li><details><summary><span class=\"method\">{method}</span> \
                     <code>{path}</code> <span class=\"badge {access}\">{access}</span> \
                     <span class=\"muted\">{name}</span></summary>\
                     <div class=\"schemas\"><div><h4>Request</h4>{req}</div>\
                     <div><h4>Response</h4>{resp}</div></div></details></li>",
                    method = esc(e["method"].as_str().unwrap_or_default()),
                    path = esc(e["path"].as_str().unwrap_or_default()),
                    access = esc(access),
                    name = esc(e["name"].as_str().unwrap_or_default()),
                    req = schema_tree(&e["requestSchema"]),
                    resp = schema_tree(&e["responseSchema"]),
                );
            }
            out.push_str("</ul>");
        }
        let line = |title: &str, items: Vec<String>| {
            if items.is_empty() {
                String::new()
            } else {
                format!(
                    "<h3>{title}</h3><ul class=\"plain\">{}</ul>",
                    items.concat()
                )
            }
        };
        out.push_str(&line(
            "Databases",
            of(&databases)
                .iter()
                .map(|d| {
                    format!(
                        "<li><code>{}</code> <span class=\"muted\">{} migrations</span></li>",
                        esc(d["name"].as_str().unwrap_or_default()),
                        d["migrations"].as_array().map_or(0, Vec::len)
                    )
                })
                .collect(),
        ));
        out.push_str(&line(
            "Publishes to",
            of(&topics)
                .iter()
                .map(|t| {
                    format!(
                        "<li><code>{}</code></li>",
                        esc(t["name"].as_str().unwrap_or_default())
                    )
                })
                .collect(),
        ));
        out.push_str(&line(
            "Subscriptions",
            of(&subscriptions)
                .iter()
                .map(|s| {
                    format!(
                        "<li><code>{}</code> on <code>{}</code></li>",
                        esc(s["name"].as_str().unwrap_or_default()),
                        esc(s["topic"].as_str().unwrap_or_default())
                    )
                })
                .collect(),
        ));
        out.push_str("</section>");
    }
    out.push_str("</div>");
    out
}

/// A JSON Schema as a readable tree: fields with their types, required ones marked.
pub fn schema_tree(schema: &Value) -> String {
    if schema.is_null() {
        return "<p class=\"muted\">none</p>".into();
    }
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut out = String::new();
    render_schema(&mut out, schema, &defs, 0);
    out
}

fn resolve<'a>(schema: &'a Value, defs: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            defs.get(name).unwrap_or(schema)
        }
        None => schema,
    }
}

fn type_name(schema: &Value, defs: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or("object").to_owned();
    }
    let s = resolve(schema, defs);
    let base = match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ if s.get("enum").is_some() => "enum".into(),
        _ if s.get("anyOf").is_some() || s.get("oneOf").is_some() => "one of".into(),
        _ => "any".into(),
    };
    match (base.as_str(), s["format"].as_str()) {
        ("array", _) => format!("{}[]", type_name(&s["items"], defs)),
        (_, Some(format)) => format!("{base} ({format})"),
        _ => base,
    }
}

fn render_schema(out: &mut String, schema: &Value, defs: &Value, depth: usize) {
    let s = resolve(schema, defs);
    let s = if s["type"] == "array" {
        resolve(&s["items"], defs)
    } else {
        s
    };
    let Some(properties) = s["properties"].as_object() else {
        let _ = write!(
            out,
            "<code class=\"type\">{}</code>",
            esc(&type_name(schema, defs))
        );
        return;
    };
    let required: Vec<&str> = s["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("<ul class=\"tree\">");
    for (field, field_schema) in properties {
        let _ = write!(
            out,
            "<li><code>{}</code>{} <span class=\"type\">{}</span>",
            esc(field),
            if required.contains(&field.as_str()) {
                ""
            } else {
                "<span class=\"muted\">?</span>"
            },
            esc(&type_name(field_schema, defs))
        );
        let inner = resolve(field_schema, defs);
        let inner = if inner["type"] == "array" {
            resolve(&inner["items"], defs)
        } else {
            inner
        };
        if depth < 4 && inner["properties"].is_object() {
            render_schema(out, field_schema, defs, depth + 1);
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

async fn architecture(State(d): State<Dashboard>) -> Response {
    let status = current(&d.status);
    let app = d.app.clone();
    // Read fresh on every visit, so an edit shows on the next reload.
    let graph = tokio::task::spawn_blocking(move || crate::graph::read(&app))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let body = match graph {
        Ok(graph) => format!(
            "<h1>Architecture</h1><p class=\"muted\">Drawn from the source of <code>{}</code>: \
             services with their databases, <span class=\"legend call\">calls</span> and \
             <span class=\"legend pubsub\">Pub/Sub</span>. Also <code>ovation graph \
             --format svg|dot|mermaid</code>.</p><div class=\"diagram\">{}</div>",
            esc(&d.app.display().to_string()),
            crate::graph::to_svg(&graph)
        ),
        Err(e) => format!(
            "<h1>Architecture</h1><p class=\"notice\">The source could not be read: {}</p>",
            esc(&e)
        ),
    };
    page(&d, "Architecture", "architecture", &status, &body).into_response()
}

/// The app model from the app's `/__ovation/meta`; `None` while the app does not answer.
async fn app_model(d: &Dashboard, url: &str) -> Option<Value> {
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

/// The app's endpoints, from its model.
async fn app_endpoints(d: &Dashboard, url: &str) -> Option<Vec<Value>> {
    app_model(d, url).await?["endpoints"].as_array().cloned()
}

#[derive(Debug, serde::Deserialize)]
struct ExplorerQuery {
    endpoint: Option<String>,
}

async fn explorer_page(State(d): State<Dashboard>, Query(q): Query<ExplorerQuery>) -> Response {
    let status = current(&d.status);
    let Some(endpoints) = app_endpoints(&d, &status.url).await else {
        return not_running(&d, &status, "API explorer", "explorer");
    };
    let body = explorer::render(&endpoints, q.endpoint.as_deref());
    page(&d, "API explorer", "explorer", &status, &body).into_response()
}

async fn explorer_call(
    State(d): State<Dashboard>,
    call: Result<axum::Json<explorer::CallRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let status = current(&d.status);
    let axum::Json(call) = match call {
        Ok(c) => c,
        Err(e) => return ovation::Error::invalid_argument(e.body_text()).into_response(),
    };
    let Some(endpoints) = app_endpoints(&d, &status.url).await else {
        return ovation::Error::unavailable("the app does not answer").into_response();
    };
    match explorer::send(&d.http, &status.url, &d.key, &endpoints, call).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => ovation::Error::unavailable(e).into_response(),
    }
}

/// The databases the app declares, (name, service), from its model.
async fn declared_databases(d: &Dashboard, url: &str) -> Option<Vec<(String, String)>> {
    let model = app_model(d, url).await?;
    Some(
        model["databases"]
            .as_array()?
            .iter()
            .map(|db| {
                (
                    db["name"].as_str().unwrap_or_default().to_owned(),
                    db["service"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

fn not_running(d: &Dashboard, status: &AppStatus, title: &str, active: &str) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"notice\">The app at <code>{}</code> does not answer yet.</p>",
        esc(title),
        esc(&status.url)
    );
    page(d, title, active, status, &body).into_response()
}

fn sql_box(db: &str, sql: &str, token: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/databases/{db}/query\" class=\"sql\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <textarea name=\"sql\" rows=\"3\" spellcheck=\"false\" placeholder=\"SELECT * FROM ...\">{}</textarea>\
         <button type=\"submit\">Run read-only</button></form>",
        esc(sql),
        db = esc(db),
        token = esc(token),
    )
}

async fn databases_page(State(d): State<Dashboard>) -> Response {
    let status = current(&d.status);
    let Some(declared) = declared_databases(&d, &status.url).await else {
        return not_running(&d, &status, "Databases", "databases");
    };
    let mut body = String::from("<h1>Databases</h1><div class=\"cards\">");
    for (name, service) in declared {
        let _ = write!(
            body,
            "<section class=\"card\" id=\"database-{n}\"><h2>{n}</h2><p class=\"muted\">service {s}</p>",
            n = esc(&name),
            s = esc(&service)
        );
        match databases::describe(&d.databases, &name).await {
            Ok((tables, migrations)) => {
                body.push_str("<h3>Tables</h3><ul class=\"plain tables\">");
                for t in &tables {
                    let columns: Vec<String> = t
                        .columns
                        .iter()
                        .map(|(c, kind, nullable)| {
                            format!(
                                "<code>{}</code> <span class=\"type\">{}{}</span>",
                                esc(c),
                                esc(kind),
                                if *nullable { "?" } else { "" }
                            )
                        })
                        .collect();
                    let _ = write!(
                        body,
                        "<li><a href=\"/databases/{n}/tables/{t}\">{t}</a><div class=\"columns\">{}</div></li>",
                        columns.join(" · "),
                        n = esc(&name),
                        t = esc(&t.name)
                    );
                }
                body.push_str("</ul><h3>Migrations</h3><ul class=\"plain\">");
                for (version, file, at) in &migrations {
                    let _ = write!(
                        body,
                        "<li><code>{version}</code> {} <span class=\"muted\">{}</span></li>",
                        esc(file),
                        esc(at)
                    );
                }
                body.push_str("</ul>");
                body.push_str(&sql_box(&name, "", d.guard.token()));
            }
            Err(e) => {
                let _ = write!(body, "<p class=\"notice\">{}</p>", esc(&e));
            }
        }
        body.push_str("</section>");
    }
    body.push_str("</div>");
    page(&d, "Databases", "databases", &status, &body).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct PageQuery {
    page: Option<i64>,
}

async fn table_page(
    State(d): State<Dashboard>,
    Path((db, table)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let status = current(&d.status);
    let Some(declared) = declared_databases(&d, &status.url).await else {
        return not_running(&d, &status, "Databases", "databases");
    };
    let known_table = declared.iter().any(|(n, _)| *n == db)
        && databases::describe(&d.databases, &db)
            .await
            .ok()
            .is_some_and(|(tables, _)| tables.iter().any(|t| t.name == table));
    if !known_table {
        let uri = format!("/databases/{db}/tables/{table}")
            .parse()
            .unwrap_or_default();
        return not_found(State(d), uri).await;
    }
    let page_no = q.page.unwrap_or(0).max(0);
    let body = match databases::rows(&d.databases, &db, &table, page_no).await {
        Ok((rows, more)) => {
            let mut nav = String::from("<p class=\"pager\">");
            if page_no > 0 {
                let _ = write!(nav, "<a href=\"?page={}\">← previous</a> ", page_no - 1);
            }
            let _ = write!(
                nav,
                "<span class=\"muted\">rows {}–{}</span>",
                page_no * databases::PAGE + 1,
                page_no * databases::PAGE + rows.len() as i64
            );
            if more {
                let _ = write!(
                    nav,
                    " <a href=\"?page={}\" class=\"next\">next →</a>",
                    page_no + 1
                );
            }
            nav.push_str("</p>");
            format!(
                "<h1><a href=\"/databases\">{db}</a> · {table}</h1>{nav}{}",
                databases::rows_table(&rows),
                db = esc(&db),
                table = esc(&table)
            )
        }
        Err(e) => format!(
            "<h1>{}</h1><p class=\"notice\">{}</p>",
            esc(&table),
            esc(&e)
        ),
    };
    page(&d, &table, "databases", &status, &body).into_response()
}

async fn query_page(
    State(d): State<Dashboard>,
    Path(db): Path<String>,
    form: axum::body::Bytes,
) -> Response {
    let status = current(&d.status);
    let Some(declared) = declared_databases(&d, &status.url).await else {
        return not_running(&d, &status, "Databases", "databases");
    };
    if !declared.iter().any(|(n, _)| *n == db) {
        let uri = format!("/databases/{db}/query").parse().unwrap_or_default();
        return not_found(State(d), uri).await;
    }
    let sql = form_field(&form, "sql").unwrap_or_default();
    let result = match databases::query(&d.databases, &db, &sql).await {
        Ok(rows) => format!(
            "<p class=\"muted\" id=\"query-count\">{} row{}</p>{}",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            databases::rows_table(&rows)
        ),
        Err(e) => format!("<p class=\"notice\" id=\"query-error\">{}</p>", esc(&e)),
    };
    let body = format!(
        "<h1><a href=\"/databases\">{}</a> · query</h1>{}{}",
        esc(&db),
        sql_box(&db, &sql, d.guard.token()),
        result
    );
    page(&d, "Query", "databases", &status, &body).into_response()
}

/// One field of an `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://form/?{}", String::from_utf8_lossy(body)))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[derive(Debug, serde::Deserialize)]
struct PubSubQuery {
    redriven: Option<u64>,
    error: Option<String>,
}

async fn pubsub(State(d): State<Dashboard>, Query(q): Query<PubSubQuery>) -> Response {
    let status = current(&d.status);
    let request = d.internal(
        reqwest::Method::GET,
        &format!("{}/__ovation/pubsub", status.url),
        Vec::new(),
    );
    let state: Option<Value> =
        match request.map(|r| r.timeout(std::time::Duration::from_secs(5)).send()) {
            Some(sent) => match sent.await {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            },
            None => None,
        };
    let mut body = String::from("<h1>Pub/Sub</h1>");
    if let Some(n) = q.redriven {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"redriven\">Put {n} message{} back for delivery.</p>",
            if n == 1 { "" } else { "s" }
        );
    }
    if let Some(e) = &q.error {
        let _ = write!(body, "<p class=\"notice\">Redrive failed: {}</p>", esc(e));
    }
    let Some(state) = state else {
        let _ = write!(
            body,
            "<p class=\"notice\">The app at <code>{}</code> does not answer yet.</p>",
            esc(&status.url)
        );
        return page(&d, "Pub/Sub", "pubsub", &status, &body).into_response();
    };
    body.push_str(&render_pubsub(&state, d.guard.token()));
    page(&d, "Pub/Sub", "pubsub", &status, &body).into_response()
}

/// The Pub/Sub page's body from the app's `/__ovation/pubsub`.
pub fn render_pubsub(state: &Value, token: &str) -> String {
    let mut out = String::from(
        "<h3>Topics</h3><table class=\"traces\"><thead><tr><th>Topic</th><th>Service</th>\
         <th>Published (24 h)</th></tr></thead><tbody>",
    );
    for t in state["topics"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(t["name"].as_str().unwrap_or_default()),
            esc(t["service"].as_str().unwrap_or_default()),
            t["published"]
                .as_u64()
                .map_or("—".into(), |n| n.to_string()),
        );
    }
    out.push_str("</tbody></table><h3>Subscriptions</h3><div class=\"cards\">");
    for s in state["subscriptions"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or_default();
        let stat = |k: &str| s["stats"][k].as_u64().unwrap_or(0);
        let _ = write!(
            out,
            "<section class=\"card\" id=\"subscription-{id}\"><h2>{id}</h2>\
             <p class=\"muted\"><code>{topic}</code> → {service}</p>\
             <p class=\"counts\"><span>delivered <b>{}</b></span> <span>pending <b>{}</b></span> \
             <span class=\"dead\">dead <b>{}</b></span></p>",
            stat("delivered"),
            stat("pending"),
            stat("dead"),
            id = esc(name),
            topic = esc(s["topic"].as_str().unwrap_or_default()),
            service = esc(s["service"].as_str().unwrap_or_default()),
        );
        let dead = s["deadLetters"].as_array().cloned().unwrap_or_default();
        if !dead.is_empty() {
            let action = format!("/pubsub/{}/redrive", esc(name));
            let token = format!(
                "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
                esc(token)
            );
            let _ = write!(
                out,
                "<form method=\"post\" action=\"{action}\">{token}<button type=\"submit\" class=\"redrive-all\">\
                 Redrive all {}</button></form><table class=\"attrs dead-letters\">",
                dead.len()
            );
            for d in dead {
                let id = d["message_id"].as_str().unwrap_or_default();
                let payload = d["payload"].to_string();
                let preview: String = payload.chars().take(120).collect();
                let _ = write!(
                    out,
                    "<tr data-message=\"{id}\"><td><code>{id}</code><br><span class=\"muted\">{} · {} attempts</span>\
                     <br><code>{}</code><br><span class=\"error-text\">{}</span></td><td>\
                     <form method=\"post\" action=\"{action}\">{token}<input type=\"hidden\" name=\"messageId\" \
                     value=\"{id}\"><button type=\"submit\" class=\"redrive\">Redrive</button></form></td></tr>",
                    esc(d["published_at"].as_str().unwrap_or_default()),
                    d["attempts"].as_u64().unwrap_or(0),
                    esc(&preview),
                    esc(d["last_error"].as_str().unwrap_or_default()),
                    id = esc(id),
                );
            }
            out.push_str("</table>");
        }
        out.push_str("</section>");
    }
    out.push_str("</div>");
    out
}

/// The redrive buttons: forwarded to the app, then back to the page with the outcome.
async fn redrive(
    State(d): State<Dashboard>,
    Path(subscription): Path<String>,
    form: axum::body::Bytes,
) -> Response {
    let status = current(&d.status);
    // The form's one field, `messageId` (absent for "redrive all").
    let message_id = form_field(&form, "messageId");
    let body = match message_id.filter(|m| !m.is_empty()) {
        Some(id) => serde_json::json!({ "messageId": id }),
        None => serde_json::json!({}),
    };
    let url = format!(
        "{}/__ovation/pubsub/{}/redrive",
        status.url,
        percent_encode(&subscription)
    );
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let answer = match d.internal(reqwest::Method::POST, &url, body) {
        Some(request) => {
            request
                .header(header::CONTENT_TYPE, "application/json")
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
        }
        None => return Redirect::to("/pubsub?error=the+app%27s+URL+is+not+valid").into_response(),
    };
    let target = match answer {
        Ok(r) if r.status().is_success() => {
            let n = r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["redriven"].as_u64())
                .unwrap_or(0);
            format!("/pubsub?redriven={n}")
        }
        Ok(r) => {
            let text = r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned));
            format!(
                "/pubsub?error={}",
                percent_encode(&text.unwrap_or_else(|| "the app refused".into()))
            )
        }
        Err(_) => format!(
            "/pubsub?error={}",
            percent_encode("the app does not answer")
        ),
    };
    Redirect::to(&target).into_response()
}

/// `text` with everything but RFC 3986's unreserved characters percent-encoded: safe in a
/// path segment or a query value.
pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn traces(State(d): State<Dashboard>, Query(filter): Query<ListQuery>) -> Response {
    let status = current(&d.status);
    let list = d.store.list(&filter).await.unwrap_or_default();
    let services = d.store.root_services().await.unwrap_or_default();
    let option = |value: &str, selected: Option<&String>| {
        let sel = if selected.is_some_and(|s| s == value) {
            " selected"
        } else {
            ""
        };
        format!("<option value=\"{v}\"{sel}>{v}</option>", v = esc(value))
    };
    let mut body = String::from("<h1>Traces</h1>");
    let dropped = d.store.dropped();
    if dropped.spans > 0 || dropped.requests > 0 {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"dropped\">The trace store turned away {} span{} and {} \
             request{} it could not take (see README, Tracing): sample less under heavy load.</p>",
            dropped.spans,
            if dropped.spans == 1 { "" } else { "s" },
            dropped.requests,
            if dropped.requests == 1 { "" } else { "s" },
        );
    }
    body.push_str("<form id=\"filters\" class=\"filters\">");
    let _ = write!(
        body,
        "<label>Service <select name=\"service\"><option value=\"\">all</option>{}</select></label>\
         <label>Endpoint <input name=\"endpoint\" value=\"{}\" placeholder=\"any\"></label>\
         <label>Status <select name=\"status\"><option value=\"\">all</option>{}{}</select></label>\
         <button type=\"submit\">Filter</button></form>",
        services
            .iter()
            .map(|s| option(s, filter.service.as_ref()))
            .collect::<String>(),
        esc(filter.endpoint.as_deref().unwrap_or_default()),
        option("ok", filter.status.as_ref()),
        option("error", filter.status.as_ref()),
    );
    body.push_str(
        "<table class=\"traces\"><thead><tr><th>Endpoint</th><th>Started</th><th>Duration</th>\
         <th>Spans</th><th>Status</th></tr></thead><tbody id=\"trace-rows\">",
    );
    for t in &list {
        body.push_str(&trace_row(t));
    }
    body.push_str("</tbody></table>");
    if list.is_empty() {
        body.push_str(
            "<p id=\"no-traces\" class=\"muted\">No traces yet: send a request to the app.</p>",
        );
    }
    page(&d, "Traces", "traces", &status, &body).into_response()
}

/// One row of the trace list (the page's script renders the same from the API).
fn trace_row(t: &Value) -> String {
    let id = t["traceId"].as_str().unwrap_or_default();
    let endpoint = match (t["rootService"].as_str(), t["rootEndpoint"].as_str()) {
        (Some(s), Some(e)) => format!("{s}.{e}"),
        _ => t["rootName"].as_str().unwrap_or_default().to_owned(),
    };
    let status = t["status"].as_str().unwrap_or_default();
    format!(
        "<tr data-trace=\"{id}\"><td><a href=\"/traces/{id}\">{endpoint}</a></td><td>{start}</td>\
         <td>{duration:.2} ms</td><td>{spans}</td><td><span class=\"badge {status}\">{status}</span></td></tr>",
        id = esc(id),
        endpoint = esc(&endpoint),
        start = esc(t["start"].as_str().unwrap_or_default()),
        duration = t["durationMs"].as_f64().unwrap_or(0.0),
        spans = t["spanCount"].as_i64().unwrap_or(0),
        status = esc(status),
    )
}

async fn trace(State(d): State<Dashboard>, Path(trace_id): Path<String>) -> Response {
    let status = current(&d.status);
    let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
    let spans = if valid {
        d.store
            .trace(&trace_id.to_ascii_lowercase())
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if spans.is_empty() {
        let body = format!(
            "<h1>No such trace</h1><p class=\"muted\">There is no trace <code>{}</code> \
             (traces are kept for 24 hours).</p><p><a href=\"/traces\">All traces</a></p>",
            esc(&trace_id)
        );
        return (
            StatusCode::NOT_FOUND,
            page(&d, "No such trace", "traces", &status, &body),
        )
            .into_response();
    }
    page(
        &d,
        "Trace",
        "traces",
        &status,
        &render_waterfall(&trace_id, &spans),
    )
    .into_response()
}

/// A trace as a waterfall: spans in depth-first call order, each with a bar on the trace's
/// time axis; a click opens its attributes and logs.
pub fn render_waterfall(trace_id: &str, spans: &[Value]) -> String {
    let start = spans
        .iter()
        .filter_map(|s| s["startNs"].as_i64())
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .filter_map(|s| Some(s["startNs"].as_i64()? + (s["durationMs"].as_f64()? * 1e6) as i64))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let total = (end - start) as f64;
    let ids: Vec<&str> = spans.iter().filter_map(|s| s["id"].as_str()).collect();
    // Depth-first from the roots (spans whose parent is not in the trace).
    let mut ordered: Vec<(usize, &Value)> = Vec::new();
    let mut stack: Vec<(usize, &Value)> = spans
        .iter()
        .filter(|s| !s["parent"].as_str().is_some_and(|p| ids.contains(&p)))
        .rev()
        .map(|s| (0, s))
        .collect();
    while let Some((depth, span)) = stack.pop() {
        ordered.push((depth, span));
        let children = spans.iter().filter(|c| c["parent"] == span["id"]).rev();
        stack.extend(children.map(|c| (depth + 1, c)));
    }
    let mut out = format!(
        "<h1>Trace <code>{}</code></h1><p class=\"muted\">{} spans · {:.2} ms</p>\
         <div class=\"waterfall\" id=\"waterfall\">",
        esc(trace_id),
        spans.len(),
        total / 1e6
    );
    for (depth, s) in ordered {
        let offset = (s["startNs"].as_i64().unwrap_or(start) - start) as f64 / total * 100.0;
        let width = (s["durationMs"].as_f64().unwrap_or(0.0) * 1e6 / total * 100.0).max(0.3);
        let kind = s["kind"].as_str().unwrap_or_default();
        let service = s["service"]
            .as_str()
            .or(s["process"].as_str())
            .unwrap_or_default();
        let mut details = String::from("<table class=\"attrs\">");
        if let Some(attrs) = s["attributes"].as_object() {
            for (k, v) in attrs {
                let v = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                let _ = write!(
                    details,
                    "<tr><th>{}</th><td><code>{}</code></td></tr>",
                    esc(k),
                    esc(&v)
                );
            }
        }
        details.push_str("</table>");
        if let Some(events) = s["events"].as_array().filter(|e| !e.is_empty()) {
            details.push_str("<h4>Logs</h4><ul class=\"logs\">");
            for e in events {
                let fields: String = e["attributes"]
                    .as_object()
                    .map(|a| {
                        a.iter()
                            .filter(|(k, _)| !k.starts_with("code.") && *k != "target")
                            .map(|(k, v)| format!(" {}={}", esc(k), esc(&v.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = write!(
                    details,
                    "<li><span class=\"muted\">{}</span> {}<span class=\"muted\">{}</span></li>",
                    esc(e["time"].as_str().unwrap_or_default()),
                    esc(e["name"].as_str().unwrap_or_default()),
                    fields
                );
            }
            details.push_str("</ul>");
        }
        let _ = write!(
            out,
            "<details class=\"span {kind} {status}\"><summary>\
             <span class=\"label\" style=\"padding-left:{indent}rem\"><span class=\"kind\">{kind}</span> \
             {name} <span class=\"muted\">{service}</span></span>\
             <span class=\"track\"><span class=\"bar\" style=\"left:{offset:.3}%;width:{width:.3}%\"></span></span>\
             <span class=\"ms\">{ms:.2} ms</span></summary>{details}</details>",
            kind = esc(kind),
            status = esc(s["status"].as_str().unwrap_or_default()),
            indent = depth as f64 * 1.1,
            name = esc(s["name"].as_str().unwrap_or_default()),
            service = esc(service),
            ms = s["durationMs"].as_f64().unwrap_or(0.0),
        );
    }
    out.push_str("</div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_from_the_app_is_escaped() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        let html = render_waterfall(
            "t",
            &[
                json!({"id": "a", "parent": null, "name": "<img src=x>", "kind": "server",
                     "startNs": 0, "durationMs": 1.0, "attributes": {"k": "<b>"}, "events": []}),
            ],
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x&gt;"));
    }

    #[test]
    fn schemas_render_as_field_trees() {
        let schema = json!({
            "type": "object",
            "properties": {
                "userId": {"type": "string", "format": "uuid"},
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                "note": {"type": ["string", "null"]}
            },
            "required": ["userId", "items"],
            "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}}
        });
        let html = schema_tree(&schema);
        assert!(
            html.contains("<code>userId</code> <span class=\"type\">string (uuid)</span>"),
            "{html}"
        );
        assert!(html.contains("Item[]"), "{html}");
        assert!(
            html.contains("<code>sku</code>"),
            "nested fields are shown: {html}"
        );
        assert!(
            html.contains("<code>note</code><span class=\"muted\">?</span>"),
            "{html}"
        );
    }
}
