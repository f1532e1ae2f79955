//! Helpers shared by the end-to-end tests: a JSON client for a served app.

#![allow(dead_code)]

use serde_json::{Value, json};

// Linking the shop app registers its endpoints and databases.
use shop_app as _;

/// A client of one served app.
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

impl Client {
    pub fn new(base: impl Into<String>) -> Client {
        Client {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("the body is readable");
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Creates a user, a product, and returns their ids.
    pub async fn user_and_product(
        &self,
        email: &str,
        price_cents: i64,
        inventory: i32,
    ) -> (String, String) {
        let user = self
            .post("/users", json!({"email": email, "name": "Buyer"}))
            .await;
        assert_eq!(user.status, 200, "{user:?}");
        let product = self
            .post(
                "/products",
                json!({"name": "Widget", "priceCents": price_cents, "inventory": inventory}),
            )
            .await;
        assert_eq!(product.status, 200, "{product:?}");
        (
            user.body["id"].as_str().unwrap().to_owned(),
            product.body["id"].as_str().unwrap().to_owned(),
        )
    }
}
