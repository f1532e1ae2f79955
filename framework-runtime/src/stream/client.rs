//! Opening a stream from code: what the typed stub of a stream endpoint does. In this process
//! when the service is hosted here (two channels), over a WebSocket otherwise.

use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::socket::{Pump, config, pump};
use super::{Link, StreamSide};
use crate::error::{ErrCode, Error};
use crate::registry::{Access, StreamEndpoint};
use crate::runtime;
use crate::service_auth;

/// Opens a stream of `E` with its path parameters and handshake.
#[doc(hidden)]
pub async fn open<E: StreamEndpoint>(
    params: E::Params,
    request: E::Request,
) -> Result<<E::Stream as StreamSide>::Client, Error> {
    let ctx = runtime::context()?;
    let service = E::service();
    let user = crate::auth::current();
    if E::ACCESS == Access::Auth && user.is_none() {
        return Err(Error::unauthenticated(format!(
            "{service}.{} needs an authenticated user, and this stream is opened for none",
            E::NAME
        )));
    }
    let rt = ctx.rt;
    let what = crate::http::stream::what::<E>();
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
        let span = crate::http::stream::stream_span::<E>();
        let open = rt.streams.open.clone();
        tokio::spawn(crate::telemetry::carry(async move {
            let _open = open;
            crate::http::stream::run::<E>(rt, user, params, request, server, span).await;
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
    if let Ok(value) = signature.parse() {
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
