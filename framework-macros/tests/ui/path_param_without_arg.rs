use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, method = "GET", path = "/users/:id")]
pub async fn get(user_id: Uuid) -> Result<(), Error> {
    let _ = user_id;
    Ok(())
}
fn main() {}
