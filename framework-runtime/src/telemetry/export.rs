//! Span export: a bounded queue drained in batches by a thread of its own, so a request never
//! waits on the collector; spans that find the queue full are dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::otlp::Span;

/// Spans waiting for export; past this, new spans are dropped and counted.
pub(super) const QUEUE_CAPACITY: usize = 8192;
/// And their bytes: spans with large attributes (long statements) are dropped sooner.
pub(super) const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// The most buffer kept between batches.
const KEPT_BYTES: usize = 1024 * 1024;
/// Spans per OTLP request.
pub(super) const BATCH: usize = 512;
/// How long a span may wait for a batch to fill: how soon the dashboard shows a quiet app's
/// requests.
pub(super) const BATCH_DELAY: Duration = Duration::from_millis(200);
/// Tries per batch, and the wait between them.
const EXPORT_ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Where spans go once they end: a bounded buffer, taken from in batches by a thread of its
/// own that exports them, so the code ending a span never waits on the collector. Ending a span
/// is one uncontended lock and a push: the thread is woken only when a batch is full (or a
/// flush asks), not once per span, and waits at most [`BATCH_DELAY`] for a batch to fill, so a
/// quiet app's spans still reach the collector promptly.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when `pending` holds a full batch or a flush.
    ready: Condvar,
    /// Spans that found the queue full.
    pub(super) dropped: AtomicU64,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    /// The spans, each encoded as it will be sent (see [`super::otlp::put_span_field`]): the
    /// export thread only frames them, and what a span held is freed by the thread that
    /// allocated it, which `malloc` does far more cheaply than another thread's free.
    encoded: Vec<u8>,
    /// Where each span's bytes end in `encoded`.
    ends: Vec<usize>,
    /// Flushes waiting for every span queued before them to be exported.
    flushes: Vec<std::sync::mpsc::Sender<()>>,
}

/// Where the batches go: OTLP/HTTP protobuf, gzip-compressed or not.
#[derive(Debug)]
pub(super) struct Collector {
    /// `…/v1/traces`.
    pub(super) url: String,
    /// The resource's `service.name`.
    pub(super) process: String,
    pub(super) gzip: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves `Pending` whole (pushes and takes only).
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the thread exporting what is queued to `collector`.
    pub(super) fn start(collector: Collector) -> Result<Arc<Queue>, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let queue = Arc::new(Queue::default());
        let drained = queue.clone();
        std::thread::Builder::new()
            .name("ovation-trace-export".into())
            .spawn(move || export_loop(&collector, &http, &drained))
            .map_err(|e| e.to_string())?;
        Ok(queue)
    }

    /// Queues an ended span, or drops and counts it when the queue is full.
    pub(super) fn push(&self, span: Span) {
        thread_local! {
            /// Where a span is encoded before it is queued, outside the lock.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            super::otlp::put_span_field(scratch, &span);
            let mut pending = self.lock();
            if pending.ends.len() >= QUEUE_CAPACITY
                || pending.encoded.len() + scratch.len() > QUEUE_BYTES
            {
                drop(pending);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending.encoded.extend_from_slice(scratch);
            let end = pending.encoded.len();
            pending.ends.push(end);
            if pending.ends.len() == BATCH {
                self.ready.notify_one();
            }
        });
    }

    /// What is queued, taken and decoded: for tests of what the layer queues.
    #[cfg(test)]
    pub(super) fn take_for_test(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        use prost::Message as _;
        let mut pending = self.lock();
        pending.ends.clear();
        let encoded = std::mem::take(&mut pending.encoded);
        let request = super::otlp::request_of_encoded("test", &encoded);
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
            request.as_slice(),
        )
        .expect("the queue holds OTLP")
        .resource_spans
        .swap_remove(0)
        .scope_spans
        .swap_remove(0)
        .spans
    }

    /// Waits (at most `timeout`) until every span queued so far is exported.
    pub(super) fn flush(&self, timeout: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        self.lock().flushes.push(done);
        self.ready.notify_one();
        let _ = wait.recv_timeout(timeout);
    }
}

fn export_loop(collector: &Collector, http: &reqwest::Client, queue: &Queue) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // The buffers the spans were last taken in, emptied: swapped back in at the next take, so
    // the threads ending spans append within capacity rather than grow a new buffer each batch.
    let (mut encoded, mut ends) = (Vec::new(), Vec::new());
    loop {
        let flushes = {
            let mut pending = queue.lock();
            let deadline = Instant::now() + BATCH_DELAY;
            while pending.ends.len() < BATCH && pending.flushes.is_empty() {
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
            encoded.clear();
            ends.clear();
            // A burst's buffer is not kept: a quiet app holds a batch's worth at most.
            if encoded.capacity() > KEPT_BYTES {
                (encoded, ends) = (Vec::new(), Vec::new());
            }
            std::mem::swap(&mut pending.encoded, &mut encoded);
            std::mem::swap(&mut pending.ends, &mut ends);
            std::mem::take(&mut pending.flushes)
        };
        let mut start = 0;
        for batch in ends.chunks(BATCH) {
            let end = batch.last().copied().unwrap_or(start);
            let body = encode(collector, &encoded[start..end]);
            start = end;
            // A busy collector answers 429 with `Retry-After: 1` (the local trace store does):
            // the batch is sent again after a second, twice at most. A collector that is down
            // loses it; the app goes on (spans ended meanwhile queue, or are dropped and counted).
            for attempt in 1..=EXPORT_ATTEMPTS {
                if rt.block_on(send(collector, http, body.clone())) || attempt == EXPORT_ATTEMPTS {
                    break;
                }
                std::thread::sleep(RETRY_AFTER);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// A batch's request body: OTLP protobuf, gzip-compressed if the collector takes it so.
fn encode(collector: &Collector, batch: &[u8]) -> bytes::Bytes {
    let body = super::otlp::request_of_encoded(&collector.process, batch);
    if !collector.gzip {
        return body.into();
    }
    crate::compress::gzip(&body).into()
}

/// Posts one batch; whether the collector took it.
async fn send(collector: &Collector, http: &reqwest::Client, body: bytes::Bytes) -> bool {
    let mut request = http
        .post(&collector.url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
    if collector.gzip {
        request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
    }
    match request.body(body).send().await {
        Ok(answer) => {
            let ok = answer.status().is_success();
            // Read to the end, so the connection is kept for the next batch.
            let _ = answer.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::otlp::{Kind, Status};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};

    /// A request's header lines (lower-cased) and body.
    type Taken = (Vec<String>, Vec<u8>);

    /// A collector on loopback taking one OTLP request.
    fn collector() -> (String, std::sync::mpsc::Receiver<Taken>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                headers.push(line.trim().to_ascii_lowercase());
            }
            let length: usize = headers
                .iter()
                .find_map(|h| h.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            (&stream)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            tx.send((headers, body)).unwrap();
        });
        (url, rx)
    }

    fn span(name: &'static str) -> Span {
        Span {
            trace_id: 7,
            span_id: 9,
            parent_span_id: 0,
            sampled: true,
            name: name.into(),
            kind: Kind::Server,
            start: 1,
            end: 2,
            attributes: Vec::new(),
            events: Vec::new(),
            status: Status::Unset,
        }
    }

    #[test]
    fn a_flush_sends_what_is_queued_gzip_compressed_when_asked() {
        let (url, received) = collector();
        let queue = Queue::start(Collector {
            url,
            process: "gzip-test".into(),
            gzip: true,
        })
        .unwrap();
        queue.push(span("first"));
        queue.push(span("second"));
        queue.flush(Duration::from_secs(10));
        let (headers, body) = received
            .recv_timeout(Duration::from_secs(1))
            .expect("the flush sent the spans");
        assert!(
            headers.contains(&"content-encoding: gzip".to_owned()),
            "{headers:?}"
        );
        assert!(
            headers.contains(&"content-type: application/x-protobuf".to_owned()),
            "{headers:?}"
        );
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut inflated)
            .unwrap();
        let request = ExportTraceServiceRequest::decode(inflated.as_slice()).unwrap();
        let names: Vec<_> = request.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let queue = Queue::default();
        for _ in 0..QUEUE_CAPACITY + 5 {
            queue.push(span("s"));
        }
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 5);
        assert_eq!(queue.take_for_test().len(), QUEUE_CAPACITY);
    }
}
