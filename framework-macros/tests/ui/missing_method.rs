use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, path = "/users")]
pub async fn list() -> Result<(), Error> {
    Ok(())
}
fn main() {}
