//! The HTTP server: routes built from the registry, request decoding, access control.
//!
//! Every failure a client can cause is answered with an [`Error`] body and a 4xx status:
//! an unknown route or a private endpoint without a valid service signature is 404
//! `not_found` (the same answer, so private endpoints cannot be discovered); bad JSON, a
//! missing or mistyped field, a path parameter that does not parse, a body whose content type
//! is not JSON (curl's default `application/x-www-form-urlencoded` is accepted for a JSON body,
//! as Encore does) are 400 `invalid_argument` naming the field; an oversized body is 413 `resource_exhausted`.
//! A panicking handler is answered with 500 `internal`, and the server keeps serving.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::Error;
use crate::registry::{self, Access, DynEndpoint, Endpoint};
use crate::runtime::{self, Runtime};
use crate::service_auth;

/// Why the app's routes cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(pub String);

/// The axum route pattern of an Ovation path: `:id` → `{id}`, `*rest` → `{*rest}`.
pub(crate) fn axum_path(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if let Some(name) = s.strip_prefix(':') {
                format!("{{{name}}}")
            } else if let Some(name) = s.strip_prefix('*') {
                format!("{{*{name}}}")
            } else {
                s.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Builds the router of the endpoints `rt` hosts, checking the routes first: axum panics on
/// a duplicate or conflicting route, we report it.
pub fn router(rt: &'static Runtime) -> Result<Router, RouteError> {
    // Hosted endpoints run here; in gateway mode, public and `auth` endpoints of the other
    // services are forwarded. Private endpoints of other services get no route at all.
    let endpoints: Vec<&'static dyn DynEndpoint> = registry::endpoints()
        .into_iter()
        .filter(|e| {
            let info = e.info();
            rt.hosts(info.service) || (rt.gateway && info.access != Access::Private)
        })
        .collect();
    check_routes(&endpoints)?;
    let mut by_path: BTreeMap<String, MethodRouter> = BTreeMap::new();
    for e in &endpoints {
        let info = e.info();
        let path = axum_path(info.path);
        let route = if rt.hosts(info.service) {
            // Catches its handler's panics itself (see `route`).
            e.route(rt)
        } else {
            crate::gateway::route(rt, info).layer(catch_panic())
        };
        let merged = match by_path.remove(&path) {
            Some(existing) => existing.merge(route),
            None => route,
        };
        by_path.insert(path, merged);
    }
    let mut router = Router::new();
    for (path, route) in by_path {
        router = router.route(&path, route.fallback(not_found_handler));
    }
    let router = router
        .route("/__ovation/health", axum::routing::get(health))
        .route(
            "/__ovation/openapi.json",
            axum::routing::get(|| async { axum::Json(crate::openapi::spec()) })
                .layer(catch_panic()),
        )
        .route(
            "/__ovation/meta",
            axum::routing::get(move |req: Request| meta(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/pubsub",
            axum::routing::get(move |req: Request| pubsub_state(rt, req)).layer(catch_panic()),
        )
        .route(
            "/__ovation/pubsub/{subscription}/redrive",
            axum::routing::post(move |req: Request| pubsub_redrive(rt, req)).layer(catch_panic()),
        )
        .fallback(not_found_handler);
    Ok(router)
}

/// A panic becomes a 500 `internal`, and the server keeps serving. (Per route rather than
/// around the whole router: the layer boxes every response body it passes, and endpoints
/// catch their handlers' panics without it.)
fn catch_panic()
-> tower_http::catch_panic::CatchPanicLayer<fn(Box<dyn std::any::Any + Send>) -> Response> {
    fn internal(_: Box<dyn std::any::Any + Send>) -> Response {
        Error::internal("internal error").into_response()
    }
    tower_http::catch_panic::CatchPanicLayer::custom(internal)
}

/// Checks that no two endpoints share a method and path, and that no two paths conflict.
pub fn check_routes(endpoints: &[&'static dyn DynEndpoint]) -> Result<(), RouteError> {
    let mut seen: BTreeMap<(String, &str), String> = BTreeMap::new();
    let mut matcher = matchit::Router::new();
    let mut paths: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for e in endpoints {
        let i = e.info();
        let who = format!("{}.{} ({})", i.service, i.name, i.location);
        let path = axum_path(i.path);
        if let Some(other) = seen.insert((path.clone(), i.method.as_str()), who.clone()) {
            return Err(RouteError(format!(
                "two endpoints serve {} {}: {other} and {who}",
                i.method, i.path
            )));
        }
        if paths.insert(path.clone()) {
            matcher.insert(path, ()).map_err(|err| {
                RouteError(format!(
                    "the path {} of {who} conflicts with another endpoint's: {err}",
                    i.path
                ))
            })?;
        }
    }
    Ok(())
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// The app model, for the CLI and the dashboard. It names private endpoints, so it answers
/// only signed requests (the CLI signs with the app's key).
async fn meta(rt: &'static Runtime, req: Request) -> Response {
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    axum::Json(app_model(Some(rt))).into_response()
}

/// The app model: services, endpoints with their schemas, databases, topics, subscriptions.
/// With a runtime, each endpoint and subscription says whether it is hosted there. The CLI
/// reads it from `OVATION_DESCRIBE=1 <app binary>` to plan deployments.
pub fn app_model(rt: Option<&Runtime>) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = registry::endpoints()
        .iter()
        .map(|e| {
            let i = e.info();
            json!({
                "service": i.service,
                "name": i.name,
                "method": i.method,
                "path": i.path,
                "access": i.access,
                "pathParams": i.path_params,
                "hosted": rt.map(|rt| rt.hosts(i.service)),
                "requestSchema": e.request_schema(),
                "responseSchema": e.response_schema(),
            })
        })
        .collect();
    let databases: Vec<serde_json::Value> = crate::sqldb::declared()
        .iter()
        .map(|d| {
            json!({
                "name": d.name,
                "service": d.service(),
                "migrations": d.migrations.iter().map(|m| m.file).collect::<Vec<_>>(),
            })
        })
        .collect();
    let topics: Vec<serde_json::Value> = crate::pubsub::topics()
        .iter()
        .map(|t| json!({ "name": t.name, "service": crate::registry::service_of(t.module) }))
        .collect();
    let subscriptions: Vec<serde_json::Value> = crate::pubsub::subscriptions()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "service": s.service(),
                "topic": (s.topic)(),
                "config": s.config,
                "hosted": rt.map(|rt| rt.hosts(s.service())),
            })
        })
        .collect();
    json!({
        "services": registry::services(),
        "endpoints": endpoints,
        "databases": databases,
        "topics": topics,
        "subscriptions": subscriptions,
    })
}

/// Admits a request to Ovation's internal endpoints (the app model, Pub/Sub state and
/// redrive): only with a valid service signature, which the CLI and the dashboard make with the
/// app's key. Being on loopback is no credential: a browser page sends from loopback too, and
/// behind a reverse proxy on the same host so does every client. Anyone else gets the 404 of a
/// route that does not exist. On success, the body (at most 64 KiB).
async fn internal_request(rt: &Runtime, req: Request) -> Result<Bytes, Response> {
    let (parts, body) = req.into_parts();
    let hidden = || not_found_response(parts.method.as_str(), parts.uri.path());
    let deadline = tokio::time::Instant::now() + rt.body_read_timeout;
    let Ok(body) = read_body(body, 64 * 1024, deadline).await else {
        return Err(hidden());
    };
    if verified_caller(rt, &parts, &body).is_none() {
        return Err(hidden());
    }
    Ok(body)
}

/// Topics and subscriptions with their counts and dead letters, for the dashboard.
async fn pubsub_state(rt: &'static Runtime, req: Request) -> Response {
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    let Ok(pubsub) = rt.pubsub() else {
        return axum::Json(json!({ "topics": [], "subscriptions": [] })).into_response();
    };
    let mut topics = Vec::new();
    for t in crate::pubsub::topics() {
        let published = pubsub.published(t.name).await.unwrap_or(None);
        topics.push(json!({
            "name": t.name,
            "service": crate::registry::service_of(t.module),
            "published": published,
        }));
    }
    let mut subscriptions = Vec::new();
    for s in crate::pubsub::subscriptions() {
        let stats = match pubsub.stats(s.name).await {
            Ok(stats) => stats,
            Err(e) => return e.into_response(),
        };
        let dead = match pubsub.dead_letters(s.name).await {
            Ok(dead) => dead,
            Err(e) => return e.into_response(),
        };
        subscriptions.push(json!({
            "name": s.name,
            "topic": (s.topic)(),
            "service": s.service(),
            "stats": stats,
            "deadLetters": dead.iter().take(100).collect::<Vec<_>>(),
        }));
    }
    axum::Json(json!({ "topics": topics, "subscriptions": subscriptions })).into_response()
}

/// Puts a subscription's dead letters (all, or the one `{"messageId": ..}` names) back.
async fn pubsub_redrive(rt: &'static Runtime, req: Request) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Redrive {
        message_id: Option<uuid::Uuid>,
    }
    let (mut parts, body) = req.into_parts();
    let Ok(raw) = RawPathParams::from_request_parts(&mut parts, &()).await else {
        return not_found_response("POST", parts.uri.path());
    };
    let subscription = raw
        .iter()
        .next()
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    let body = match internal_request(rt, Request::from_parts(parts, body)).await {
        Ok(body) => body,
        Err(denied) => return denied,
    };
    if !crate::pubsub::subscriptions()
        .iter()
        .any(|s| s.name == subscription)
    {
        return Error::not_found(format!("no subscription `{subscription}`")).into_response();
    }
    let request: Redrive = match decode_json::<Option<Redrive>>(&body) {
        Ok(r) => r.unwrap_or(Redrive { message_id: None }),
        Err(e) => return e.into_response(),
    };
    let pubsub = match rt.pubsub() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match pubsub
        .redrive(
            &subscription,
            request.message_id.map(crate::pubsub::MessageId),
        )
        .await
    {
        Ok(n) => axum::Json(json!({ "redriven": n })).into_response(),
        Err(e) => e.into_response(),
    }
}

fn not_found_response(method: &str, path: &str) -> Response {
    Error::not_found(format!("no endpoint serves {method} {path}")).into_response()
}

async fn not_found_handler(req: Request) -> Response {
    not_found_response(req.method().as_str(), req.uri().path())
}

/// The calling service, if the request carries a valid, fresh, first-seen signature of its
/// method, path, query and `body`.
fn verified_caller(
    rt: &Runtime,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Option<String> {
    let header = parts.headers.get(service_auth::HEADER)?.to_str().ok()?;
    rt.auth.verify(
        header,
        service_auth::Signed {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            body,
        },
    )
}

/// The axum route of endpoint `E`.
pub(crate) fn route<E: Endpoint>(rt: &'static Runtime) -> MethodRouter {
    let filter = MethodFilter::try_from(E::METHOD.http()).expect("endpoint methods are standard");
    let service = E::service();
    let name = span_name(format!("{service}.{}", E::NAME));
    axum::routing::on(filter, move |req: Request| async move {
        let trace = request_span(name, service, E::NAME, &req);
        let serving = std::panic::AssertUnwindSafe(serve::<E>(rt, service, req));
        let handled = trace.run(futures_util::FutureExt::catch_unwind(serving));
        // A client that goes away cancels a read, dropped with its connection, but not a
        // request that changes something: that runs to its end (or its timeout) in a task of
        // its own, so a flow of several writes and calls is never cut between two of them.
        let handled = if E::METHOD.is_safe() {
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
            // The panic message went to the panic hook (stderr); the client learns nothing of it.
            Err(()) => Error::internal("internal error").into_response(),
        };
        record_outcome(trace.span(), &response);
        response
    })
}

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

async fn serve<E: Endpoint>(
    rt: &'static Runtime,
    service: &'static str,
    req: Request,
) -> Result<Response, Error> {
    let (mut parts, mut body_stream) = req.into_parts();
    // The whole request runs within `request_timeout`; reading its body, within the (shorter)
    // body read timeout, so a client that dribbles its body is cut off with a 408.
    let now = tokio::time::Instant::now();
    let deadline = now + rt.request_timeout;
    let body_deadline = now + rt.body_read_timeout;
    // A signed request's body is part of its signature: read before it is checked. A request
    // to a private endpoint that fails in any way before its signature is checked gets the
    // same 404 as a bad signature, so private endpoints cannot be discovered.
    let body = match E::ACCESS {
        Access::Public => None,
        Access::Private => {
            let (method, path) = (parts.method.as_str(), parts.uri.path());
            let read = read_body(
                std::mem::take(&mut body_stream),
                rt.body_limit,
                body_deadline,
            )
            .await;
            match read {
                Ok(body) if verified_caller(rt, &parts, &body).is_some() => Some(body),
                _ => return Ok(not_found_response(method, path)),
            }
        }
        Access::Auth => {
            let body = read_body(
                std::mem::take(&mut body_stream),
                rt.body_limit,
                body_deadline,
            )
            .await?;
            if verified_caller(rt, &parts, &body).is_none() {
                return Err(Error::unauthenticated(
                    "this endpoint needs authentication, and the app defines no auth handler",
                ));
            }
            Some(body)
        }
    };

    // Path parameters, in `PATH_PARAMS` order (none to extract for most `GET`s of a list).
    let raw = if E::PATH_PARAMS.is_empty() {
        None
    } else {
        Some(
            RawPathParams::from_request_parts(&mut parts, &())
                .await
                .map_err(|e| Error::invalid_argument(format!("invalid path: {}", e.body_text())))?,
        )
    };
    let segments: Vec<&str> = E::PATH_PARAMS
        .iter()
        .map(|name| {
            raw.iter()
                .flat_map(|raw| raw.iter())
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .unwrap_or_default()
        })
        .collect();
    let params = E::parse_params(&segments)?;

    let request: E::Request = if !E::HAS_REQUEST {
        decode_json(b"null")?
    } else if E::METHOD.has_body() {
        check_json_content_type(&parts.headers)?;
        match body {
            Some(body) => decode_json(&body)?,
            None => decode_json(
                &read_body(
                    std::mem::take(&mut body_stream),
                    rt.body_limit,
                    body_deadline,
                )
                .await?,
            )?,
        }
    } else {
        decode_query(parts.uri.query().unwrap_or(""))?
    };

    let work = runtime::scope_in(rt, service, E::NAME, E::handle(params, request));
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(response)) => Ok(json_response(&response)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::deadline_exceeded("the request took too long")),
    }
}

fn json_response<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => Error::internal("the response could not be encoded")
            .with_source(e)
            .into_response(),
    }
}

pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // `curl -d '{...}'` sends application/x-www-form-urlencoded; Encore accepts that for JSON
    // bodies, and so do we, so the commands in guides work as written. The body must still be
    // JSON. Any other type (text/plain, multipart, XML) is a client mistake.
    let json = mime == "application/json"
        || (mime.starts_with("application/") && mime.ends_with("+json"))
        || mime == "application/x-www-form-urlencoded";
    if json {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "the request body must be JSON (Content-Type: application/json), not {mime:?}"
        )))
    }
}

/// Reads a whole request body of at most `limit` bytes by `deadline`. Past the deadline the
/// client is answered 408 (and the accept loop closes its connection): one that sends a byte a
/// second must not hold a connection and a task for ever.
pub(crate) async fn read_body(
    body: Body,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Error> {
    let read = match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(read) => read,
        Err(_) => {
            return Err(
                Error::deadline_exceeded("the request body did not arrive in time")
                    .with_status(StatusCode::REQUEST_TIMEOUT),
            );
        }
    };
    read.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut too_large = false;
        while let Some(c) = cause {
            too_large |= c.is::<http_body_util::LengthLimitError>();
            cause = c.source();
        }
        if too_large {
            Error::resource_exhausted(format!("the request body is larger than {limit} bytes"))
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            Error::invalid_argument(format!("the request body could not be read: {e}"))
        }
    })
}

/// Decodes a JSON request, naming the offending field on failure.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::invalid_argument(format!("the request body is not valid JSON: {inner}"))
        } else if bytes == b"null" {
            Error::invalid_argument("the request body is missing: this endpoint takes a JSON body")
        } else if path == "." {
            Error::invalid_argument(format!("invalid request body: {}", strip_position(&inner)))
        } else {
            Error::invalid_argument(format!(
                "invalid field `{path}`: {}",
                strip_position(&inner)
            ))
        }
    })?;
    de.end()
        .map_err(|e| Error::invalid_argument(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// serde_json appends " at line L column C", useless to a client that sent one line.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Decodes a query-string request, naming the offending parameter on failure.
pub(crate) fn decode_query<T: DeserializeOwned>(query: &str) -> Result<T, Error> {
    // form_urlencoded decodes invalid UTF-8 lossily (to U+FFFD): refuse it instead, as bodies
    // and path parameters do, rather than hand the handler text the client never sent.
    for pair in query.split('&') {
        let plus_as_space = pair.replace('+', " ");
        if percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .is_err()
        {
            let name = pair.split('=').next().unwrap_or(pair);
            return Err(Error::invalid_argument(format!(
                "the query parameter {name:?} is not valid UTF-8"
            )));
        }
    }
    let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::invalid_argument(format!("invalid query: {inner}"))
        } else {
            Error::invalid_argument(format!("invalid query parameter `{path}`: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Params {
        user_id: uuid::Uuid,
        quantity: i32,
    }

    /// An endpoint known only by its route, to check route validation.
    struct Route(crate::registry::Method, &'static str, &'static str);

    impl DynEndpoint for Route {
        fn info(&self) -> crate::registry::EndpointInfo {
            crate::registry::EndpointInfo {
                service: "svc",
                name: self.2,
                method: self.0,
                path: self.1,
                access: Access::Public,
                path_params: &[],
                location: "test",
                module: "app::svc",
            }
        }
        fn request_schema(&self) -> Option<schemars::Schema> {
            None
        }
        fn path_param_schemas(&self) -> Vec<Option<schemars::Schema>> {
            Vec::new()
        }
        fn response_schema(&self) -> schemars::Schema {
            schemars::schema_for!(())
        }
        fn route(&self, _: &'static Runtime) -> MethodRouter {
            axum::routing::get(|| async {})
        }
    }

    #[test]
    fn duplicate_and_conflicting_routes_are_errors_not_panics() {
        use crate::registry::Method::{Get, Post};
        let ok: [&'static dyn DynEndpoint; 3] = [
            &Route(Get, "/users/:id", "get"),
            &Route(Post, "/users/:id", "update"),
            &Route(Get, "/users/:id/orders", "orders"),
        ];
        check_routes(&ok).unwrap();
        let dup: [&'static dyn DynEndpoint; 2] = [
            &Route(Get, "/users/:id", "get"),
            &Route(Get, "/users/:id", "fetch"),
        ];
        let err = check_routes(&dup).unwrap_err().to_string();
        assert!(
            err.contains("two endpoints serve GET /users/:id: svc.get"),
            "{err}"
        );
        let conflict: [&'static dyn DynEndpoint; 2] = [
            &Route(Get, "/users/:id", "get"),
            &Route(Post, "/users/:name", "rename"),
        ];
        let err = check_routes(&conflict).unwrap_err().to_string();
        assert!(err.contains("/users/:name of svc.rename"), "{err}");
    }

    #[test]
    fn paths_translate_to_axum_syntax() {
        assert_eq!(axum_path("/users/:id"), "/users/{id}");
        assert_eq!(axum_path("/files/*key"), "/files/{*key}");
        assert_eq!(axum_path("/"), "/");
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = decode_json::<Params>(br#"{"userId": "x", "quantity": 1}"#).unwrap_err();
        assert!(e.message().contains("`userId`"), "{}", e.message());
        let e = decode_json::<Params>(br#"{"userId": "6a2f41a3-c54c-fce8-32d2-0324e1c32e22"}"#)
            .unwrap_err();
        assert!(
            e.message().contains("missing field `quantity`"),
            "{}",
            e.message()
        );
        let e = decode_json::<Params>(br#"{"quantity": "#).unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{}", e.message());
        let e = decode_json::<Params>(b"").unwrap_err();
        assert!(e.message().contains("missing"), "{}", e.message());
        let e = decode_json::<Params>(
            br#"{"userId": "6a2f41a3-c54c-fce8-32d2-0324e1c32e22", "quantity": 1} x"#,
        )
        .unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{}", e.message());
    }

    #[test]
    fn query_errors_name_the_parameter() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Q {
            limit: u32,
        }
        let e = decode_query::<Q>("limit=lots").unwrap_err();
        assert!(e.message().contains("`limit`"), "{}", e.message());
        assert_eq!(decode_query::<Q>("limit=5").unwrap().limit, 5);
    }
}
