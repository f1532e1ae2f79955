//! A stream endpoint's pipeline (`#[api(stream)]`): the handshake is checked as a typed `GET`
//! is (access, auth, path parameters, the request from the query), answered `101`, and the
//! function then runs on the socket in a task of its own, in the stream's span.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::Instrument;

use super::endpoint::{hint_private, path_params, user_of, verified_caller};
use super::observe::{record_outcome, request_span, span_name};
use super::wire::{decode_query, not_found_response};
use crate::auth;
use crate::error::Error;
use crate::registry::{
    Access, DynEndpoint, EndpointInfo, Method, StreamEndpoint, StreamEndpointDecl,
};
use crate::runtime::{self, Runtime};
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
            kind: <E::Stream as StreamSide>::KIND,
        }
    }

    fn request_schema(&self) -> Option<schemars::Schema> {
        E::HAS_REQUEST.then(|| schemars::schema_for!(E::Request))
    }

    fn response_schema(&self) -> Option<schemars::Schema> {
        has_messages::<<E::Stream as StreamSide>::Out>()
            .then(|| schemars::schema_for!(<E::Stream as StreamSide>::Out))
    }

    fn incoming_schema(&self) -> Option<schemars::Schema> {
        has_messages::<<E::Stream as StreamSide>::In>()
            .then(|| schemars::schema_for!(<E::Stream as StreamSide>::In))
    }

    fn path_param_schemas(&self) -> Vec<Option<schemars::Schema>> {
        E::path_param_schemas()
    }

    fn route(&self, rt: &'static Runtime) -> MethodRouter {
        route::<E>(rt)
    }
}

/// Whether a direction carries messages (`()` marks the one that carries none).
fn has_messages<T: 'static>() -> bool {
    std::any::TypeId::of::<T>() != std::any::TypeId::of::<()>()
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
