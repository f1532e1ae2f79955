//! Logs and distributed tracing.
//!
//! Everything is a `tracing` span or event. Besides the log layer, one layer makes traces of
//! them ([`layer::Traces`]): a request (`otel.kind = server`), a call (`client` when remote,
//! `internal` when local), a publish (`producer`), a delivery attempt (`consumer`), each with
//! the events logged inside it (the app's logs); and a span for every database statement, made
//! from sqlx's per-statement event ([`sql`]), with the statement (literals redacted), the rows
//! and the duration. The span it keeps is the exported one, written as OTLP protobuf
//! ([`otlp`]) straight from it.
//!
//! The W3C `traceparent` crosses processes in a header of every remote call and gateway
//! forward, and rides inside every Pub/Sub message, so a request and everything it causes
//! share one trace id. Request and response bodies and headers are never recorded (so neither
//! are `Authorization` nor cookies).
//!
//! Export is OTLP/HTTP (protobuf, gzip-compressed when `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`)
//! to `otlp_endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`), through [`export::Queue`]: a bounded
//! buffer drained in batches by a thread of its own, so a request never waits on the
//! collector; spans that find the queue full are dropped and counted ([`dropped_spans`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets, dynamic_filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Config;

mod context;
mod export;
mod layer;
mod log;
mod otlp;
mod sql;

pub(crate) use context::current_traceparent;
use context::{REQUEST_SAMPLING, traced_here};
pub(crate) use context::{RequestTrace, carry, exporting, request_span};
use export::{Collector, Queue};
use log::LogLine;

/// The header (and Pub/Sub message field) carrying the trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// The export queue, once trace export is on.
static TELEMETRY: OnceLock<Arc<Queue>> = OnceLock::new();

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
    let queue = config.otlp_endpoint.as_deref().and_then(|endpoint| {
        let sampling = config.trace_sampling.unwrap_or(1.0);
        match start_export(endpoint, sampling, config.otlp_gzip) {
            Ok(queue) => Some(queue),
            Err(e) => {
                eprintln!("warning: traces are not exported: {e}");
                None
            }
        }
    });
    let traces = queue.map(|queue| {
        layer::Traces {
            queue,
            service: || crate::runtime::context().ok().and_then(|c| c.service),
        }
        .with_filter(
            Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("ovation", LevelFilter::DEBUG)
                .with_target("sqlx", LevelFilter::OFF)
                // The statement events, which become spans.
                .with_target("sqlx::query", LevelFilter::DEBUG)
                .with_target("h2", LevelFilter::OFF)
                .with_target("hyper", LevelFilter::OFF)
                .and(dynamic_filter_fn(|_, _| traced_here())),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
}

fn start_export(endpoint: &str, sampling: f64, gzip: bool) -> Result<Arc<Queue>, String> {
    let queue = Queue::start(Collector {
        url: format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        process: service_name(),
        gzip,
    })
    .map_err(|e| format!("the export to {endpoint} cannot start: {e}"))?;
    let _ = TELEMETRY.set(queue.clone());
    let _ = REQUEST_SAMPLING.set(sampling.clamp(0.0, 1.0));
    Ok(queue)
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
        .map_or(0, |q| q.dropped.load(Ordering::Relaxed))
}

/// Exports every span ended so far, waiting at most `timeout`. For tests and shutdown.
pub(crate) fn flush(timeout: Duration) {
    if let Some(queue) = TELEMETRY.get() {
        queue.flush(timeout);
    }
}
