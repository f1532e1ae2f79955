use ovation::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, method = "GET", path = "/files/*key/meta")]
pub async fn meta(key: String) -> Result<(), Error> {
    let _ = key;
    Ok(())
}
fn main() {}
