//! Streaming endpoints: typed messages over a WebSocket (`#[api(stream)]`).
//!
//! ```ignore
//! use ovation::stream::{StreamIn, StreamInOut, StreamOut};
//!
//! #[api(stream, public, path = "/orders/live")]          // the server sends
//! async fn live(mut out: StreamOut<OrderEvent>) -> Result<(), Error> { out.send(&event).await }
//!
//! #[api(stream, public, path = "/chat/:room")]           // both send; `hello` is the handshake
//! async fn chat(room: String, hello: Hello, mut chat: StreamInOut<Line, Line>) -> Result<(), Error>
//! ```
//!
//! The handshake is a `GET` like a typed endpoint's: path parameters, the request from the
//! query string, the same access rules and auth. Once it is accepted, each message is one JSON
//! text frame. The types are named from their holder's side: the function of an endpoint with a
//! [`StreamOut`] sends, and a client of it (the typed stub another service calls) gets a
//! [`StreamIn`] to receive from; a [`StreamInOut<I, O>`] receives `I` and sends `O`, and its
//! client gets a `StreamInOut<O, I>`. The stub opens the stream in this process when the
//! service is hosted here (channels, no socket) and over a WebSocket otherwise; messages go
//! through JSON either way.
//!
//! - **End**: the function returning ends the stream: `Ok` closes it normally (the client's
//!   `recv` gives `Ok(None)`), an error closes it with code `4000 + its HTTP status` and its
//!   message, and the client's `recv` gives that error. A client closing or going away ends
//!   the function's `recv` with `Ok(None)` and makes its `send` fail with `canceled`.
//! - **Back-pressure**: each direction buffers [`BUFFER`] messages. A `send` waits while the
//!   buffer is full; a client that reads nothing for the stream send timeout (5 s by default,
//!   `stream_send_timeout_secs`) is disconnected, and the `send` fails with
//!   `resource_exhausted`, so a slow client costs a bounded amount of memory. A function that
//!   does not read its `StreamIn` stops the socket being read: TCP pushes back on the client.
//! - **Keep-alive**: the server pings every [`PING_EVERY`]; a peer silent for [`IDLE_LIMIT`]
//!   is disconnected.
//! - **Shutdown**: a stopping server closes its streams with `1001 going away` and waits for
//!   their functions within its grace period.
//! - **Tracing**: each stream is a span `stream <service>.<endpoint>` with the number of
//!   messages sent and received.

pub(crate) mod socket;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use schemars::JsonSchema;

use crate::error::{ErrCode, Error};

/// A type a stream's messages may have.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as a stream's message",
    label = "derive `Serialize`, `Deserialize` and `JsonSchema` for this type",
    note = "add `#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]` to `{Self}`"
)]
pub trait Message: Serialize + DeserializeOwned + JsonSchema + Send + 'static {}

impl<T> Message for T where T: Serialize + DeserializeOwned + JsonSchema + Send + 'static {}

/// Messages buffered in each direction of a stream.
pub const BUFFER: usize = 64;
/// How often the server pings a stream's client.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// How long a stream's peer may stay silent (pongs included) before it is disconnected.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// What travels between the two ends of a stream inside a process.
#[derive(Debug)]
pub(crate) enum Frame {
    /// One message, as JSON.
    Message(String),
    /// The other end is done: normally, or with an error.
    End(Result<(), Error>),
}

/// Messages counted on one stream, for its span.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
}

/// One end of a stream: frames out, frames in.
#[derive(Debug)]
pub struct Link {
    out: Option<mpsc::Sender<Frame>>,
    inc: Option<mpsc::Receiver<Frame>>,
    /// Set once the other end has ended, with how.
    ended: Option<Result<(), Error>>,
    send_timeout: Duration,
    counts: Arc<Counts>,
    what: Arc<str>,
}

impl Link {
    /// The two ends of a new stream in this process.
    pub(crate) fn pair(what: Arc<str>, send_timeout: Duration) -> (Link, Link) {
        let (a_out, b_inc) = mpsc::channel(BUFFER);
        let (b_out, a_inc) = mpsc::channel(BUFFER);
        let counts = Arc::new(Counts::default());
        let end = |out, inc, counts| Link {
            out: Some(out),
            inc: Some(inc),
            ended: None,
            send_timeout,
            counts,
            what: what.clone(),
        };
        (
            end(a_out, a_inc, counts),
            end(b_out, b_inc, Arc::new(Counts::default())),
        )
    }

    /// A link that can only end this one's sending: kept by whoever runs the function that
    /// holds this one, to send its outcome after it.
    pub(crate) fn ender(&self) -> Link {
        Link {
            out: self.out.clone(),
            inc: None,
            ended: None,
            send_timeout: self.send_timeout,
            counts: self.counts.clone(),
            what: self.what.clone(),
        }
    }

    /// Resolves once nothing receives what this link sends: the other end (or its socket's
    /// pump) is gone.
    pub(crate) async fn peer_gone(&self) {
        match &self.out {
            Some(out) => out.closed().await,
            None => std::future::pending().await,
        }
    }

    pub(crate) fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    async fn send_json(&mut self, json: String) -> Result<(), Error> {
        if let Some(Err(e)) = &self.ended {
            return Err(e.clone_received());
        }
        let Some(out) = &self.out else {
            return Err(self.closed());
        };
        match tokio::time::timeout(self.send_timeout, out.send(Frame::Message(json))).await {
            Ok(Ok(())) => {
                self.counts.sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(_)) => {
                self.out = None;
                Err(self.closed())
            }
            Err(_) => {
                // Dropping our sender ends the stream: the other end (or its socket) closes.
                self.out = None;
                let e = Error::resource_exhausted(format!(
                    "{}: the other end read nothing for {:?} with {BUFFER} messages waiting; the \
                     stream is closed",
                    self.what, self.send_timeout
                ));
                self.ended = Some(Err(e.clone_received()));
                Err(e)
            }
        }
    }

    fn closed(&self) -> Error {
        match &self.ended {
            Some(Err(e)) => e.clone_received(),
            _ => Error::new(
                ErrCode::Canceled,
                format!("{}: the other end closed the stream", self.what),
            ),
        }
    }

    async fn recv_json(&mut self) -> Result<Option<String>, Error> {
        if let Some(ended) = &self.ended {
            return dup(ended).map(|()| None);
        }
        let Some(inc) = &mut self.inc else {
            return Ok(None);
        };
        match inc.recv().await {
            Some(Frame::Message(json)) => {
                self.counts.received.fetch_add(1, Ordering::Relaxed);
                Ok(Some(json))
            }
            Some(Frame::End(how)) => {
                self.ended = Some(dup(&how));
                how.map(|()| None)
            }
            // The other end went away without a word: a local function that panicked, or a
            // pump whose socket failed.
            None => {
                let e = Error::unavailable(format!("{}: the stream was cut off", self.what));
                self.ended = Some(Err(e.clone_received()));
                Err(e)
            }
        }
    }

    /// The next message, decoded: `invalid_argument` naming the field when it does not.
    async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Error> {
        let Some(json) = self.recv_json().await? else {
            return Ok(None);
        };
        let mut de = serde_json::Deserializer::from_str(&json);
        serde_path_to_error::deserialize(&mut de)
            .map(Some)
            .map_err(|e| {
                let reason = match e.path().to_string().as_str() {
                    "." => e.into_inner().to_string(),
                    path => format!("invalid field `{path}`: {}", e.into_inner()),
                };
                Error::invalid_argument(format!("{}: a message {reason}", self.what))
            })
    }

    /// Sends `message`, encoded as JSON.
    async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), Error> {
        let json = serde_json::to_string(message).map_err(|e| {
            Error::internal(format!(
                "{}: a message cannot be encoded as JSON: {e}",
                self.what
            ))
        })?;
        self.send_json(json).await
    }

    /// Ends this side's sending with `how` (the other end's `recv` sees it).
    pub(crate) async fn end(&mut self, how: Result<(), Error>) {
        if let Some(out) = self.out.take() {
            let _ = tokio::time::timeout(self.send_timeout, out.send(Frame::End(how))).await;
        }
    }

    fn split(self) -> (Link, Link) {
        let half = |out, inc| Link {
            out,
            inc,
            ended: self.ended.as_ref().map(dup),
            send_timeout: self.send_timeout,
            counts: self.counts.clone(),
            what: self.what.clone(),
        };
        (half(None, self.inc), half(self.out, None))
    }
}

/// The receiving side of a stream: what an endpoint's function gets to read the client's
/// messages, and what the client of a [`StreamOut`] endpoint gets.
#[derive(Debug)]
pub struct StreamIn<T> {
    link: Link,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> StreamIn<T> {
    /// The next message; `Ok(None)` once the other end has closed the stream normally; the
    /// error it ended with, or `unavailable` if it was cut off. A message that does not decode
    /// is `invalid_argument` naming the field, and the stream stays open.
    pub async fn recv(&mut self) -> Result<Option<T>, Error> {
        self.link.recv().await
    }
}

/// The sending side of a stream: what an endpoint's function gets to send to its client, and
/// what the client of a [`StreamIn`] endpoint gets.
#[derive(Debug)]
pub struct StreamOut<T> {
    link: Link,
    _t: PhantomData<fn(T)>,
}

impl<T: Serialize> StreamOut<T> {
    /// Sends one message, waiting while the other end's buffer is full. Fails with `canceled`
    /// once the other end has closed the stream, and with `resource_exhausted` (closing it) when
    /// the other end read nothing for the stream send timeout.
    pub async fn send(&mut self, message: &T) -> Result<(), Error> {
        self.link.send(message).await
    }

    /// Closes the stream from this side; the other end's `recv` gives `Ok(None)`.
    pub async fn close(mut self) {
        self.link.end(Ok(())).await;
    }
}

/// Both sides of a stream: receives `I`, sends `O`. [`split`](Self::split) gives the halves,
/// to read and write from two tasks.
#[derive(Debug)]
pub struct StreamInOut<I, O> {
    link: Link,
    _t: PhantomData<fn(O) -> I>,
}

impl<I: DeserializeOwned, O: Serialize> StreamInOut<I, O> {
    /// See [`StreamIn::recv`].
    pub async fn recv(&mut self) -> Result<Option<I>, Error> {
        self.link.recv().await
    }

    /// See [`StreamOut::send`].
    pub async fn send(&mut self, message: &O) -> Result<(), Error> {
        self.link.send(message).await
    }

    /// The receiving and the sending half.
    pub fn split(self) -> (StreamIn<I>, StreamOut<O>) {
        let (inc, out) = self.link.split();
        (
            StreamIn {
                link: inc,
                _t: PhantomData,
            },
            StreamOut {
                link: out,
                _t: PhantomData,
            },
        )
    }

    /// Closes the stream from this side.
    pub async fn close(mut self) {
        self.link.end(Ok(())).await;
    }
}

/// A type a stream endpoint's function takes: [`StreamIn`], [`StreamOut`], [`StreamInOut`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a stream",
    label = "a stream endpoint takes `StreamIn<T>`, `StreamOut<T>` or `StreamInOut<I, O>`",
    note = "the stream's message types derive `Serialize`, `Deserialize` and `JsonSchema`"
)]
pub trait StreamSide: Send + Sized + 'static {
    /// Messages the client sends (`()` when it sends none).
    type In: Message;
    /// Messages the server sends (`()` when it sends none).
    type Out: Message;
    /// What the typed stub gives the client.
    type Client: Send;
    /// Whether the client sends messages, and whether the server does.
    const CLIENT_SENDS: bool;
    const SERVER_SENDS: bool;
    #[doc(hidden)]
    fn from_link(link: Link) -> Self;
    #[doc(hidden)]
    fn client(link: Link) -> Self::Client;
}

impl<T: Message> StreamSide for StreamIn<T> {
    type In = T;
    type Out = ();
    type Client = StreamOut<T>;
    const CLIENT_SENDS: bool = true;
    const SERVER_SENDS: bool = false;
    fn from_link(link: Link) -> Self {
        StreamIn {
            link,
            _t: PhantomData,
        }
    }
    fn client(link: Link) -> StreamOut<T> {
        StreamOut {
            link,
            _t: PhantomData,
        }
    }
}

impl<T: Message> StreamSide for StreamOut<T> {
    type In = ();
    type Out = T;
    type Client = StreamIn<T>;
    const CLIENT_SENDS: bool = false;
    const SERVER_SENDS: bool = true;
    fn from_link(link: Link) -> Self {
        StreamOut {
            link,
            _t: PhantomData,
        }
    }
    fn client(link: Link) -> StreamIn<T> {
        StreamIn {
            link,
            _t: PhantomData,
        }
    }
}

impl<I: Message, O: Message> StreamSide for StreamInOut<I, O> {
    type In = I;
    type Out = O;
    type Client = StreamInOut<O, I>;
    const CLIENT_SENDS: bool = true;
    const SERVER_SENDS: bool = true;
    fn from_link(link: Link) -> Self {
        StreamInOut {
            link,
            _t: PhantomData,
        }
    }
    fn client(link: Link) -> StreamInOut<O, I> {
        StreamInOut {
            link,
            _t: PhantomData,
        }
    }
}

fn dup(how: &Result<(), Error>) -> Result<(), Error> {
    how.as_ref().copied().map_err(Error::clone_received)
}

/// The close frame a stream ending with `e` sends: code `4000 +` its HTTP status, reason
/// `<code>: <message>`, cut to the 123 bytes a close frame holds.
pub(crate) fn close_for(e: &Error) -> (u16, String) {
    let mut reason = format!("{}: {}", e.code(), e.message());
    if reason.len() > 123 {
        let mut cut = 120;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    (4000 + e.http_status().as_u16(), reason)
}

/// The end a close frame with `code` and `reason` stands for.
pub(crate) fn closed_with(code: u16, reason: &str, what: &str) -> Result<(), Error> {
    match code {
        1000 | 1005 => Ok(()),
        1001 => Err(Error::unavailable(format!(
            "{what}: the server is going away ({reason})"
        ))),
        4000..=4999 => {
            let (code, message) = reason
                .split_once(": ")
                .and_then(|(c, m)| Some((ErrCode::ALL.into_iter().find(|k| k.as_str() == c)?, m)))
                .unwrap_or_else(|| {
                    let status = axum::http::StatusCode::from_u16(code - 4000)
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                    (ErrCode::from_http_status(status), reason)
                });
            Err(Error::new(code, message.to_owned()))
        }
        _ => Err(Error::unavailable(format!(
            "{what}: the stream was closed with {code} {reason}"
        ))),
    }
}
