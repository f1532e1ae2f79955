use ovation::prelude::*;

/// No `Deserialize`: a resumed run could not read its recorded input.
pub struct Input {
    pub n: u32,
}

#[ovation::workflow]
pub async fn count(input: Input) -> Result<u32, Error> {
    Ok(input.n)
}

fn main() {}
