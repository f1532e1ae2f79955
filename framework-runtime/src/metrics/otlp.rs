//! The metrics over OTLP/HTTP: every `interval` (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s by
//! default), and once more when the process stops, a process exporting traces posts its
//! figures to the collector's `/v1/metrics`, as cumulative sums and explicit-bucket histograms
//! (OpenTelemetry's names: `ovation.requests`, `ovation.request.errors` by `code`,
//! `ovation.request.duration` in seconds; the same for calls, deliveries, cron runs and
//! workflow runs).
//!
//! The messages are [`proto`]'s: the part of OTLP's metrics schema this needs, so that no
//! metrics SDK is built into every app for what the counters in [`super`] already hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use prost::Message as _;

use super::{BUCKETS, Family, Kind, Metrics, Read};
use crate::error::ErrCode;

/// OTLP's metrics messages, as far as Ovation sends them (and the CLI's receiver reads them):
/// field numbers as in `opentelemetry/proto/metrics/v1/metrics.proto` and its collector
/// service, so any OTLP receiver decodes them, and unknown fields of other senders are skipped.
pub mod proto {
    /// `ExportMetricsServiceRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_metrics: Vec<ResourceMetrics>,
    }

    /// `ExportMetricsServiceResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportMetricsPartialSuccess>,
    }

    /// `ExportMetricsPartialSuccess`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsPartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_data_points: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    /// `ResourceMetrics`: what one process (resource) sends.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_metrics: Vec<ScopeMetrics>,
    }

    /// `Resource`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    /// `ScopeMetrics`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeMetrics {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
    }

    /// `InstrumentationScope`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    /// `Metric`, with the two kinds of data Ovation sends (a gauge, summary or exponential
    /// histogram from another sender decodes with `data: None`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub description: String,
        #[prost(string, tag = "3")]
        pub unit: String,
        #[prost(oneof = "Data", tags = "7, 9")]
        pub data: Option<Data>,
    }

    /// `Metric.data`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(message, tag = "7")]
        Sum(Sum),
        #[prost(message, tag = "9")]
        Histogram(Histogram),
    }

    /// `AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE`.
    pub const CUMULATIVE: i32 = 2;

    /// `Sum`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sum {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
        #[prost(bool, tag = "3")]
        pub is_monotonic: bool,
    }

    /// `Histogram`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<HistogramDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
    }

    /// `NumberDataPoint`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NumberDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(oneof = "Number", tags = "4, 6")]
        pub value: Option<Number>,
    }

    /// `NumberDataPoint.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Number {
        #[prost(double, tag = "4")]
        AsDouble(f64),
        #[prost(sfixed64, tag = "6")]
        AsInt(i64),
    }

    /// `HistogramDataPoint`: `bucket_counts` per bucket (not cumulative), one more than
    /// `explicit_bounds`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistogramDataPoint {
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, optional, tag = "5")]
        pub sum: Option<f64>,
        #[prost(fixed64, repeated, tag = "6")]
        pub bucket_counts: Vec<u64>,
        #[prost(double, repeated, tag = "7")]
        pub explicit_bounds: Vec<f64>,
    }

    /// `KeyValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// `AnyValue`, its scalar kinds.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
        pub value: Option<Value>,
    }

    /// `AnyValue.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
    }

    impl KeyValue {
        /// A string attribute.
        pub fn string(key: &str, value: &str) -> KeyValue {
            KeyValue {
                key: key.to_owned(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(value.to_owned())),
                }),
            }
        }

        /// The value, if it is a string.
        pub fn as_str(&self) -> Option<&str> {
            match self.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s),
                _ => None,
            }
        }
    }
}

use proto::{
    Data, ExportMetricsServiceRequest, Histogram, HistogramDataPoint, InstrumentationScope,
    KeyValue, Metric, Number, NumberDataPoint, Resource, ResourceMetrics, ScopeMetrics, Sum,
};

/// The spans the process dropped because its export queue was full: the one metric not of a
/// [`Kind`], so that whoever receives the traces learns what did not reach them.
pub const DROPPED_SPANS: &str = "ovation.spans.dropped";

/// Where and how a process exports its metrics.
#[derive(Debug)]
pub(crate) struct Export {
    url: String,
    http: reqwest::Client,
    /// The resource's `service.name` (the process, as traces name it).
    process: String,
    /// The spans the process's trace export dropped so far.
    dropped_spans: fn() -> u64,
    /// Whether requests are gzip-compressed (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`).
    gzip: bool,
    /// Whether the last export failed: a failure is logged once, not at every interval.
    failing: AtomicBool,
}

/// Starts exporting `metrics` (a runtime's) to the OTLP/HTTP collector at `endpoint` every
/// `interval` (gzip-compressed if `gzip`), as the process (resource) `process`, with the spans
/// `dropped_spans` says its trace export dropped; the task's handle, for the runtime to stop
/// with its background work.
pub(crate) fn start(
    metrics: &'static Metrics,
    (endpoint, interval, gzip): (&str, Duration, bool),
    process: String,
    dropped_spans: fn() -> u64,
) -> Option<tokio::task::AbortHandle> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let export = Export {
        url: format!("{}/v1/metrics", endpoint.trim_end_matches('/')),
        http,
        process,
        dropped_spans,
        gzip,
        failing: AtomicBool::new(false),
    };
    metrics.export.set(export).ok()?;
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            send(metrics).await;
        }
    });
    Some(task.abort_handle())
}

/// Exports once more, now (the process stops): what happened since the last interval is not
/// lost. Waits at most `timeout`.
pub(crate) async fn flush(metrics: &Metrics, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, send(metrics)).await;
}

async fn send(metrics: &Metrics) {
    let Some(export) = metrics.export.get() else {
        return;
    };
    let body = request(
        metrics,
        &export.process,
        (export.dropped_spans)(),
        SystemTime::now(),
    )
    .encode_to_vec();
    let mut post = export
        .http
        .post(&export.url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
    let body = if export.gzip {
        post = post.header(reqwest::header::CONTENT_ENCODING, "gzip");
        crate::compress::gzip(&body)
    } else {
        body
    };
    let sent = post.body(body).send().await;
    let problem = match sent {
        Ok(answer) if answer.status().is_success() => None,
        Ok(answer) => Some(format!("{} answered {}", export.url, answer.status())),
        Err(e) => Some(format!("{} cannot be reached: {e}", export.url)),
    };
    match problem {
        Some(problem) => {
            if !export.failing.swap(true, Ordering::Relaxed) {
                tracing::warn!("metrics are not exported: {problem}; trying again every interval");
            }
        }
        None => {
            if export.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("metrics are exported again to {}", export.url);
            }
        }
    }
}

/// Everything `metrics` holds, and the spans dropped, as one OTLP request of the process named
/// `process`.
pub(crate) fn request(
    metrics: &Metrics,
    process: &str,
    dropped_spans: u64,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    };
    let (start, now) = (nanos(metrics.started), nanos(now));
    let mut all = Vec::new();
    for kind in Kind::ALL {
        let read = metrics.read(kind);
        if !read.is_empty() {
            family(&mut all, kind.family(), &read, start, now);
        }
    }
    all.push(Metric {
        name: DROPPED_SPANS.into(),
        description: super::DROPPED_SPANS_HELP.into(),
        unit: "{span}".into(),
        data: Some(Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: Vec::new(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(Number::AsInt(
                    i64::try_from(dropped_spans).unwrap_or(i64::MAX),
                )),
            }],
            aggregation_temporality: proto::CUMULATIVE,
            is_monotonic: true,
        })),
    });
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue::string("service.name", process)],
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "ovation".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                metrics: all,
            }],
        }],
    }
}

/// One kind's three metrics.
fn family(out: &mut Vec<Metric>, names: &Family, read: &[([&str; 2], Read)], start: u64, now: u64) {
    let attributes = |values: [&str; 2]| {
        vec![
            KeyValue::string(names.labels[0], values[0]),
            KeyValue::string(names.labels[1], values[1]),
        ]
    };
    let point = |attributes: Vec<KeyValue>, n: u64| NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(Number::AsInt(i64::try_from(n).unwrap_or(i64::MAX))),
    };
    let counter = |name: String, help: &str, unit: &str, points: Vec<NumberDataPoint>| Metric {
        name,
        description: help.into(),
        unit: unit.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: proto::CUMULATIVE,
            is_monotonic: true,
        })),
    };
    let [total_help, errors_help, duration_help] = names.help;
    out.push(counter(
        names.total.into(),
        total_help,
        names.unit,
        read.iter()
            .map(|(values, r)| point(attributes(*values), r.count))
            .collect(),
    ));
    let errors = read
        .iter()
        .flat_map(|(values, r)| {
            ErrCode::ALL
                .iter()
                .zip(&r.errors)
                .filter(|(_, n)| **n > 0)
                .map(|(code, n)| {
                    let mut attributes = attributes(*values);
                    attributes.push(KeyValue::string("code", code.as_str()));
                    point(attributes, *n)
                })
        })
        .collect::<Vec<_>>();
    if !errors.is_empty() {
        out.push(counter(
            format!("{}.errors", names.stem),
            errors_help,
            names.unit,
            errors,
        ));
    }
    out.push(Metric {
        name: format!("{}.duration", names.stem),
        description: duration_help.into(),
        unit: "s".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: read
                .iter()
                .map(|(values, r)| HistogramDataPoint {
                    attributes: attributes(*values),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: r.count,
                    sum: Some(r.sum_nanos as f64 / 1e9),
                    bucket_counts: r.buckets.clone(),
                    explicit_bounds: BUCKETS.to_vec(),
                })
                .collect(),
            aggregation_temporality: proto::CUMULATIVE,
        })),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_holds_counts_errors_by_code_and_the_histogram() {
        let metrics = Metrics::default();
        let stats = metrics.of(Kind::Delivery, "order-created", "send-email");
        stats.record(Duration::from_millis(2), None);
        stats.record(Duration::from_millis(200), Some(ErrCode::Unavailable));
        let bytes = request(&metrics, "shop", 0, SystemTime::now()).encode_to_vec();
        let decoded = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        let resource = &decoded.resource_metrics[0];
        assert_eq!(
            resource.resource.as_ref().unwrap().attributes[0].as_str(),
            Some("shop")
        );
        let all = &resource.scope_metrics[0].metrics;
        let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ovation.deliveries",
                "ovation.delivery.errors",
                "ovation.delivery.duration",
                DROPPED_SPANS,
            ]
        );
        let Some(Data::Sum(total)) = &all[0].data else {
            panic!("{:?}", all[0])
        };
        assert_eq!(total.data_points[0].value, Some(Number::AsInt(2)));
        let labels: Vec<_> = total.data_points[0]
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), kv.as_str().unwrap()))
            .collect();
        assert_eq!(
            labels,
            [("topic", "order-created"), ("subscription", "send-email")]
        );
        let Some(Data::Sum(errors)) = &all[1].data else {
            panic!("{:?}", all[1])
        };
        assert_eq!(
            errors.data_points[0].attributes[2].as_str(),
            Some("unavailable")
        );
        let Some(Data::Histogram(duration)) = &all[2].data else {
            panic!("{:?}", all[2])
        };
        let point = &duration.data_points[0];
        assert_eq!(
            (point.count, point.bucket_counts.len()),
            (2, BUCKETS.len() + 1)
        );
        assert_eq!(point.bucket_counts[0], 1);
        assert_eq!(point.bucket_counts[5], 1, "200 ms is in (0.1, 0.25]");
        assert!((point.sum.unwrap() - 0.202).abs() < 1e-9);
    }
}
