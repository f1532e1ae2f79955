//! The app's recent activity, from the metrics its processes export: `POST /v1/metrics`
//! (OTLP/HTTP, protobuf) takes them, and `GET /api/metrics` answers, per endpoint,
//! subscription, cron job and workflow, what happened in each [`SLOT`] of the last [`SLOTS`]
//! (the dashboard's sparklines).
//!
//! Processes send cumulative figures; the store keeps each series' last reading (per process
//! and start) and turns the next into the difference, summed over processes into the slot of
//! its time. Nothing is written to disk: this is the last few minutes of a development run.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ovation::tooling::otlp_metrics::{
    Data, ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    KeyValue, Metric, Number,
};

use super::receiver::{Received, read};
use super::*;

/// How long one slot of activity lasts.
pub const SLOT: Duration = Duration::from_secs(10);
/// How many slots are kept: ten minutes.
pub const SLOTS: u64 = 60;
/// The most series (process × metric × names) followed; more are turned away and counted.
pub const MAX_SERIES: usize = 20_000;
/// The largest OTLP/protobuf metrics request. An app's whole set is a few kilobytes (about
/// 600 bytes a name); metrics decode whole, so this also bounds what a request of empty
/// messages costs to decode (tens of bytes each: under 30 MiB, two requests at a time).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What Ovation counts, by the stem of its metrics' names, with the two attributes naming
/// what was counted.
const KINDS: [(&str, &str, [&str; 2]); 5] = [
    ("request", "ovation.request", ["service", "endpoint"]),
    ("call", "ovation.call", ["service", "endpoint"]),
    ("delivery", "ovation.delivery", ["topic", "subscription"]),
    ("cron_run", "ovation.cron.run", ["service", "job"]),
    (
        "workflow_run",
        "ovation.workflow.run",
        ["service", "workflow"],
    ),
];

/// One slot's figures of one name.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    /// The slot's start, in seconds since the Unix epoch.
    pub start: u64,
    pub count: u64,
    pub errors: u64,
    /// The outcomes' summed duration, in seconds.
    #[serde(skip)]
    pub seconds: f64,
    /// Their mean duration, in milliseconds (0 without outcomes).
    pub mean_ms: f64,
}

/// One endpoint's (subscription's, job's, workflow's) recent activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// `request`, `call`, `delivery`, `cron_run` or `workflow_run`.
    pub kind: &'static str,
    /// The service (the topic, for a delivery).
    pub scope: String,
    /// The endpoint, subscription, job or workflow.
    pub name: String,
    /// Every outcome received since the dashboard started.
    pub total: u64,
    pub errors: u64,
    /// The last [`SLOTS`] slots, oldest first, empty ones included.
    pub slots: Vec<Slot>,
}

/// The activity of every name, from what processes exported.
#[derive(Debug, Default)]
pub struct Activities {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each series' last cumulative reading.
    last: HashMap<Series, Reading>,
    /// By kind, scope and name.
    names: BTreeMap<(&'static str, String, String), Recent>,
    rejected: u64,
    /// By process, the spans it dropped before sending, as it last said.
    dropped_spans: HashMap<String, u64>,
}

/// One process's one metric of one name (and code, for errors).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    process: String,
    metric: String,
    attributes: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    start: u64,
    count: u64,
    seconds: f64,
}

#[derive(Debug, Default)]
struct Recent {
    total: u64,
    errors: u64,
    /// By slot number (time / [`SLOT`]), the newest [`SLOTS`].
    slots: VecDeque<(u64, Slot)>,
}

impl Recent {
    fn slot(&mut self, number: u64) -> &mut Slot {
        let at = match self.slots.iter().position(|(n, _)| *n >= number) {
            Some(i) if self.slots[i].0 == number => i,
            Some(i) => {
                self.slots.insert(i, (number, Slot::default()));
                i
            }
            None => {
                self.slots.push_back((number, Slot::default()));
                self.slots.len() - 1
            }
        };
        &mut self.slots[at].1
    }

    fn prune(&mut self, newest: u64) {
        while self
            .slots
            .front()
            .is_some_and(|(n, _)| *n + SLOTS <= newest)
        {
            self.slots.pop_front();
        }
    }
}

/// A data point's cumulative figures, as the receiver reads them.
struct Point<'a> {
    attributes: &'a [KeyValue],
    start: u64,
    time: u64,
    count: u64,
    seconds: f64,
}

impl Activities {
    /// Takes one export: Ovation's `*.duration` histograms (counts and time) and `*.errors`
    /// sums; other metrics are ignored. Returns how many data points were turned away
    /// ([`MAX_SERIES`]).
    pub fn add(&self, request: &ExportMetricsServiceRequest) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut rejected = 0;
        for resource in &request.resource_metrics {
            let process = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(KeyValue::as_str)
                .unwrap_or("unknown");
            for metric in resource.scope_metrics.iter().flat_map(|s| &s.metrics) {
                if metric.name == ovation::tooling::DROPPED_SPANS {
                    if let Some(Data::Sum(sum)) = &metric.data
                        && let Some(point) = sum.data_points.first()
                        && let Some(Number::AsInt(n)) = point.value
                    {
                        if !inner.dropped_spans.contains_key(process)
                            && inner.dropped_spans.len() >= MAX_SERIES
                        {
                            rejected += 1;
                            continue;
                        }
                        inner
                            .dropped_spans
                            .insert(process.to_owned(), u64::try_from(n).unwrap_or(0));
                    }
                    continue;
                }
                rejected += inner.metric(process, metric);
            }
        }
        inner.rejected += rejected;
        rejected
    }

    /// Every name's activity, in the [`SLOTS`] slots up to `now`.
    pub fn list(&self, now: SystemTime) -> Vec<Activity> {
        let newest = slot_of(unix_nanos(now));
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .names
            .iter()
            .map(|((kind, scope, name), recent)| Activity {
                kind,
                scope: scope.clone(),
                name: name.clone(),
                total: recent.total,
                errors: recent.errors,
                slots: (newest + 1 - SLOTS..=newest)
                    .map(|n| {
                        let mut slot = recent
                            .slots
                            .iter()
                            .find(|(m, _)| *m == n)
                            .map_or_else(Slot::default, |(_, s)| *s);
                        slot.start = n * SLOT.as_secs();
                        slot.mean_ms = if slot.count > 0 {
                            slot.seconds * 1000.0 / slot.count as f64
                        } else {
                            0.0
                        };
                        slot
                    })
                    .collect(),
            })
            .collect()
    }

    /// The spans the app's processes dropped before sending them (their export queue was
    /// full), as each last said.
    pub fn dropped_spans(&self) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.dropped_spans.values().sum()
    }

    /// Data points turned away since the dashboard started.
    pub fn rejected(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected
    }
}

impl Inner {
    fn metric(&mut self, process: &str, metric: &Metric) -> u64 {
        let Some((kind, stem, labels)) = KINDS.iter().find(|(_, stem, _)| {
            metric
                .name
                .strip_prefix(stem)
                .is_some_and(|rest| rest == ".duration" || rest == ".errors")
        }) else {
            return 0;
        };
        let errors = metric.name.len() == stem.len() + ".errors".len();
        let points: Vec<Point<'_>> = match &metric.data {
            Some(Data::Histogram(h)) if !errors => h
                .data_points
                .iter()
                .map(|p| Point {
                    attributes: &p.attributes,
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    count: p.count,
                    seconds: p.sum.unwrap_or(0.0),
                })
                .collect(),
            Some(Data::Sum(sum)) if errors => sum
                .data_points
                .iter()
                .map(|p| Point {
                    attributes: &p.attributes,
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    count: match p.value {
                        Some(Number::AsInt(n)) => u64::try_from(n).unwrap_or(0),
                        Some(Number::AsDouble(n)) => n as u64,
                        None => 0,
                    },
                    seconds: 0.0,
                })
                .collect(),
            _ => return 0,
        };
        let mut rejected = 0;
        for point in points {
            let value = |key: &str| {
                point
                    .attributes
                    .iter()
                    .find(|kv| kv.key == key)
                    .and_then(KeyValue::as_str)
            };
            let (Some(scope), Some(name)) = (value(labels[0]), value(labels[1])) else {
                continue;
            };
            let series = Series {
                process: process.to_owned(),
                metric: metric.name.clone(),
                attributes: point
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.as_str().unwrap_or_default().to_owned()))
                    .collect(),
            };
            let key = (*kind, scope.to_owned(), name.to_owned());
            if !self.last.contains_key(&series)
                && (self.last.len() >= MAX_SERIES
                    || (!self.names.contains_key(&key) && self.names.len() >= MAX_SERIES))
            {
                rejected += 1;
                continue;
            }
            let reading = Reading {
                start: point.start,
                count: point.count,
                seconds: point.seconds,
            };
            // A new process (or one that restarted) starts from zero.
            let (count, seconds) = match self.last.insert(series, reading) {
                Some(last) if last.start == reading.start && last.count <= reading.count => (
                    reading.count - last.count,
                    (reading.seconds - last.seconds).max(0.0),
                ),
                _ => (reading.count, reading.seconds),
            };
            let recent = self.names.entry(key).or_default();
            let number = slot_of(point.time);
            if errors {
                recent.errors += count;
                if count > 0 {
                    recent.slot(number).errors += count;
                }
            } else {
                recent.total += count;
                if count > 0 {
                    let slot = recent.slot(number);
                    slot.count += count;
                    slot.seconds += seconds;
                }
            }
            recent.prune(number);
        }
        rejected
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn slot_of(unix_nanos: u64) -> u64 {
    unix_nanos / u64::try_from(SLOT.as_nanos()).unwrap_or(u64::MAX)
}

/// `POST /v1/metrics`: OTLP/HTTP, protobuf.
pub(super) async fn receive(State(store): State<Store>, req: Request) -> Response {
    let Received { body, json, .. } = match read(&store, req, BODY_LIMIT).await {
        Ok(received) => received,
        Err(refused) => return refused,
    };
    if json {
        return Error::invalid_argument(
            "the local dashboard takes OTLP metrics as application/x-protobuf",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .into_response();
    }
    let request = match ExportMetricsServiceRequest::decode(&*body) {
        Ok(request) => request,
        Err(e) => {
            return Error::invalid_argument(format!("not an OTLP protobuf metrics request: {e}"))
                .into_response();
        }
    };
    let rejected = store.activity.add(&request);
    let answer = ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: format!("the local dashboard follows at most {MAX_SERIES} series"),
        }),
    };
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        answer.encode_to_vec(),
    )
        .into_response()
}

/// `GET /api/metrics`: every name's activity in the last [`SLOTS`] slots of [`SLOT`].
pub(super) async fn list(State(store): State<Store>) -> axum::Json<Value> {
    axum::Json(json!({
        "slotSeconds": SLOT.as_secs(),
        "activity": store.activity.list(SystemTime::now()),
        "rejected": store.activity.rejected(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovation::tooling::otlp_metrics::{
        Histogram, HistogramDataPoint, NumberDataPoint, Resource, ResourceMetrics, ScopeMetrics,
        Sum,
    };

    const S: u64 = 1_000_000_000;

    fn export(
        process: &str,
        start: u64,
        time: u64,
        count: u64,
        errors: i64,
    ) -> ExportMetricsServiceRequest {
        let attributes = vec![
            KeyValue::string("service", "users"),
            KeyValue::string("endpoint", "get"),
        ];
        let mut with_code = attributes.clone();
        with_code.push(KeyValue::string("code", "not_found"));
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![KeyValue::string("service.name", process)],
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics: vec![
                        Metric {
                            name: "ovation.request.duration".into(),
                            description: String::new(),
                            unit: "s".into(),
                            data: Some(Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    attributes,
                                    start_time_unix_nano: start,
                                    time_unix_nano: time,
                                    count,
                                    sum: Some(count as f64 * 0.002),
                                    bucket_counts: Vec::new(),
                                    explicit_bounds: Vec::new(),
                                }],
                                aggregation_temporality: 2,
                            })),
                        },
                        Metric {
                            name: "ovation.request.errors".into(),
                            description: String::new(),
                            unit: String::new(),
                            data: Some(Data::Sum(Sum {
                                data_points: vec![NumberDataPoint {
                                    attributes: with_code,
                                    start_time_unix_nano: start,
                                    time_unix_nano: time,
                                    value: Some(Number::AsInt(errors)),
                                }],
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            })),
                        },
                    ],
                }],
            }],
        }
    }

    #[test]
    fn cumulative_readings_become_activity_per_slot_summed_over_processes() {
        let activities = Activities::default();
        let t0 = 1_000_000 * S; // the start of a slot
        activities.add(&export("a", t0 - 60 * S, t0 + S, 5, 1));
        activities.add(&export("a", t0 - 60 * S, t0 + 11 * S, 8, 1));
        activities.add(&export("b", t0, t0 + 12 * S, 2, 2));
        // Process `a` restarted: its new start counts from zero.
        activities.add(&export("a", t0 + 15 * S, t0 + 21 * S, 1, 0));
        let now = SystemTime::UNIX_EPOCH + Duration::from_nanos(t0 + 25 * S);
        let list = activities.list(now);
        assert_eq!(list.len(), 1);
        let users = &list[0];
        assert_eq!(
            (users.kind, users.scope.as_str(), users.name.as_str()),
            ("request", "users", "get")
        );
        assert_eq!((users.total, users.errors), (11, 3));
        assert_eq!(users.slots.len() as u64, SLOTS);
        let last: Vec<(u64, u64)> = users.slots[users.slots.len() - 3..]
            .iter()
            .map(|s| (s.count, s.errors))
            .collect();
        assert_eq!(last, [(5, 1), (5, 2), (1, 0)]);
        assert!((users.slots[SLOTS as usize - 2].mean_ms - 2.0).abs() < 1e-9);
        assert_eq!(users.slots[SLOTS as usize - 1].start, (t0 + 20 * S) / S);
    }

    #[test]
    fn the_spans_apps_dropped_are_their_last_readings_summed() {
        let activities = Activities::default();
        let dropped = |process: &str, n: i64| {
            let mut request = export(process, 0, S, 0, 0);
            let metrics = &mut request.resource_metrics[0].scope_metrics[0].metrics;
            metrics.truncate(1);
            metrics[0] = Metric {
                name: ovation::tooling::DROPPED_SPANS.into(),
                description: String::new(),
                unit: String::new(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![NumberDataPoint {
                        attributes: Vec::new(),
                        start_time_unix_nano: 0,
                        time_unix_nano: S,
                        value: Some(Number::AsInt(n)),
                    }],
                    aggregation_temporality: 2,
                    is_monotonic: true,
                })),
            };
            request
        };
        activities.add(&dropped("a", 5));
        activities.add(&dropped("a", 7));
        activities.add(&dropped("b", 1));
        assert_eq!(activities.dropped_spans(), 8);
        assert!(activities.list(SystemTime::now()).is_empty());
    }

    #[test]
    fn other_metrics_are_ignored_and_old_slots_fall_off() {
        let activities = Activities::default();
        let mut other = export("a", 0, S, 1, 0);
        other.resource_metrics[0].scope_metrics[0].metrics[0].name = "http.server.duration".into();
        other.resource_metrics[0].scope_metrics[0]
            .metrics
            .truncate(1);
        activities.add(&other);
        assert!(activities.list(SystemTime::now()).is_empty());
        activities.add(&export("a", 0, 10 * S, 3, 0));
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(10 + SLOT.as_secs() * SLOTS);
        let list = activities.list(later);
        assert_eq!(list[0].total, 3, "the total stays");
        assert!(
            list[0].slots.iter().all(|s| s.count == 0),
            "the slot is past"
        );
    }
}
