//! A raw endpoint's pipeline (`#[api(raw)]`): the same access rules, auth, middleware, request
//! span and timeout as a typed endpoint, but the handler gets the HTTP request itself, body
//! unread, and its response goes out as it is.
//!
//! The body stays a stream wherever nothing needs it whole: a client's request (directly or
//! through a gateway, whose envelope leaves the body out) reaches the handler unread, so an
//! upload of any size flows through in chunks. Only a call signed by another service has its
//! body read first (up to the body limit), because its signature covers it; a private raw
//! endpoint is reached only so.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};

use super::endpoint::{error_code, hint_private, respond, user_of, verified_caller};
use super::observe::{request_span, span_name};
use super::wire::{not_found_response, read_body};
use crate::auth;
use crate::error::Error;
use crate::registry::{
    Access, DynEndpoint, EndpointInfo, EndpointKind, RawEndpoint, RawEndpointDecl,
};
use crate::runtime::{self, Runtime};
use crate::service_auth::{self, ServiceAuth};

impl<E: RawEndpoint> DynEndpoint for RawEndpointDecl<E> {
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
            no_content: false,
            tags: E::TAGS,
            kind: EndpointKind::Raw,
        }
    }

    fn request_schema(&self) -> Option<schemars::Schema> {
        None
    }

    fn response_schema(&self) -> Option<schemars::Schema> {
        None
    }

    fn path_param_schemas(&self) -> Vec<Option<schemars::Schema>> {
        Vec::new()
    }

    fn route(&self, rt: &'static Runtime) -> MethodRouter {
        route::<E>(rt)
    }
}

fn route<E: RawEndpoint>(rt: &'static Runtime) -> MethodRouter {
    let filter = MethodFilter::try_from(E::METHOD.http()).expect("endpoint methods are standard");
    let service = E::service();
    let name = span_name(format!("{service}.{}", E::NAME));
    let stats = rt
        .metrics
        .of_route(crate::metrics::Kind::Request, service, E::NAME);
    axum::routing::on(filter, move |req: Request| async move {
        let started = std::time::Instant::now();
        let trace = request_span(name, service, E::NAME, &req);
        let response = respond(rt, E::METHOD, trace, Box::pin(serve::<E>(rt, service, req))).await;
        stats.record(started.elapsed(), error_code(&response));
        response
    })
}

async fn serve<E: RawEndpoint>(
    rt: &'static Runtime,
    service: &'static str,
    req: Request,
) -> Result<Response, Error> {
    let (parts, body) = req.into_parts();
    let now = tokio::time::Instant::now();
    let deadline = now + rt.request_timeout;
    let header = parts
        .headers
        .get(service_auth::HEADER)
        .and_then(|v| v.to_str().ok());
    let claimed = header.and_then(ServiceAuth::claimed_caller);
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    // Who sent it: a gateway (body not covered), a service (body covered: read it), or a
    // client (no signature, or one that does not verify, which counts for nothing).
    let (verified, body) = match (header, claimed) {
        (Some(header), Some(service_auth::GATEWAY)) => {
            let signed = service_auth::Signed {
                method,
                path,
                query: parts.uri.query().unwrap_or(""),
                body: &[],
            };
            (rt.auth.verify_streamed(header, signed), body)
        }
        (Some(_), Some(_)) => {
            let read = read_body(body, rt.body_limit, now + rt.body_read_timeout).await;
            match read {
                Ok(bytes) => {
                    let verified = verified_caller(rt, &parts, &bytes);
                    (verified, Body::from(bytes))
                }
                Err(_) if E::ACCESS == Access::Private => {
                    hint_private(service, E::NAME, method, path);
                    return Ok(not_found_response(method, path));
                }
                Err(e) => return Err(e),
            }
        }
        _ => (None, body),
    };
    if E::ACCESS == Access::Private && !verified.as_ref().is_some_and(|v| v.is_internal()) {
        hint_private(service, E::NAME, method, path);
        return Ok(not_found_response(method, path));
    }
    let user = user_of(
        rt,
        E::ACCESS,
        (service, E::NAME),
        verified.as_ref(),
        &parts.headers,
        deadline,
    )
    .await?;
    let mut parts = parts;
    // What the app reads of the request is the client's: the envelope stays with us.
    parts.headers.remove(service_auth::HEADER);
    parts.headers.remove(service_auth::IDEMPOTENCY_HEADER);
    let request = Request::from_parts(parts, body);
    let work = auth::scope(
        user,
        runtime::scope_keyed(
            rt,
            service,
            E::NAME,
            None,
            crate::middleware::handle_raw::<E>(request),
        ),
    );
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::deadline_exceeded("the request took too long")),
    }
}
