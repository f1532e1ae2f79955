//! Call stubs: what `users::get(id)` does when another service calls it.
//!
//! `#[api]` keeps the user's body in a hidden function and emits, under the user's name, a
//! stub that calls [`call`]. At run time the stub asks the current runtime where the target
//! service is hosted:
//!
//! - **here**: the body runs directly (no serialization), in a span, as code of the callee;
//! - **elsewhere**: an HTTP request goes to the base URL service discovery gives, signed with
//!   the service-auth key, and the error body is decoded back into an [`Error`] with its code.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::error::{ErrCode, Error};
use crate::registry::Endpoint;
use crate::runtime::{self, Context};
use crate::service_auth;

/// Calls endpoint `E`, in this process or over HTTP.
#[doc(hidden)]
pub async fn call<E: Endpoint>(
    params: E::Params,
    request: E::Request,
) -> Result<E::Response, Error> {
    let ctx = runtime::context()?;
    let service = E::service();
    let local = ctx.rt.hosts(service);
    let span = call_span(service, E::NAME, local);
    if local {
        runtime::scope_in(ctx.rt, service, E::NAME, E::handle(params, request))
            .instrument(span)
            .await
    } else {
        remote::<E>(ctx, params, request).instrument(span).await
    }
}

/// The span of a call: `internal` when the callee is in this process, `client` when it is
/// reached over HTTP. With export off nothing would see it, and none is made.
fn call_span(service: &'static str, endpoint: &'static str, local: bool) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        "call",
        otel.name = %format!("call {service}.{endpoint}"),
        otel.kind = if local { "internal" } else { "client" },
        otel.status_code = tracing::field::Empty,
        service,
        endpoint,
        remote = !local
    )
}

/// Characters escaped in a path segment: everything but RFC 3986's unreserved set.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Fills `pattern`'s `:name` and `*name` segments with `values` (in `names` order).
pub(crate) fn render_path(pattern: &str, names: &[&str], values: &[String]) -> String {
    let value_of = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .map(String::as_str)
    };
    let mut out = String::with_capacity(pattern.len() + 16);
    for segment in pattern.split('/').skip(1) {
        out.push('/');
        if let Some(name) = segment.strip_prefix(':') {
            out.extend(utf8_percent_encode(
                value_of(name).unwrap_or_default(),
                SEGMENT,
            ));
        } else if let Some(name) = segment.strip_prefix('*') {
            let rest = value_of(name).unwrap_or_default();
            let parts: Vec<String> = rest
                .split('/')
                .map(|p| utf8_percent_encode(p, SEGMENT).to_string())
                .collect();
            out.push_str(&parts.join("/"));
        } else {
            out.push_str(segment);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

async fn remote<E: Endpoint>(
    ctx: Context,
    params: E::Params,
    request: E::Request,
) -> Result<E::Response, Error> {
    let service = E::service();
    let base = ctx.rt.discovery.get(service).ok_or_else(|| {
        Error::unavailable(format!(
            "service `{service}` is not hosted in this process and has no URL in the service \
             discovery config (`services` in OVATION_CONFIG, or OVATION_SERVICE_URLS)"
        ))
    })?;
    let path = render_path(E::PATH, E::PATH_PARAMS, &E::render_params(&params));
    let mut url = base.clone();
    url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), path));
    let method = E::METHOD;
    let mut body = Vec::new();
    if E::HAS_REQUEST && !method.has_body() {
        let query = serde_urlencoded::to_string(&request).map_err(|e| {
            Error::internal(format!(
                "cannot encode the request of {service}.{} as a query: {e}",
                E::NAME
            ))
        })?;
        url.set_query(Some(&query).filter(|q| !q.is_empty()).map(|q| q.as_str()));
    } else if E::HAS_REQUEST {
        body = serde_json::to_vec(&request)
            .map_err(|e| Error::internal(format!("cannot encode the request: {e}")))?;
    }
    let caller = ctx.service.unwrap_or("-");
    let signature = ctx.rt.auth.sign(
        service_auth::Signed {
            method: method.as_str(),
            path: url.path(),
            query: url.query().unwrap_or(""),
            body: &body,
        },
        caller,
    );
    let mut builder = ctx.rt.http.request(method.http(), url.clone());
    if E::HAS_REQUEST && method.has_body() {
        builder = builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    if let Some(traceparent) = crate::telemetry::current_traceparent() {
        builder = builder.header(crate::telemetry::TRACEPARENT, traceparent);
    }
    let request = builder
        .header(service_auth::HEADER, signature)
        .build()
        .map_err(|e| Error::internal(format!("cannot build the request to `{service}`: {e}")))?;

    let exchange = async {
        let response = send(&ctx.rt.http, request, ctx.rt.connect_retry).await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    let (status, body) = match tokio::time::timeout(ctx.rt.call_timeout, exchange).await {
        Ok(result) => result.map_err(|e| transport_error(service, &url, e))?,
        Err(_) => {
            tracing::warn!(service, at = %origin(&url), timeout = ?ctx.rt.call_timeout, "call timed out");
            return Err(Error::deadline_exceeded(format!(
                "service `{service}` did not answer within {:?}",
                ctx.rt.call_timeout
            )));
        }
    };
    if status.is_success() {
        let body: &[u8] = if body.is_empty() { b"null" } else { &body };
        return serde_json::from_slice(body).map_err(|e| {
            Error::internal(format!(
                "service `{service}` sent a response that does not decode: {e}"
            ))
        });
    }
    match serde_json::from_slice::<Error>(&body) {
        Ok(err) => Err(err),
        Err(_) => Err(Error::new(
            ErrCode::from_http_status(status),
            format!("service `{service}` answered {status}"),
        )),
    }
}

/// Sends `request`, retrying for up to `retry_window` while the callee's port refuses the
/// connection: then the request provably never reached it (a process restarting, a port not
/// yet open), so sending it again cannot run anything twice. Any other failure is returned as
/// is. Retries back off from 25 ms, doubling, to 400 ms.
pub(crate) async fn send(
    http: &reqwest::Client,
    request: reqwest::Request,
    retry_window: Duration,
) -> Result<reqwest::Response, reqwest::Error> {
    let started = Instant::now();
    let mut delay = FIRST_RETRY_DELAY;
    let mut request = request;
    loop {
        let retry = request.try_clone();
        match http.execute(request).await {
            Err(e) if connection_refused(&e) => match retry {
                Some(retry) if started.elapsed() + delay <= retry_window => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    request = retry;
                }
                _ => return Err(e),
            },
            result => return result,
        }
    }
}

/// The first wait before retrying a refused connection, and the longest.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(25);
const MAX_RETRY_DELAY: Duration = Duration::from_millis(400);

/// Whether `e` is a refused TCP connection, as opposed to a failure after the request was sent.
pub(crate) fn connection_refused(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `e` and its causes, `: `-separated: reqwest's own message rarely says what went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `scheme://host:port` of `url`, for messages (never the path or query).
pub(crate) fn origin(url: &reqwest::Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

/// The error a caller sees when the call did not complete. It names the service but not its
/// address (errors may travel on to external clients); the address goes to the log.
fn transport_error(service: &str, url: &reqwest::Url, e: reqwest::Error) -> Error {
    tracing::warn!(service, at = %origin(url), "call failed: {}", error_chain(&e));
    if e.is_timeout() {
        Error::deadline_exceeded(format!("service `{service}` did not answer in time"))
    } else {
        Error::unavailable(format!("service `{service}` is unreachable"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn post(port: u16) -> reqwest::Request {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/x"))
            .body("{}")
            .build()
            .unwrap()
    }

    /// Reads one request head (up to the blank line) from `stream`.
    fn read_head(stream: &mut std::net::TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_within_the_window() {
        let port = closed_port();
        // The callee comes up after a few attempts were refused.
        let callee = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut stream, _) = listener.accept().unwrap();
            read_head(&mut stream);
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
        });
        let started = Instant::now();
        let response = send(&reqwest::Client::new(), post(port), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // The answer came from a retry, not from a first attempt that found the port open.
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        callee.join().unwrap();

        // A port that stays closed: retries for the window, then the refusal is the answer.
        let started = Instant::now();
        let err = send(
            &reqwest::Client::new(),
            post(closed_port()),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(connection_refused(&err), "{err:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // No window: no retry.
        let err = send(&reqwest::Client::new(), post(closed_port()), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(connection_refused(&err), "{err:?}");
    }

    #[tokio::test]
    async fn a_request_that_reached_the_callee_is_not_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        // The callee reads the request, then drops the connection without answering.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                seen.fetch_add(1, Ordering::SeqCst);
                read_head(&mut stream);
            }
        });
        let err = send(&reqwest::Client::new(), post(port), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(!connection_refused(&err), "{err:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(connections.load(Ordering::SeqCst), 1, "sent exactly once");
    }

    #[test]
    fn path_params_are_filled_and_escaped() {
        assert_eq!(
            render_path("/users/:id", &["id"], &["a b/c".into()]),
            "/users/a%20b%2Fc"
        );
        assert_eq!(
            render_path(
                "/files/:bucket/*key",
                &["bucket", "key"],
                &["b".into(), "x y/z.txt".into()]
            ),
            "/files/b/x%20y/z.txt"
        );
        assert_eq!(render_path("/", &[], &[]), "/");
    }
}
