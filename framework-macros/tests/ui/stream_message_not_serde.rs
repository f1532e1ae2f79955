use ovation::prelude::*;
use ovation::stream::StreamOut;

/// No `Serialize`: it cannot travel as a message.
pub struct Tick {
    pub n: u32,
}

#[api(stream, public, path = "/ticks")]
pub async fn ticks(mut out: StreamOut<Tick>) -> Result<(), Error> {
    let _ = &mut out;
    Ok(())
}

fn main() {}
