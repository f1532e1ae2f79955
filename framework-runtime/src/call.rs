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

use tracing::Instrument;

use crate::error::{ErrCode, Error};
use crate::http::client::{error_chain, origin, send};
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
