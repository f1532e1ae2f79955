//! The trace context: where sampling is decided (a request or delivery entering), how an
//! unsampled request passes its decision on, and the `traceparent` that crosses processes.

use std::sync::OnceLock;

use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::Sampler;
use rand::Rng as _;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current span: of its trace when sampled, or of the unsampled
/// request it is part of (flags `00`, so the callee does not sample it either).
pub(crate) fn current_traceparent() -> Option<String> {
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
pub(crate) fn parse_traceparent(value: &str) -> Option<Context> {
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
pub(super) static REQUEST_SAMPLING: OnceLock<f64> = OnceLock::new();

/// The trace context of a request that is not sampled, for propagation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unsampled {
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

/// `work` keeping this task's trace — the current span as its parent, the unsampled request's
/// context — for work moved to a task of its own.
pub(crate) fn carry<F: Future>(work: F) -> impl Future<Output = F::Output> {
    UNSAMPLED.scope(unsampled_here(), work.instrument(tracing::Span::current()))
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
pub(super) fn decided_span(
    traceparent: Option<&str>,
    ratio: f64,
    make: impl FnOnce() -> tracing::Span,
) -> RequestTrace {
    let parent = traceparent.and_then(parse_traceparent);
    let remote = parent.as_ref().map(|cx| cx.span().span_context().clone());
    let sampled = match &remote {
        Some(sc) => sc.is_sampled(),
        None => ratio >= 1.0 || (ratio > 0.0 && random(|r| r.random::<f64>()) < ratio),
    };
    if !sampled {
        let (trace_id, span_id) = random(|r| (r.random::<u128>(), r.random::<u64>()));
        let unsampled = Unsampled {
            trace_id: remote.as_ref().map_or_else(
                || opentelemetry::trace::TraceId::from(trace_id.max(1)),
                |sc| sc.trace_id(),
            ),
            span_id: opentelemetry::trace::SpanId::from(span_id.max(1)),
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

/// `f` of this thread's id generator: a small, fast one seeded from the system's, since ids
/// must be unique, not secret (OpenTelemetry's SDK does the same); the standard thread
/// generator, a cryptographic one, cost a hundred instructions a request.
fn random<T>(f: impl FnOnce(&mut rand::rngs::SmallRng) -> T) -> T {
    use rand::SeedableRng as _;
    thread_local! {
        static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
    }
    IDS.with_borrow_mut(f)
}

/// Whether the span or event being created here goes to the OpenTelemetry layers: not inside
/// an unsampled request.
pub(super) fn traced_here() -> bool {
    unsampled_here().is_none()
}

/// The unsampled request this task is handling, if any.
pub(super) fn unsampled_here() -> Option<Unsampled> {
    UNSAMPLED.try_with(|u| *u).ok().flatten()
}

/// The `traceparent` of the unsampled request this task is handling, if any.
pub(super) fn unsampled_traceparent() -> Option<String> {
    unsampled_here().map(|u| format!("00-{}-{}-00", u.trace_id, u.span_id))
}
/// The SDK's sampler, but for request and delivery spans: [`request_span`] decided for them
/// already, and one that reaches the SDK is sampled. Other roots (background work) get
/// `trace_sampling`; children follow their parent.
#[derive(Debug, Clone)]
pub(super) struct RequestsDecided(pub(super) Sampler);

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
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::dynamic_filter_fn;
    use tracing_subscriber::layer::SubscriberExt;

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
