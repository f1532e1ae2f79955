//! One endpoint's request pipeline: access (a private endpoint's signature is checked against
//! the whole request), path parameters, the request decoded from the body or the query, the
//! handler in the service's context within the request timeout, the JSON response. A handler
//! that panics is a 500 `internal`; one of a request that changes something runs to its end even
//! if its client hangs up.

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};

use super::observe::{record_outcome, request_span, span_name};
use super::wire::{check_json_content_type, not_found_response, read_body};
use crate::auth;
use crate::error::Error;
use crate::invoke::{Incoming, Spec};
use crate::registry::{Access, DynEndpoint, Endpoint, EndpointDecl, EndpointInfo};
use crate::runtime::{self, Runtime};
use crate::service_auth;

/// [`service_auth::HEADER`], parsed once: looking a header up by `&str` parses the name at
/// every lookup.
const SERVICE_AUTH: header::HeaderName = header::HeaderName::from_static(service_auth::HEADER);

/// The caller and auth data, if the request carries a valid, fresh, first-seen signature of
/// its method, path, query and `body`.
pub(crate) fn verified_caller(
    rt: &Runtime,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Option<service_auth::Verified> {
    let header = parts
        .headers
        .get(&SERVICE_AUTH)
        .and_then(|h| h.to_str().ok())?;
    rt.auth.verify_keyed(
        header,
        service_auth::Signed {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            body,
        },
        idempotency_key(parts),
    )
}

/// The idempotency key a request carries (trusted only once its signature, which covers it,
/// is verified).
fn idempotency_key(parts: &axum::http::request::Parts) -> Option<&str> {
    parts
        .headers
        .get(service_auth::IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// What the model's registry asks of an endpoint; here because its route is built here.
impl<E: Endpoint> DynEndpoint for EndpointDecl<E> {
    fn info(&self) -> EndpointInfo {
        EndpointInfo {
            service: E::service(),
            name: E::NAME,
            method: E::METHOD,
            path: E::PATH,
            access: E::ACCESS,
            path_params: E::PATH_PARAMS,
            location: E::LOCATION,
            module: E::MODULE,
            no_content: E::NO_CONTENT,
            tags: E::TAGS,
            kind: crate::registry::EndpointKind::Typed,
        }
    }

    fn request_schema(&self) -> Option<schemars::Schema> {
        E::HAS_REQUEST.then(|| schemars::schema_for!(E::Request))
    }

    fn response_schema(&self) -> Option<schemars::Schema> {
        Some(schemars::schema_for!(E::Response))
    }

    fn path_param_schemas(&self) -> Vec<Option<schemars::Schema>> {
        E::path_param_schemas()
    }

    fn route(&self, rt: &'static Runtime) -> axum::routing::MethodRouter {
        route(rt, Spec::of::<E>())
    }
}

/// The axum route of the endpoint `spec` describes. Not generic: axum's handler machinery
/// and the whole pipeline are compiled once for all typed endpoints, which differ only in
/// `spec.invoke`.
fn route(rt: &'static Runtime, spec: Spec) -> MethodRouter {
    let filter = MethodFilter::try_from(spec.method.http()).expect("endpoint methods are standard");
    let name = span_name(format!("{}.{}", spec.service, spec.name));
    let stats = rt
        .metrics
        .of_route(crate::metrics::Kind::Request, spec.service, spec.name);
    axum::routing::on(filter, move |req: Request| -> Serving<Response> {
        // One allocation holds the whole request's future: axum's layers each box the
        // future they are given, and these boxes then hold a pointer rather than a copy.
        Box::pin(async move {
            let started = std::time::Instant::now();
            let trace = request_span(name, spec.service, spec.name, &req);
            // Boxed too: a future this large would be copied at each wrapper around it.
            let serving: Serving = Box::pin(serve(rt, spec, req));
            let response = respond(rt, spec.method, trace, serving).await;
            stats.record(started.elapsed(), error_code(&response));
            response
        })
    })
}

/// The code of the error a response answers, if it answers one.
pub(super) fn error_code(response: &Response) -> Option<crate::error::ErrCode> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    Some(
        response
            .extensions()
            .get::<crate::error::ErrCode>()
            .copied()
            .unwrap_or_else(|| crate::error::ErrCode::from_http_status(status)),
    )
}

/// A request being served, boxed so the code around it is not generic.
pub(super) type Serving<T = Result<Response, Error>> =
    std::pin::Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs `serving`, a request of `method`, in its `trace`, and answers: an error as its JSON, a
/// panic as a 500 `internal` (its message went to the panic hook, the client learns nothing of
/// it). A client that goes away cancels a read, dropped with its connection, but not a request
/// that changes something: that runs to its end (or its timeout) in a task of its own, so a
/// flow of several writes and calls is never cut between two of them.
pub(super) async fn respond(
    rt: &'static Runtime,
    method: crate::registry::Method,
    trace: crate::telemetry::RequestTrace,
    serving: impl Future<Output = Result<Response, Error>> + Send + 'static,
) -> Response {
    let serving = std::panic::AssertUnwindSafe(serving);
    let handled = trace.run(futures_util::FutureExt::catch_unwind(serving));
    let handled = if method.is_safe() {
        handled.await.map_err(drop)
    } else {
        let write = rt.writes.clone();
        tokio::spawn(async move {
            let _write = write;
            handled.await
        })
        .await
        .map_err(drop)
        .and_then(|h| h.map_err(drop))
    };
    let response = match handled {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => e.into_response(),
        Err(()) => Error::internal("internal error").into_response(),
    };
    record_outcome(trace.span(), &response);
    response
}

/// Who a request is for: the user in the envelope of a signed request (a call, or a request a
/// gateway authenticated); otherwise the auth handler's answer to the credential it carries. An
/// `auth` endpoint without one is 401. The user goes on the request's span.
pub(super) async fn user_of(
    rt: &'static Runtime,
    access: Access,
    endpoint: (&str, &str),
    verified: Option<&service_auth::Verified>,
    headers: &axum::http::HeaderMap,
    deadline: tokio::time::Instant,
) -> Result<Option<auth::Authenticated>, Error> {
    let user = match verified {
        Some(v) => match (&v.auth, auth::handler()) {
            (Some(json), Some(handler)) => Some((handler.decode)(json)?),
            _ => None,
        },
        None => auth::for_external_request(rt, access, headers, deadline).await?,
    };
    if access == Access::Auth && user.is_none() {
        return Err(match verified {
            Some(v) if v.is_internal() => Error::unauthenticated(format!(
                "{}.{} needs an authenticated user, and `{}` called it for none",
                endpoint.0, endpoint.1, v.caller
            )),
            _ => auth::missing_credential(),
        });
    }
    if let Some(user) = &user {
        tracing::Span::current().record("enduser.id", user.user_id());
    }
    Ok(user)
}

/// The path parameters `names` of a matched route, parsed by `parse` (in `names` order).
pub(super) async fn path_params<P>(
    parts: &mut axum::http::request::Parts,
    names: &[&str],
    parse: fn(&[&str]) -> Result<P, Error>,
) -> Result<P, Error> {
    let raw = raw_path_params(parts, names).await?;
    parse(&segments(raw.as_ref(), names))
}

/// The matched route's path parameters, if it has any (none to extract for most `GET`s of
/// a list).
async fn raw_path_params(
    parts: &mut axum::http::request::Parts,
    names: &[&str],
) -> Result<Option<RawPathParams>, Error> {
    if names.is_empty() {
        return Ok(None);
    }
    RawPathParams::from_request_parts(parts, &())
        .await
        .map(Some)
        .map_err(|e| Error::invalid_argument(format!("invalid path: {}", e.body_text())))
}

/// The values of the path parameters `names`, in `names` order.
fn segments<'a>(raw: Option<&'a RawPathParams>, names: &[&str]) -> Vec<&'a str> {
    names
        .iter()
        .map(|name| {
            raw.into_iter()
                .flat_map(|raw| raw.iter())
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .unwrap_or_default()
        })
        .collect()
}

/// Says in the log, never in the answer, that a 404 came from a private endpoint: at INFO
/// under `ovation run` (which sets `OVATION_DEV`), at DEBUG elsewhere, where it would be noise
/// an attacker can cause.
pub(super) fn hint_private(service: &str, name: &str, method: &str, path: &str) {
    static DEV: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("OVATION_DEV").is_some_and(|v| v == "1"));
    let hint = "it is private: only a signed call from another service reaches it (a typed \
                call, or the dashboard's API explorer); mark it `public` to serve clients";
    if *DEV {
        tracing::info!("{method} {path} answered 404: {service}.{name} matches, but {hint}");
    } else {
        tracing::debug!("{method} {path} answered 404: {service}.{name} matches, but {hint}");
    }
}

/// What a request brings before its endpoint's types matter.
struct Admitted {
    /// Its body, when it was read to check its signature.
    body: Option<bytes::Bytes>,
    verified: Option<service_auth::Verified>,
    user: Option<auth::Authenticated>,
}

enum Admission {
    Admitted(Admitted),
    /// A private endpoint's 404, for a request it does not take.
    Hidden(Response),
}

/// Checks who sends a request to `endpoint` (service, name) of `access`: its signature, its
/// user. Not generic, so it is compiled once rather than once per endpoint.
async fn admit(
    rt: &'static Runtime,
    endpoint: (&'static str, &'static str),
    access: Access,
    parts: &axum::http::request::Parts,
    body_stream: &mut axum::body::Body,
    (deadline, body_deadline): (tokio::time::Instant, tokio::time::Instant),
) -> Result<Admission, Error> {
    let (service, name) = endpoint;
    // A signed request's body is part of its signature: read before it is checked. A request
    // to a private endpoint that fails in any way before its signature is checked gets the
    // same 404 as a bad signature, so private endpoints cannot be discovered.
    let signed = parts.headers.contains_key(&SERVICE_AUTH);
    let (body, verified) = match access {
        Access::Public | Access::Auth if !signed => (None, None),
        Access::Public | Access::Auth => {
            let body = read_body(std::mem::take(body_stream), rt.body_limit, body_deadline).await?;
            let verified = verified_caller(rt, parts, &body);
            (Some(body), verified)
        }
        Access::Private => {
            let (method, path) = (parts.method.as_str(), parts.uri.path());
            let read = read_body(std::mem::take(body_stream), rt.body_limit, body_deadline).await;
            match read {
                Ok(body) => match verified_caller(rt, parts, &body) {
                    // A gateway forwards clients' requests: those never reach a private one.
                    Some(v) if v.is_internal() => (Some(body), Some(v)),
                    _ => {
                        hint_private(service, name, method, path);
                        return Ok(Admission::Hidden(not_found_response(method, path)));
                    }
                },
                Err(_) => {
                    hint_private(service, name, method, path);
                    return Ok(Admission::Hidden(not_found_response(method, path)));
                }
            }
        }
    };
    let user = user_of(
        rt,
        access,
        endpoint,
        verified.as_ref(),
        &parts.headers,
        deadline,
    )
    .await?;
    Ok(Admission::Admitted(Admitted {
        body,
        verified,
        user,
    }))
}

/// Serves a request of the endpoint `spec` describes: who sends it, its path parameters and
/// request (decoded by `spec.invoke`), its handler within its deadline, the answer.
async fn serve(rt: &'static Runtime, spec: Spec, req: Request) -> Result<Response, Error> {
    let (mut parts, mut body_stream) = req.into_parts();
    // The whole request runs within `request_timeout`; reading its body, within the (shorter)
    // body read timeout, so a client that dribbles its body is cut off with a 408.
    let now = tokio::time::Instant::now();
    let deadline = now + rt.request_timeout;
    let body_deadline = now + rt.body_read_timeout;
    let Admitted {
        body,
        verified,
        user,
    } = match admit(
        rt,
        (spec.service, spec.name),
        spec.access,
        &parts,
        &mut body_stream,
        (deadline, body_deadline),
    )
    .await?
    {
        Admission::Admitted(admitted) => admitted,
        Admission::Hidden(not_found) => return Ok(not_found),
    };
    let raw = raw_path_params(&mut parts, spec.path_params).await?;
    let segments = segments(raw.as_ref(), spec.path_params);
    let body = if spec.has_request && spec.method.has_body() {
        check_json_content_type(&parts.headers)?;
        match body {
            Some(body) => body,
            None => {
                read_body(
                    std::mem::take(&mut body_stream),
                    rt.body_limit,
                    body_deadline,
                )
                .await?
            }
        }
    } else {
        bytes::Bytes::new()
    };
    let invocation = (spec.invoke)(&Incoming {
        segments: &segments,
        query: parts.uri.query().unwrap_or(""),
        body: &body,
    })?;
    // The key of a workflow's step, from a call the app signed.
    let key = verified
        .as_ref()
        .filter(|v| v.is_internal())
        .and_then(|_| idempotency_key(&parts))
        .map(std::sync::Arc::from);
    let work = auth::scope(
        user,
        runtime::scope_keyed(rt, spec.service, spec.name, key, invocation),
    );
    let encoded = match tokio::time::timeout_at(deadline, work).await {
        Ok(outcome) => outcome??,
        Err(_) => return Err(Error::deadline_exceeded("the request took too long")),
    };
    Ok(if spec.no_content {
        StatusCode::NO_CONTENT.into_response()
    } else {
        json_response(encoded)
    })
}

/// A `200` answer of `body`, JSON.
fn json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
