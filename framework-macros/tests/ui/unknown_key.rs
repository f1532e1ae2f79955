use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, method = "GET", path = "/users", timeout = "5s")]
pub async fn list() -> Result<(), Error> {
    Ok(())
}
fn main() {}
