//! Gateway mode: one public port in front of a multi-process deployment.
//!
//! A runtime with `gateway: true` adds, for every public or `auth` endpoint of a service it
//! does not host, a route with the endpoint's method and path pattern that forwards the
//! request to the process service discovery names for that service. Routing by pattern means
//! the gateway answers exactly what the services would answer: an unknown path, a method the
//! endpoint does not take, or a private endpoint is 404 at the gateway itself and never
//! reaches a service.
//!
//! The gateway is where a client's request is authenticated: it runs the app's auth handler
//! (an `auth` endpoint's request without a valid credential is answered 401 here), then signs
//! what it forwards as [`service_auth::GATEWAY`] with the auth data in the envelope, so the
//! service reads who the user is from the signature and does not run the handler again. A
//! gateway-signed request counts as a client's: it reaches no private endpoint, even where the
//! service would route its path to one. Every `x-ovation-*` header a client sends is removed
//! before forwarding (a signature it sends could only be a forgery or a replay).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};

use super::client;
use crate::error::Error;
use crate::registry::EndpointInfo;
use crate::runtime::Runtime;
use crate::service_auth;

/// The route forwarding endpoint `info` to the process hosting its service.
pub(crate) fn route(rt: &'static Runtime, info: EndpointInfo) -> MethodRouter {
    let filter = MethodFilter::try_from(info.method.http()).expect("endpoint methods are standard");
    let name = crate::http::observe::span_name(format!("gateway {}.{}", info.service, info.name));
    axum::routing::on(filter, move |req: Request| async move {
        let trace = crate::http::observe::request_span(name, info.service, info.name, &req);
        let response = trace
            .run(forward(rt, info, req))
            .await
            .unwrap_or_else(IntoResponse::into_response);
        crate::http::observe::record_outcome(trace.span(), &response);
        response
    })
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), plus the ones
/// the gateway sets itself.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

async fn forward(
    rt: &'static Runtime,
    info: EndpointInfo,
    req: Request,
) -> Result<Response, Error> {
    let service = info.service;
    let base = rt
        .discovery
        .get(service)
        .ok_or_else(|| {
            tracing::error!(
                service,
                "the gateway has no URL for this service: add it to `services` in OVATION_CONFIG"
            );
            Error::unavailable(format!("service `{service}` is unavailable"))
        })?
        .pick();
    let options = Forward {
        body_limit: rt.body_limit,
        body_read_timeout: rt.body_read_timeout,
        timeout: rt.request_timeout,
        connect_retry: rt.connect_retry,
        keep_signature: false,
    };
    // The auth handler runs once per request, here, where it was received.
    let deadline = tokio::time::Instant::now() + rt.request_timeout;
    let user = crate::auth::for_external_request(rt, info.access, req.headers(), deadline).await?;
    if let Some(user) = &user {
        tracing::Span::current().record("enduser.id", user.user_id());
    }
    let sign = |method: &str, url: &reqwest::Url, body: &[u8]| {
        rt.auth.sign(
            service_auth::Signed {
                method,
                path: url.path(),
                query: url.query().unwrap_or(""),
                body,
            },
            service_auth::GATEWAY,
            user.as_ref().map(|u| u.json()),
            None,
        )
    };
    forward_with(&rt.http, service, base, req, &options, Some(&sign)).await
}

/// Signs a forwarded request: its method, URL and body to the header value.
type Signer<'a> = &'a (dyn Fn(&str, &reqwest::Url, &[u8]) -> String + Sync);

/// How [`forward_to`] forwards.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The largest body forwarded (413 past it).
    pub body_limit: usize,
    /// Longest the client may take to send the body (408 past it).
    pub body_read_timeout: std::time::Duration,
    /// Longest the whole exchange may take, body included.
    pub timeout: std::time::Duration,
    /// How long a refused connection is retried (the upstream may be restarting).
    pub connect_retry: std::time::Duration,
    /// Whether a service signature the client sent is passed on. A gateway drops it: its
    /// clients are not services. A transparent proxy in front of one app (`ovation run
    /// --watch`) keeps it, so the dashboard's signed calls reach the app; a signature covers
    /// the whole request and is accepted once, so passing it on grants nothing new.
    pub keep_signature: bool,
}

/// Forwards `req` to the same path and query under `base`, as a reverse proxy: hop-by-hop
/// headers and (unless `keep_signature`) every `x-ovation-*` header dropped,
/// `x-forwarded-for`/`-host` and the current trace context added, a refused connection
/// retried. `target` names the upstream in errors (`unavailable` when it cannot be reached,
/// `deadline_exceeded` past the timeout); its address goes only to the log. The gateway uses
/// it, and so does `ovation run --watch`.
pub async fn forward_to(
    http: &reqwest::Client,
    target: &str,
    base: &reqwest::Url,
    req: Request,
    options: &Forward,
) -> Result<Response, Error> {
    forward_with(http, target, base, req, options, None).await
}

/// [`forward_to`], signing the forwarded request with `sign` when given.
async fn forward_with(
    http: &reqwest::Client,
    target: &str,
    base: &reqwest::Url,
    req: Request,
    options: &Forward,
    sign: Option<Signer<'_>>,
) -> Result<Response, Error> {
    let service = target;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let (parts, body) = req.into_parts();
    let started = tokio::time::Instant::now();
    let body = crate::http::wire::read_body(
        body,
        options.body_limit,
        started + options.body_read_timeout.min(options.timeout),
    )
    .await?;

    let mut url = base.clone();
    url.set_path(&format!(
        "{}{}",
        base.path().trim_end_matches('/'),
        parts.uri.path()
    ));
    url.set_query(parts.uri.query());

    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
    for (name, value) in &parts.headers {
        let internal = if options.keep_signature {
            name.as_str() == service_auth::HEADER && sign.is_some()
        } else {
            name.as_str().starts_with("x-ovation-")
        };
        if !is_hop_by_hop(name) && !internal {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(sign) = sign
        && let Ok(value) = HeaderValue::from_str(&sign(parts.method.as_str(), &url, &body))
    {
        headers.insert(service_auth::HEADER, value);
    }
    if let Some(ip) = peer {
        let forwarded_for = match parts.headers.get("x-forwarded-for") {
            Some(prior) => format!("{}, {ip}", prior.to_str().unwrap_or_default()),
            None => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", value);
        }
    }
    // The service's span is a child of the gateway's.
    if let Some(traceparent) = crate::telemetry::current_traceparent()
        && let Ok(value) = HeaderValue::from_str(&traceparent)
    {
        headers.insert(crate::telemetry::TRACEPARENT, value);
    }
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert("x-forwarded-host", host.clone());
    }

    let request = http
        .request(parts.method, url.clone())
        .headers(headers)
        .body(body)
        .build()
        .map_err(|e| Error::internal("the request could not be forwarded").with_source(e))?;
    let exchange = async {
        let response = client::send(http, request, options.connect_retry).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    };
    let (status, upstream_headers, body) =
        match tokio::time::timeout_at(started + options.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::warn!(
                    service,
                    at = %client::origin(&url),
                    "forwarding failed: {}",
                    client::error_chain(&e)
                );
                return Err(if e.is_timeout() {
                    Error::deadline_exceeded(format!("service `{service}` did not answer in time"))
                } else {
                    Error::unavailable(format!("service `{service}` is unavailable"))
                });
            }
            Err(_) => {
                return Err(Error::deadline_exceeded(format!(
                    "service `{service}` did not answer in time"
                )));
            }
        };

    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in &upstream_headers {
        if !is_hop_by_hop(name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(response)
}
