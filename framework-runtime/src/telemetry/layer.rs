//! The one `tracing` layer that makes traces: it keeps the exported [`Span`] in each traced
//! span's extensions, filled in as its fields are recorded (`otel.name`, `otel.kind` and
//! `otel.status_code` say what the span is; every other field is an attribute under its static
//! name), gives it the events logged inside it, and queues it for export when it closes. sqlx's
//! event for each finished statement becomes a span of its own (see [`super::sql`]).
//!
//! One registry lookup per callback; nothing is converted twice: what the queue holds is what
//! [`super::otlp::request`] writes.

use rand::Rng as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::context::{REQUEST_SAMPLING, random};
use super::export::Queue;
use super::otlp::{Attr, Event, Kind, Span, Status, Text, Value, now};

/// Makes spans of Ovation's `tracing` spans and queues them on `queue`.
pub(super) struct Traces {
    pub(super) queue: std::sync::Arc<Queue>,
    /// The service the running code is in, if any: for the spans of database statements.
    pub(super) service: fn() -> Option<&'static str>,
}

/// A new id: never 0, which OTLP reads as "none".
fn span_id() -> u64 {
    random(|r| r.random::<u64>()).max(1)
}

impl<S> Layer<S> for Traces
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let meta = attrs.metadata();
        let mut data = Span {
            trace_id: 0,
            span_id: span_id(),
            parent_span_id: 0,
            sampled: true,
            name: Text::Static(meta.name()),
            kind: Kind::Internal,
            start: now(),
            end: 0,
            attributes: Vec::with_capacity(meta.fields().len()),
            events: Vec::new(),
            status: Status::Unset,
        };
        attrs.record(&mut Recorder(&mut data));
        let parent = span.parent().and_then(|p| {
            p.extensions()
                .get::<Span>()
                .map(|p| (p.trace_id, p.span_id, p.sampled))
        });
        match parent {
            Some((trace_id, parent_span_id, sampled)) => {
                data.trace_id = trace_id;
                data.parent_span_id = parent_span_id;
                data.sampled = sampled;
            }
            None => {
                data.trace_id = random(|r| r.random::<u128>()).max(1);
                // A request's or delivery's span exists only when it was sampled (see
                // `request_span`); other roots (background work) get `trace_sampling`.
                data.sampled = matches!(data.kind, Kind::Server | Kind::Consumer)
                    || REQUEST_SAMPLING.get().is_some_and(|&ratio| {
                        ratio >= 1.0 || (ratio > 0.0 && random(|r| r.random::<f64>()) < ratio)
                    });
            }
        }
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(data) = span.extensions_mut().get_mut::<Span>()
        {
            values.record(&mut Recorder(data));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let meta = event.metadata();
        if meta.target().starts_with("sqlx::query") {
            let parent = span
                .extensions()
                .get::<Span>()
                .filter(|p| p.sampled)
                .map(|p| (p.trace_id, p.span_id));
            if let Some(parent) = parent {
                self.queue.push(super::sql::query_span(
                    event,
                    (parent.0, parent.1, span_id()),
                    (self.service)(),
                ));
            }
            return;
        }
        let mut extensions = span.extensions_mut();
        let Some(data) = extensions.get_mut::<Span>().filter(|d| d.sampled) else {
            return;
        };
        let mut logged = Event {
            time: now(),
            name: Text::Static(meta.name()),
            attributes: vec![Attr {
                key: "level",
                value: Value::Str(Text::Static(meta.level().as_str())),
            }],
        };
        event.record(&mut Recorder(&mut logged));
        // An error logged inside a span makes it an error, unless the span said otherwise.
        if *meta.level() == tracing::Level::ERROR && data.status == Status::Unset {
            data.status = Status::Error;
        }
        data.events.push(logged);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(mut data) = span.extensions_mut().remove::<Span>() else {
            return;
        };
        if data.sampled {
            data.end = now();
            self.queue.push(data);
        }
    }
}

/// Where a span's or an event's fields go, each as OTLP takes it.
trait Fields {
    fn field(&mut self, field: &Field, value: Value);
}

/// A span's fields: `otel.*` say what the span is; the rest are attributes.
impl Fields for Span {
    #[inline]
    fn field(&mut self, field: &Field, value: Value) {
        // Only `otel.*` values are read as text (a short one is checked as UTF-8 at each look).
        match field.name() {
            "otel.name" => {
                if let Value::Str(name) = value {
                    self.name = name;
                }
            }
            "otel.kind" => {
                if let Value::Str(kind) = &value
                    && let Some(kind) = Kind::parse(kind)
                {
                    self.kind = kind;
                }
            }
            "otel.status_code" => {
                self.status = match &value {
                    Value::Str(s) if s.eq_ignore_ascii_case("error") => Status::Error,
                    Value::Str(s) if s.eq_ignore_ascii_case("ok") => Status::Ok,
                    _ => Status::Unset,
                }
            }
            name => self.set(name, value),
        }
    }
}

/// An event's fields: its message is its name, the rest are attributes (but not the `log`
/// crate's bookkeeping, when the event came through `tracing-log`).
impl Fields for Event {
    #[inline]
    fn field(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                if let Value::Str(s) = value {
                    self.name = s;
                }
            }
            name if name.starts_with("log.") => {}
            key => self.attributes.push(Attr { key, value }),
        }
    }
}

/// Records what `tracing` visits into a span or an event.
struct Recorder<'a, F>(&'a mut F);

impl<F: Fields> Visit for Recorder<'_, F> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.field(field, Value::Str(Text::copy(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.field(field, Value::Str(Text::debug(value)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .field(field, Value::Str(Text::from(value.to_string())));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.field(field, Value::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        // OTLP's integers are signed: a larger `u64` goes as text rather than wrapped.
        let value = i64::try_from(value)
            .map_or_else(|_| Value::Str(Text::from(value.to_string())), Value::Int);
        self.0.field(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.field(field, Value::Float(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.field(field, Value::Bool(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as V};
    use opentelemetry_proto::tonic::trace::v1::Span as Exported;
    use std::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// The spans `work` ends, as the layer queues them for export, oldest first.
    fn traced(work: impl FnOnce()) -> Vec<Exported> {
        let queue = Arc::new(Queue::default());
        let subscriber = tracing_subscriber::registry().with(Traces {
            queue: queue.clone(),
            service: || None,
        });
        tracing::subscriber::with_default(subscriber, work);
        queue.take_for_test()
    }

    fn attrs(kvs: &[KeyValue]) -> Vec<(&str, V)> {
        kvs.iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap()))
            .collect()
    }

    fn text(s: &str) -> V {
        V::StringValue(s.to_owned())
    }

    #[test]
    fn a_users_spans_and_events_inside_a_request_are_part_of_its_trace() {
        let spans = traced(|| {
            let request = tracing::info_span!(
                "request",
                otel.name = "orders.create",
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                service = "orders",
                http.status_code = tracing::field::Empty,
            );
            let _entered = request.enter();
            {
                let mine = tracing::info_span!("price lookup", sku = "A-1", attempt = 2_u64);
                let _mine = mine.enter();
                tracing::info!(cents = 250, "priced");
                tracing::error!("the price service failed");
            }
            request.record("http.status_code", 200_i64);
            request.record("http.status_code", 201_i64);
        });
        let [mine, request] = spans.as_slice() else {
            panic!("two spans: {spans:#?}");
        };
        assert_eq!(
            (
                request.name.as_str(),
                request.kind,
                request.parent_span_id.len()
            ),
            ("orders.create", Kind::Server as i32, 0)
        );
        assert_eq!(
            attrs(&request.attributes),
            [
                ("service", text("orders")),
                ("http.status_code", V::IntValue(201))
            ],
            "`otel.*` are not attributes; a field recorded twice keeps its last value"
        );
        assert_eq!(request.status, None);
        assert!(
            request.start_time_unix_nano > 0
                && request.end_time_unix_nano >= request.start_time_unix_nano
        );

        assert_eq!(mine.name, "price lookup");
        assert_eq!(mine.kind, Kind::Internal as i32);
        assert_eq!(
            (&mine.trace_id, &mine.parent_span_id),
            (&request.trace_id, &request.span_id)
        );
        assert_eq!(
            attrs(&mine.attributes),
            [("sku", text("A-1")), ("attempt", V::IntValue(2))]
        );
        let events: Vec<_> = mine
            .events
            .iter()
            .map(|e| (e.name.as_str(), attrs(&e.attributes)))
            .collect();
        assert_eq!(
            events,
            [
                (
                    "priced",
                    vec![("level", text("INFO")), ("cents", V::IntValue(250))]
                ),
                ("the price service failed", vec![("level", text("ERROR"))]),
            ]
        );
        assert_eq!(
            mine.status.as_ref().map(|s| s.code),
            Some(Status::Error as i32),
            "an error was logged in it"
        );
    }

    #[test]
    fn a_background_root_follows_the_sampling_and_its_children_follow_it() {
        // No sampling set (export off in this test): a root that is not a request or a
        // delivery is not sampled, and nothing under it is queued.
        let spans = traced(|| {
            let job = tracing::info_span!("job", otel.kind = "internal");
            let _job = job.enter();
            let _child = tracing::info_span!("step").entered();
        });
        assert!(spans.is_empty(), "{spans:#?}");
        // A request root is sampled whatever the ratio: `request_span` decided already.
        let spans = traced(|| {
            let _request = tracing::info_span!("request", otel.kind = "server").entered();
        });
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].trace_id.len(), spans[0].span_id.len()), (16, 8));
    }
}
