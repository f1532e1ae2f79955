//! The accept loop: connections served with hyper, clients too slow to send their headers
//! cut off, a graceful drain on shutdown, and a lingering close so a client still sending reads
//! the answer that ended its connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::runtime::Runtime;

/// Connections the kernel queues for the accept loop. Tokio's (and the standard library's)
/// default of 128 overflows under a burst of new connections — a load balancer reconnecting, a
/// few hundred clients at once — and an overflowing queue drops handshakes or resets them. The
/// kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 1024;

/// Listens on `addr` as the app's server does: `SO_REUSEADDR` (a restarted process rebinds at
/// once), and a backlog of [`BACKLOG`].
pub(crate) async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A draining server may close a connection idle this long without a request racing the close:
/// longer than Ovation's client keeps an idle connection for reuse (`CLIENT_IDLE_TIMEOUT`).
const SAFE_TO_CLOSE_IDLE: Duration = Duration::from_millis(1500);

/// What the accept loop knows of one connection: for the header read timeout and for draining.
#[derive(Debug)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// When the last response was sent (or the connection accepted), in ms since `epoch`.
    last_ms: std::sync::atomic::AtomicU64,
    /// Closes the connection (it is dropped where it waits).
    close: tokio::sync::Notify,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity {
            in_flight: Default::default(),
            last_ms: Default::default(),
            close: tokio::sync::Notify::new(),
        };
        a.touch(epoch);
        a
    }

    fn touch(&self, epoch: Instant) {
        let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// With no request in flight, how long since the last response (or the accept).
    fn idle(&self, epoch: Instant) -> Option<Duration> {
        (self.in_flight.load(Ordering::Relaxed) == 0).then(|| {
            epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
        })
    }

    fn quiet(&self, epoch: Instant) -> bool {
        self.idle(epoch)
            .is_some_and(|idle| idle >= SAFE_TO_CLOSE_IDLE)
    }
}

/// Accepts connections until `stop` fires with a drain period, then:
/// 1. stops accepting: the port refuses connections from now on, which callers retry;
/// 2. drains: requests on open keep-alive connections are still served, each answered with
///    `Connection: close`, until every connection left is idle for longer than Ovation's
///    client keeps an idle connection for reuse, or the drain period ran out — so a caller
///    never sends a request on a connection the server is closing under it (an HTTP/1.1 race
///    no client can tell apart from a crash, and so cannot safely retry);
/// 3. closes idle connections and lets in-flight requests finish, for `rt.shutdown_grace`.
///
/// A client gets `rt.header_read_timeout` to send its request headers, counted from the
/// accept or the previous response: the loop looks at every connection a few times per timeout
/// and closes those idle for longer, so a keep-alive connection left idle is closed too. (Not
/// hyper's own header timeout: that arms a timer for every request, a tenth of what the
/// framework adds to a small request.)
pub(crate) async fn serve(
    rt: &'static Runtime,
    router: axum::Router,
    listener: TcpListener,
    mut stop: oneshot::Receiver<Duration>,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    // Shutdown tells each connection to finish its request in flight and close, then waits
    // for them all (hyper-util's `GracefulShutdown`, which cannot watch a connection that
    // may be upgraded to a WebSocket).
    let graceful = tokio::sync::watch::Sender::new(false);
    let draining = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut connections: Vec<std::sync::Weak<Activity>> = Vec::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    let mut sweep = tokio::time::interval(
        (rt.header_read_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drain = loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => Ok(accepted),
            // A dropped sender (the `Server` dropped) means no drain.
            drain = &mut stop => Err(drain.unwrap_or_default()),
            _ = sweep.tick() => {
                connections.retain(|c| match c.upgrade() {
                    Some(c) => {
                        if c.idle(epoch).is_some_and(|idle| idle >= rt.header_read_timeout) {
                            c.close.notify_one();
                        }
                        true
                    }
                    None => false,
                });
                continue;
            }
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(drain) => break drain,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let draining = draining.clone();
        let activity = Arc::new(Activity::new(epoch));
        connections.push(Arc::downgrade(&activity));
        let (on_response, closing) = (activity.clone(), activity.clone());
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                activity.in_flight.fetch_add(1, Ordering::Relaxed);
                let mut req = req.map(axum::body::Body::new);
                // The gateway's forwarding names the client (`x-forwarded-for`); nothing else
                // reads it, and the insert costs every other request a few hundred
                // instructions (callgrind: 19.0k a request with it, 18.7–18.8k without).
                if rt.gateway {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                }
                req
            })
            .map_response(move |mut res: axum::response::Response| {
                on_response.in_flight.fetch_sub(1, Ordering::Relaxed);
                on_response.touch(epoch);
                // A client too slow to send its body is not kept: the rest of its body
                // would hold the connection (see `wire::read_body`).
                if draining.load(Ordering::Relaxed)
                    || res.status() == axum::http::StatusCode::REQUEST_TIMEOUT
                {
                    res.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                res
            });
        let conn = http
            .serve_connection(
                TokioIo::new(LingeringClose::new(stream)),
                TowerToHyperService::new(service),
            )
            .with_upgrades();
        // Held until the connection ends: shutdown waits for every one to be dropped.
        let mut stop = graceful.subscribe();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                biased;
                closed = conn.as_mut() => {
                    if let Err(e) = closed {
                        tracing::debug!(%peer, "connection closed: {e}");
                    }
                    return;
                }
                () = closing.close.notified() => {
                    tracing::debug!(%peer, "connection closed: no request headers within the header read timeout");
                    return;
                }
                _ = stop.wait_for(|stop| *stop) => conn.as_mut().graceful_shutdown(),
            }
            // Shutting down: the request in flight finishes, then the connection closes.
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection closed: {e}");
            }
            drop(stop);
        });
    };
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    // Streams have no end of their own: they are told to close.
    rt.streams.close_all();
    let drained_by = Instant::now() + drain;
    while Instant::now() < drained_by
        && !connections
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .all(|c| c.quiet(epoch))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let grace_ends = Instant::now() + rt.shutdown_grace;
    graceful.send_replace(true);
    if tokio::time::timeout(rt.shutdown_grace, graceful.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running after the {:?} grace period: their connections are closed",
            rt.shutdown_grace
        );
    }
    // Writes whose clients hung up run on without a connection, and streams finish their
    // functions: they get the grace period too.
    while (Arc::strong_count(&rt.writes) > 1 || rt.streams.count() > 0)
        && Instant::now() < grace_ends
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&rt.writes) > 1 {
        tracing::warn!(
            "requests whose clients hung up still running after the {:?} grace period",
            rt.shutdown_grace
        );
    }
}

/// How long a closed connection's unread input is drained (see [`LingeringClose`]).
const LINGER: Duration = Duration::from_secs(1);

/// A connection that, when the server is done with it, closes the way a client can read the
/// last answer of: the server's side first (FIN), then whatever the client still sends is
/// read and discarded for up to a second before the socket goes. Closed with unread input
/// in its buffer, a socket sends a reset instead, and a client that is still sending (a body
/// the server refused with 408 or 413) loses the answer explaining why.
#[derive(Debug)]
pub struct LingeringClose(Option<tokio::net::TcpStream>);

impl LingeringClose {
    /// `stream`, to close lingering once dropped (inside a Tokio runtime).
    pub fn new(stream: tokio::net::TcpStream) -> LingeringClose {
        LingeringClose(Some(stream))
    }

    fn stream(&mut self) -> std::pin::Pin<&mut tokio::net::TcpStream> {
        std::pin::Pin::new(self.0.as_mut().expect("taken only on drop"))
    }
}

impl tokio::io::AsyncRead for LingeringClose {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for LingeringClose {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

impl Drop for LingeringClose {
    fn drop(&mut self) {
        let Some(mut stream) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if stream.shutdown().await.is_err() {
                return;
            }
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        });
    }
}
