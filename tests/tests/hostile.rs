//! Hostile input: every request a client can craft gets a 4xx with an error body (or, for a
//! client too slow to send its headers, a closed connection) — never a 5xx, a panic or a hang —
//! and the server keeps serving.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ovation::testing::{Hosting, TestEnv};
use serde_json::{Value, json};
use util::Client;

/// An endpoint taking the rest of its path as data; part of this test binary's app only.
mod files {
    use ovation::prelude::*;

    #[api(public, method = "GET", path = "/files/*path")]
    pub async fn echo(path: String) -> Result<String, Error> {
        Ok(path)
    }

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    pub struct Search {
        pub q: String,
    }

    #[api(public, method = "GET", path = "/search")]
    pub async fn search(s: Search) -> Result<String, Error> {
        Ok(s.q)
    }
}

async fn serve(hosting: Hosting) -> (TestEnv, ovation::Server, Client) {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(hosting).await.unwrap();
    let client = Client::new(server.url());
    (env, server, client)
}

/// Sends `raw` as is over a new connection and returns the status of the answer.
fn raw_status(addr: std::net::SocketAddr, raw: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

fn assert_client_error(r: &util::Reply, status: u16, code: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{r:?}");
}

#[tokio::test]
async fn bodies_over_the_configured_limit_are_413_resource_exhausted() {
    let (env, server, c) = serve(Hosting::all().body_limit(1024)).await;
    let body = |n: usize| format!("{{\"email\":\"a@b.c\",\"name\":\"{}\"}}", "x".repeat(n));
    let r = c.post_raw("/users", "application/json", body(2048)).await;
    assert_client_error(&r, 413, "resource_exhausted");
    assert!(r.message().contains("1024 bytes"), "{r:?}");
    // Without a Content-Length (chunked), the limit holds while the body streams in.
    let addr = server.addr();
    let status = tokio::task::spawn_blocking(move || {
        let mut raw = b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
            Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
        for _ in 0..64 {
            raw.extend_from_slice(b"40\r\n");
            raw.extend_from_slice(&[b' '; 64]);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        raw_status(addr, &raw)
    })
    .await
    .unwrap();
    assert_eq!(status, 413);
    // Under the limit: served.
    let r = c.post_raw("/users", "application/json", body(100)).await;
    assert_eq!(r.status, 200, "{r:?}");
    drop(server);
    env.close().await;
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_stack_overflow() {
    let (env, server, c) = serve(Hosting::all()).await;
    for depth in [200, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // As the value of a known field: past serde_json's depth limit (128), a 400.
        let r = c
            .post_raw(
                "/users",
                "application/json",
                format!("{{\"email\":{nested},\"name\":\"n\"}}"),
            )
            .await;
        assert_client_error(&r, 400, "invalid_argument");
        // As the value of an unknown field: skipped without recursion, so harmless.
        let r = c
            .post_raw(
                "/users",
                "application/json",
                format!(
                    "{{\"email\":\"deep{depth}@example.com\",\"name\":\"n\",\"extra\":{nested}}}"
                ),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = c
        .post("/users", json!({"email": "after@example.com", "name": "n"}))
        .await;
    assert_eq!(r.status, 200, "the server still serves: {r:?}");
    drop(server);
    env.close().await;
}

#[tokio::test]
async fn wrong_content_types_are_400() {
    let (env, server, c) = serve(Hosting::all()).await;
    let body = "{\"email\":\"ct@example.com\",\"name\":\"n\"}";
    for ct in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "image/png",
        "",
    ] {
        let r = c.post_raw("/users", ct, body).await;
        assert_client_error(&r, 400, "invalid_argument");
        assert!(r.message().contains("must be JSON"), "{ct}: {r:?}");
    }
    drop(server);
    env.close().await;
}

#[tokio::test]
async fn huge_negative_and_overflowing_numbers_are_400_never_wrapped() {
    let (env, server, c) = serve(Hosting::all()).await;
    let (user, product) = c
        .user_and_product("numbers@example.com", 1_000_000, 10)
        .await;
    let order = |q: Value| json!({"userId": user, "productId": product, "quantity": q});
    for q in [
        json!(0),
        json!(-1),
        json!(i64::from(i32::MIN)),
        json!(i64::from(i32::MAX) + 1),
        json!(u64::MAX),
        json!(1e300),
        json!(1.5),
        json!("1"),
    ] {
        for path in ["/orders", "/checkout"] {
            let r = c.post(path, order(q.clone())).await;
            assert_client_error(&r, 400, "invalid_argument");
        }
    }
    // In range, but the total (price × quantity) overflows i64: rejected, never wrapped.
    let (_, pricey) = c
        .user_and_product("pricey@example.com", i64::MAX / 2, 10)
        .await;
    for path in ["/orders", "/checkout"] {
        let r = c
            .post(
                path,
                json!({"userId": user, "productId": pricey, "quantity": 3}),
            )
            .await;
        assert_client_error(&r, 400, "invalid_argument");
        assert!(r.message().contains("too large"), "{r:?}");
    }
    for bad in [json!(-1), json!(i64::MAX as f64 * 4.0), json!(i64::MIN)] {
        let r = c
            .post(
                "/products",
                json!({"name": "Bad", "priceCents": bad, "inventory": 1}),
            )
            .await;
        assert_client_error(&r, 400, "invalid_argument");
    }
    // Nothing moved.
    for p in [&product, &pricey] {
        assert_eq!(c.get(&format!("/products/{p}")).await.body["inventory"], 10);
    }
    drop(server);
    env.close().await;
}

#[tokio::test]
async fn invalid_utf8_and_nul_characters_are_400() {
    let (env, server, c) = serve(Hosting::all()).await;
    let addr = server.addr();
    // In a body.
    let r = c
        .post_raw(
            "/users",
            "application/json",
            b"{\"email\":\"\xc3\x28@x\",\"name\":\"n\"}".to_vec(),
        )
        .await;
    assert_client_error(&r, 400, "invalid_argument");
    // A NUL character, which Postgres cannot store.
    for body in [
        json!({"email": "nul\u{0}@example.com", "name": "n"}),
        json!({"email": "ok@example.com", "name": "a\u{0}b"}),
    ] {
        let r = c.post("/users", body).await;
        assert_client_error(&r, 400, "invalid_argument");
    }
    // In a path parameter and in a query string, percent-encoded and raw.
    let status = tokio::task::spawn_blocking(move || {
        [
            raw_status(
                addr,
                b"GET /users/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
            raw_status(
                addr,
                b"GET /users/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
            raw_status(
                addr,
                b"GET /files/%C3%28 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
            raw_status(
                addr,
                b"GET /search?q=%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
        ]
    })
    .await
    .unwrap();
    for s in status {
        assert!((400..500).contains(&s), "{status:?}");
    }
    drop(server);
    env.close().await;
}

#[tokio::test]
async fn path_traversal_in_path_parameters_is_data_not_a_path() {
    let (env, server, c) = serve(Hosting::all()).await;
    let addr = server.addr();
    // Percent-encoded traversal reaches the handler as the literal text it is.
    let r = c.get("/files/..%2F..%2Fetc%2Fpasswd").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, Some("../../etc/passwd")),
        "{r:?}"
    );
    // Raw `..` segments are not resolved against other routes: still `files`' data.
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /files/../../users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.ends_with("\"../../users\""), "{raw}");
    // A traversal where a UUID is expected is a 400 naming the parameter.
    let r = c.get("/users/..%2F..%2Fetc%2Fpasswd").await;
    assert_client_error(&r, 400, "invalid_argument");
    assert!(r.message().contains("`id`"), "{r:?}");
    drop(server);
    env.close().await;
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let (env, server, c) = serve(Hosting::all()).await;
    let r = c
        .post(
            "/users",
            json!({"email": "extra@example.com", "name": "n", "admin": true, "id": "mine"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(r.body["id"], "mine", "a client cannot choose the id");
    drop(server);
    env.close().await;
}

#[tokio::test]
async fn slow_loris_headers_are_cut_off_and_others_still_served() {
    let (env, server, c) = serve(Hosting::all().header_read_timeout(Duration::from_secs(1))).await;
    let addr = server.addr();
    // A client sending its headers a byte now and then is disconnected once the header read
    // timeout passes, without an answer holding a worker.
    let slow = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        stream
            .write_all(b"GET /users/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\nX-Slow: ")
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the slow client is still connected after 10 s"
            );
            if stream.write_all(b"a").is_err() {
                return started.elapsed();
            }
            match stream.read(&mut buf) {
                // Closed: by a FIN, or reset because our last bytes arrived after the close.
                Ok(0) => return started.elapsed(),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return started.elapsed();
                }
                // An answer (hyper may send 408 first) or nothing yet: the close follows.
                _ => {}
            }
        }
    });
    // Meanwhile the server answers everyone else at once.
    let r = c
        .post("/users", json!({"email": "fast@example.com", "name": "n"}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let cut_after = slow.await.unwrap();
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(10),
        "{cut_after:?}"
    );
    drop(server);
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off_with_408_and_others_still_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_secs(2);
    let (env, server, c) = serve(Hosting::all().body_read_timeout(timeout)).await;
    let addr = server.addr();
    // 500 clients connect and send their headers, then their bodies a byte every 200 ms.
    let started = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..500 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = "POST /users HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                    Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    let dribblers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut answer = Vec::new();
                loop {
                    assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "a dribbling client is still connected after 20 s"
                    );
                    let mut buf = [0u8; 1024];
                    let read =
                        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf));
                    match read.await {
                        // Closed by the server: what did it say first?
                        Ok(Ok(0)) => break,
                        Ok(Err(e)) => {
                            answer.extend_from_slice(format!("(read failed: {e})").as_bytes());
                            break;
                        }
                        Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                        Err(_) => {
                            if let Err(e) = stream.write_all(b" ").await {
                                answer.extend_from_slice(format!("(write failed: {e})").as_bytes());
                                break;
                            }
                        }
                    }
                }
                (
                    started.elapsed(),
                    String::from_utf8_lossy(&answer).into_owned(),
                )
            })
        })
        .collect();
    // Meanwhile everyone else is answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let email = format!("prompt{i}@example.com");
        let r = c.post("/users", json!({"email": email, "name": "n"})).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    for dribbler in dribblers {
        let (closed_after, answer) = dribbler.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a dribbling client is told why: {answer:?} after {closed_after:?}"
        );
        assert!(
            closed_after >= timeout && closed_after < timeout + Duration::from_secs(8),
            "closed after {closed_after:?}"
        );
    }
    drop(server);
    env.close().await;
}
