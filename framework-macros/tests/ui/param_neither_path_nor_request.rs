use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, method = "POST", path = "/products/:id/reserve")]
pub async fn reserve(id: Uuid, name: &str) -> Result<(), Error> {
    let _ = (id, name);
    Ok(())
}
fn main() {}
