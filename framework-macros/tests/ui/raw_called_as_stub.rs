use ovation::prelude::*;

mod payments {
    #[ovation::api(raw, public, method = "POST", path = "/webhooks/payments")]
    pub async fn webhook(request: ovation::axum::extract::Request) -> ovation::axum::http::StatusCode {
        let _ = request;
        ovation::axum::http::StatusCode::NO_CONTENT
    }
}

mod orders {
    use super::*;

    #[api(public, method = "POST", path = "/orders/replay")]
    pub async fn replay() -> Result<(), Error> {
        // A raw endpoint has no typed request or response to call it with.
        let _ = payments::webhook(ovation::axum::extract::Request::default());
        Ok(())
    }
}

fn main() {}
