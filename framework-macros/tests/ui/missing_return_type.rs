use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, method = "POST", path = "/ping")]
pub async fn ping() {}
fn main() {}
