//! Ovation's HTTP client side: the client every process shares, and sending with a retry only
//! where the request provably never reached its target (a refused connection).

use std::time::{Duration, Instant};

/// Ovation's HTTP client drops a pooled connection idle this long instead of reusing it, so a
/// draining server may close a connection idle a little longer without a request racing the
/// close (see `listener::SAFE_TO_CLOSE_IDLE`).
pub(crate) const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The client of calls between services and of the gateway's forwarding. It ignores
/// `HTTP_PROXY`/`http_proxy`/`ALL_PROXY`: those are for a developer's or a host's traffic to
/// the outside, and a proxy would see every signed request between the app's own services
/// (and, pointed at nothing, break them: loopback included). It follows no redirect: a
/// gateway passes a service's redirect on to its client, as it is.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // Never reuse a connection a draining server may be closing: see `serve`.
        .pool_idle_timeout(CLIENT_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client without TLS always builds")
}

/// Sends `request`, retrying for up to `retry_window` while the callee's port refuses the
/// connection: then the request provably never reached it (a process restarting, a port not
/// yet open), so sending it again cannot run anything twice. Any other failure is returned as
/// is. Retries back off from 25 ms, doubling, to 400 ms.
pub(crate) async fn send(
    http: &reqwest::Client,
    request: reqwest::Request,
    retry_window: Duration,
) -> Result<reqwest::Response, reqwest::Error> {
    let started = Instant::now();
    let mut delay = FIRST_RETRY_DELAY;
    let mut request = request;
    loop {
        let retry = request.try_clone();
        match http.execute(request).await {
            Err(e) if connection_refused(&e) => match retry {
                Some(retry) if started.elapsed() + delay <= retry_window => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    request = retry;
                }
                _ => return Err(e),
            },
            result => return result,
        }
    }
}

/// The first wait before retrying a refused connection, and the longest.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(25);
const MAX_RETRY_DELAY: Duration = Duration::from_millis(400);

/// Whether `e` is a refused TCP connection, as opposed to a failure after the request was sent.
pub(crate) fn connection_refused(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `e` and its causes, `: `-separated: reqwest's own message rarely says what went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `scheme://host:port` of `url`, for messages (never the path or query).
pub(crate) fn origin(url: &reqwest::Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn post(port: u16) -> reqwest::Request {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/x"))
            .body("{}")
            .build()
            .unwrap()
    }

    /// Reads one request head (up to the blank line) from `stream`.
    fn read_head(stream: &mut std::net::TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_within_the_window() {
        let port = closed_port();
        // The callee comes up after a few attempts were refused.
        let callee = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut stream, _) = listener.accept().unwrap();
            read_head(&mut stream);
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
        });
        let started = Instant::now();
        let response = send(&reqwest::Client::new(), post(port), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // The answer came from a retry, not from a first attempt that found the port open.
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        callee.join().unwrap();

        // A port that stays closed: retries for the window, then the refusal is the answer.
        let started = Instant::now();
        let err = send(
            &reqwest::Client::new(),
            post(closed_port()),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(connection_refused(&err), "{err:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // No window: no retry.
        let err = send(&reqwest::Client::new(), post(closed_port()), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(connection_refused(&err), "{err:?}");
    }

    #[tokio::test]
    async fn a_request_that_reached_the_callee_is_not_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        // The callee reads the request, then drops the connection without answering.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                seen.fetch_add(1, Ordering::SeqCst);
                read_head(&mut stream);
            }
        });
        let err = send(&reqwest::Client::new(), post(port), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(!connection_refused(&err), "{err:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(connections.load(Ordering::SeqCst), 1, "sent exactly once");
    }
}
