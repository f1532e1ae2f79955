use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, method = "GET", path = "/users/:id")]
pub fn get(id: Uuid) -> Result<(), Error> {
    let _ = id;
    Ok(())
}
fn main() {}
