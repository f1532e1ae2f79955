//! Signing of service-to-service calls.
//!
//! A call from one process to a private endpoint in another carries
//! `x-ovation-service-auth: v1 <caller> <unix seconds> <hex HMAC-SHA256>`, where the HMAC is
//! keyed by the app's service-auth key and covers the method, the path, the timestamp and the
//! caller's service. The callee accepts it only within [`MAX_SKEW`] of its own clock, so a
//! captured signature is good for one method and path, for two minutes at most.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "x-ovation-service-auth";

/// How far a signature's timestamp may be from the callee's clock.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(120);

/// The key signing calls between the processes of one app.
#[derive(Clone)]
pub struct ServiceAuthKey(Vec<u8>);

impl std::fmt::Debug for ServiceAuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceAuthKey(..)")
    }
}

impl ServiceAuthKey {
    /// A key from configured text (any string; use 32 random bytes, hex-encoded).
    pub fn new(secret: &str) -> Self {
        ServiceAuthKey(secret.as_bytes().to_vec())
    }

    /// A fresh random key.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut key = vec![0; 32];
        rand::rng().fill_bytes(&mut key);
        ServiceAuthKey(key)
    }

    fn mac(&self, method: &str, path: &str, timestamp: u64, caller: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(format!("ovation-v1\n{method}\n{path}\n{timestamp}\n{caller}").as_bytes());
        mac
    }

    /// The header value ([`HEADER`]) signing a call of `method path` by `caller`, now.
    pub fn sign(&self, method: &str, path: &str, caller: &str) -> String {
        self.sign_at(method, path, caller, unix_now())
    }

    /// The header value signing a call at `timestamp` (Unix seconds): for tests and tools.
    pub fn sign_at(&self, method: &str, path: &str, caller: &str, timestamp: u64) -> String {
        let sig = self
            .mac(method, path, timestamp, caller)
            .finalize()
            .into_bytes();
        format!("v1 {caller} {timestamp} {}", hex::encode(sig))
    }

    /// The calling service, if `header` is a valid, fresh signature of `method path`.
    pub(crate) fn verify(&self, header: &str, method: &str, path: &str) -> Option<String> {
        self.verify_at(header, method, path, unix_now())
    }

    fn verify_at(&self, header: &str, method: &str, path: &str, now: u64) -> Option<String> {
        let mut parts = header.split(' ');
        let (Some("v1"), Some(caller), Some(ts), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let ts: u64 = ts.parse().ok()?;
        if now.abs_diff(ts) > MAX_SKEW.as_secs() {
            return None;
        }
        let sig = hex::decode(sig).ok()?;
        // `verify_slice` compares in constant time.
        self.mac(method, path, ts, caller).verify_slice(&sig).ok()?;
        Some(caller.to_owned())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_for_its_method_and_path_only() {
        let key = ServiceAuthKey::new("secret");
        let h = key.sign_at("POST", "/products/1/reserve", "orders", 1000);
        assert_eq!(
            key.verify_at(&h, "POST", "/products/1/reserve", 1000)
                .as_deref(),
            Some("orders")
        );
        assert_eq!(key.verify_at(&h, "POST", "/products/2/reserve", 1000), None);
        assert_eq!(key.verify_at(&h, "GET", "/products/1/reserve", 1000), None);
    }

    #[test]
    fn stale_or_foreign_signatures_are_rejected() {
        let key = ServiceAuthKey::new("secret");
        let h = key.sign_at("GET", "/x", "orders", 1000);
        assert!(key.verify_at(&h, "GET", "/x", 1000 + 121).is_none());
        assert!(key.verify_at(&h, "GET", "/x", 1000 - 121).is_none());
        assert!(key.verify_at(&h, "GET", "/x", 1000 + 119).is_some());
        assert!(
            ServiceAuthKey::new("other")
                .verify_at(&h, "GET", "/x", 1000)
                .is_none()
        );
        assert!(
            key.verify_at("v1 orders 1000 zz", "GET", "/x", 1000)
                .is_none()
        );
        assert!(key.verify_at("", "GET", "/x", 1000).is_none());
    }
}
