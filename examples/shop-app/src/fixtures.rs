//! Set-up shared by the services' tests.

use crate::{products, users};

/// Creates a user with this email.
pub(crate) async fn user(email: &str, name: &str) -> users::User {
    users::create(users::CreateUserParams {
        email: email.into(),
        name: name.into(),
        password: None,
    })
    .await
    .expect("the user is created")
}

/// Creates a product.
pub(crate) async fn product(name: &str, price_cents: i64, inventory: i32) -> products::Product {
    products::create(products::CreateProductParams {
        name: name.into(),
        price_cents,
        inventory,
    })
    .await
    .expect("the product is created")
}
