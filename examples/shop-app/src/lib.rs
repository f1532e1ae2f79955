//! The shop from the Encore microservices guide, written with Ovation.
//!
//! Each top-level module is a service with a database of its own: `users`, `products`,
//! `orders` (with the live order stream and the status page) and `payments` (with the payment
//! provider's webhook); `checkout` runs the checkout saga over products, payments and orders as
//! a durable workflow; `notifications` subscribes to `orders`' `OrderCreated` topic and sends
//! confirmations.

pub mod checkout;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod products;
pub mod users;

#[cfg(test)]
mod fixtures;

/// Length limits for text fields: a client's mistake, not the database's, when exceeded.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), ovation::Error> {
    if value.trim().is_empty() {
        return Err(ovation::Error::invalid_argument(format!(
            "`{field}` must not be empty"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ovation::Error::invalid_argument(format!(
            "`{field}` must not contain control characters"
        )));
    }
    if value.chars().count() > max {
        return Err(ovation::Error::invalid_argument(format!(
            "`{field}` must be at most {max} characters"
        )));
    }
    Ok(())
}
