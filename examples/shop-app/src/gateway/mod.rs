//! The `gateway` service: one public endpoint that orchestrates the others.

use ovation::prelude::*;

use crate::{orders, products, users};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutRequest {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutResponse {
    pub order_id: Uuid,
    pub user_name: String,
    pub product_name: String,
    pub total_cents: i64,
}

/// Checks out one product for a user: the guide's gateway, over users, products and orders.
#[api(public, method = "POST", path = "/checkout")]
pub async fn checkout(p: CheckoutRequest) -> Result<CheckoutResponse, Error> {
    let user = users::get(p.user_id).await?;
    let product = products::get(p.product_id).await?;
    let order = orders::create(orders::CreateOrderParams {
        user_id: p.user_id,
        product_id: p.product_id,
        quantity: p.quantity,
    })
    .await?;
    Ok(CheckoutResponse {
        order_id: order.id,
        user_name: user.name,
        product_name: product.name,
        total_cents: order.total_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[ovation::test]
    async fn checkout_orchestrates_the_services() {
        let user = fixtures::user("c@example.com", "Cat").await;
        let product = fixtures::product("Lamp", 2500, 3).await;
        let r = checkout(CheckoutRequest {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
        })
        .await
        .unwrap();
        assert_eq!(
            (r.user_name.as_str(), r.product_name.as_str(), r.total_cents),
            ("Cat", "Lamp", 5000)
        );
        assert_eq!(orders::get(r.order_id).await.unwrap().quantity, 2);
        assert_eq!(products::get(product.id).await.unwrap().inventory, 1);
        let err = checkout(CheckoutRequest {
            user_id: Uuid::new_v4(),
            product_id: product.id,
            quantity: 1,
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrCode::NotFound);
    }
}
