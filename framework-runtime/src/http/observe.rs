//! What the HTTP layer records of a request: its server span (continuing the caller's trace)
//! and its outcome. Headers and bodies are never recorded.

use axum::extract::Request;
use axum::http::header;
use axum::response::Response;

/// The name of an endpoint's request spans (`service.endpoint`), made once per endpoint, not
/// per request (routers are built once per process, or per test server).
pub(crate) fn span_name(name: String) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = names.get(name.as_str()) {
        return known;
    }
    let name: &'static str = Box::leak(name.into_boxed_str());
    names.insert(name);
    name
}

/// The server span of one request (`name` from [`span_name`]), continuing the caller's trace
/// if its `traceparent` header names one; whether its trace is sampled is decided here (see
/// [`crate::telemetry::request_span`]). Headers and bodies are not recorded.
pub(crate) fn request_span(
    name: &'static str,
    service: &str,
    endpoint: &str,
    req: &Request,
) -> crate::telemetry::RequestTrace {
    static TRACEPARENT: header::HeaderName =
        header::HeaderName::from_static(crate::telemetry::TRACEPARENT);
    let traceparent = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    crate::telemetry::request_span(traceparent, || {
        tracing::info_span!(
            "request",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            service,
            endpoint,
            http.method = req.method().as_str(),
            http.path = req.uri().path(),
            http.status_code = tracing::field::Empty,
            error.code = tracing::field::Empty,
            enduser.id = tracing::field::Empty,
        )
    })
}

/// Records the response's status (and error code) on a request span.
pub(crate) fn record_outcome(span: &tracing::Span, response: &Response) {
    let status = response.status();
    span.record("http.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        if let Some(code) = response.extensions().get::<crate::error::ErrCode>() {
            span.record("error.code", code.as_str());
        }
    }
}
