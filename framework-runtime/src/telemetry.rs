//! Logs and distributed tracing.
//!
//! Everything is a `tracing` span or event; two layers make traces of them:
//!
//! - `tracing-opentelemetry` turns Ovation's spans into OpenTelemetry spans: a request
//!   (`otel.kind = server`), a call (`client` when remote, `internal` when local), a publish
//!   (`producer`), a delivery attempt (`consumer`); events inside a span (the app's logs)
//!   become span events;
//! - [`QuerySpans`] turns sqlx's per-statement event into a span of its own, child of the span
//!   the query ran in, with the statement (literals redacted), the rows, and the duration.
//!
//! The W3C `traceparent` crosses processes in a header of every remote call and gateway
//! forward, and rides inside every Pub/Sub message, so a request and everything it causes
//! share one trace id. Request and response bodies and headers are never recorded (so neither
//! are `Authorization` nor cookies).
//!
//! Export is OTLP/HTTP (protobuf) to `otlp_endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`), through
//! [`QueueProcessor`]: a bounded buffer drained in batches by a thread of its own, so a
//! request never waits on the collector; spans that find the queue full are dropped and counted
//! ([`dropped_spans`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets, dynamic_filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Config;

/// The header (and Pub/Sub message field) carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Spans waiting for export; past this, new spans are dropped and counted.
const QUEUE_CAPACITY: usize = 8192;
/// Spans per OTLP request.
const BATCH: usize = 512;
/// How long a span may wait for a batch to fill: how soon the dashboard shows a quiet app's
/// requests.
const BATCH_DELAY: Duration = Duration::from_millis(200);

struct Telemetry {
    provider: SdkTracerProvider,
    dropped: Arc<AtomicU64>,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Installs the process's `tracing` subscriber: logs to stderr (filtered by `RUST_LOG`,
/// default `info`) and, when `config` names an OTLP endpoint, trace export. Does nothing if a
/// subscriber is installed already.
pub fn init(config: &Config) {
    install(config, false);
}

/// [`init`] for tests: logs go through the test harness's capture, so a passing test is
/// quiet; traces are exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (as `ovation test`
/// does).
pub fn init_for_tests() {
    init_tests(
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty()),
    );
}

/// [`init_for_tests`], exporting to `endpoint` whatever the environment says: for tests of
/// tracing itself. Only the first initialisation of a process counts.
pub fn init_for_tests_exporting_to(endpoint: &str) {
    init_tests(Some(endpoint.to_owned()));
}

fn init_tests(otlp_endpoint: Option<String>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let config = Config {
            otlp_endpoint,
            ..Config::default()
        };
        install(&config, true);
    });
}

fn install(config: &Config, for_tests: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Log lines say where they were written from the task's Ovation context, not from spans:
    // the log layer takes events only, so a request span costs it nothing (formatting every
    // request span's fields was most of what logging cost a request that logs nothing).
    let logs = tracing_subscriber::fmt::layer().event_format(LogLine);
    let logs = if for_tests {
        logs.with_writer(tracing_subscriber::fmt::writer::BoxMakeWriter::new(
            tracing_subscriber::fmt::TestWriter::new(),
        ))
        .with_ansi(false)
    } else {
        logs.with_writer(tracing_subscriber::fmt::writer::BoxMakeWriter::new(
            std::io::stderr,
        ))
        .with_ansi(std::io::stderr().is_terminal())
    }
    .with_filter(filter.and(tracing_subscriber::filter::filter_fn(|m| m.is_event())));
    let tracer = config.otlp_endpoint.as_deref().and_then(|endpoint| {
        match start_export(endpoint, config.trace_sampling.unwrap_or(1.0)) {
            Ok(tracer) => Some(tracer),
            Err(e) => {
                eprintln!("warning: traces are not exported: {e}");
                None
            }
        }
    });
    let spans = tracer.clone().map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Ovation's spans carry their own meaning (service, endpoint, topic); the Rust
            // source location, thread and target of each would only add export volume.
            .with_tracked_inactivity(false)
            // Entering a span would otherwise start its OpenTelemetry span and attach its
            // context to the thread at every poll (every `.await` a handler resumes from), for
            // other OpenTelemetry instrumentation to find; there is none here: the trace context
            // is read from the `tracing` span.
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(
                Targets::new()
                    .with_default(LevelFilter::INFO)
                    .with_target("ovation", LevelFilter::DEBUG)
                    .with_target("sqlx", LevelFilter::OFF)
                    .with_target("h2", LevelFilter::OFF)
                    .with_target("hyper", LevelFilter::OFF)
                    .and(dynamic_filter_fn(|_, _| traced_here())),
            )
    });
    let queries = tracer.as_ref().map(|tracer| {
        QuerySpans {
            tracer: tracer.clone(),
        }
        .with_filter(
            Targets::new()
                .with_target("sqlx::query", LevelFilter::DEBUG)
                .and(dynamic_filter_fn(|_, _| traced_here())),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(queries)
        .try_init();
}

fn start_export(endpoint: &str, sampling: f64) -> Result<SdkTracer, String> {
    let sampling = sampling.clamp(0.0, 1.0);
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http)
        .with_endpoint(url)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("the OTLP exporter for {endpoint} cannot be built: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(service_name())
        .build();
    exporter.set_resource(&resource);
    let dropped = Arc::new(AtomicU64::new(0));
    let processor = QueueProcessor::start(exporter, dropped.clone());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(RequestsDecided(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(sampling),
        ))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ovation");
    let _ = TELEMETRY.set(Telemetry { provider, dropped });
    let _ = REQUEST_SAMPLING.set(sampling);
    Ok(tracer)
}

/// `OTEL_SERVICE_NAME`, or the binary's name.
fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "ovation-app".into())
}

/// Spans dropped because the export queue was full (the collector too slow or down).
pub fn dropped_spans() -> u64 {
    TELEMETRY
        .get()
        .map_or(0, |t| t.dropped.load(Ordering::Relaxed))
}

/// Exports every span ended so far, waiting at most `timeout`. For tests and shutdown.
pub fn flush(timeout: Duration) {
    if let Some(t) = TELEMETRY.get() {
        let provider = t.provider.clone();
        let done = std::thread::spawn(move || provider.force_flush());
        let deadline = std::time::Instant::now() + timeout;
        while !done.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The `traceparent` of the current span: of its trace when sampled, or of the unsampled
/// request it is part of (flags `00`, so the callee does not sample it either).
pub fn current_traceparent() -> Option<String> {
    if let Some(unsampled) = unsampled_traceparent() {
        return Some(unsampled);
    }
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The remote parent a `traceparent` value names; `None` if it is malformed.
pub fn parse_traceparent(value: &str) -> Option<Context> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = value.trim().split('-');
    let (Some(version), Some(trace), Some(span), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if version != "00"
        || !hex(trace, 32)
        || !hex(span, 16)
        || !hex(flags, 2)
        || parts.next().is_some()
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    sc.is_valid()
        .then(|| Context::new().with_remote_span_context(sc))
}

// Sampling is decided where a request enters, before its span exists: the caller's decision
// when its `traceparent` carries one, else `trace_sampling`. A request that is not sampled
// gets no span at all, and nothing inside it (calls, queries, logs) reaches the OpenTelemetry
// layers — instead of being built as OpenTelemetry spans only for the SDK's sampler to drop
// them when they end: on the endpoint bench that building cost more than the request's own
// handling. Its trace context still travels on (flags `00`, from a task-local rather than a
// span, which would cost a registry entry and a lookup per layer at every poll), so the
// services it calls make the same decision. With export off, no request gets a span.

/// `trace_sampling`, once export is on; unset, there is nothing to decide.
static REQUEST_SAMPLING: OnceLock<f64> = OnceLock::new();

/// The trace context of a request that is not sampled, for propagation.
#[derive(Debug, Clone, Copy)]
struct Unsampled {
    trace_id: opentelemetry::trace::TraceId,
    span_id: opentelemetry::trace::SpanId,
}

tokio::task_local! {
    /// In a request's task: its trace context when the request is not sampled.
    static UNSAMPLED: Option<Unsampled>;
}

/// How a request is traced: by its span, or (not sampled) only by the context it passes on.
#[must_use]
pub(crate) struct RequestTrace {
    span: tracing::Span,
    unsampled: Option<Unsampled>,
}

impl RequestTrace {
    /// The request's span: disabled when the request is not traced.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Runs `work`, the request's handling, in its span and its trace context.
    pub(crate) fn run<F: Future>(&self, work: F) -> impl Future<Output = F::Output> + use<F> {
        UNSAMPLED.scope(self.unsampled, work.instrument(self.span.clone()))
    }
}

/// Whether spans are exported at all: when not, the framework makes none.
pub(crate) fn exporting() -> bool {
    REQUEST_SAMPLING.get().is_some()
}

/// Decides whether a request is traced and creates its span with `make` if it is, continuing
/// the caller's trace (`traceparent`).
pub(crate) fn request_span(
    traceparent: Option<&str>,
    make: impl FnOnce() -> tracing::Span,
) -> RequestTrace {
    match REQUEST_SAMPLING.get() {
        Some(&ratio) => decided_span(traceparent, ratio, make),
        None => RequestTrace {
            span: tracing::Span::none(),
            unsampled: None,
        },
    }
}

/// [`request_span`] with sampling `ratio`.
fn decided_span(
    traceparent: Option<&str>,
    ratio: f64,
    make: impl FnOnce() -> tracing::Span,
) -> RequestTrace {
    let parent = traceparent.and_then(parse_traceparent);
    let remote = parent.as_ref().map(|cx| cx.span().span_context().clone());
    let sampled = match &remote {
        Some(sc) => sc.is_sampled(),
        None => ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio),
    };
    if !sampled {
        let unsampled = Unsampled {
            trace_id: remote.as_ref().map_or_else(
                || opentelemetry::trace::TraceId::from(rand::random::<u128>().max(1)),
                |sc| sc.trace_id(),
            ),
            span_id: opentelemetry::trace::SpanId::from(rand::random::<u64>().max(1)),
        };
        return RequestTrace {
            span: tracing::Span::none(),
            unsampled: Some(unsampled),
        };
    }
    // Made outside any unsampled request's context, so `traced_here` lets it through.
    let span = UNSAMPLED.sync_scope(None, make);
    if let Some(cx) = parent {
        let _ = span.set_parent(cx);
    }
    RequestTrace {
        span,
        unsampled: None,
    }
}

/// Whether the span or event being created here goes to the OpenTelemetry layers: not inside
/// an unsampled request.
fn traced_here() -> bool {
    unsampled_here().is_none()
}

/// The unsampled request this task is handling, if any.
fn unsampled_here() -> Option<Unsampled> {
    UNSAMPLED.try_with(|u| *u).ok().flatten()
}

/// The `traceparent` of the unsampled request this task is handling, if any.
fn unsampled_traceparent() -> Option<String> {
    unsampled_here().map(|u| format!("00-{}-{}-00", u.trace_id, u.span_id))
}

/// A log line: time, level, where it was written (`service.endpoint`, `service.subscription`,
/// or `service`, from the task's Ovation context), the message and its fields.
struct LogLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LogLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        let (color, reset) = match (writer.has_ansi_escapes(), level) {
            (false, _) => ("", ""),
            (true, tracing::Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, tracing::Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            (true, tracing::Level::INFO) => ("\x1b[32m", "\x1b[0m"),
            (true, _) => ("\x1b[34m", "\x1b[0m"),
        };
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        write!(writer, "{now} {color}{level:>5}{reset} ")?;
        match crate::runtime::log_context() {
            Some((service, Some(label))) => write!(writer, "{service}.{label}: ")?,
            Some((service, None)) => write!(writer, "{service}: ")?,
            None => {}
        }
        tracing_subscriber::fmt::FormatFields::format_fields(ctx, writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The SDK's sampler, but for request and delivery spans: [`request_span`] decided for them
/// already, and one that reaches the SDK is sampled. Other roots (background work) get
/// `trace_sampling`; children follow their parent.
#[derive(Debug, Clone)]
struct RequestsDecided(Sampler);

impl opentelemetry_sdk::trace::ShouldSample for RequestsDecided {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry::trace::SamplingResult {
        let root = !parent_context.is_some_and(|cx| cx.has_active_span());
        if root && matches!(span_kind, SpanKind::Server | SpanKind::Consumer) {
            return opentelemetry::trace::SamplingResult {
                decision: opentelemetry::trace::SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// A span processor that never blocks the code ending a span: ended spans go into a bounded
/// buffer, and a thread of its own takes them from it in batches for the exporter. Ending a
/// span is one uncontended lock and a push: the thread is woken only when a batch is full (or
/// a flush asks), not once per span, and waits at most [`BATCH_DELAY`] for a batch to fill,
/// so a quiet app's spans still reach the collector promptly.
#[derive(Debug)]
struct QueueProcessor {
    queue: Arc<Queue>,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when `pending` holds a full batch, a flush, or the close.
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    spans: Vec<SpanData>,
    /// Flushes waiting for every span queued before them to be exported.
    flushes: Vec<std::sync::mpsc::Sender<()>>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves `Pending` whole (pushes and takes only).
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl QueueProcessor {
    fn start<E: SpanExporter + 'static>(exporter: E, dropped: Arc<AtomicU64>) -> QueueProcessor {
        let queue = Arc::new(Queue::default());
        let drained = queue.clone();
        std::thread::Builder::new()
            .name("ovation-trace-export".into())
            .spawn(move || export_loop(exporter, &drained))
            .expect("a thread can be started");
        QueueProcessor { queue, dropped }
    }
}

impl Drop for QueueProcessor {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_one();
    }
}

fn export_loop<E: SpanExporter>(exporter: E, queue: &Queue) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    loop {
        let (spans, flushes, closed) = {
            let mut pending = queue.lock();
            let deadline = Instant::now() + BATCH_DELAY;
            while pending.spans.len() < BATCH && pending.flushes.is_empty() && !pending.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                pending = queue
                    .ready
                    .wait_timeout(pending, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            (
                std::mem::take(&mut pending.spans),
                std::mem::take(&mut pending.flushes),
                pending.closed,
            )
        };
        let mut spans = spans.into_iter().peekable();
        while spans.peek().is_some() {
            // A collector that is down loses this batch; the app goes on.
            let _ = rt.block_on(exporter.export(spans.by_ref().take(BATCH).collect()));
        }
        for done in flushes {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let mut pending = self.queue.lock();
        if pending.spans.len() >= QUEUE_CAPACITY {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if pending.spans.capacity() == 0 {
            pending.spans.reserve(BATCH);
        }
        pending.spans.push(span);
        if pending.spans.len() == BATCH {
            self.queue.ready.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (done, wait) = std::sync::mpsc::channel();
        self.queue.lock().flushes.push(done);
        self.queue.ready.notify_one();
        let _ = wait.recv_timeout(Duration::from_secs(10));
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.force_flush()
    }
}

/// Turns sqlx's event for each finished statement into a span, child of the current span.
/// Statements outside any traced span (Pub/Sub polling, migrations) make no span.
struct QuerySpans {
    tracer: SdkTracer,
}

#[derive(Default)]
struct QueryFields {
    summary: String,
    statement: String,
    rows_returned: Option<u64>,
    rows_affected: Option<u64>,
    elapsed_secs: f64,
}

impl tracing::field::Visit for QueryFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "rows_returned" => self.rows_returned = Some(value),
            "rows_affected" => self.rows_affected = Some(value),
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> Layer<S> for QuerySpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let parent = tracing::Span::current().context();
        let parent_span = parent.span();
        let sc = parent_span.span_context();
        if !sc.is_valid() || !sc.is_sampled() {
            return;
        }
        let mut q = QueryFields::default();
        event.record(&mut q);
        let sql = if q.statement.trim().is_empty() {
            q.summary.trim()
        } else {
            q.statement.trim()
        };
        let sql = redact_sql(sql);
        let operation = sql
            .split_whitespace()
            .next()
            .unwrap_or("query")
            .to_ascii_uppercase();
        let end = SystemTime::now();
        let start = end
            .checked_sub(Duration::from_secs_f64(q.elapsed_secs.max(0.0)))
            .unwrap_or(end);
        let mut attributes = vec![
            KeyValue::new("db.system", "postgresql"),
            KeyValue::new("db.operation", operation.clone()),
            KeyValue::new("db.statement", sql),
        ];
        if let Some(rows) = q.rows_returned {
            attributes.push(KeyValue::new("db.rows_returned", rows as i64));
        }
        if let Some(rows) = q.rows_affected {
            attributes.push(KeyValue::new("db.rows_affected", rows as i64));
        }
        if let Some(service) = crate::runtime::context().ok().and_then(|c| c.service) {
            attributes.push(KeyValue::new("service", service));
        }
        let mut span = self
            .tracer
            .span_builder(format!("db {operation}"))
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    }
}

/// `sql` with its literals replaced by `?`: string constants, numbers, and dollar-quoted
/// strings. Placeholders (`$1`) and identifiers stay, so the statement still reads.
pub fn redact_sql(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' {
            // '...' with '' as an escaped quote.
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.push('?');
        } else if b == b'$' && bytes.get(i + 1) == Some(&b'$') {
            // $$...$$
            let end = sql[i + 2..]
                .find("$$")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            out.push('?');
            i = end;
        } else if b.is_ascii_digit() && (i == 0 || !word(bytes[i - 1])) {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            out.push('?');
        } else {
            let ch = sql[i..].chars().next().expect("i is on a char boundary");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_redacted_and_placeholders_kept() {
        assert_eq!(
            redact_sql("SELECT * FROM users WHERE email = 'a@b.c' AND id = $1 LIMIT 10"),
            "SELECT * FROM users WHERE email = ? AND id = $1 LIMIT ?"
        );
        assert_eq!(
            redact_sql("SELECT 'it''s', t2.x1 FROM t2"),
            "SELECT ?, t2.x1 FROM t2"
        );
        assert_eq!(redact_sql("SELECT $$secret$$, 3.5"), "SELECT ?, ?");
        assert_eq!(redact_sql("SELECT 'é' || naïve"), "SELECT ? || naïve");
        assert_eq!(redact_sql("SELECT 'unterminated"), "SELECT ?");
    }

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = parse_traceparent(value).unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    /// The spans and events a layer behind `traced_here` (the OpenTelemetry layers) sees.
    #[derive(Clone, Default)]
    struct Seen(Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0
                .lock()
                .unwrap()
                .push(attrs.metadata().name().to_owned());
        }
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.lock().unwrap().push("event".to_owned());
        }
    }

    /// One request with `traceparent` at sampling `ratio`: what the OpenTelemetry layers saw,
    /// and the `traceparent` a call from inside it sends on.
    fn one_request(traceparent: Option<&str>, ratio: f64) -> (Vec<String>, Option<String>) {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(
            seen.clone()
                .with_filter(dynamic_filter_fn(|_, _| traced_here())),
        );
        let sent = tracing::subscriber::with_default(subscriber, || {
            let trace = decided_span(traceparent, ratio, || tracing::info_span!("request"));
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(trace.run(async {
                let _call = tracing::info_span!("call").entered();
                tracing::info!("inside");
                unsampled_traceparent()
            }))
        });
        let seen = seen.0.lock().unwrap().clone();
        (seen, sent)
    }

    #[test]
    fn an_unsampled_request_reaches_no_trace_layer_and_passes_its_decision_on() {
        let (seen, sent) = one_request(None, 0.0);
        assert!(seen.is_empty(), "{seen:?}");
        let sent = sent.expect("the trace context travels on");
        assert!(sent.starts_with("00-") && sent.ends_with("-00"), "{sent}");
        assert!(parse_traceparent(&sent).is_some(), "{sent}");

        // The caller's decision wins over the ratio, and its trace id is kept.
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let (seen, sent) = one_request(Some(caller), 1.0);
        assert!(seen.is_empty(), "{seen:?}");
        assert!(
            sent.unwrap()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "the trace id is kept"
        );
    }

    #[test]
    fn a_sampled_request_and_everything_in_it_reach_the_trace_layers() {
        let (seen, sent) = one_request(None, 1.0);
        assert_eq!(seen, ["request", "call", "event"]);
        assert_eq!(
            sent, None,
            "a sampled span's context comes from OpenTelemetry"
        );
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (seen, _) = one_request(Some(caller), 0.0);
        assert_eq!(seen, ["request", "call", "event"], "the caller sampled it");
        // Outside any request, nothing is decided: background work goes to the SDK's sampler.
        assert!(traced_here());
    }
}
