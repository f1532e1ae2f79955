//! Call stubs: what `users::get(id)` does when another service calls it.
//!
//! `#[api]` keeps the user's body in a hidden function and emits, under the user's name, a
//! stub that calls [`call`]. At run time the stub asks the current runtime where the target
//! service is hosted:
//!
//! - **here**: the body runs in this process, in a span, as code of the callee;
//! - **elsewhere**: an HTTP request goes to the base URL service discovery gives, signed with
//!   the service-auth key, and the error body is decoded back into an [`Error`] with its code.
//!
//! Either way the call has the same outcome, so where a service runs is a deployment decision,
//! not a behaviour change: the request is encoded as the wire carries it (path segments, a
//! query or a JSON body) and decoded as the callee reads it, and the response and the error
//! come back the same way. A value that does not survive the trip (a `#[serde(skip)]` field, a
//! NaN, a map with non-string keys) behaves as it would between processes, and one that cannot
//! make it at all is an `internal` error naming the endpoint and the field, at the call site. A
//! callee that panics gives `internal`; a write (`POST`, `PUT`, `PATCH`, `DELETE`) runs to its
//! end even if its caller gives up, as it does on a server whose client hung up.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use futures_util::FutureExt;
use tracing::Instrument;

use crate::error::{ErrCode, Error};
use crate::http::client::{error_chain, origin, send};
use crate::invoke::{Incoming, Invocation, Spec, trip_error};
use crate::registry::{EncodeError, EncodedRequest, Endpoint};
use crate::runtime::{self, Context, Runtime};
use crate::service_auth;

tokio::task_local! {
    /// The `Authorization` header of the [`crate::Client`] whose `run` this task is in.
    pub(crate) static AUTHORIZATION: Option<std::sync::Arc<str>>;
}

/// The `Authorization` header of the current [`Client::run`], if it has one.
pub(crate) fn authorization() -> Option<std::sync::Arc<str>> {
    AUTHORIZATION.try_with(Clone::clone).ok().flatten()
}

/// Whether `rt` may call `service.name` of `access` for `user`: a client outside the app
/// reaches no private endpoint, and leaves `auth` ones to the app's auth handler; the app's
/// own services call an `auth` endpoint only for a user.
pub(crate) fn check_access(
    rt: &Runtime,
    access: crate::registry::Access,
    service: &str,
    name: &str,
    has_user: bool,
) -> Result<(), Error> {
    match access {
        crate::registry::Access::Private if rt.external => Err(Error::permission_denied(format!(
            "{service}.{name} is private: a client outside the app calls public and `auth` \
             endpoints only"
        ))),
        crate::registry::Access::Auth if !rt.external && !has_user => {
            Err(Error::unauthenticated(format!(
                "{service}.{name} needs an authenticated user, and this call is made for none: call \
             it while serving an authenticated request, or within `ovation::auth::with_data`"
            )))
        }
        _ => Ok(()),
    }
}

/// Calls endpoint `E`, in this process or over HTTP. Made by a workflow's function, the call
/// is one of its steps (see [`crate::workflow`]). Only the request's encoding and the
/// response's decoding know `E`'s types; the call itself is [`dispatch`], compiled once.
/// The request is encoded when the stub is called, so the future keeps only the call on its
/// way.
#[doc(hidden)]
pub fn call<E: Endpoint>(
    params: E::Params,
    request: E::Request,
) -> impl Future<Output = Result<E::Response, Error>> + Send {
    let spec = Spec::of::<E>();
    let sent = Outgoing::encode::<E>(spec, &params, &request).map(|o| dispatch(spec, o));
    async move {
        let body = sent?.await?;
        decode_response(&body, (spec.service, spec.name))
    }
}

/// A call on its way, its request encoded: a step of the current workflow, or a plain call.
/// Boxed: a stub's future stays shallow, however deep the callee's handler is.
fn dispatch(
    spec: Spec,
    outgoing: Outgoing,
) -> Pin<Box<dyn Future<Output = Result<bytes::Bytes, Error>> + Send>> {
    Box::pin(async move {
        match crate::workflow::current_run() {
            Some(run) => call_as_step(run, spec, outgoing).await,
            None => call_once(spec, &outgoing).await,
        }
    })
}

/// One call, not a step: the JSON of the callee's response.
async fn call_once(spec: Spec, outgoing: &Outgoing) -> Result<bytes::Bytes, Error> {
    let ctx = runtime::context()?;
    let user = crate::auth::current();
    check_access(ctx.rt, spec.access, spec.service, spec.name, user.is_some())?;
    let local = ctx.rt.hosts(spec.service);
    let span = call_span(spec.service, spec.name, local);
    let endpoint = (spec.service, spec.name);
    let stats = ctx
        .rt
        .metrics
        .of(crate::metrics::Kind::Call, spec.service, spec.name);
    let started = std::time::Instant::now();
    let outcome = async move {
        // What the callee will read, read here: a value that cannot make the trip fails at
        // the call site, the same way wherever the callee runs.
        let segments: Vec<&str> = outgoing.segments.iter().map(String::as_str).collect();
        let invocation = (spec.invoke)(&Incoming {
            segments: &segments,
            query: outgoing.query.as_deref().unwrap_or(""),
            body: &outgoing.body,
        })
        .map_err(|e| {
            trip_error(
                endpoint,
                "request",
                "does not decode",
                e.message().to_owned(),
            )
        })?;
        let key = crate::workflow::outgoing_key();
        if local {
            run_here(
                ctx.rt,
                endpoint,
                spec.method.is_safe(),
                user,
                key,
                invocation,
            )
            .await
            .map(bytes::Bytes::from)
        } else {
            // Decoded only to be checked: the callee's server decodes it again.
            drop(invocation);
            remote_call(ctx, user, key, spec, outgoing).await
        }
    }
    .instrument(span)
    .await;
    stats.record(started.elapsed(), outcome.as_ref().err().map(Error::code));
    outcome
}

/// A call made by a workflow's function: a step, whose every attempt is a plain call, and
/// whose outcome is recorded as the response's JSON.
async fn call_as_step(
    run: std::sync::Arc<crate::workflow::engine::RunCtx>,
    spec: Spec,
    outgoing: Outgoing,
) -> Result<bytes::Bytes, Error> {
    let input = outgoing.recorded();
    let endpoint = (spec.service, spec.name);
    let name = format!("{}.{}", spec.service, spec.name);
    let outgoing = &outgoing;
    let attempt: StepAttempt<'_> = Box::new(move || {
        Box::pin(async move {
            let body = call_once(spec, outgoing).await?;
            let body: &[u8] = if body.is_empty() { b"null" } else { &body };
            serde_json::from_slice(body).map_err(|e| {
                trip_error(
                    endpoint,
                    "response",
                    "cannot be recorded as JSON",
                    e.to_string(),
                )
            })
        })
    });
    let value: serde_json::Value = crate::workflow::call_step(run, name, input, attempt).await?;
    serde_json::to_vec(&value)
        .map(bytes::Bytes::from)
        .map_err(|e| trip_error(endpoint, "response", "does not decode", e.to_string()))
}

/// One attempt of a call made as a workflow's step, its response as JSON.
type StepAttempt<'a> = Box<
    dyn FnMut() -> Pin<Box<dyn Future<Output = Result<serde_json::Value, Error>> + Send + 'a>>
        + Send
        + 'a,
>;

/// Runs a local call's handler as code of the callee, for `user`: a panic is `internal`, and
/// a write (`safe` false) runs to its end in a task of its own if its caller stops waiting.
async fn run_here(
    rt: &'static Runtime,
    (service, name): (&'static str, &'static str),
    safe: bool,
    user: Option<crate::auth::Authenticated>,
    key: Option<std::sync::Arc<str>>,
    handled: Invocation,
) -> Result<Vec<u8>, Error> {
    // The callee runs for the caller's user, also if it is moved to a task of its own.
    let work = std::panic::AssertUnwindSafe(crate::auth::scope(
        user,
        runtime::scope_keyed(rt, service, name, key, handled),
    ))
    .catch_unwind();
    let outcome = if safe {
        work.await
    } else {
        RunToEnd {
            work: Some(Box::pin(crate::telemetry::carry(work))),
            write: Some(rt.writes.clone()),
        }
        .await
    };
    match outcome {
        Ok(Ok(encoded)) => encoded,
        Ok(Err(e)) => Err(e.into_received()),
        // The panic message went to the panic hook (stderr); the caller learns nothing of it.
        Err(_) => Err(Error::internal("internal error")),
    }
}

/// A local write, run in its caller's task; if the caller stops waiting before it ends, it is
/// moved to a task of its own to finish, as a server finishes a write whose client hung up.
/// (Spawning every write instead would cost a thread wake-up per call when the caller is not
/// on a worker thread, such as a test body: ~40 µs here.)
struct RunToEnd<T: Send + 'static> {
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    /// Shutdown waits for writes still holding this.
    write: Option<std::sync::Arc<()>>,
}

impl<T: Send + 'static> Future for RunToEnd<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let Some(work) = this.work.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(work.as_mut().poll(cx));
        this.work = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for RunToEnd<T> {
    fn drop(&mut self) {
        let (Some(work), Ok(tokio)) = (self.work.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let write = self.write.take();
        tokio.spawn(async move {
            let _write = write;
            work.await;
        });
    }
}

/// A call's request as it travels: path segments, and a query or a JSON body.
struct Outgoing {
    segments: Vec<String>,
    query: Option<String>,
    body: bytes::Bytes,
}

impl Outgoing {
    fn encode<E: Endpoint>(
        spec: Spec,
        params: &E::Params,
        request: &E::Request,
    ) -> Result<Outgoing, Error> {
        Outgoing::new(spec, E::render_params(params), E::encode_request(request))
    }

    /// Not generic: checks and places what `encode` rendered.
    fn new(
        spec: Spec,
        segments: Vec<String>,
        encoded: Result<EncodedRequest, EncodeError>,
    ) -> Result<Outgoing, Error> {
        let endpoint = (spec.service, spec.name);
        for (name, value) in spec.path_params.iter().zip(&segments) {
            let wildcard = spec
                .path
                .split('/')
                .any(|s| s.strip_prefix('*') == Some(name));
            if value.is_empty() && !wildcard {
                return Err(trip_error(
                    endpoint,
                    "request",
                    "cannot be encoded",
                    format!(
                        "path parameter `{name}` is empty, and no route matches an empty segment"
                    ),
                ));
            }
        }
        let (query, body) = match encoded {
            Ok(EncodedRequest::None) => (None, Vec::new()),
            Ok(EncodedRequest::Query(query)) => (Some(query).filter(|q| !q.is_empty()), Vec::new()),
            Ok(EncodedRequest::Body(body)) => (None, body),
            Err(e) => return Err(trip_error(endpoint, "request", e.what, e.reason)),
        };
        Ok(Outgoing {
            segments,
            query,
            body: body.into(),
        })
    }

    /// What a workflow records as the call's input: the request's JSON body, or its query
    /// string, or the path's values.
    fn recorded(&self) -> Option<serde_json::Value> {
        if !self.body.is_empty() {
            return serde_json::from_slice(&self.body).ok();
        }
        if let Some(query) = &self.query {
            return Some(serde_json::Value::String(format!("?{query}")));
        }
        (!self.segments.is_empty()).then(|| serde_json::json!(self.segments))
    }
}

/// A response as its caller decodes it.
fn decode_response<T: serde::de::DeserializeOwned>(
    body: &[u8],
    endpoint: (&str, &str),
) -> Result<T, Error> {
    let body: &[u8] = if body.is_empty() { b"null" } else { body };
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| response_error(e, endpoint))
}

/// Why a response did not decode. Not generic.
fn response_error(
    e: serde_path_to_error::Error<serde_json::Error>,
    endpoint: (&str, &str),
) -> Error {
    let reason = match e.path().to_string().as_str() {
        "." => e.into_inner().to_string(),
        path => format!("invalid field `{path}`: {}", e.into_inner()),
    };
    trip_error(endpoint, "response", "does not decode", reason)
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

/// Sends `outgoing` to `target`'s service; the body of its success.
async fn remote_call(
    ctx: Context,
    user: Option<crate::auth::Authenticated>,
    key: Option<std::sync::Arc<str>>,
    target: Spec,
    outgoing: &Outgoing,
) -> Result<bytes::Bytes, Error> {
    let service = target.service;
    let base = ctx
        .rt
        .discovery
        .get(service)
        .ok_or_else(|| {
            Error::unavailable(format!(
                "service `{service}` is not hosted in this process and has no URL in the service \
                 discovery config (`services` in OVATION_CONFIG, or OVATION_SERVICE_URLS)"
            ))
        })?
        .pick();
    let path = render_path(target.path, target.path_params, &outgoing.segments);
    let mut url = base.clone();
    url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), path));
    url.set_query(outgoing.query.as_deref());
    let method = target.method;
    let body = outgoing.body.clone();
    let caller = ctx.service.unwrap_or("-");
    let mut builder = ctx.rt.http.request(method.http(), url.clone());
    if ctx.rt.external {
        // A client outside the app: its credential, for the app's auth handler.
        if let Some(authorization) = authorization() {
            builder = builder.header(http::header::AUTHORIZATION, &*authorization);
        }
    } else {
        let signature = ctx.rt.auth.sign(
            service_auth::Signed {
                method: method.as_str(),
                path: url.path(),
                query: url.query().unwrap_or(""),
                body: &body,
            },
            caller,
            user.as_ref().map(|u| u.json()),
            key.as_deref(),
        );
        builder = builder.header(service_auth::HEADER, signature);
    }
    if target.has_request && method.has_body() {
        builder = builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    if let Some(traceparent) = crate::telemetry::current_traceparent() {
        builder = builder.header(crate::telemetry::TRACEPARENT, traceparent);
    }
    if let Some(key) = &key {
        builder = builder.header(service_auth::IDEMPOTENCY_HEADER, &**key);
    }
    let request = builder
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
        return Ok(body);
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
