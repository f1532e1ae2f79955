//! Counts and latencies of what a process serves and calls: per endpoint, the requests it
//! answered, its errors by code, and a latency histogram; the same for the calls it makes, per
//! endpoint called. Served as Prometheus text at `/__ovation/metrics`.
//!
//! Recording is a few relaxed atomic additions on counters the route owns (no lock, no map
//! lookup per request); the registry's lock is taken when a route is built and when the page
//! is rendered. Only counts and durations are kept, never anything of a request's content.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::ErrCode;

/// The upper bounds of the latency buckets, in seconds (Prometheus' defaults, which span a
/// cache hit to a slow report).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One endpoint's figures, as requests of it or calls to it.
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
    /// One outcome: its duration, and its error's code if it failed.
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
        // Last: a scrape never sees more errors or observations than outcomes.
        self.count.fetch_add(1, Ordering::Release);
    }
}

/// What a process has recorded, by kind and endpoint.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Registry,
    calls: Registry,
}

type Registry = Mutex<BTreeMap<(&'static str, &'static str), Arc<Stats>>>;

fn stats_in(registry: &Registry, service: &'static str, name: &'static str) -> Arc<Stats> {
    registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((service, name))
        .or_default()
        .clone()
}

impl Metrics {
    /// The figures of requests to `service.name` served here (shown at zero until the first).
    pub(crate) fn requests(&self, service: &'static str, name: &'static str) -> Arc<Stats> {
        stats_in(&self.requests, service, name)
    }

    /// The figures of calls made from here to `service.name`.
    pub(crate) fn calls(&self, service: &'static str, name: &'static str) -> Arc<Stats> {
        stats_in(&self.calls, service, name)
    }

    /// Everything, in Prometheus' text format (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        family(&mut out, &self.requests, &REQUESTS);
        family(&mut out, &self.calls, &CALLS);
        out
    }
}

/// The names and help texts of one kind's three metrics.
struct Family {
    total: (&'static str, &'static str),
    errors: (&'static str, &'static str),
    duration: (&'static str, &'static str),
}

const REQUESTS: Family = Family {
    total: ("ovation_requests_total", "Requests an endpoint answered."),
    errors: (
        "ovation_request_errors_total",
        "Requests an endpoint answered with an error, by the error's code.",
    ),
    duration: (
        "ovation_request_duration_seconds",
        "How long an endpoint took to answer a request.",
    ),
};

const CALLS: Family = Family {
    total: (
        "ovation_calls_total",
        "Calls this process made to an endpoint.",
    ),
    errors: (
        "ovation_call_errors_total",
        "Calls to an endpoint that returned an error, by the error's code.",
    ),
    duration: (
        "ovation_call_duration_seconds",
        "How long a call to an endpoint took.",
    ),
};

/// One kind's three metrics: the total, the errors by code, the latency histogram.
fn family(out: &mut String, registry: &Registry, names: &Family) {
    let snapshot: Vec<((&str, &str), Arc<Stats>)> = registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let labels = |(service, name): (&str, &str)| {
        format!(
            "service=\"{}\",endpoint=\"{}\"",
            escape(service),
            escape(name)
        )
    };
    // Each counter is read once, and the count first: the figures of one endpoint agree.
    let read: Vec<(String, Read)> = snapshot
        .iter()
        .map(|(key, stats)| (labels(*key), Read::of(stats)))
        .collect();

    let (total, help) = names.total;
    let _ = writeln!(out, "# HELP {total} {help}\n# TYPE {total} counter");
    for (labels, r) in &read {
        let _ = writeln!(out, "{total}{{{labels}}} {}", r.count);
    }
    let (errors, help) = names.errors;
    let _ = writeln!(out, "# HELP {errors} {help}\n# TYPE {errors} counter");
    for (labels, r) in &read {
        for (code, n) in ErrCode::ALL.iter().zip(&r.errors) {
            if *n > 0 {
                let code = code.as_str();
                let _ = writeln!(out, "{errors}{{{labels},code=\"{code}\"}} {n}");
            }
        }
    }
    let (duration, help) = names.duration;
    let _ = writeln!(out, "# HELP {duration} {help}\n# TYPE {duration} histogram");
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

/// One endpoint's counters, read at one moment.
struct Read {
    count: u64,
    errors: Vec<u64>,
    buckets: Vec<u64>,
    sum_nanos: u64,
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
        let stats = metrics.requests("users", "get");
        stats.record(Duration::from_millis(3), None);
        stats.record(Duration::from_millis(30), Some(ErrCode::NotFound));
        stats.record(Duration::from_secs(11), Some(ErrCode::Internal));
        let text = metrics.render();
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
