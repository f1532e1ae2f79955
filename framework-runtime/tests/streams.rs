//! Raw and streaming endpoints over real HTTP and WebSockets on loopback: in one process and
//! through a gateway in front of another. Raw bodies reach the handler byte for byte and
//! stream through the gateway; streams carry typed messages both ways, end with the function's
//! outcome, push back on a client that stops reading (it is disconnected, the others are not),
//! and close with `1001` when the server shuts down. Static files are served with their
//! content types and revalidation, and nothing outside their folder can be named.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ovation::testing::{Hosting, TestEnv};
use ovation::{ErrCode, Error};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

mod files {
    use ovation::prelude::*;

    /// Counts and hashes the body as it arrives, without holding it.
    #[ovation::api(raw, public, method = "POST", path = "/files/:name")]
    pub async fn upload(
        axum::extract::Path(name): axum::extract::Path<String>,
        request: axum::extract::Request,
    ) -> Result<axum::Json<serde_json::Value>, Error> {
        use futures_util::StreamExt;
        use sha2::Digest;
        let mut body = request.into_body().into_data_stream();
        let (mut bytes, mut chunks, mut largest) = (0usize, 0usize, 0usize);
        let mut hash = sha2::Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::invalid_argument(e.to_string()))?;
            bytes += chunk.len();
            chunks += 1;
            largest = largest.max(chunk.len());
            hash.update(&chunk);
        }
        Ok(axum::Json(serde_json::json!({
            "name": name,
            "bytes": bytes,
            "chunks": chunks,
            "largest": largest,
            "sha256": hex::encode(hash.finalize()),
        })))
    }

    /// Counts what arrived so far where the test sees it, as it arrives.
    #[ovation::api(raw, public, method = "POST", path = "/files/progress")]
    pub async fn progress(request: axum::extract::Request) -> Result<String, Error> {
        use futures_util::StreamExt;
        let mut body = request.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::invalid_argument(e.to_string()))?;
            super::RECEIVED.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
        }
        Ok(super::RECEIVED
            .load(std::sync::atomic::Ordering::SeqCst)
            .to_string())
    }

    /// A redirect, with a header of its own.
    #[ovation::api(raw, public, method = "GET", path = "/old")]
    pub async fn moved() -> axum::response::Response {
        use axum::response::IntoResponse;
        (
            axum::http::StatusCode::PERMANENT_REDIRECT,
            [("location", "/new"), ("x-raw", "yes")],
        )
            .into_response()
    }

    /// The client as the request names it: its `x-forwarded-for`, or `none`.
    #[ovation::api(raw, public, method = "GET", path = "/files/peer")]
    pub async fn peer(headers: axum::http::HeaderMap) -> String {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned()
    }

    /// Private: reached only by a signed call.
    #[ovation::api(raw, method = "GET", path = "/files/internal")]
    pub async fn internal() -> &'static str {
        "internal"
    }
}

mod web {
    ovation::static_files!("/site", dir = "tests/static");
}

mod feed {
    use ovation::prelude::*;
    use ovation::stream::{StreamIn, StreamInOut, StreamOut};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Tick {
        pub n: u32,
        pub pad: String,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Ticks {
        /// How many ticks; `0` means until the client goes away.
        pub count: u32,
        /// Bytes of padding per tick.
        #[serde(default)]
        pub pad: usize,
        /// End with this error code instead of normally.
        #[serde(default)]
        pub fail: Option<String>,
    }

    /// Sends `count` ticks, then ends (or fails, if asked).
    #[ovation::api(stream, public, path = "/feed/:label")]
    pub async fn ticks(label: String, t: Ticks, mut out: StreamOut<Tick>) -> Result<(), Error> {
        let pad = "x".repeat(t.pad);
        let mut n = 0;
        while t.count == 0 || n < t.count {
            n += 1;
            out.send(&Tick {
                n,
                pad: pad.clone(),
            })
            .await?;
        }
        let _ = label;
        match t.fail.as_deref() {
            Some("not_found") => Err(Error::not_found("no such feed")),
            Some(_) => Err(Error::failed_precondition("the feed was asked to fail")),
            None => Ok(()),
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Line {
        pub text: String,
    }

    /// Answers each line in upper case.
    #[ovation::api(stream, public, path = "/echo")]
    pub async fn echo(mut chat: StreamInOut<Line, Line>) -> Result<(), Error> {
        while let Some(line) = chat.recv().await? {
            chat.send(&Line {
                text: line.text.to_uppercase(),
            })
            .await?;
        }
        Ok(())
    }

    /// Sends nothing, ever: waits for events that do not come.
    #[ovation::api(stream, public, path = "/quiet")]
    pub async fn quiet(out: StreamOut<Tick>) -> Result<(), Error> {
        let _out = out;
        std::future::pending::<()>().await;
        Ok(())
    }

    /// Sums what the client sends; the total goes to the log the test reads.
    #[ovation::api(stream, path = "/sum")]
    pub async fn sum(mut numbers: StreamIn<Line>) -> Result<(), Error> {
        let mut total = 0i64;
        while let Some(n) = numbers.recv().await? {
            total += n.text.parse::<i64>().unwrap_or(0);
        }
        super::TOTALS.lock().unwrap().push(total);
        Ok(())
    }
}

static TOTALS: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());

/// Bytes `files::progress` has received.
static RECEIVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn ws_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.replacen("http://", "ws://", 1))
}

async fn read_ticks(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (Vec<u32>, Option<(u16, String)>) {
    let mut ticks = Vec::new();
    while let Some(message) = ws.next().await {
        match message.unwrap() {
            Message::Text(t) => {
                let tick: feed::Tick = serde_json::from_str(&t).unwrap();
                ticks.push(tick.n);
            }
            Message::Close(frame) => {
                return (
                    ticks,
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                );
            }
            _ => {}
        }
    }
    (ticks, None)
}

#[tokio::test]
async fn raw_bodies_reach_the_handler_unchanged_and_stream_through_the_gateway() {
    let env = TestEnv::new().await.unwrap();
    let service = env.serve(Hosting::only(["files", "feed"])).await.unwrap();
    let gateway = env
        .serve(Hosting::gateway().remote("files", service.url()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    // Every byte value, 5 MiB of them.
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let expected = hex::encode(sha2::Sha256::digest(&body));
    for (base, via) in [
        (service.url(), "directly"),
        (gateway.url(), "through the gateway"),
    ] {
        let answer: serde_json::Value = http
            .post(format!("{base}/files/blob.bin"))
            .header("content-type", "application/octet-stream")
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["name"], "blob.bin", "{via}");
        assert_eq!(answer["bytes"], body.len(), "{via}");
        assert_eq!(answer["sha256"], expected, "{via}");
        // It arrived in pieces, not as one buffer: nothing on the way held it whole.
        assert!(answer["chunks"].as_u64().unwrap() > 1, "{via}: {answer}");
        assert!(
            answer["largest"].as_u64().unwrap() < body.len() as u64,
            "{via}: {answer}"
        );
        // A body of unknown length (chunked) streams the same.
        let chunks = futures_util::stream::iter(
            body.chunks(64 * 1024)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        );
        let answer: serde_json::Value = http
            .post(format!("{base}/files/chunked"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["sha256"], expected, "{via}: chunked");

        let redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{base}/old"))
            .send()
            .await
            .unwrap();
        assert_eq!(redirect.status(), 308, "{via}");
        assert_eq!(redirect.headers()["location"], "/new", "{via}");
        assert_eq!(redirect.headers()["x-raw"], "yes", "{via}");

        // Private: 404 for a client, signature or not, as for a typed endpoint.
        let hidden = http
            .get(format!("{base}/files/internal"))
            .header("x-ovation-service-auth", "v3 forged")
            .send()
            .await
            .unwrap();
        assert_eq!(hidden.status(), 404, "{via}");
    }
    // Nothing on the way holds the body whole: the handler has the first 3 MiB while the client
    // still holds back the rest (a gateway that buffered would wait for it forever).
    for (base, via) in [
        (service.url(), "directly"),
        (gateway.url(), "through the gateway"),
    ] {
        RECEIVED.store(0, std::sync::atomic::Ordering::SeqCst);
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (Ok::<_, std::io::Error>(c), rx))
        });
        let upload = tokio::spawn(
            http.post(format!("{base}/files/progress"))
                .body(reqwest::Body::wrap_stream(chunks))
                .send(),
        );
        for chunk in body[..3 << 20].chunks(256 * 1024) {
            tx.send(chunk.to_vec()).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while RECEIVED.load(std::sync::atomic::Ordering::SeqCst) < 3 << 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "{via}: the handler got {} bytes of the first 3 MiB before the rest was sent",
                RECEIVED.load(std::sync::atomic::Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for chunk in body[3 << 20..].chunks(256 * 1024) {
            tx.send(chunk.to_vec()).await.unwrap();
        }
        drop(tx);
        let answer = upload.await.unwrap().unwrap().text().await.unwrap();
        assert_eq!(answer, body.len().to_string(), "{via}");
    }

    // Signed by the app's key as a service would, the private one answers.
    let key = env.service_auth_key();
    let signature = key.sign(
        ovation::tooling::Signed {
            method: "GET",
            path: "/files/internal",
            query: "",
            body: b"",
        },
        "feed",
    );
    let answer = http
        .get(format!("{}/files/internal", service.url()))
        .header("x-ovation-service-auth", signature)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "internal");
    // The OpenAPI document lists the public raw endpoints, not the streams.
    let spec: serde_json::Value = http
        .get(format!("{}/__ovation/openapi.json", service.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/files/{name}"]["post"].is_object(), "{spec}");
    assert!(spec["paths"]["/old"]["get"].is_object(), "{spec}");
    assert!(spec["paths"].get("/feed/{label}").is_none(), "{spec}");
    env.close().await;
}

/// A request through the gateway tells the service who sent it, after the hops the client
/// named; a request made directly names no one.
#[tokio::test]
async fn the_gateway_tells_the_service_who_its_client_is() {
    let env = TestEnv::new().await.unwrap();
    let service = env.serve(Hosting::only(["files"])).await.unwrap();
    let gateway = env
        .serve(Hosting::gateway().remote("files", service.url()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let peer = |base: String, forwarded: Option<&'static str>| {
        let mut request = http.get(format!("{base}/files/peer"));
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(peer(service.url(), None).await, "none");
    assert_eq!(peer(gateway.url(), None).await, "127.0.0.1");
    assert_eq!(
        peer(gateway.url(), Some("203.0.113.9")).await,
        "203.0.113.9, 127.0.0.1"
    );
    env.close().await;
}

#[tokio::test]
async fn streams_carry_typed_messages_and_end_with_the_functions_outcome() {
    let env = TestEnv::new().await.unwrap();
    let service = env.serve(Hosting::only(["feed"])).await.unwrap();
    let gateway = env
        .serve(Hosting::gateway().remote("feed", service.url()))
        .await
        .unwrap();
    for (base, via) in [
        (service.url(), "directly"),
        (gateway.url(), "through the gateway"),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&base, "/feed/a?count=5&pad=3"))
            .await
            .unwrap();
        let (ticks, close) = read_ticks(&mut ws).await;
        assert_eq!(ticks, [1, 2, 3, 4, 5], "{via}");
        assert_eq!(close.unwrap().0, 1000, "{via}");

        // An error ends the stream with 4000 + its status, and its code in the reason.
        let (mut ws, _) =
            tokio_tungstenite::connect_async(ws_url(&base, "/feed/a?count=2&fail=not_found"))
                .await
                .unwrap();
        let (ticks, close) = read_ticks(&mut ws).await;
        assert_eq!(ticks, [1, 2], "{via}");
        let (code, reason) = close.unwrap();
        assert_eq!(
            (code, reason.as_str()),
            (4404, "not_found: no such feed"),
            "{via}"
        );

        // Both ways.
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&base, "/echo"))
            .await
            .unwrap();
        for word in ["one", "two", "three"] {
            ws.send(Message::text(format!(r#"{{"text":"{word}"}}"#)))
                .await
                .unwrap();
            let Some(Ok(Message::Text(answer))) = ws.next().await else {
                panic!("{via}: no answer to {word}");
            };
            let line: feed::Line = serde_json::from_str(&answer).unwrap();
            assert_eq!(line.text, word.to_uppercase(), "{via}");
        }
        // A message that does not decode ends the stream with 400, naming the field.
        ws.send(Message::text(r#"{"txt":"x"}"#)).await.unwrap();
        let mut close = None;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                close = frame;
                break;
            }
        }
        let close = close.unwrap();
        assert_eq!(u16::from(close.code), 4400, "{via}");
        assert!(close.reason.contains("text"), "{via}: {}", close.reason);

        // Handshake errors are HTTP answers: a bad handshake, a plain GET, a private stream.
        let http = reqwest::Client::new();
        let plain = http.get(format!("{base}/echo")).send().await.unwrap();
        assert_eq!(plain.status(), 426, "{via}");
        let refused = tokio_tungstenite::connect_async(ws_url(&base, "/feed/a?count=x"))
            .await
            .unwrap_err();
        let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
            panic!("{via}: {refused}");
        };
        assert_eq!(response.status(), 400, "{via}");
        let refused = tokio_tungstenite::connect_async(ws_url(&base, "/sum"))
            .await
            .unwrap_err();
        let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
            panic!("{via}: {refused}");
        };
        assert_eq!(response.status(), 404, "{via}");
    }
    env.close().await;
}

#[tokio::test]
async fn the_typed_stub_opens_a_stream_here_and_over_a_websocket() {
    let env = TestEnv::new().await.unwrap();
    let service = env.serve(Hosting::only(["feed"])).await.unwrap();
    let here = Hosting::all();
    let elsewhere = Hosting::only(["files"]).remote("feed", service.url());
    for (hosting, via) in [(here, "in this process"), (elsewhere, "over a WebSocket")] {
        env.run_hosting(hosting, async {
            let mut ticks = feed::ticks(
                "b".into(),
                feed::Ticks {
                    count: 3,
                    pad: 0,
                    fail: None,
                },
            )
            .await
            .unwrap();
            let mut got = Vec::new();
            while let Some(tick) = ticks.recv().await.unwrap() {
                got.push(tick.n);
            }
            assert_eq!(got, [1, 2, 3], "{via}");

            let mut failing = feed::ticks(
                "b".into(),
                feed::Ticks {
                    count: 1,
                    pad: 0,
                    fail: Some("other".into()),
                },
            )
            .await
            .unwrap();
            assert_eq!(failing.recv().await.unwrap().unwrap().n, 1, "{via}");
            let e: Error = failing.recv().await.unwrap_err();
            assert_eq!(e.code(), ErrCode::FailedPrecondition, "{via}");
            assert_eq!(e.message(), "the feed was asked to fail", "{via}");

            let mut chat = feed::echo().await.unwrap();
            chat.send(&feed::Line { text: "hi".into() }).await.unwrap();
            assert_eq!(chat.recv().await.unwrap().unwrap().text, "HI", "{via}");
            chat.close().await;

            // A private stream is open to the app's own code; the client's end closing ends
            // the function's loop normally.
            let mut numbers = feed::sum().await.unwrap();
            for n in [1, 2, 39] {
                numbers
                    .send(&feed::Line {
                        text: n.to_string(),
                    })
                    .await
                    .unwrap();
            }
            numbers.close().await;
        })
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !TOTALS.lock().unwrap().contains(&42) {
            assert!(
                std::time::Instant::now() < deadline,
                "{via}: the sum never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TOTALS.lock().unwrap().clear();
    }
    env.close().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_the_others_keep_receiving() {
    let env = TestEnv::new().await.unwrap();
    let service = env
        .serve(Hosting::only(["feed"]).stream_send_timeout(Duration::from_millis(500)))
        .await
        .unwrap();
    // 64 KiB per tick, without end: a reader that stops fills every buffer on the way.
    let url = ws_url(&service.url(), "/feed/big?count=0&pad=65536");
    let (mut stalled, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut reader, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // The stalled client reads one message, then nothing.
    assert!(matches!(stalled.next().await, Some(Ok(Message::Text(_)))));
    let started = std::time::Instant::now();
    let mut read = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        match reader.next().await {
            Some(Ok(Message::Text(_))) => read += 1,
            other => panic!("the reading client lost its stream: {other:?}"),
        }
    }
    assert!(read > 100, "the reading client got only {read} ticks");
    // The stalled one was cut off: what it can still read is what the buffers held (its
    // socket's, the server's, the stream's 64 messages), then the connection ends.
    let mut buffered = 0usize;
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = stalled.next().await {
            if m.is_text() {
                buffered += 1;
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the stalled client was never disconnected");
    // 64 KiB each: far fewer than the reader got, and bounded by the buffers (~16 MiB).
    assert!(
        buffered < 256,
        "{buffered} ticks were held for the stalled client"
    );
    env.close().await;
}

#[tokio::test]
async fn a_stopping_server_closes_its_streams_with_going_away() {
    let env = TestEnv::new().await.unwrap();
    let service = env.serve(Hosting::only(["feed"])).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&service.url(), "/echo"))
        .await
        .unwrap();
    ws.send(Message::text(r#"{"text":"a"}"#)).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    // A stream whose function waits for something to send, which never comes: once its
    // client is gone it is dropped, so it holds up no shutdown (the grace is 30 s).
    let (quiet, _) = tokio_tungstenite::connect_async(ws_url(&service.url(), "/quiet"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(service.shutdown_draining(Duration::from_secs(2)));
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                return frame;
            }
        }
        None
    })
    .await
    .expect("the stream was not closed at shutdown")
    .expect("the stream ended without a close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason, "the server is shutting down");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown waited on the stream")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(quiet);
    env.close().await;
}

/// A request written by hand, so the path reaches the server as it is (clients normalise `..`).
async fn raw_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn static_files_have_content_types_revalidate_and_stay_in_their_folder() {
    let env = TestEnv::new().await.unwrap();
    let service = env.serve(Hosting::only(["web"])).await.unwrap();
    let gateway = env
        .serve(Hosting::gateway().remote("web", service.url()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for (base, via) in [
        (service.url(), "directly"),
        (gateway.url(), "through the gateway"),
    ] {
        for (path, content_type, contains) in [
            ("/site", "text/html; charset=utf-8", "It works"),
            ("/site/", "text/html; charset=utf-8", "It works"),
            ("/site/index.html", "text/html; charset=utf-8", "It works"),
            (
                "/site/app.js",
                "text/javascript; charset=utf-8",
                "console.log",
            ),
            ("/site/style.css", "text/css; charset=utf-8", "teal"),
            ("/site/img/logo.svg", "image/svg+xml", "<svg"),
        ] {
            let answer = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(answer.status(), 200, "{via} {path}");
            assert_eq!(
                answer.headers()["content-type"],
                content_type,
                "{via} {path}"
            );
            let etag = answer.headers()["etag"].clone();
            let modified = answer.headers()["last-modified"].clone();
            assert!(
                answer.text().await.unwrap().contains(contains),
                "{via} {path}"
            );
            // Revalidation: the same tag (or a date not older than the file) is 304, no body.
            let again = http
                .get(format!("{base}{path}"))
                .header("if-none-match", etag.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304, "{via} {path}");
            assert_eq!(again.headers()["etag"], etag, "{via} {path}");
            assert!(again.bytes().await.unwrap().is_empty(), "{via} {path}");
            let since = http
                .get(format!("{base}{path}"))
                .header("if-modified-since", modified)
                .send()
                .await
                .unwrap();
            assert_eq!(since.status(), 304, "{via} {path}");
            let changed = http
                .get(format!("{base}{path}"))
                .header("if-none-match", "\"another\"")
                .send()
                .await
                .unwrap();
            assert_eq!(changed.status(), 200, "{via} {path}");
        }
        let missing = http
            .get(format!("{base}/site/nope.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "{via}");
        let body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{via}");
        for path in [
            "/site/../Cargo.toml",
            "/site/img/../../Cargo.toml",
            "/site/%2e%2e/Cargo.toml",
            "/site/img/..%2f..%2fCargo.toml",
            "/site/%2E%2E%2FCargo.toml",
            "/site/..%5cCargo.toml",
            "/site/img/%2e%2e/index.html",
        ] {
            let answer = raw_get(&base, path).await;
            assert!(answer.starts_with("HTTP/1.1 404"), "{via} {path}: {answer}");
            assert!(!answer.contains("[package]"), "{via} {path}: {answer}");
        }
    }
    env.close().await;
}

/// A debug build serves the folder as it is now: a file added since the build (cargo does not
/// rebuild for one) is served, an edited one has a new tag, and a link out of the folder is
/// not followed.
#[tokio::test]
async fn a_debug_build_serves_files_added_since_the_build_and_nothing_outside() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/static");
    let added = format!("added-{}.txt", std::process::id());
    let link = format!("link-{}.txt", std::process::id());
    std::fs::write(folder.join(&added), "new since the build").unwrap();
    std::os::unix::fs::symlink(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
        folder.join(&link),
    )
    .unwrap();
    let env = TestEnv::new().await.unwrap();
    let service = env.serve(Hosting::only(["web"])).await.unwrap();
    let http = reqwest::Client::new();
    let get = |path: String| http.get(format!("{}/site/{path}", service.url())).send();

    let answer = get(added.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let etag = answer.headers()["etag"].clone();
    assert_eq!(answer.text().await.unwrap(), "new since the build");

    std::fs::write(folder.join(&added), "edited").unwrap();
    let edited = get(added.clone()).await.unwrap();
    assert_ne!(edited.headers()["etag"], etag);
    assert_eq!(edited.text().await.unwrap(), "edited");

    let outside = get(link.clone()).await.unwrap();
    assert_eq!(outside.status(), 404);
    assert!(!outside.text().await.unwrap().contains("[package]"));

    let _ = std::fs::remove_file(folder.join(&added));
    let _ = std::fs::remove_file(folder.join(&link));
    let gone = get(added).await.unwrap();
    assert_eq!(gone.status(), 404);
    env.close().await;
}
