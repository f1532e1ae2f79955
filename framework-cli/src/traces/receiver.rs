//! The OTLP/HTTP receiver (`POST /v1/traces`), within [`limits`]: a request holds a permit while
//! its body is read (two at once, 429 beyond), OTLP/protobuf is walked on the wire one span at a
//! time up to the per-request limit, and what is turned away is counted.

use super::*;

/// What one OTLP request may cost the receiver. Whatever is sent, the receiver's memory stays
/// bounded: at most [`CONCURRENT_REQUESTS`] bodies of at most [`BODY_LIMIT`] are held at once
/// (more requests are answered 429, which exporters retry), and of each only the first
/// [`MAX_SPANS`] spans, or [`MAX_SPAN_BYTES`] of encoded spans, are decoded and stored; the
/// rest are rejected in OTLP's own `partial_success` and counted (see [`Dropped`]).
pub mod limits {
    use std::time::Duration;

    /// The largest OTLP/protobuf request body.
    pub const BODY_LIMIT: usize = 32 * 1024 * 1024;
    /// The largest OTLP/JSON request body: JSON decodes whole, into up to ~100 times its size.
    pub const JSON_BODY_LIMIT: usize = 4 * 1024 * 1024;
    /// The most JSON objects an OTLP/JSON request may hold.
    pub const JSON_OBJECTS: usize = 100_000;
    /// Requests received at once.
    pub const CONCURRENT_REQUESTS: usize = 2;
    /// Spans stored of one request.
    pub const MAX_SPANS: usize = 10_000;
    /// Encoded span bytes stored of one request.
    pub const MAX_SPAN_BYTES: usize = 8 * 1024 * 1024;
    /// How long a client may take to send a request's body.
    pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
}
use limits::{
    BODY_LIMIT, BODY_READ_TIMEOUT, JSON_BODY_LIMIT, JSON_OBJECTS, MAX_SPAN_BYTES, MAX_SPANS,
};

/// `POST /v1/traces`, within [`limits`].
pub(super) async fn receive(State(store): State<Store>, req: Request) -> Response {
    let Received { body, json, .. } = match read(&store, req, BODY_LIMIT).await {
        Ok(received) => received,
        Err(refused) => return refused,
    };
    let received = if json {
        decode_json(&body)
    } else {
        decode_protobuf(&body)
    };
    drop(body);
    let (rows, rejected) = match received {
        Ok(received) => received,
        Err(e) => return Error::invalid_argument(e).into_response(),
    };
    if rejected > 0 {
        store
            .dropped
            .spans
            .fetch_add(rejected as u64, Ordering::Relaxed);
    }
    if let Err(e) = store.insert_rows(rows).await {
        eprintln!("error: storing spans failed: {e}");
        return Error::unavailable("the trace store is unavailable").into_response();
    }
    let answer = ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: format!(
                "the local trace store keeps at most {MAX_SPANS} spans ({} MiB) of one request",
                MAX_SPAN_BYTES / (1024 * 1024)
            ),
        }),
    };
    if json {
        (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec()),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            answer.encode_to_vec(),
        )
            .into_response()
    }
}

/// An OTLP request's body, read within [`limits`], and the permit it was read under (held
/// while the request is handled).
pub(super) struct Received {
    pub(super) body: axum::body::Bytes,
    /// OTLP/JSON rather than OTLP/protobuf.
    pub(super) json: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Reads an OTLP/HTTP request's body: uncompressed or gzip, protobuf of at most `protobuf_limit` bytes
/// or JSON within [`JSON_BODY_LIMIT`] and [`JSON_OBJECTS`], sent within
/// [`BODY_READ_TIMEOUT`], while at most [`CONCURRENT_REQUESTS`] are read at once. What is
/// turned away gets its answer, and is counted as a dropped request where its data is lost.
pub(super) async fn read(
    store: &Store,
    req: Request,
    protobuf_limit: usize,
) -> Result<Received, Response> {
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let content_type = crate::guard::media_type(headers);
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|e| e.to_str()) {
        None | Some(Ok("identity")) => false,
        Some(Ok("gzip")) => true,
        Some(_) => {
            return Err(Error::new(
                ErrCode::InvalidArgument,
                "OTLP requests are taken uncompressed or gzip-compressed: set the exporter's \
                 compression to gzip or none",
            )
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .into_response());
        }
    };
    let (json, limit) = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => (false, protobuf_limit),
        "application/json" => (true, JSON_BODY_LIMIT),
        other => {
            return Err(Error::invalid_argument(format!(
                "OTLP/HTTP takes application/x-protobuf or application/json, not {other:?}"
            ))
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .into_response());
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        store.dropped.requests.fetch_add(1, Ordering::Relaxed);
        return Err(too_large(limit));
    }
    // A permit before the body is read: bodies waiting for their turn would be memory too.
    let Ok(permit) = store.receiving.clone().try_acquire_owned() else {
        store.dropped.requests.fetch_add(1, Ordering::Relaxed);
        let mut busy = Error::resource_exhausted("the trace store is busy: send again shortly")
            .with_status(StatusCode::TOO_MANY_REQUESTS)
            .into_response();
        busy.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return Err(busy);
    };
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit));
    let body = match read.await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            store.dropped.requests.fetch_add(1, Ordering::Relaxed);
            return Err(too_large(limit));
        }
        Err(_) => {
            let mut slow = Error::deadline_exceeded("the request body did not arrive in time")
                .with_status(StatusCode::REQUEST_TIMEOUT)
                .into_response();
            slow.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return Err(slow);
        }
    };
    // Decompressed, the body is held to the same limit as it would be sent uncompressed.
    let body = if gzip {
        match gunzip(&body, limit) {
            Ok(body) => body,
            Err(None) => {
                store.dropped.requests.fetch_add(1, Ordering::Relaxed);
                return Err(too_large(limit));
            }
            Err(Some(e)) => {
                store.dropped.requests.fetch_add(1, Ordering::Relaxed);
                return Err(Error::invalid_argument(format!(
                    "the request body is not valid gzip: {e}"
                ))
                .into_response());
            }
        }
    } else {
        body
    };
    // OTLP/JSON decodes whole: bounded by its objects before it is.
    if json && body.iter().filter(|&&b| b == b'{').count() > JSON_OBJECTS {
        store.dropped.requests.fetch_add(1, Ordering::Relaxed);
        return Err(Error::resource_exhausted(format!(
            "an OTLP/JSON request to the local trace store holds at most {JSON_OBJECTS} \
             objects; use OTLP/protobuf for more"
        ))
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .into_response());
    }
    Ok(Received {
        body,
        json,
        _permit: permit,
    })
}

/// A gzip body decompressed, if it is at most `limit` bytes so; else why not: `None` when it
/// inflates past the limit.
fn gunzip(body: &[u8], limit: usize) -> Result<axum::body::Bytes, Option<std::io::Error>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    // One byte past the limit tells a body that is too large from one that fits exactly.
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Some)?;
    if out.len() > limit {
        return Err(None);
    }
    Ok(out.into())
}

pub(super) fn too_large(limit: usize) -> Response {
    Error::resource_exhausted(format!(
        "an OTLP request to the local trace store is at most {} MiB",
        limit / (1024 * 1024)
    ))
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    .into_response()
}

/// The spans of an OTLP/protobuf request within the per-request limits, and how many were
/// rejected past them. Walks the wire format and decodes one span at a time, so a request of
/// millions of (empty) spans costs its own size in memory, not a hundred times that.
pub(super) fn decode_protobuf(body: &[u8]) -> Result<(Rows, usize), String> {
    let mut rows = Rows::default();
    let (mut rejected, mut span_bytes) = (0usize, 0usize);
    // ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
    for_each_field(body, |field, resource_spans| {
        if field != 1 {
            return Ok(());
        }
        // ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
        let mut resource = None;
        for_each_field(resource_spans, |field, bytes| {
            if field == 1 {
                resource = Some(Resource::decode(bytes).map_err(|e| e.to_string())?);
            }
            Ok(())
        })?;
        let process = process_name(resource.as_ref());
        for_each_field(resource_spans, |field, scope_spans| {
            if field != 2 {
                return Ok(());
            }
            // ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; }
            for_each_field(scope_spans, |field, span| {
                if field != 2 {
                    return Ok(());
                }
                if rows.len() >= MAX_SPANS || span_bytes + span.len() > MAX_SPAN_BYTES {
                    rejected += 1;
                    return Ok(());
                }
                span_bytes += span.len();
                rows.push(&process, Span::decode(span).map_err(|e| e.to_string())?);
                Ok(())
            })
        })
    })
    .map_err(|e| format!("not an OTLP protobuf request: {e}"))?;
    Ok((rows, rejected))
}

/// Calls `f` with the number and payload of every length-delimited field of the protobuf
/// message `message`, skipping fields of other wire types.
pub(super) fn for_each_field(
    mut message: &[u8],
    mut f: impl FnMut(u32, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    fn varint(buf: &mut &[u8]) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first().ok_or("truncated varint")?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let skip = match key & 7 {
            0 => {
                varint(&mut message)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = usize::try_from(varint(&mut message)?).map_err(|e| e.to_string())?;
                if len > message.len() {
                    return Err("truncated field".into());
                }
                let (payload, rest) = message.split_at(len);
                message = rest;
                f(u32::try_from(key >> 3).map_err(|e| e.to_string())?, payload)?;
                0
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        if skip > message.len() {
            return Err("truncated field".into());
        }
        message = &message[skip..];
    }
    Ok(())
}

/// The spans of an OTLP/JSON request within the per-request limits, and how many were
/// rejected past them. JSON is decoded whole: its body and object count are bounded before.
pub(super) fn decode_json(body: &[u8]) -> Result<(Rows, usize), String> {
    let request = serde_json::from_slice::<ExportTraceServiceRequest>(body)
        .map_err(|e| format!("not an OTLP/JSON request: {e}"))?;
    let mut rows = Rows::default();
    let mut rejected = 0;
    for resource_spans in request.resource_spans {
        let process = process_name(resource_spans.resource.as_ref());
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            if rows.len() >= MAX_SPANS {
                rejected += 1;
            } else {
                rows.push(&process, span);
            }
        }
    }
    Ok((rows, rejected))
}
