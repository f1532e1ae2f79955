use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(method = "POST", path = "/products/:id/reserve")]
pub async fn reserve(id: Uuid, p: Params, q: Params) -> Result<(), Error> {
    let _ = (id, p, q);
    Ok(())
}
fn main() {}
