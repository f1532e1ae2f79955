use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, method = "GET", path = "/users")]
pub async fn list() -> Option<String> {
    None
}
fn main() {}
