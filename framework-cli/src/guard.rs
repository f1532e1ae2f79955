//! What keeps the web pages a developer has open out of the CLI's servers.
//!
//! Any page in the developer's browser can send requests to 127.0.0.1, and a page whose name
//! is rebound to 127.0.0.1 (DNS rebinding) is even same-origin with whatever listens there.
//! Being on loopback is therefore no credential. Every request to the dashboard port (pages,
//! trace API, OTLP receiver) passes [`Guard::check`] first:
//!
//! 1. **`Host`** must be one of the loopback names with the bound port (`127.0.0.1:9400`,
//!    `localhost:9400`, `[::1]:9400`) or a name the developer allowed (`--allow-host`, for
//!    tunnels). A rebound name (`evil.example:9400`) is answered 421 with no content, before
//!    any routing.
//! 2. A request that **changes state** (any method but `GET`/`HEAD`) must come from the
//!    dashboard's own pages: an `Origin` equal to `http://<its Host>` (`Origin: null`, sent by
//!    sandboxed frames and some redirects, is refused), or, when a browser sends no `Origin`,
//!    `Sec-Fetch-Site: same-origin` or `none`; **and** the per-run token the pages carry, in
//!    the `x-ovation-csrf` header (scripts) or the `csrf` field (forms). JSON APIs take
//!    `application/json` only and forms `application/x-www-form-urlencoded` only, so no
//!    `text/plain` trick reaches a handler. Its body must arrive within [`BODY_READ_TIMEOUT`]
//!    (408 otherwise) and be at most [`BODY_LIMIT`] bytes.
//! 3. The **OTLP receiver** (`POST /v1/traces`, `POST /v1/metrics`) takes no token: exporters send neither a token
//!    nor an `Origin`. It refuses any request a browser marks as coming from another origin
//!    (a foreign or `null` `Origin`, a `Sec-Fetch-Site` other than `same-origin`/`none`), and
//!    reads its own body under its own limits (`crate::traces`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The header scripts send the token in.
pub const TOKEN_HEADER: &str = "x-ovation-csrf";
/// The form field forms send the token in.
pub const TOKEN_FIELD: &str = "csrf";
/// The largest body of a state-changing request other than OTLP.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// How long a client may take to send such a body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The checks of one server: its allowed `Host` values and its token.
#[derive(Clone)]
pub struct Guard(Arc<Inner>);

struct Inner {
    /// Lower-case `host:port` values.
    hosts: Vec<String>,
    token: String,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("hosts", &self.0.hosts)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// The guard of a server on `port`: the loopback names with that port, and `extra` names
    /// (`name` or `name:port`; a bare name gets the port), with a fresh random token.
    pub fn new(port: u16, extra: &[String]) -> Guard {
        let mut hosts: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        for name in extra {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let has_port = name.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !h.ends_with(':') && p.parse::<u16>().is_ok()
            });
            hosts.push(if has_port {
                name
            } else {
                format!("{name}:{port}")
            });
        }
        Guard(Arc::new(Inner {
            hosts,
            token: hex::encode(rand::random::<[u8; 32]>()),
        }))
    }

    /// The per-run token the dashboard's pages carry.
    pub fn token(&self) -> &str {
        &self.0.token
    }

    /// `router` behind the checks.
    pub fn protect(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), check))
    }

    fn allows_host(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers
            .get(header::HOST)?
            .to_str()
            .ok()?
            .to_ascii_lowercase();
        self.0.hosts.contains(&host).then_some(host)
    }

    fn token_matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.token.as_bytes();
        // Constant time: the token is the secret here.
        offered.len() == expected.len()
            && offered
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Whether the browser says the request comes from a page of `http://<host>` itself, or from
/// no page at all (typed in the address bar, or no browser: `None`).
fn same_origin(headers: &HeaderMap, host: &str) -> Option<bool> {
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or(""));
    let site = headers
        .get("sec-fetch-site")
        .map(|s| s.to_str().unwrap_or(""));
    if let Some(site) = site
        && site != "same-origin"
        && site != "none"
    {
        return Some(false);
    }
    match origin {
        // `Origin: null` is an opaque origin: a sandboxed frame, a `data:` page, some
        // redirects. Never ours.
        Some(origin) => Some(origin.eq_ignore_ascii_case(&format!("http://{host}"))),
        None => site.map(|_| true),
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    ovation::Error::permission_denied(message.to_owned())
        .with_status(status)
        .into_response()
}

/// The media type of a request's `Content-Type`, lower-case, without parameters (empty when
/// there is none).
pub(crate) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn check(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let Some(host) = guard.allows_host(req.headers()) else {
        // A rebound or forwarded name: nothing of this server is for it, not even a 404 page.
        return StatusCode::MISDIRECTED_REQUEST.into_response();
    };
    // A WebSocket handshake is a GET that browsers send from any page (no CORS applies), and
    // what it opens acts: the page's own origin and its token (in the query, where a page's
    // WebSocket can carry it) are required.
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if websocket {
        if same_origin(req.headers(), &host) != Some(true) {
            return refuse(
                StatusCode::FORBIDDEN,
                "this stream is opened only by the dashboard's own page",
            );
        }
        let offered = req
            .uri()
            .query()
            .and_then(|q| form_field(q.as_bytes(), TOKEN_FIELD));
        if !offered.is_some_and(|t| guard.token_matches(t.as_bytes())) {
            return refuse(
                StatusCode::FORBIDDEN,
                "the dashboard's token is missing or stale: reload the page",
            );
        }
        return next.run(req).await;
    }
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let origin = same_origin(req.headers(), &host);
    if matches!(req.uri().path(), "/v1/traces" | "/v1/metrics") {
        return if origin == Some(false) {
            refuse(
                StatusCode::FORBIDDEN,
                "the trace receiver takes no requests from web pages",
            )
        } else {
            next.run(req).await
        };
    }
    if origin != Some(true) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this request changes something, and did not come from the dashboard's own page",
        );
    }
    let api = req.uri().path().starts_with("/api/");
    let media = media_type(req.headers());
    let expected = if api {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    if media != expected {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("this request takes {expected}"),
        );
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT));
    let body = match read.await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is unreadable or larger than {BODY_LIMIT} bytes"),
            );
        }
        Err(_) => {
            let mut response = refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    let offered = match parts.headers.get(TOKEN_HEADER) {
        Some(token) => Some(token.as_bytes().to_vec()),
        None if !api => form_field(&body, TOKEN_FIELD).map(String::into_bytes),
        None => None,
    };
    if !offered.is_some_and(|t| guard.token_matches(&t)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the dashboard's token is missing or stale: reload the page",
        );
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// One field of an `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://form/?{}", String::from_utf8_lossy(body)))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_loopback_names_with_the_port_and_allowed_names_are_hosts() {
        let g = Guard::new(
            9400,
            &["dev.example.com".into(), "Tunnel.example:443".into()],
        );
        for ok in [
            "127.0.0.1:9400",
            "localhost:9400",
            "LOCALHOST:9400",
            "[::1]:9400",
            "dev.example.com:9400",
            "tunnel.example:443",
        ] {
            assert!(g.allows_host(&headers(&[("host", ok)])).is_some(), "{ok}");
        }
        for bad in [
            "evil.example:9400",
            "127.0.0.1:9401",
            "127.0.0.1",
            "localhost",
            "127.0.0.2:9400",
            "dev.example.com:80",
            "",
        ] {
            assert!(g.allows_host(&headers(&[("host", bad)])).is_none(), "{bad}");
        }
        assert!(g.allows_host(&HeaderMap::new()).is_none());
    }

    #[test]
    fn only_the_pages_own_origin_is_same_origin() {
        let host = "127.0.0.1:9400";
        let o = |pairs| same_origin(&headers(pairs), host);
        assert_eq!(o(&[("origin", "http://127.0.0.1:9400")]), Some(true));
        assert_eq!(o(&[("sec-fetch-site", "same-origin")]), Some(true));
        assert_eq!(o(&[("sec-fetch-site", "none")]), Some(true));
        assert_eq!(o(&[]), None);
        for foreign in [
            &[("origin", "http://127.0.0.1:8000")][..],
            &[("origin", "http://localhost:9400")],
            &[("origin", "https://127.0.0.1:9400")],
            &[("origin", "null")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[
                ("origin", "http://127.0.0.1:9400"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            assert_eq!(o(foreign), Some(false), "{foreign:?}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        let g = Guard::new(1, &[]);
        let token = g.token().to_owned();
        assert!(g.token_matches(token.as_bytes()));
        assert!(!g.token_matches(&token.as_bytes()[1..]));
        assert!(!g.token_matches(b""));
        assert_ne!(Guard::new(1, &[]).token(), token, "a token per run");
    }
}
