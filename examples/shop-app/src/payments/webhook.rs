//! The payment provider's callback, `POST /webhooks/payments`: a raw endpoint, because its
//! signature is over the exact bytes of the body.
//!
//! The provider signs each delivery with the `PaymentsWebhookKey` secret they share with us:
//! `X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`. A missing or wrong signature is
//! `401`, and nothing is recorded. A valid delivery is recorded once by its event `id`: the
//! provider retries until it is acknowledged, so a repeat answers `200` with
//! `"duplicate": true` and changes nothing.

use hmac::{Hmac, Mac};
use ovation::axum::Json;
use ovation::axum::body::Bytes;
use ovation::axum::http::HeaderMap;
use ovation::prelude::*;
use sha2::Sha256;

use super::DB;

static WEBHOOK_KEY: Secret = ovation::secret!("PaymentsWebhookKey");

/// The part of a provider's event the shop reads; the whole event is kept as it came.
#[ovation::model]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

/// What the provider gets back.
#[ovation::model]
pub struct Received {
    pub id: String,
    /// The event was recorded by an earlier delivery.
    pub duplicate: bool,
}

/// Verifies the delivery's signature, then records its event once.
#[api(raw, public, method = "POST", path = "/webhooks/payments")]
pub async fn payments_webhook(headers: HeaderMap, body: Bytes) -> Result<Json<Received>, Error> {
    verify(&headers, &body)?;
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid_argument(format!("the event is not valid JSON: {e}")))?;
    crate::check_text("id", &event.id, 200)?;
    crate::check_text("type", &event.kind, 200)?;
    let payload: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid_argument(format!("the event is not valid JSON: {e}")))?;
    let inserted = sqlx::query!(
        "INSERT INTO payment_events (id, type, payload) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
        &event.id,
        &event.kind,
        &payload
    )
    .execute(DB.pool())
    .await?
    .rows_affected();
    Ok(Json(Received {
        id: event.id,
        duplicate: inserted == 0,
    }))
}

/// The signature header must be `sha256=` and the hex HMAC of `body` under the shared key,
/// compared in constant time.
fn verify(headers: &HeaderMap, body: &[u8]) -> Result<(), Error> {
    let header = headers.get("x-signature").ok_or_else(|| {
        Error::unauthenticated("missing `X-Signature: sha256=<hex HMAC of the body>`")
    })?;
    let hex_mac = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("sha256="))
        .ok_or_else(|| {
            Error::unauthenticated("`X-Signature` must be `sha256=<hex HMAC of the body>`")
        })?;
    let given =
        hex::decode(hex_mac).map_err(|_| Error::unauthenticated("`X-Signature` is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_KEY.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| Error::unauthenticated("the signature does not match the body"))
}

/// The signature header value the provider sends with `body` (for tests and tools).
pub fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_KEY.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether the event `id` has been recorded, and its type.
pub async fn recorded(id: &str) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar!("SELECT type FROM payment_events WHERE id = $1", id)
            .fetch_optional(DB.pool())
            .await?,
    )
}
