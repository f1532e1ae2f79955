//! Counts and latencies of what a process does: per endpoint, the requests it answered and
//! the calls it made to others; per subscription, the deliveries it handled; per cron job and
//! workflow, the runs it drove. Each has a count, errors by code, and a latency histogram.
//! Served as Prometheus text at `/__ovation/metrics`, and exported over OTLP ([`otlp`]) when the
//! process exports traces.
//!
//! Recording is a few relaxed atomic additions on counters the recorder holds (a route takes
//! its endpoint's when it is built: no lock, no map lookup per request); the registry's lock is
//! taken to find a counter and when the figures are read. Only counts and durations are kept,
//! never anything of a request's or a message's content.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use crate::error::ErrCode;

pub(crate) mod otlp;

/// The upper bounds of the latency buckets, in seconds (Prometheus' defaults, which span a
/// cache hit to a slow report).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One endpoint's (subscription's, job's, workflow's) figures.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    count: AtomicU64,
    errors: [AtomicU64; ErrCode::ALL.len()],
    /// Per bucket, the outcomes that took at most its bound and more than the previous one;
    /// the last counts those slower than every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Stats {
    /// One outcome: its duration, and its error's code if it failed. Not inlined, so that a
    /// profile (the endpoint bench's instruction count) sees what it costs.
    #[inline(never)]
    pub(crate) fn record(&self, elapsed: Duration, error: Option<ErrCode>) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(code) = error {
            self.errors[code as usize].fetch_add(1, Ordering::Relaxed);
        }
        // Last: a reader never sees more errors or observations than outcomes.
        self.count.fetch_add(1, Ordering::Release);
    }
}

/// What is counted: each kind is one family of three metrics, labelled by two names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Requests an endpoint served here: by service and endpoint.
    Request,
    /// Calls made from here to an endpoint: by the callee's service and endpoint.
    Call,
    /// Delivery attempts a subscription's handler ran here: by topic and subscription.
    Delivery,
    /// Runs of a cron job driven here: by service and job.
    CronRun,
    /// Runs (or resumptions) of a workflow driven here: by service and workflow.
    WorkflowRun,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Request,
        Kind::Call,
        Kind::Delivery,
        Kind::CronRun,
        Kind::WorkflowRun,
    ];

    fn family(self) -> &'static Family {
        &FAMILIES[self as usize]
    }
}

/// One kind's names. OpenTelemetry's are dotted (`ovation.requests`, `ovation.request.errors`,
/// `ovation.request.duration`); Prometheus' are those with `_` and a unit suffix
/// (`ovation_requests_total`, `ovation_request_errors_total`,
/// `ovation_request_duration_seconds`).
pub(crate) struct Family {
    /// The count's name, e.g. `ovation.requests`.
    pub(crate) total: &'static str,
    /// The stem of the other two, e.g. `ovation.request`.
    pub(crate) stem: &'static str,
    /// The two labels (attributes), e.g. `service` and `endpoint`.
    pub(crate) labels: [&'static str; 2],
    /// The count's unit, in UCUM's annotation form (`{request}`).
    pub(crate) unit: &'static str,
    /// The help texts of the count, the errors and the duration.
    pub(crate) help: [&'static str; 3],
}

const FAMILIES: [Family; 5] = [
    Family {
        total: "ovation.requests",
        stem: "ovation.request",
        labels: ["service", "endpoint"],
        unit: "{request}",
        help: [
            "Requests an endpoint answered.",
            "Requests an endpoint answered with an error, by the error's code.",
            "How long an endpoint took to answer a request.",
        ],
    },
    Family {
        total: "ovation.calls",
        stem: "ovation.call",
        labels: ["service", "endpoint"],
        unit: "{call}",
        help: [
            "Calls this process made to an endpoint.",
            "Calls to an endpoint that returned an error, by the error's code.",
            "How long a call to an endpoint took.",
        ],
    },
    Family {
        total: "ovation.deliveries",
        stem: "ovation.delivery",
        labels: ["topic", "subscription"],
        unit: "{delivery}",
        help: [
            "Delivery attempts a subscription's handler ran.",
            "Delivery attempts that failed, by the error's code.",
            "How long a subscription's handler took on a message.",
        ],
    },
    Family {
        total: "ovation.cron.runs",
        stem: "ovation.cron.run",
        labels: ["service", "job"],
        unit: "{run}",
        help: [
            "Runs of a cron job, scheduled or by hand.",
            "Runs of a cron job that failed, by the error's code.",
            "How long a cron job's run took.",
        ],
    },
    Family {
        total: "ovation.workflow.runs",
        stem: "ovation.workflow.run",
        labels: ["service", "workflow"],
        unit: "{run}",
        help: [
            "Workflow runs driven to an end here (a resumed run counts where it ended).",
            "Workflow runs that ended in an error, by the error's code.",
            "How long a workflow run was driven here, from its start or resumption to its end.",
        ],
    },
];

type Registry = Mutex<BTreeMap<(&'static str, &'static str), Arc<Stats>>>;

/// What a process has recorded, by kind and name.
#[derive(Debug)]
pub(crate) struct Metrics {
    registries: [Registry; Kind::ALL.len()],
    /// When counting began: the start of every cumulative series exported.
    pub(crate) started: SystemTime,
    /// The OTLP export, once started.
    pub(crate) export: OnceLock<otlp::Export>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registries: Default::default(),
            started: SystemTime::now(),
            export: OnceLock::new(),
        }
    }
}

/// One name's counters, read at one moment.
pub(crate) struct Read {
    pub(crate) count: u64,
    pub(crate) errors: Vec<u64>,
    /// Per bucket (not cumulative), the last one past every bound.
    pub(crate) buckets: Vec<u64>,
    pub(crate) sum_nanos: u64,
}

impl Metrics {
    /// The counters of `kind` for the names `a` and `b` (see [`Kind`]), created at zero.
    pub(crate) fn of(&self, kind: Kind, a: &'static str, b: &'static str) -> Arc<Stats> {
        self.registries[kind as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((a, b))
            .or_default()
            .clone()
    }

    /// [`Metrics::of`] for a route, which records into them for as long as the process runs:
    /// a plain reference, so a request does not touch the `Arc`'s count (two atomic operations
    /// on a line every request of the endpoint shares). One small leak per route built, as
    /// runtimes themselves are leaked.
    pub(crate) fn of_route(&self, kind: Kind, a: &'static str, b: &'static str) -> &'static Stats {
        Box::leak(Box::new(self.of(kind, a, b)))
    }

    /// Every counter of `kind`, each read once (the figures of one name agree).
    pub(crate) fn read(&self, kind: Kind) -> Vec<([&'static str; 2], Read)> {
        let stats: Vec<((&'static str, &'static str), Arc<Stats>)> = self.registries[kind as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        stats
            .into_iter()
            .map(|((a, b), stats)| ([a, b], Read::of(&stats)))
            .collect()
    }

    /// Everything, in Prometheus' text format (version 0.0.4), with the spans the process's
    /// trace export dropped.
    pub(crate) fn render(&self, dropped_spans: u64) -> String {
        let mut out = String::new();
        for kind in Kind::ALL {
            family(&mut out, kind.family(), &self.read(kind));
        }
        let dropped = prometheus_name(otlp::DROPPED_SPANS, "_total");
        let _ = writeln!(
            out,
            "# HELP {dropped} {DROPPED_SPANS_HELP}\n# TYPE {dropped} counter\n{dropped} {dropped_spans}",
        );
        out
    }
}

const DROPPED_SPANS_HELP: &str =
    "Spans the process dropped because its export queue was full (the collector too slow or down).";

/// `ovation.request.errors` as Prometheus names it: `ovation_request_errors` and `suffix`.
fn prometheus_name(otel: &str, suffix: &str) -> String {
    format!("{}{suffix}", otel.replace('.', "_"))
}

/// One kind's three metrics: the total, the errors by code, the latency histogram.
fn family(out: &mut String, names: &Family, read: &[([&str; 2], Read)]) {
    let [first, second] = names.labels;
    let labels =
        |[a, b]: [&str; 2]| format!("{first}=\"{}\",{second}=\"{}\"", escape(a), escape(b));
    let read: Vec<(String, &Read)> = read.iter().map(|(k, r)| (labels(*k), r)).collect();
    let [total_help, errors_help, duration_help] = names.help;

    let total = prometheus_name(names.total, "_total");
    let _ = writeln!(out, "# HELP {total} {total_help}\n# TYPE {total} counter");
    for (labels, r) in &read {
        let _ = writeln!(out, "{total}{{{labels}}} {}", r.count);
    }
    let errors = prometheus_name(names.stem, "_errors_total");
    let _ = writeln!(
        out,
        "# HELP {errors} {errors_help}\n# TYPE {errors} counter"
    );
    for (labels, r) in &read {
        for (code, n) in ErrCode::ALL.iter().zip(&r.errors) {
            if *n > 0 {
                let code = code.as_str();
                let _ = writeln!(out, "{errors}{{{labels},code=\"{code}\"}} {n}");
            }
        }
    }
    let duration = prometheus_name(names.stem, "_duration_seconds");
    let _ = writeln!(
        out,
        "# HELP {duration} {duration_help}\n# TYPE {duration} histogram"
    );
    for (labels, r) in &read {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&r.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{duration}_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        let (count, sum) = (r.count, r.sum_nanos as f64 / 1e9);
        let _ = writeln!(out, "{duration}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{duration}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{duration}_count{{{labels}}} {count}");
    }
}

impl Read {
    fn of(stats: &Stats) -> Read {
        // The count first: every outcome it includes has already been put in its bucket.
        let count = stats.count.load(Ordering::Acquire);
        let mut buckets: Vec<u64> = stats
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // Outcomes recorded since the count was read are left out of the buckets too, so the
        // histogram stays consistent (`+Inf` equals the count).
        let mut excess = buckets.iter().sum::<u64>().saturating_sub(count);
        for b in buckets.iter_mut().rev() {
            let cut = excess.min(*b);
            *b -= cut;
            excess -= cut;
        }
        Read {
            count,
            errors: stats
                .errors
                .iter()
                .map(|e| e.load(Ordering::Relaxed))
                .collect(),
            buckets,
            sum_nanos: stats.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A label value as Prometheus' text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_land_in_their_bucket_and_code() {
        let metrics = Metrics::default();
        let stats = metrics.of(Kind::Request, "users", "get");
        stats.record(Duration::from_millis(3), None);
        stats.record(Duration::from_millis(30), Some(ErrCode::NotFound));
        stats.record(Duration::from_secs(11), Some(ErrCode::Internal));
        let text = metrics.render(0);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        has(r#"ovation_requests_total{service="users",endpoint="get"} 3"#);
        has(r#"ovation_request_errors_total{service="users",endpoint="get",code="not_found"} 1"#);
        has(r#"ovation_request_errors_total{service="users",endpoint="get",code="internal"} 1"#);
        has(
            r#"ovation_request_duration_seconds_bucket{service="users",endpoint="get",le="0.005"} 1"#,
        );
        has(
            r#"ovation_request_duration_seconds_bucket{service="users",endpoint="get",le="0.025"} 1"#,
        );
        has(
            r#"ovation_request_duration_seconds_bucket{service="users",endpoint="get",le="0.05"} 2"#,
        );
        has(r#"ovation_request_duration_seconds_bucket{service="users",endpoint="get",le="10"} 2"#);
        has(
            r#"ovation_request_duration_seconds_bucket{service="users",endpoint="get",le="+Inf"} 3"#,
        );
        has(r#"ovation_request_duration_seconds_sum{service="users",endpoint="get"} 11.033"#);
        has(r#"ovation_request_duration_seconds_count{service="users",endpoint="get"} 3"#);
        assert!(!text.contains("code=\"ok\""));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
