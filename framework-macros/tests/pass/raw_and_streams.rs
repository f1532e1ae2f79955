//! Raw endpoints and streams compile as the README shows them (static files: `framework-runtime/tests/streams.rs`).
use ovation::prelude::*;
use ovation::stream::{StreamIn, StreamInOut, StreamOut};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Room {
    pub topic: Option<String>,
}

#[ovation::api(raw, public, method = "POST", path = "/hooks/:source")]
pub async fn hook(
    ovation::axum::extract::Path(source): ovation::axum::extract::Path<String>,
    headers: ovation::axum::http::HeaderMap,
    body: ovation::axum::body::Bytes,
) -> Result<String, Error> {
    Ok(format!("{source} {} {}", headers.len(), body.len()))
}

#[api(stream, public, path = "/lines")]
pub async fn lines(mut out: StreamOut<Line>) -> Result<(), Error> {
    out.send(&Line { text: "hi".into() }).await
}

#[api(stream, auth, path = "/rooms/:id")]
pub async fn chat(id: u32, room: Room, mut chat: StreamInOut<Line, Line>) -> Result<(), Error> {
    let _ = (id, room);
    while let Some(line) = chat.recv().await? {
        chat.send(&line).await?;
    }
    Ok(())
}

#[api(stream, path = "/upload")]
pub async fn upload(mut lines: StreamIn<Line>) -> Result<(), Error> {
    while lines.recv().await?.is_some() {}
    Ok(())
}


/// The stubs: a stream opened from code gives the other side of it.
pub async fn client() -> Result<(), Error> {
    let mut incoming: StreamIn<Line> = lines().await?;
    let _ = incoming.recv().await?;
    let (mut rx, mut tx) = chat(1, Room { topic: None }).await?.split();
    tx.send(&Line { text: "a".into() }).await?;
    let _ = rx.recv().await?;
    let mut out: StreamOut<Line> = upload().await?;
    out.send(&Line { text: "b".into() }).await?;
    out.close().await;
    Ok(())
}

fn main() {}
