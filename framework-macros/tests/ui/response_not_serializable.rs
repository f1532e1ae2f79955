use ovation::prelude::*;

pub struct Order {
    pub id: Uuid,
}

#[api(public, method = "GET", path = "/orders/:id")]
pub async fn get(id: Uuid) -> Result<Order, Error> {
    Ok(Order { id })
}

fn main() {}
