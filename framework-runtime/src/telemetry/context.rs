//! The trace context: where sampling is decided (a request or delivery entering), how an
//! unsampled request passes its decision on, and the `traceparent` that crosses processes.

use std::sync::OnceLock;

use rand::Rng as _;
use tracing::Instrument;
use tracing_subscriber::registry::LookupSpan as _;

use super::otlp::Span;

/// The `traceparent` of the current span: of its trace when sampled, or of the unsampled
/// request it is part of (flags `00`, so the callee does not sample it either).
pub(crate) fn current_traceparent() -> Option<String> {
    if let Some(unsampled) = unsampled_traceparent() {
        return Some(unsampled);
    }
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            // The nearest span the trace layer keeps (a span it filtered out has none).
            registry.span(id)?.scope().find_map(|s| {
                s.extensions().get::<Span>().map(|d| {
                    format!(
                        "00-{:032x}-{:016x}-{:02x}",
                        d.trace_id,
                        d.span_id,
                        u8::from(d.sampled)
                    )
                })
            })
        })
        .flatten()
}

/// A caller's trace context, from its `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) sampled: bool,
}

/// The remote parent a `traceparent` value names; `None` if it is malformed.
pub(crate) fn parse_traceparent(value: &str) -> Option<Remote> {
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
    let remote = Remote {
        trace_id: u128::from_str_radix(trace, 16).ok()?,
        span_id: u64::from_str_radix(span, 16).ok()?,
        sampled: u8::from_str_radix(flags, 16).ok()? & 1 == 1,
    };
    (remote.trace_id != 0 && remote.span_id != 0).then_some(remote)
}

/// Makes `span` (just created, a root) the child of the caller's span `remote`, in its trace.
fn set_remote_parent(span: &tracing::Span, remote: Remote) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>()
            && let Some(span) = registry.span(id)
            && let Some(data) = span.extensions_mut().get_mut::<Span>()
        {
            data.trace_id = remote.trace_id;
            data.parent_span_id = remote.span_id;
            data.sampled = remote.sampled;
        }
    });
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
    trace_id: u128,
    span_id: u64,
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
    let sampled = match &parent {
        Some(remote) => remote.sampled,
        None => ratio >= 1.0 || (ratio > 0.0 && random(|r| r.random::<f64>()) < ratio),
    };
    if !sampled {
        let (trace_id, span_id) = random(|r| (r.random::<u128>(), r.random::<u64>()));
        let unsampled = Unsampled {
            trace_id: parent.map_or(trace_id.max(1), |remote| remote.trace_id),
            span_id: span_id.max(1),
        };
        return RequestTrace {
            span: tracing::Span::none(),
            unsampled: Some(unsampled),
        };
    }
    // Made outside any unsampled request's context, so `traced_here` lets it through.
    let span = UNSAMPLED.sync_scope(None, make);
    if let Some(remote) = parent {
        set_remote_parent(&span, remote);
    }
    RequestTrace {
        span,
        unsampled: None,
    }
}

/// `f` of this thread's id generator: a small, fast one seeded from the system's, since ids
/// must be unique, not secret (OpenTelemetry's SDK does the same); the standard thread
/// generator, a cryptographic one, cost a hundred instructions a request.
pub(super) fn random<T>(f: impl FnOnce(&mut rand::rngs::SmallRng) -> T) -> T {
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
    unsampled_here().map(|u| format!("00-{:032x}-{:016x}-00", u.trace_id, u.span_id))
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
        let remote = parse_traceparent(value).unwrap();
        assert_eq!(
            format!("{:032x}", remote.trace_id),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(format!("{:016x}", remote.span_id), "b7ad6b7169203331");
        assert!(remote.sampled);
        assert!(
            !parse_traceparent(&value.replace("-01", "-00"))
                .unwrap()
                .sampled
        );
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
        assert_eq!(sent, None, "a sampled span's context comes from its span");
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (seen, _) = one_request(Some(caller), 0.0);
        assert_eq!(seen, ["request", "call", "event"], "the caller sampled it");
        // Outside any request, nothing is decided: background work goes to the SDK's sampler.
        assert!(traced_here());
    }
}
