//! Span export: a bounded queue drained in batches by a thread of its own, so a request never
//! waits on the collector; spans that find the queue full are dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};

/// Spans waiting for export; past this, new spans are dropped and counted.
pub(super) const QUEUE_CAPACITY: usize = 8192;
/// Spans per OTLP request.
pub(super) const BATCH: usize = 512;
/// How long a span may wait for a batch to fill: how soon the dashboard shows a quiet app's
/// requests.
pub(super) const BATCH_DELAY: Duration = Duration::from_millis(200);
/// Tries per batch, and the wait between them.
const EXPORT_ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A span processor that never blocks the code ending a span: ended spans go into a bounded
/// buffer, and a thread of its own takes them from it in batches for the exporter. Ending a
/// span is one uncontended lock and a push: the thread is woken only when a batch is full (or
/// a flush asks), not once per span, and waits at most [`BATCH_DELAY`] for a batch to fill,
/// so a quiet app's spans still reach the collector promptly.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    queue: Arc<Queue>,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when `pending` holds a full batch, a flush, or the close.
    ready: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
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
    pub(super) fn start<E: SpanExporter + 'static>(
        exporter: E,
        dropped: Arc<AtomicU64>,
    ) -> QueueProcessor {
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

pub(super) fn export_loop<E: SpanExporter>(exporter: E, queue: &Queue) {
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
            let mut batch: Vec<SpanData> = spans.by_ref().take(BATCH).collect();
            // A busy collector answers 429 with `Retry-After: 1` (the local trace store does):
            // the batch is sent again after a second, twice at most. A collector that is down
            // loses it; the app goes on (spans ended meanwhile queue, or are dropped and counted).
            for attempt in 1..=EXPORT_ATTEMPTS {
                let last = attempt == EXPORT_ATTEMPTS;
                let sending = if last {
                    std::mem::take(&mut batch)
                } else {
                    batch.clone()
                };
                if rt.block_on(exporter.export(sending)).is_ok() || last {
                    break;
                }
                std::thread::sleep(RETRY_AFTER);
            }
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
