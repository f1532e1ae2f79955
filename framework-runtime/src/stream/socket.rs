//! A stream over a WebSocket: the pump between one end's channels and the socket, the
//! server's side of the handshake, and the client's connection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::{Frame, IDLE_LIMIT, Link, PING_EVERY, close_for, closed_with};
use crate::error::Error;

/// How a pump runs.
#[derive(Debug, Clone)]
pub(crate) struct Pump {
    /// How long one write to the socket may take before the peer counts as too slow.
    pub(crate) send_timeout: Duration,
    /// The server's shutdown: closes the stream with `1001 going away`.
    pub(crate) closing: Option<watch::Receiver<bool>>,
    /// Whether this side pings (the server does).
    pub(crate) ping: bool,
    pub(crate) what: Arc<str>,
}

/// The socket's settings: messages up to `max_message` bytes.
pub(crate) fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Moves frames between `end` (the far end of a [`Link::pair`]) and `ws` until either side is
/// done, then closes the socket with the right code.
pub(crate) async fn pump<S>(ws: WebSocketStream<S>, end: Link, options: Pump)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut socket) = ws.split();
    let Link {
        out: deliver,
        inc: to_send,
        ..
    } = end;
    let (Some(deliver), Some(mut to_send)) = (deliver, to_send) else {
        return;
    };
    let what = options.what.clone();
    let mut closing = options.closing.clone();
    let shutdown = async move {
        match closing.as_mut() {
            Some(c) => {
                let _ = c.wait_for(|closing| *closing).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown);
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // A message read from the socket that waits for room in the other end's buffer: the
    // socket is not read meanwhile, so TCP pushes back on a peer sending faster than it is read.
    let mut pending: Option<String> = None;
    let deliver_end = |how: Result<(), Error>| {
        // The other end may be full and not reading: then it learns from the closed channel.
        let _ = deliver.try_send(Frame::End(how));
    };
    let close = |code: CloseCode, reason: String| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let timeout = options.send_timeout;
    // What to tell the peer last, if anything can still be told.
    let last: Option<Message> = loop {
        tokio::select! {
            frame = to_send.recv() => match frame {
                Some(Frame::Message(json)) => match tokio::time::timeout(timeout, sink.send(Message::text(json))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        deliver_end(Err(Error::unavailable(format!("{what}: the connection was lost"))));
                        break None;
                    }
                    Err(_) => {
                        tracing::info!(stream = %what, "the peer read nothing for {:?}: disconnected", options.send_timeout);
                        deliver_end(Err(Error::resource_exhausted(format!(
                            "{what}: the peer read nothing for {:?}; the stream is closed",
                            options.send_timeout
                        ))));
                        break None;
                    }
                },
                Some(Frame::End(Ok(()))) | None => break Some(close(CloseCode::Normal, String::new())),
                Some(Frame::End(Err(e))) => {
                    let (code, reason) = close_for(&e);
                    break Some(close(CloseCode::from(code), reason));
                }
            },
            permit = deliver.reserve(), if pending.is_some() => match permit {
                Ok(permit) => permit.send(Frame::Message(pending.take().unwrap_or_default())),
                // This end is gone: the function returned, its end follows through `to_send`.
                Err(_) => pending = None,
            },
            message = socket.next(), if pending.is_none() => {
                last_heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => pending = Some(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(_))) => {
                        let e = Error::invalid_argument(format!("{what}: messages are JSON text frames, not binary"));
                        deliver_end(Err(e.clone_received()));
                        let (_, reason) = close_for(&e);
                        break Some(close(CloseCode::Unsupported, reason));
                    }
                    Some(Ok(Message::Ping(_))) => {
                        // Sends the pong tungstenite queued.
                        let _ = tokio::time::timeout(timeout, sink.flush()).await;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        deliver_end(closed_with(code, &reason, &what));
                        // tungstenite answers the close itself.
                        let _ = tokio::time::timeout(timeout, sink.flush()).await;
                        break None;
                    }
                    Some(Err(_)) | None => {
                        deliver_end(Err(Error::unavailable(format!("{what}: the connection was lost"))));
                        break None;
                    }
                }
            },
            _ = ping.tick(), if options.ping => {
                if last_heard.elapsed() >= IDLE_LIMIT {
                    deliver_end(Err(Error::unavailable(format!(
                        "{what}: the peer was silent for {IDLE_LIMIT:?}"
                    ))));
                    break Some(close(CloseCode::Away, "no pong".into()));
                }
                let pinged = tokio::time::timeout(timeout, sink.send(Message::Ping(Default::default()))).await;
                if !matches!(pinged, Ok(Ok(()))) {
                    deliver_end(Err(Error::unavailable(format!("{what}: the connection was lost"))));
                    break None;
                }
            },
            () = &mut shutdown => {
                deliver_end(Err(Error::unavailable(format!("{what}: the server is shutting down"))));
                break Some(close(CloseCode::Away, "the server is shutting down".into()));
            }
        }
    };
    if let Some(message) = last {
        let _ = tokio::time::timeout(timeout, sink.send(message)).await;
        // Wait briefly for the peer's close, so the close handshake completes.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = socket.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

/// Whether `headers` ask to open a WebSocket (RFC 6455 §4.2.1), and with which key.
pub(crate) fn websocket_key(headers: &axum::http::HeaderMap) -> Result<&str, Error> {
    let has = |name: &str, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has("upgrade", "websocket") || !has("connection", "upgrade") {
        return Err(Error::invalid_argument(
            "this is a stream: open it with a WebSocket (`Upgrade: websocket`)",
        )
        .with_status(axum::http::StatusCode::UPGRADE_REQUIRED));
    }
    if headers
        .get("sec-websocket-version")
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(Error::invalid_argument(
            "unsupported WebSocket version: `Sec-WebSocket-Version: 13` is required",
        ));
    }
    headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::invalid_argument("the WebSocket handshake has no `Sec-WebSocket-Key`")
        })
}

/// The `101 Switching Protocols` answering a handshake with `key`.
pub(crate) fn switching(key: &str) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}
