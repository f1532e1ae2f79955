use ovation::prelude::*;

#[ovation::workflow]
pub async fn two_inputs(a: u32, b: u32) -> Result<u32, Error> {
    Ok(a + b)
}

#[ovation::workflow]
pub async fn no_result(a: u32) -> u32 {
    a
}

#[ovation::workflow]
pub fn not_async(a: u32) -> Result<u32, Error> {
    Ok(a)
}

#[ovation::workflow(name = "has spaces")]
pub async fn bad_name(a: u32) -> Result<u32, Error> {
    Ok(a)
}

fn main() {}
