//! Streams over HTTP (`#[api(stream)]`). The server's side: the handshake is checked as a typed
//! `GET` is (access, auth, path parameters, the request from the query), answered `101`, and
//! the function then runs on the socket in a task of its own, in the stream's span. The
//! client's side ([`open`], what a stream's stub does): in this process when the service is
//! hosted here (two channels), over a WebSocket otherwise.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::Instrument;

use super::endpoint::{hint_private, path_params, user_of, verified_caller};
use super::observe::{record_outcome, request_span, span_name};
use super::wire::{decode_query, not_found_response};
use crate::auth;
use crate::error::{ErrCode, Error};
use crate::registry::{
    Access, DynEndpoint, EndpointInfo, EndpointKind, Method, StreamEndpoint, StreamEndpointDecl,
};
use crate::runtime::{self, Runtime};
use crate::service_auth;
use crate::stream::socket::{Pump, config, pump, switching, websocket_key};
use crate::stream::{Link, StreamSide};

impl<E: StreamEndpoint> DynEndpoint for StreamEndpointDecl<E> {
    fn info(&self) -> EndpointInfo {
        EndpointInfo {
            service: E::service(),
            name: E::NAME,
            method: Method::Get,
            path: E::PATH,
            access: E::ACCESS,
            path_params: E::PATH_PARAMS,
            location: E::LOCATION,
            module: E::MODULE,
            no_content: false,
            tags: E::TAGS,
            kind: match (
                <E::Stream as StreamSide>::CLIENT_SENDS,
                <E::Stream as StreamSide>::SERVER_SENDS,
            ) {
                (true, true) => EndpointKind::StreamInOut,
                (true, false) => EndpointKind::StreamIn,
                _ => EndpointKind::StreamOut,
            },
        }
    }

    fn request_schema(&self) -> Option<schemars::Schema> {
        E::HAS_REQUEST.then(|| schemars::schema_for!(E::Request))
    }

    fn response_schema(&self) -> Option<schemars::Schema> {
        <E::Stream as StreamSide>::SERVER_SENDS
            .then(|| schemars::schema_for!(<E::Stream as StreamSide>::Out))
    }

    fn incoming_schema(&self) -> Option<schemars::Schema> {
        <E::Stream as StreamSide>::CLIENT_SENDS
            .then(|| schemars::schema_for!(<E::Stream as StreamSide>::In))
    }

    fn path_param_schemas(&self) -> Vec<Option<schemars::Schema>> {
        E::path_param_schemas()
    }

    fn route(&self, rt: &'static Runtime) -> MethodRouter {
        route::<E>(rt)
    }
}

/// What a stream of `E` is called in errors: `service.endpoint`.
pub(crate) fn what<E: StreamEndpoint>() -> Arc<str> {
    Arc::from(format!("stream {}.{}", E::service(), E::NAME))
}

fn route<E: StreamEndpoint>(rt: &'static Runtime) -> MethodRouter {
    let service = E::service();
    let name = span_name(format!("{service}.{}", E::NAME));
    axum::routing::on(MethodFilter::GET, move |req: Request| async move {
        let trace = request_span(name, service, E::NAME, &req);
        let handshake = std::panic::AssertUnwindSafe(handshake::<E>(rt, service, req));
        let response = match trace.run(handshake.catch_unwind()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => e.into_response(),
            Err(_) => Error::internal("internal error").into_response(),
        };
        record_outcome(trace.span(), &response);
        response
    })
}

/// Checks the handshake, answers `101` and starts the stream; or answers with the error.
async fn handshake<E: StreamEndpoint>(
    rt: &'static Runtime,
    service: &'static str,
    req: Request,
) -> Result<Response, Error> {
    let (mut parts, _) = req.into_parts();
    let (method, path) = (
        parts.method.as_str().to_owned(),
        parts.uri.path().to_owned(),
    );
    let deadline = tokio::time::Instant::now() + rt.request_timeout;
    // A handshake has no body: its signature covers the method, path and query.
    let verified = parts
        .headers
        .contains_key(crate::service_auth::HEADER)
        .then(|| verified_caller(rt, &parts, &[]))
        .flatten();
    if E::ACCESS == Access::Private && !verified.as_ref().is_some_and(|v| v.is_internal()) {
        hint_private(service, E::NAME, &method, &path);
        return Ok(not_found_response(&method, &path));
    }
    let key = websocket_key(&parts.headers)?.to_owned();
    let user = user_of(
        rt,
        E::ACCESS,
        (service, E::NAME),
        verified.as_ref(),
        &parts.headers,
        deadline,
    )
    .await?;
    let params = path_params(&mut parts, E::PATH_PARAMS, E::parse_params).await?;
    let request: E::Request = if E::HAS_REQUEST {
        decode_query(parts.uri.query().unwrap_or(""))?
    } else {
        super::wire::decode_json(b"null")?
    };
    E::validate(&request)?;
    let on_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| Error::internal("the connection cannot be upgraded"))?;

    let what = what::<E>();
    let (server, far) = Link::pair(what.clone(), rt.stream_send_timeout);
    let span = stream_span::<E>();
    let opened = rt.streams.open.clone();
    let options = Pump {
        send_timeout: rt.stream_send_timeout,
        closing: Some(rt.streams.closing()),
        ping: true,
        what,
    };
    let max_message = rt.body_limit;
    tokio::spawn(async move {
        let _open = opened;
        let io = match on_upgrade.await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!("the WebSocket upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(io),
            Role::Server,
            Some(config(max_message)),
        )
        .await;
        let pumping = tokio::spawn(pump(ws, far, options));
        run::<E>(rt, user, params, request, server, span).await;
        let _ = pumping.await;
    });
    Ok(switching(&key))
}

/// How long a stream's function may run on once nobody reads its stream.
const PEER_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The span of one stream, a child of its handshake's.
pub(crate) fn stream_span<E: StreamEndpoint>() -> tracing::Span {
    tracing::info_span!(
        "stream",
        otel.name = %format!("stream {}.{}", E::service(), E::NAME),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        service = E::service(),
        endpoint = E::NAME,
        error.code = tracing::field::Empty,
        messages.sent = tracing::field::Empty,
        messages.received = tracing::field::Empty,
        stream.closed_by = tracing::field::Empty,
    )
}

/// Runs `E`'s function on the server's end of a stream, then ends the stream with its
/// outcome (a panic is `internal`), recording the message counts on `span`.
pub(crate) async fn run<E: StreamEndpoint>(
    rt: &'static Runtime,
    user: Option<auth::Authenticated>,
    params: E::Params,
    request: E::Request,
    server: Link,
    span: tracing::Span,
) {
    let counts = server.counts();
    let mut ender = server.ender();
    let side = <E::Stream as StreamSide>::from_link(server);
    let work = auth::scope(
        user,
        runtime::scope_keyed(
            rt,
            E::service(),
            E::NAME,
            None,
            E::handle(params, request, side),
        ),
    );
    let work = std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .instrument(span.clone());
    tokio::pin!(work);
    // A function waiting for something to send would not notice its client is gone until it
    // sends: once nobody reads the stream any more, it gets a moment to finish, then is dropped.
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        () = ender.peer_gone() => {
            // A client leaving is how a stream usually ends: no error.
            span.record("stream.closed_by", "client");
            match tokio::time::timeout(PEER_GONE_GRACE, &mut work).await {
                Ok(outcome) => outcome,
                Err(_) => Ok(Ok(())),
            }
        }
    }
    .unwrap_or_else(|_| Err(Error::internal("internal error")));
    let count = |n: &std::sync::atomic::AtomicU64| {
        i64::try_from(n.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
    };
    span.record("messages.sent", count(&counts.sent));
    span.record("messages.received", count(&counts.received));
    if let Err(e) = &outcome {
        span.record("otel.status_code", "ERROR");
        span.record("error.code", e.code().as_str());
    }
    ender.end(outcome.map_err(Error::into_received)).await;
}

/// Opens a stream of `E` with its path parameters and handshake.
#[doc(hidden)]
pub async fn open<E: StreamEndpoint>(
    params: E::Params,
    request: E::Request,
) -> Result<<E::Stream as StreamSide>::Client, Error> {
    let ctx = runtime::context()?;
    let service = E::service();
    let user = crate::auth::current();
    crate::call::check_access(ctx.rt, E::ACCESS, service, E::NAME, user.is_some())?;
    let rt = ctx.rt;
    let what = what::<E>();
    // What travels, encoded here: a handshake that cannot make the trip fails here, wherever
    // the service runs.
    let segments = E::render_params(&params);
    let query = if E::HAS_REQUEST {
        serde_urlencoded::to_string(&request).map_err(|e| {
            Error::internal(format!(
                "{what}: the handshake cannot be encoded as a query: {e}"
            ))
        })?
    } else {
        String::new()
    };
    if rt.hosts(service) {
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let params = E::parse_params(&refs).map_err(Error::into_received)?;
        let request: E::Request = if E::HAS_REQUEST {
            crate::http::wire::decode_query(&query)
        } else {
            crate::http::wire::decode_json(b"null")
        }
        .map_err(Error::into_received)?;
        E::validate(&request).map_err(Error::into_received)?;
        let (server, client) = Link::pair(what, rt.stream_send_timeout);
        let span = stream_span::<E>();
        let open = rt.streams.open.clone();
        tokio::spawn(crate::telemetry::carry(async move {
            let _open = open;
            run::<E>(rt, user, params, request, server, span).await;
        }));
        return Ok(<E::Stream as StreamSide>::client(client));
    }

    let base = rt
        .discovery
        .get(service)
        .ok_or_else(|| {
            Error::unavailable(format!(
                "service `{service}` is unavailable: no URL for it in `services`"
            ))
        })?
        .pick()
        .clone();
    let path = crate::call::render_path(E::PATH, E::PATH_PARAMS, &segments);
    let mut url = base.clone();
    url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), path));
    url.set_query(Some(&query).filter(|q| !q.is_empty()).map(String::as_str));
    let signature = rt.auth.sign(
        service_auth::Signed {
            method: "GET",
            path: url.path(),
            query: url.query().unwrap_or(""),
            body: &[],
        },
        ctx.service.unwrap_or("-"),
        user.as_ref().map(|u| u.json()),
        None,
    );
    let _ = url.set_scheme(if url.scheme() == "https" { "wss" } else { "ws" });
    let mut handshake = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::internal(format!("{what}: cannot build the handshake: {e}")))?;
    let headers = handshake.headers_mut();
    if rt.external {
        // A client outside the app: its credential, for the app's auth handler.
        if let Some(value) = crate::call::authorization().and_then(|a| a.parse().ok()) {
            headers.insert(http::header::AUTHORIZATION, value);
        }
    } else if let Ok(value) = signature.parse() {
        headers.insert(service_auth::HEADER, value);
    }
    if let Some(traceparent) = crate::telemetry::current_traceparent()
        && let Ok(value) = traceparent.parse()
    {
        headers.insert(crate::telemetry::TRACEPARENT, value);
    }
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        tokio_tungstenite::client_async_with_config(handshake, tcp, Some(config(rt.body_limit)))
            .await
            .map_err(std::io::Error::other)
    };
    let ws = match tokio::time::timeout(rt.call_timeout, connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return Err(refused(service, &what, e)),
        Err(_) => {
            return Err(Error::deadline_exceeded(format!(
                "service `{service}` did not accept {what} within {:?}",
                rt.call_timeout
            )));
        }
    };
    let (client, far) = Link::pair(what.clone(), rt.stream_send_timeout);
    tokio::spawn(pump(
        ws,
        far,
        Pump {
            send_timeout: rt.stream_send_timeout,
            closing: None,
            ping: false,
            what,
        },
    ));
    Ok(<E::Stream as StreamSide>::client(client))
}

/// The error of a handshake that failed: the service's own answer when it gave one.
fn refused(service: &str, what: &str, e: std::io::Error) -> Error {
    let answer = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>());
    if let Some(tungstenite::Error::Http(response)) = answer {
        let status = response.status();
        if let Some(error) = response
            .body()
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Error>(b).ok())
        {
            return error;
        }
        return Error::new(
            ErrCode::from_http_status(status),
            format!("service `{service}` answered {status} to {what}"),
        );
    }
    tracing::warn!(service, "{what} could not be opened: {e}");
    Error::unavailable(format!("service `{service}` is unreachable"))
}
