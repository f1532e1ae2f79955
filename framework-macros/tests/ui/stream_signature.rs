use ovation::prelude::*;
use ovation::stream::StreamOut;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Tick {
    pub n: u32,
}

/// No stream parameter.
#[api(stream, public, path = "/ticks")]
pub async fn no_stream() -> Result<(), Error> {
    Ok(())
}

/// A stream answers with messages, not a response.
#[api(stream, public, path = "/ticks2")]
pub async fn answers(out: StreamOut<Tick>) -> Result<Tick, Error> {
    let _ = out;
    Ok(Tick { n: 1 })
}

/// A stream is opened with GET.
#[api(stream, public, method = "POST", path = "/ticks3")]
pub async fn posted(out: StreamOut<Tick>) -> Result<(), Error> {
    let _ = out;
    Ok(())
}

/// Raw and stream at once.
#[api(raw, stream, public, method = "GET", path = "/ticks4")]
pub async fn both() -> &'static str {
    ""
}

fn main() {}
