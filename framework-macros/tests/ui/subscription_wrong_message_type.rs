use ovation::prelude::*;

#[derive(Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
}

#[derive(Serialize, Deserialize)]
pub struct Other {
    pub n: u32,
}

pub static ORDER_CREATED: Topic<OrderCreated> = ovation::topic!("order-created");

#[subscription(topic = ORDER_CREATED, name = "confirm")]
async fn confirm(event: Other) -> Result<(), Error> {
    let _ = event;
    Ok(())
}

fn main() {}
