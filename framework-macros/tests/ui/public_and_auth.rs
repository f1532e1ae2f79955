use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, auth, method = "GET", path = "/me")]
pub async fn me() -> Result<(), Error> {
    Ok(())
}
fn main() {}
