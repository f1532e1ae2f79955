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
use std::time::Duration;

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
    let streamed = info.kind != crate::registry::EndpointKind::Typed;
    let sign = |method: &str, url: &reqwest::Url, body: Option<&[u8]>| {
        let signed = service_auth::Signed {
            method,
            path: url.path(),
            query: url.query().unwrap_or(""),
            body: body.unwrap_or_default(),
        };
        let auth = user.as_ref().map(|u| u.json());
        match body {
            Some(_) => rt.auth.sign(signed, service_auth::GATEWAY, auth, None),
            // A raw endpoint's body streams on unread; a stream's handshake has none.
            None => rt.auth.sign_streamed(signed, auth),
        }
    };
    forward_with(
        &rt.http,
        service,
        base,
        req,
        &options,
        Some(&sign),
        streamed,
    )
    .await
}

/// Signs a forwarded request: its method, URL and body (`None`: streamed, not covered) to the
/// header value.
type Signer<'a> = &'a (dyn Fn(&str, &reqwest::Url, Option<&[u8]>) -> String + Sync);

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
/// `deadline_exceeded` past the timeout); its address goes only to the log. Bodies stream
/// through both ways, and a WebSocket handshake becomes a tunnel. The gateway uses it, and so
/// does `ovation run --watch`.
pub async fn forward_to(
    http: &reqwest::Client,
    target: &str,
    base: &reqwest::Url,
    req: Request,
    options: &Forward,
) -> Result<Response, Error> {
    forward_with(http, target, base, req, options, None, true).await
}

/// [`forward_to`], signing the forwarded request with `sign` when given; the body is read
/// whole first (to be signed) unless `streamed`.
async fn forward_with(
    http: &reqwest::Client,
    target: &str,
    base: &reqwest::Url,
    req: Request,
    options: &Forward,
    sign: Option<Signer<'_>>,
    streamed: bool,
) -> Result<Response, Error> {
    let service = target;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    // The URL the request is forwarded to would resolve `.` and `..` segments (`%2e%2e`
    // included) and so name another path than the one routed here: such a path names nothing.
    if dot_segments(req.uri().path()) {
        return Ok(super::wire::not_found_response(
            req.method().as_str(),
            req.uri().path(),
        ));
    }
    let upgrade = is_websocket(req.headers());
    let (mut parts, incoming) = req.into_parts();
    let started = tokio::time::Instant::now();
    let read_by = started + options.body_read_timeout.min(options.timeout);
    // A body read whole can be signed, and sent again if the upstream refused the connection
    // (it may be restarting); a large one (or one of unknown length) to a raw endpoint streams
    // through instead, and is sent once.
    let small = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n <= BUFFERED_UP_TO)
        || (parts.method == axum::http::Method::GET
            && !parts.headers.contains_key(header::TRANSFER_ENCODING));
    let (body, incoming) = if !streamed || (small && !upgrade) {
        let bytes = crate::http::wire::read_body(incoming, options.body_limit, read_by).await?;
        (Some(bytes), None)
    } else {
        (None, Some(incoming))
    };
    // A streamed request is signed as one whose body is not covered.
    let signed_body = if streamed { None } else { body.as_deref() };

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
        && let Ok(value) = HeaderValue::from_str(&sign(parts.method.as_str(), &url, signed_body))
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

    if upgrade {
        return tunnel(target, &url, &mut parts, headers, options).await;
    }
    let retry = if body.is_some() {
        options.connect_retry
    } else {
        Duration::ZERO
    };
    let body = match (body, incoming) {
        (Some(bytes), _) => reqwest::Body::from(bytes),
        (None, Some(incoming)) => reqwest::Body::wrap_stream(incoming.into_data_stream()),
        (None, None) => reqwest::Body::from(Vec::new()),
    };
    let request = http
        .request(parts.method, url.clone())
        .headers(headers)
        .body(body)
        .build()
        .map_err(|e| Error::internal("the request could not be forwarded").with_source(e))?;
    let exchange = async {
        let response = client::send(http, request, retry).await?;
        let status = response.status();
        let headers = response.headers().clone();
        if streamed {
            return Ok((status, headers, Err(response)));
        }
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, Ok(body)))
    };
    let (status, upstream_headers, answer) =
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
    let mut response = match answer {
        Ok(bytes) => Response::new(Body::from(bytes)),
        // The answer streams back as it comes.
        Err(upstream) => Response::new(Body::from_stream(upstream.bytes_stream())),
    };
    *response.status_mut() = status;
    for (name, value) in &upstream_headers {
        if !is_hop_by_hop(name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(response)
}

/// Whether a path has a `.` or `..` segment, percent-encoded or not.
fn dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    })
}

/// Bodies up to this size are read whole before they are forwarded, even to a raw endpoint.
const BUFFERED_UP_TO: usize = 256 * 1024;

/// Whether the request opens a WebSocket.
fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Forwards a WebSocket handshake to `url` and, once the upstream switches protocols, joins
/// the two connections byte for byte until either side closes.
async fn tunnel(
    target: &str,
    url: &reqwest::Url,
    parts: &mut axum::http::request::Parts,
    mut headers: HeaderMap,
    options: &Forward,
) -> Result<Response, Error> {
    use hyper_util::rt::TokioIo;
    let unavailable = || Error::unavailable(format!("service `{target}` is unavailable"));
    let client_side = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| Error::internal("the connection cannot be upgraded"))?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn.with_upgrades());
        Ok::<_, std::io::Error>(sender)
    };
    let mut sender = match tokio::time::timeout(options.timeout, connect).await {
        Ok(Ok(sender)) => sender,
        Ok(Err(e)) => {
            tracing::warn!(service = target, at = %client::origin(url), "forwarding a stream failed: {e}");
            return Err(unavailable());
        }
        Err(_) => return Err(unavailable()),
    };
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&format!("{host}:{port}")) {
        headers.insert(header::HOST, value);
    }
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut request = hyper::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *request.uri_mut() = path_and_query
        .parse()
        .map_err(|_| Error::invalid_argument("invalid path"))?;
    *request.headers_mut() = headers;
    let mut upstream =
        match tokio::time::timeout(options.timeout, sender.send_request(request)).await {
            Ok(Ok(response)) => response,
            _ => return Err(unavailable()),
        };
    let status = upstream.status();
    if status != axum::http::StatusCode::SWITCHING_PROTOCOLS {
        // The service refused the handshake: its answer goes back as it is.
        let (parts, body) = upstream.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = parts.status;
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        return Ok(response);
    }
    let upstream_side = hyper::upgrade::on(&mut upstream);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    *response.headers_mut() = upstream.headers().clone();
    tokio::spawn(async move {
        let (Ok(client), Ok(service)) = tokio::join!(client_side, upstream_side) else {
            return;
        };
        let _ =
            tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(service))
                .await;
    });
    Ok(response)
}
