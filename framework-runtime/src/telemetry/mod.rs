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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets, dynamic_filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Config;

mod context;
mod export;
mod log;
mod sql;

pub(crate) use context::current_traceparent;
use context::{REQUEST_SAMPLING, RequestsDecided, traced_here};
pub(crate) use context::{RequestTrace, carry, exporting, request_span};
use export::QueueProcessor;
use log::LogLine;
use sql::QuerySpans;

/// The header (and Pub/Sub message field) carrying the trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";
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
pub(crate) fn init_for_tests() {
    init_tests(
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty()),
    );
}

/// The tests' telemetry set-up, exporting to `endpoint` whatever the environment says: for tests of
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
pub(crate) fn service_name() -> String {
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
pub(crate) fn flush(timeout: Duration) {
    if let Some(t) = TELEMETRY.get() {
        let provider = t.provider.clone();
        let done = std::thread::spawn(move || provider.force_flush());
        let deadline = std::time::Instant::now() + timeout;
        while !done.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
