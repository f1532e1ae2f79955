//! The CLI's trace store: an OTLP/HTTP receiver and the JSON API the dashboard reads.
//!
//! - `POST /v1/traces`: OTLP/HTTP, protobuf (`application/x-protobuf`) or JSON
//!   (`application/json`), as any OpenTelemetry SDK or collector sends it;
//! - `GET /api/traces?service=&endpoint=&status=&limit=`: the newest traces first, each with
//!   its root span's service and endpoint, start, duration, status and span count;
//! - `GET /api/traces/{trace_id}`: every span of one trace;
//! - `POST /v1/metrics` and `GET /api/metrics`: the app's recent activity ([`metrics`]).
//!
//! Spans live in the `ovation_traces` database of the managed Postgres (or `DATABASE_URL`'s
//! server), bounded to the newest [`MAX_TRACES`] traces of the last [`MAX_AGE`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use ovation::sqldb::{DatabaseDef, Migration};
use ovation::sqlx::{self, PgPool};
use ovation::{ErrCode, Error};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub mod metrics;
mod receiver;

pub use receiver::limits;
use receiver::limits::CONCURRENT_REQUESTS;

/// Traces kept, newest first.
pub const MAX_TRACES: i64 = 10_000;
/// How long a trace is kept.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
static DATABASE: DatabaseDef = DatabaseDef {
    name: "ovation_traces",
    module: "ovation_cli::traces",
    migrations: &MIGRATIONS,
    folder: None,
    from_folder: false,
};

static MIGRATIONS: [Migration; 2] = [
    Migration {
        version: 1,
        file: "1_spans.up.sql",
        sql: "
    CREATE TABLE spans (
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT,
        process TEXT NOT NULL,
        service TEXT,
        endpoint TEXT,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        start_ns BIGINT NOT NULL,
        duration_ns BIGINT NOT NULL,
        status TEXT NOT NULL,
        attributes JSONB NOT NULL,
        events JSONB NOT NULL,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (trace_id, span_id)
    );
    CREATE INDEX spans_start ON spans (start_ns DESC);
    ",
    },
    // One row per trace, kept by ingestion: the list reads the newest of these through an
    // index, where it grouped every stored span at each read (seconds under load).
    Migration {
        version: 2,
        file: "2_traces.up.sql",
        sql: "
    CREATE TABLE traces (
        trace_id TEXT PRIMARY KEY,
        start_ns BIGINT NOT NULL,
        end_ns BIGINT NOT NULL,
        span_count BIGINT NOT NULL,
        root_service TEXT,
        root_endpoint TEXT,
        root_name TEXT NOT NULL,
        root_status TEXT NOT NULL,
        root_start_ns BIGINT NOT NULL,
        root_known BOOLEAN NOT NULL,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX traces_start ON traces (start_ns DESC);
    DROP INDEX spans_start;
    INSERT INTO traces
    SELECT trace_id, min(start_ns), max(start_ns + duration_ns), count(*),
           (array_agg(service ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
           (array_agg(endpoint ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
           (array_agg(name ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
           (array_agg(status ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
           (array_agg(start_ns ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
           bool_or(parent_span_id IS NULL),
           max(received_at)
    FROM spans GROUP BY trace_id;
    ",
    },
];

/// The store: a pool on the `ovation_traces` database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Permits to receive an OTLP request ([`limits::CONCURRENT_REQUESTS`]).
    receiving: Arc<tokio::sync::Semaphore>,
    dropped: Arc<DroppedCounts>,
    /// The app's recent activity, from the metrics it exports.
    pub activity: Arc<metrics::Activities>,
}

#[derive(Debug, Default)]
struct DroppedCounts {
    spans: AtomicU64,
    requests: AtomicU64,
}

/// What did not reach the store: spans the receiver turned away past a request's limits, and
/// whole requests it refused (too large, or while [`limits::CONCURRENT_REQUESTS`] others were
/// being received; their spans are not known, and exporters send them again), since it
/// started; and the spans the app's processes dropped before sending them, their export queue
/// full, as their metrics last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dropped {
    pub spans: u64,
    pub requests: u64,
    pub in_app: u64,
}

impl Store {
    /// Opens (creating and migrating) the store on `server`, and starts its pruning.
    pub async fn open(server: &ovation::tooling::PgServer) -> Result<Store, String> {
        let pool = server
            .open(&DATABASE, 5)
            .await
            .map_err(|e| format!("cannot open the trace store: {e}"))?;
        let store = Store {
            pool,
            receiving: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REQUESTS)),
            dropped: Arc::default(),
            activity: Arc::default(),
        };
        let pruner = store.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = pruner.prune().await {
                    eprintln!("warning: pruning old traces failed: {e}");
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
        Ok(store)
    }

    /// What did not reach the store.
    pub fn dropped(&self) -> Dropped {
        Dropped {
            spans: self.dropped.spans.load(Ordering::Relaxed),
            requests: self.dropped.requests.load(Ordering::Relaxed),
            in_app: self.activity.dropped_spans(),
        }
    }

    /// Deletes traces past [`MAX_AGE`] and beyond the newest [`MAX_TRACES`].
    pub async fn prune(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "WITH gone AS (
                 DELETE FROM traces
                 WHERE received_at < now() - make_interval(secs => $1)
                    OR trace_id IN (SELECT trace_id FROM traces ORDER BY start_ns DESC OFFSET $2)
                 RETURNING trace_id
             )
             DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM gone)",
        )
        .bind(MAX_AGE.as_secs_f64())
        .bind(MAX_TRACES)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores spans the receiver decoded (within its limits); returns how many.
    async fn insert_rows(&self, rows: Rows) -> Result<usize, sqlx::Error> {
        let count = rows.trace_id.len();
        if count == 0 {
            return Ok(0);
        }
        // The spans, and their traces' rows in one statement: a trace's row gains what its new
        // spans add (spans sent twice count once), and its root is the first span without a
        // parent seen, or else its earliest span.
        sqlx::query(
            "WITH batch AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::text[], $8::text[], $9::int8[], $10::int8[],
                                      $11::text[], $12::jsonb[], $13::jsonb[])
                     AS b(trace_id, span_id, parent_span_id, process, service, endpoint, kind,
                          name, start_ns, duration_ns, status, attributes, events)
             ), stored AS (
                 INSERT INTO spans (trace_id, span_id, parent_span_id, process, service, endpoint,
                                    kind, name, start_ns, duration_ns, status, attributes, events)
                 SELECT * FROM batch
                 ON CONFLICT (trace_id, span_id) DO NOTHING
                 RETURNING trace_id, parent_span_id, service, endpoint, name, start_ns,
                           duration_ns, status
             )
             INSERT INTO traces AS t (trace_id, start_ns, end_ns, span_count, root_service,
                                      root_endpoint, root_name, root_status, root_start_ns,
                                      root_known)
             SELECT trace_id, min(start_ns), max(start_ns + duration_ns), count(*),
                    (array_agg(service ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
                    (array_agg(endpoint ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
                    (array_agg(name ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
                    (array_agg(status ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
                    (array_agg(start_ns ORDER BY parent_span_id IS NOT NULL, start_ns))[1],
                    bool_or(parent_span_id IS NULL)
             FROM stored GROUP BY trace_id ORDER BY trace_id
             ON CONFLICT (trace_id) DO UPDATE SET
                 start_ns = least(t.start_ns, excluded.start_ns),
                 end_ns = greatest(t.end_ns, excluded.end_ns),
                 span_count = t.span_count + excluded.span_count,
                 received_at = now(),
                 (root_service, root_endpoint, root_name, root_status, root_start_ns, root_known) =
                     (SELECT excluded.root_service, excluded.root_endpoint, excluded.root_name,
                             excluded.root_status, excluded.root_start_ns, excluded.root_known
                      WHERE (excluded.root_known AND NOT t.root_known)
                         OR (excluded.root_known = t.root_known
                             AND excluded.root_start_ns < t.root_start_ns)
                      UNION ALL
                      SELECT t.root_service, t.root_endpoint, t.root_name, t.root_status,
                             t.root_start_ns, t.root_known
                      LIMIT 1)",
        )
        .bind(&rows.trace_id)
        .bind(&rows.span_id)
        .bind(&rows.parent)
        .bind(&rows.process)
        .bind(&rows.service)
        .bind(&rows.endpoint)
        .bind(&rows.kind)
        .bind(&rows.name)
        .bind(&rows.start)
        .bind(&rows.duration)
        .bind(&rows.status)
        .bind(&rows.attributes)
        .bind(&rows.events)
        .execute(&self.pool)
        .await?;
        Ok(count)
    }

    /// The newest traces matching the filters.
    pub async fn list(&self, filter: &ListQuery) -> Result<Vec<Value>, sqlx::Error> {
        let limit = filter.limit.unwrap_or(50).clamp(1, 1000);
        /// trace id, start, duration, span count, root service, endpoint, name, status.
        type Row = (
            String,
            i64,
            i64,
            i64,
            Option<String>,
            Option<String>,
            String,
            String,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT trace_id, start_ns, end_ns - start_ns, span_count, root_service,
                        root_endpoint, root_name, root_status
                 FROM traces
                 WHERE ($1::text IS NULL OR root_service = $1)
                   AND ($2::text IS NULL OR root_endpoint = $2)
                   AND ($3::text IS NULL OR root_status = $3)
                 ORDER BY start_ns DESC
                 LIMIT $4",
        )
        .bind(&filter.service)
        .bind(&filter.endpoint)
        .bind(&filter.status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(trace_id, start, duration, spans, service, endpoint, name, status)| {
                    json!({
                        "traceId": trace_id,
                        "rootService": service,
                        "rootEndpoint": endpoint,
                        "rootName": name,
                        "start": rfc3339(start),
                        "startNs": start,
                        "durationMs": duration as f64 / 1e6,
                        "status": status,
                        "spanCount": spans,
                    })
                },
            )
            .collect())
    }

    /// The services that root traces, for the Traces page's filter.
    pub async fn root_services(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT root_service FROM traces WHERE root_service IS NOT NULL
             ORDER BY root_service",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Every span of `trace_id`, in start order; empty if there is no such trace.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<Value>, sqlx::Error> {
        type Row = (
            String,
            Option<String>,
            String,
            Option<String>,
            String,
            String,
            i64,
            i64,
            String,
            Value,
            Value,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT span_id, parent_span_id, process, service, kind, name, start_ns,
                    duration_ns, status, attributes, events
             FROM spans WHERE trace_id = $1 ORDER BY start_ns, span_id",
        )
        .bind(trace_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    parent,
                    process,
                    service,
                    kind,
                    name,
                    start,
                    duration,
                    status,
                    attributes,
                    events,
                )| {
                    json!({
                        "id": id,
                        "parent": parent,
                        "process": process,
                        "service": service,
                        "kind": kind,
                        "name": name,
                        "start": rfc3339(start),
                        "startNs": start,
                        "durationMs": duration as f64 / 1e6,
                        "status": status,
                        "attributes": attributes,
                        "events": events,
                    })
                },
            )
            .collect())
    }
}

/// The `service.name` of a resource (`unknown` without one).
fn process_name(resource: Option<&Resource>) -> String {
    attributes_json(resource.map_or(&[][..], |r| &r.attributes))["service.name"]
        .as_str()
        .unwrap_or("unknown")
        .to_owned()
}

/// Spans as columns, for one multi-row insert.
#[derive(Default)]
struct Rows {
    trace_id: Vec<String>,
    span_id: Vec<String>,
    parent: Vec<Option<String>>,
    process: Vec<String>,
    service: Vec<Option<String>>,
    endpoint: Vec<Option<String>>,
    kind: Vec<String>,
    name: Vec<String>,
    start: Vec<i64>,
    duration: Vec<i64>,
    status: Vec<String>,
    attributes: Vec<Value>,
    events: Vec<Value>,
}

impl Rows {
    fn len(&self) -> usize {
        self.trace_id.len()
    }

    fn push(&mut self, process: &str, span: Span) {
        let attributes = attributes_json(&span.attributes);
        let text = |key: &str| attributes[key].as_str().map(str::to_owned);
        self.trace_id.push(hex(&span.trace_id));
        self.span_id.push(hex(&span.span_id));
        self.parent.push(
            Some(hex(&span.parent_span_id))
                .filter(|p| !p.is_empty() && p.bytes().any(|b| b != b'0')),
        );
        self.process.push(process.to_owned());
        self.service.push(text("service"));
        self.endpoint.push(text("endpoint"));
        self.kind.push(
            match span.kind {
                1 => "internal",
                2 => "server",
                3 => "client",
                4 => "producer",
                5 => "consumer",
                _ => "unspecified",
            }
            .to_owned(),
        );
        self.name.push(span.name);
        let start = i64::try_from(span.start_time_unix_nano).unwrap_or(i64::MAX);
        let end = i64::try_from(span.end_time_unix_nano).unwrap_or(start);
        self.start.push(start);
        self.duration.push(end.saturating_sub(start).max(0));
        let error = span.status.as_ref().is_some_and(|s| s.code == 2);
        self.status
            .push(if error { "error" } else { "ok" }.to_owned());
        self.attributes.push(attributes);
        self.events.push(Value::Array(
            span.events
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name,
                        "time": rfc3339(i64::try_from(e.time_unix_nano).unwrap_or(0)),
                        "attributes": attributes_json(&e.attributes),
                    })
                })
                .collect(),
        ));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(unix_ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn attributes_json(attributes: &[KeyValue]) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|kv| (kv.key.clone(), any_value_json(kv.value.as_ref())))
            .collect(),
    )
}

fn any_value_json(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any_value_json(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => attributes_json(&kv.values),
        Some(any_value::Value::BytesValue(b)) => json!(hex(b)),
    }
}

/// The filters of `GET /api/traces`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub service: Option<String>,
    pub endpoint: Option<String>,
    /// `ok` or `error`.
    pub status: Option<String>,
    pub limit: Option<i64>,
}

/// The receiver and the API, with an index of the API at `/`.
pub fn router(store: Store) -> Router {
    api_router(store).route("/", axum::routing::get(index))
}

/// The receiver and the API alone (the dashboard adds its pages). Unguarded: serve it behind
/// a [`crate::guard::Guard`].
pub fn api_router(store: Store) -> Router {
    Router::new()
        .route("/v1/traces", axum::routing::post(receiver::receive))
        .route("/v1/metrics", axum::routing::post(metrics::receive))
        .route("/api/metrics", axum::routing::get(metrics::list))
        .route("/api/traces", axum::routing::get(list))
        .route("/api/traces/{trace_id}", axum::routing::get(trace))
        .with_state(store)
}

/// Serves [`router`] on `listener`, behind the guard of its port (and `allowed_hosts`), until
/// the process ends.
pub fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    allowed_hosts: &[String],
) -> tokio::task::JoinHandle<()> {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let guard = crate::guard::Guard::new(port, allowed_hosts);
    serve_router(guard.protect(router(store)), listener)
}

/// Serves `app` on `listener` until the process ends.
pub fn serve_router(app: Router, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(Lingering(listener), app).await {
            eprintln!("error: the dashboard server stopped: {e}");
        }
    })
}

/// A listener whose connections close the way a client still sending can read the last
/// answer of (a 413 or 408 before the whole body): see [`ovation::tooling::LingeringClose`].
struct Lingering(tokio::net::TcpListener);

impl axum::serve::Listener for Lingering {
    type Io = ovation::tooling::LingeringClose;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    return (ovation::tooling::LingeringClose::new(stream), addr);
                }
                // Out of file descriptors and the like: wait rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

async fn index() -> axum::Json<Value> {
    axum::Json(json!({
        "otlp": "POST /v1/traces (application/x-protobuf or application/json)",
        "otlpMetrics": "POST /v1/metrics (application/x-protobuf)",
        "metrics": "GET /api/metrics",
        "traces": "GET /api/traces?service=&endpoint=&status=ok|error&limit=",
        "trace": "GET /api/traces/{trace_id}",
    }))
}

async fn list(
    State(store): State<Store>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return Error::invalid_argument(e.body_text()).into_response(),
    };
    if let Some(status) = &query.status
        && status != "ok"
        && status != "error"
    {
        return Error::invalid_argument(format!("status must be `ok` or `error`, not {status:?}"))
            .into_response();
    }
    match store.list(&query).await {
        Ok(traces) => {
            axum::Json(json!({ "traces": traces, "dropped": store.dropped() })).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn trace(State(store): State<Store>, Path(trace_id): Path<String>) -> Response {
    let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Error::invalid_argument("a trace id is 32 hexadecimal digits").into_response();
    }
    match store.trace(&trace_id.to_ascii_lowercase()).await {
        Ok(spans) if spans.is_empty() => {
            Error::not_found(format!("no trace {trace_id}")).into_response()
        }
        Ok(spans) => axum::Json(json!({ "traceId": trace_id, "spans": spans })).into_response(),
        Err(e) => store_error(e),
    }
}

fn store_error(e: sqlx::Error) -> Response {
    eprintln!("error: reading traces failed: {e}");
    Error::unavailable("the trace store is unavailable").into_response()
}
