//! Signing of service-to-service calls, and of the CLI's calls to an app's `/__ovation/*`.
//!
//! A signed request carries
//!
//! ```text
//! x-ovation-service-auth: v3 <key id> <caller> <unix seconds> <nonce> <auth data> <hex HMAC-SHA256>
//! ```
//!
//! `<auth data>` is the JSON of the end user's auth data the call is made for, hex-encoded, or
//! `-` when it is made for nobody: the envelope carries it, so a callee reads who the user is
//! only from a request the app's key signed, never from a header a client could set.
//!
//! The HMAC is keyed by the app's service-auth key and covers the method, the path, the query
//! string, the SHA-256 of the body, the timestamp, the caller, a random 128-bit nonce and the
//! auth data. The
//! callee accepts a signature only within [`MAX_SKEW`] of its own clock and only once: it keeps
//! the nonces it has accepted for as long as they could still verify (a bounded cache, see
//! [`ReplayCache`]). So a captured signature is worth nothing: not for another body, not for
//! another query, not a second time.
//!
//! The key id (the first 8 bytes of the key's SHA-256, in hex) names the key that signed, so a
//! key can be rotated without a flag day: every process first accepts the new key
//! (`service_auth_accepted_keys`), then signs with it (`service_auth_key`, the old one moved to
//! the accepted list), then the old one is removed and its signatures fail like any forgery.
//! Every failure (old format, unknown key, bad MAC, stale, replayed) is the same `None`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const HEADER: &str = "x-ovation-service-auth";

/// The idempotency key of a call a workflow's step makes (see `ovation::idempotency_key`).
/// Covered by the call's signature, and read only from a signed request.
pub(crate) const IDEMPOTENCY_HEADER: &str = "x-ovation-idempotency-key";

/// The caller a gateway signs as when it forwards a client's request: not a service, so what
/// it forwards reaches only what the client could reach itself (never a private endpoint).
/// Service names are Rust module names and cannot start with `@`.
pub const GATEWAY: &str = "@gateway";

/// A verified signature: who signed, and the auth data the request is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The calling service; [`GATEWAY`] for a client's request forwarded by a gateway, `-` for
    /// code outside any service (a test body), `dashboard` or `cli` for the tools.
    pub caller: String,
    /// The JSON of the end user's auth data, when the call is made for one.
    pub auth: Option<Vec<u8>>,
}

impl Verified {
    /// Whether the request comes from the app's own code (or tools), not from a client by
    /// way of a gateway.
    pub fn is_internal(&self) -> bool {
        self.caller != GATEWAY
    }
}

/// What stands for the body's digest in a gateway's envelope of a streamed body.
const STREAMED_BODY: &str = "streamed";

/// How far a signature's timestamp may be from the callee's clock.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(120);

/// The nonces remembered per half of the replay window (see [`ReplayCache`]).
const NONCES_PER_GENERATION: usize = 1_000_000;

/// One key signing calls between the processes of one app.
#[derive(Clone)]
pub struct ServiceAuthKey {
    id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ServiceAuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAuthKey({})", self.id)
    }
}

/// What a request is, for its signature: the parts an attacker would want to change.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string without `?` (empty when there is none).
    pub query: &'a str,
    pub body: &'a [u8],
}

impl ServiceAuthKey {
    /// A key from configured text (any string; use 32 random bytes, hex-encoded).
    pub fn new(secret: &str) -> Self {
        Self::from_bytes(secret.as_bytes().to_vec())
    }

    /// A fresh random key.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut key = vec![0; 32];
        rand::rng().fill_bytes(&mut key);
        Self::from_bytes(key)
    }

    fn from_bytes(secret: Vec<u8>) -> Self {
        let id = hex::encode(&Sha256::digest(&secret)[..8]);
        ServiceAuthKey { id, secret }
    }

    /// The key's id: the first 8 bytes of its SHA-256, in hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    #[allow(clippy::too_many_arguments)]
    fn mac(
        &self,
        request: &Signed<'_>,
        streamed: bool,
        timestamp: u64,
        caller: &str,
        nonce: &str,
        auth: &str,
        key: Option<&str>,
    ) -> Hmac<Sha256> {
        // A streamed body (a gateway forwarding to a raw endpoint) is not covered: the digest
        // is a marker no SHA-256 in hex can equal.
        let body = if streamed {
            STREAMED_BODY.to_owned()
        } else {
            hex::encode(Sha256::digest(request.body))
        };
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        let Signed {
            method,
            path,
            query,
            ..
        } = request;
        mac.update(
            format!(
                "ovation-v3\n{}\n{method}\n{path}\n{query}\n{body}\n{timestamp}\n{caller}\n{nonce}\n{auth}",
                self.id
            )
            .as_bytes(),
        );
        if let Some(key) = key {
            mac.update(format!("\nidempotency-key {key}").as_bytes());
        }
        mac
    }

    /// The header value ([`HEADER`]) signing `request` by `caller`, now, with a fresh nonce.
    pub fn sign(&self, request: Signed<'_>, caller: &str) -> String {
        self.sign_for(request, caller, None)
    }

    /// [`sign`](Self::sign), for the end user whose auth data (its JSON) is `auth`.
    pub fn sign_for(&self, request: Signed<'_>, caller: &str, auth: Option<&[u8]>) -> String {
        self.sign_keyed(request, caller, auth, None)
    }

    /// [`sign_for`](Self::sign_for) a request carrying the idempotency key `key` (in
    /// [`IDEMPOTENCY_HEADER`]).
    pub fn sign_keyed(
        &self,
        request: Signed<'_>,
        caller: &str,
        auth: Option<&[u8]>,
        key: Option<&str>,
    ) -> String {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let auth = auth.map_or_else(|| "-".to_owned(), hex::encode);
        self.sign_full(request, false, caller, unix_now(), &nonce, &auth, key)
    }

    /// The header value signing `request` at `timestamp` (Unix seconds) with `nonce`: for
    /// tests and tools. `caller` and `nonce` must not contain spaces.
    pub fn sign_with(
        &self,
        request: Signed<'_>,
        caller: &str,
        timestamp: u64,
        nonce: &str,
    ) -> String {
        self.sign_full(request, false, caller, timestamp, nonce, "-", None)
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_full(
        &self,
        request: Signed<'_>,
        streamed: bool,
        caller: &str,
        timestamp: u64,
        nonce: &str,
        auth: &str,
        key: Option<&str>,
    ) -> String {
        let sig = self
            .mac(&request, streamed, timestamp, caller, nonce, auth, key)
            .finalize()
            .into_bytes();
        format!(
            "v3 {} {caller} {timestamp} {nonce} {auth} {}",
            self.id,
            hex::encode(sig)
        )
    }
}

/// The keys a process signs and verifies with, and the nonces it has accepted.
#[derive(Debug)]
pub(crate) struct ServiceAuth {
    signing: ServiceAuthKey,
    /// Keys still accepted (a rotation in progress), besides the signing key.
    accepted: Vec<ServiceAuthKey>,
    replay: ReplayCache,
}

impl ServiceAuth {
    /// Signs with `signing`; accepts it and `accepted`.
    pub(crate) fn new(signing: ServiceAuthKey, accepted: Vec<ServiceAuthKey>) -> Self {
        ServiceAuth {
            signing,
            accepted,
            replay: ReplayCache::new(NONCES_PER_GENERATION),
        }
    }

    /// The header value signing `request` by `caller`, for the end user whose auth data (its
    /// JSON) is `auth`.
    pub(crate) fn sign(
        &self,
        request: Signed<'_>,
        caller: &str,
        auth: Option<&[u8]>,
        key: Option<&str>,
    ) -> String {
        self.signing.sign_keyed(request, caller, auth, key)
    }

    /// The gateway's signature of a client's request to a raw endpoint, whose body it streams
    /// on unread: everything but the body (`request.body` is ignored). Only a gateway's envelope
    /// may leave the body out, and it grants what the client's own request grants.
    pub(crate) fn sign_streamed(&self, request: Signed<'_>, auth: Option<&[u8]>) -> String {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let auth = auth.map_or_else(|| "-".to_owned(), hex::encode);
        self.signing
            .sign_full(request, true, GATEWAY, unix_now(), &nonce, &auth, None)
    }

    /// The caller named in `header`, unverified: which check the request needs.
    pub(crate) fn claimed_caller(header: &str) -> Option<&str> {
        header.split(' ').nth(2)
    }

    /// The gateway's envelope of a streamed request (see [`sign_streamed`](Self::sign_streamed)),
    /// if `header` is one: valid, fresh, signed as [`GATEWAY`].
    pub(crate) fn verify_streamed(&self, header: &str, request: Signed<'_>) -> Option<Verified> {
        self.verify_full(header, request, true, None, unix_now())
            .filter(|v| v.caller == GATEWAY)
    }

    /// The caller and auth data, if `header` is a valid, fresh, first-seen signature of
    /// `request`.
    #[cfg(test)]
    pub(crate) fn verify(&self, header: &str, request: Signed<'_>) -> Option<Verified> {
        self.verify_keyed(header, request, None)
    }

    /// [`verify`](Self::verify) a request carrying the idempotency key `key`.
    pub(crate) fn verify_keyed(
        &self,
        header: &str,
        request: Signed<'_>,
        key: Option<&str>,
    ) -> Option<Verified> {
        self.verify_full(header, request, false, key, unix_now())
    }

    #[cfg(test)]
    fn verify_at(&self, header: &str, request: Signed<'_>, now: u64) -> Option<Verified> {
        self.verify_full(header, request, false, None, now)
    }

    fn verify_full(
        &self,
        header: &str,
        request: Signed<'_>,
        streamed: bool,
        key: Option<&str>,
        now: u64,
    ) -> Option<Verified> {
        let mut parts = header.split(' ');
        let (
            Some("v3"),
            Some(key_id),
            Some(caller),
            Some(ts),
            Some(nonce),
            Some(auth),
            Some(sig),
            None,
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return None;
        };
        let ts: u64 = ts.parse().ok()?;
        if now.abs_diff(ts) > MAX_SKEW.as_secs() {
            return None;
        }
        let nonce_value = (nonce.len() == 32)
            .then(|| u128::from_str_radix(nonce, 16).ok())
            .flatten()?;
        let signer = std::iter::once(&self.signing)
            .chain(&self.accepted)
            .find(|k| k.id == key_id)?;
        let sig = hex::decode(sig).ok()?;
        // `verify_slice` compares in constant time.
        signer
            .mac(&request, streamed, ts, caller, nonce, auth, key)
            .verify_slice(&sig)
            .ok()?;
        let auth = match auth {
            "-" => None,
            hex_json => Some(hex::decode(hex_json).ok()?),
        };
        let verified = Verified {
            caller: caller.to_owned(),
            auth,
        };
        // A gateway's envelope grants what the client's own request grants, credential
        // included (it travels along): replaying it within the window gains nothing a replay
        // of the client's request would not. It stays out of the cache, so client traffic
        // through a gateway, however heavy, cannot fill it and lock out services' calls.
        if caller == GATEWAY {
            return Some(verified);
        }
        // Only a genuine signature reaches the cache, so forgeries cannot fill it.
        self.replay.first_use(nonce_value, now).then_some(verified)
    }
}

/// The nonces of accepted signatures, for as long as they could verify again.
///
/// A signature verifies from `ts - MAX_SKEW` to `ts + MAX_SKEW`: at most `2 × MAX_SKEW` of the
/// callee's time. Nonces go into the current generation; every `2 × MAX_SKEW` the previous one
/// is dropped and the current one becomes it, so a nonce is remembered for at least the
/// `2 × MAX_SKEW` it could be replayed in, with two hash sets and no per-entry timers. Each
/// generation holds at most `capacity` nonces: past that, signatures are refused (fail closed)
/// until the generation turns, and the log says so. Only holders of the key can get there.
#[derive(Debug)]
struct ReplayCache {
    capacity: usize,
    state: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    /// Which `2 × MAX_SKEW` window `current` belongs to.
    window: u64,
    current: HashSet<u128>,
    previous: HashSet<u128>,
    warned: bool,
}

impl ReplayCache {
    fn new(capacity: usize) -> Self {
        ReplayCache {
            capacity,
            state: Mutex::default(),
        }
    }

    /// Records `nonce`; whether it was not seen before (and there was room for it).
    fn first_use(&self, nonce: u128, now: u64) -> bool {
        let window = now / (2 * MAX_SKEW.as_secs());
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if window != g.window {
            let current = std::mem::take(&mut g.current);
            g.previous = if window == g.window + 1 {
                current
            } else {
                HashSet::new()
            };
            g.window = window;
            g.warned = false;
        }
        if g.previous.contains(&nonce) || g.current.contains(&nonce) {
            return false;
        }
        if g.current.len() >= self.capacity {
            if !g.warned {
                g.warned = true;
                tracing::warn!(
                    "more than {} signed calls in {} s: refusing signed calls until the replay \
                     cache turns over",
                    self.capacity,
                    2 * MAX_SKEW.as_secs()
                );
            }
            return false;
        }
        g.current.insert(nonce);
        true
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

    fn post<'a>(path: &'a str, query: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed {
            method: "POST",
            path,
            query,
            body,
        }
    }

    const NONCE: &str = "000102030405060708090a0b0c0d0e0f";

    #[test]
    fn a_signature_verifies_for_its_method_path_query_and_body_only() {
        let key = ServiceAuthKey::new("secret");
        let body = br#"{"quantity":1}"#;
        let h = key.sign_with(post("/products/1/reserve", "", body), "orders", 1000, NONCE);
        let fresh = || ServiceAuth::new(key.clone(), vec![]);
        let ok = post("/products/1/reserve", "", body);
        assert_eq!(
            fresh().verify_at(&h, ok, 1000).map(|v| v.caller).as_deref(),
            Some("orders")
        );
        for other in [
            post("/products/2/reserve", "", body),
            post("/products/1/reserve", "a=1", body),
            post("/products/1/reserve", "", br#"{"quantity":40}"#),
            Signed {
                method: "GET",
                ..ok
            },
        ] {
            assert_eq!(fresh().verify_at(&h, other, 1000), None, "{other:?}");
        }
    }

    #[test]
    fn a_signature_verifies_once() {
        let auth = ServiceAuth::new(ServiceAuthKey::new("secret"), vec![]);
        let h = auth.sign(post("/x", "", b""), "orders", None, None);
        assert!(auth.verify(&h, post("/x", "", b"")).is_some());
        assert!(auth.verify(&h, post("/x", "", b"")).is_none());
        // A second signature of the same request has its own nonce.
        let again = auth.sign(post("/x", "", b""), "orders", None, None);
        assert!(auth.verify(&again, post("/x", "", b"")).is_some());
    }

    #[test]
    fn nonces_are_remembered_for_the_whole_window_they_could_verify_in() {
        let key = ServiceAuthKey::new("secret");
        let auth = ServiceAuth::new(key.clone(), vec![]);
        // Signed 120 s in the future: valid from its receipt until 240 s later.
        let h = key.sign_with(post("/x", "", b""), "orders", 1120, NONCE);
        assert!(auth.verify_at(&h, post("/x", "", b""), 1000).is_some());
        for later in [1001, 1100, 1200, 1239, 1240] {
            assert!(
                auth.verify_at(&h, post("/x", "", b""), later).is_none(),
                "replayed at {later}"
            );
        }
    }

    #[test]
    fn a_full_replay_cache_fails_closed() {
        let cache = ReplayCache::new(2);
        assert!(cache.first_use(1, 1000));
        assert!(cache.first_use(2, 1000));
        assert!(!cache.first_use(3, 1000));
        assert!(!cache.first_use(1, 1000));
        // The next window has room again, and still knows the last one's nonces.
        assert!(cache.first_use(3, 1240));
        assert!(!cache.first_use(2, 1240));
    }

    #[test]
    fn stale_foreign_or_old_format_signatures_are_rejected() {
        let key = ServiceAuthKey::new("secret");
        let h = key.sign_with(post("/x", "", b""), "orders", 1000, NONCE);
        let fresh = || ServiceAuth::new(key.clone(), vec![]);
        assert!(
            fresh()
                .verify_at(&h, post("/x", "", b""), 1000 + 121)
                .is_none()
        );
        assert!(
            fresh()
                .verify_at(&h, post("/x", "", b""), 1000 - 121)
                .is_none()
        );
        assert!(
            fresh()
                .verify_at(&h, post("/x", "", b""), 1000 + 119)
                .is_some()
        );
        let other = ServiceAuth::new(ServiceAuthKey::new("other"), vec![]);
        assert!(other.verify_at(&h, post("/x", "", b""), 1000).is_none());
        let tampered = h.replacen("orders", "payments", 1);
        assert!(
            fresh()
                .verify_at(&tampered, post("/x", "", b""), 1000)
                .is_none()
        );
        let v2 = h.replacen("v3", "v2", 1);
        assert!(fresh().verify_at(&v2, post("/x", "", b""), 1000).is_none());
        let v1 = "v1 orders 1000 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert!(fresh().verify_at(v1, post("/x", "", b""), 1000).is_none());
        assert!(fresh().verify_at("", post("/x", "", b""), 1000).is_none());
    }

    #[test]
    fn the_auth_data_is_part_of_the_signature() {
        let key = ServiceAuthKey::new("secret");
        let auth = ServiceAuth::new(key.clone(), vec![]);
        let alice = br#"{"userId":"alice"}"#;
        let h = key.sign_for(post("/x", "", b""), GATEWAY, Some(alice));
        let v = auth.verify(&h, post("/x", "", b"")).unwrap();
        assert_eq!(v.auth.as_deref(), Some(&alice[..]));
        assert!(!v.is_internal());
        // Another user's data in the same envelope: the MAC no longer verifies.
        let mallory = hex::encode(br#"{"userId":"mallory"}"#);
        let h = key.sign_for(post("/x", "", b""), "orders", Some(alice));
        let swapped = h.replacen(&hex::encode(alice), &mallory, 1);
        assert!(auth.verify(&swapped, post("/x", "", b"")).is_none());
        // Nor does dropping it.
        let h = key.sign_for(post("/x", "", b""), "orders", Some(alice));
        let dropped = h.replacen(&hex::encode(alice), "-", 1);
        assert!(auth.verify(&dropped, post("/x", "", b"")).is_none());
    }

    #[test]
    fn only_services_signatures_take_room_in_the_replay_cache() {
        let key = ServiceAuthKey::new("secret");
        let full = ServiceAuth {
            signing: key.clone(),
            accepted: vec![],
            replay: ReplayCache::new(0),
        };
        let by_gateway = key.sign_for(post("/x", "", b""), GATEWAY, None);
        assert!(full.verify(&by_gateway, post("/x", "", b"")).is_some());
        let by_service = key.sign(post("/x", "", b""), "orders");
        assert!(full.verify(&by_service, post("/x", "", b"")).is_none());
    }

    #[test]
    fn a_rotated_key_verifies_while_it_is_accepted() {
        let (old, new) = (ServiceAuthKey::new("old"), ServiceAuthKey::new("new"));
        assert_ne!(old.id(), new.id());
        let rotating = ServiceAuth::new(new.clone(), vec![old.clone()]);
        let by_old = old.sign(post("/x", "", b""), "orders");
        let by_new = new.sign(post("/x", "", b""), "orders");
        assert!(rotating.verify(&by_old, post("/x", "", b"")).is_some());
        assert!(rotating.verify(&by_new, post("/x", "", b"")).is_some());
        let rotated = ServiceAuth::new(new.clone(), vec![]);
        let by_old = old.sign(post("/x", "", b""), "orders");
        assert!(rotated.verify(&by_old, post("/x", "", b"")).is_none());
    }

    #[test]
    fn the_idempotency_key_is_covered_by_the_signature() {
        let key = ServiceAuthKey::new("secret");
        // Each verification by a fresh process: a nonce is accepted once per process.
        let fresh = || ServiceAuth::new(key.clone(), vec![]);
        let h = fresh().sign(post("/x", "", b""), "orders", None, Some("run-1/0"));
        let keyed = |k| fresh().verify_keyed(&h, post("/x", "", b""), k);
        assert!(keyed(Some("run-1/0")).is_some());
        assert!(keyed(Some("run-1/1")).is_none(), "another key");
        assert!(keyed(None).is_none(), "the key dropped");
        let unkeyed = fresh().sign(post("/x", "", b""), "orders", None, None);
        let added = fresh().verify_keyed(&unkeyed, post("/x", "", b""), Some("run-1/0"));
        assert!(added.is_none(), "a key added");
    }

    #[test]
    fn a_streamed_envelope_is_the_gateways_only_and_never_a_typed_requests() {
        let key = ServiceAuthKey::new("secret");
        let auth = ServiceAuth::new(key.clone(), vec![]);
        let h = auth.sign_streamed(post("/webhooks/x", "a=1", b""), None);
        // Any body: it is not covered.
        let v = auth.verify_streamed(&h, post("/webhooks/x", "a=1", b"whatever"));
        assert_eq!(v.map(|v| v.caller).as_deref(), Some(GATEWAY));
        // Method, path and query still are.
        assert!(
            auth.verify_streamed(&h, post("/webhooks/y", "a=1", b""))
                .is_none()
        );
        assert!(
            auth.verify_streamed(&h, post("/webhooks/x", "a=2", b""))
                .is_none()
        );
        // Not a signature of a request whose body it would cover (a typed endpoint's).
        assert!(
            auth.verify_keyed(&h, post("/webhooks/x", "a=1", b""), None)
                .is_none()
        );
        // And a service's ordinary signature is no streamed envelope.
        let service = auth.sign(post("/webhooks/x", "", b""), "orders", None, None);
        assert!(
            auth.verify_streamed(&service, post("/webhooks/x", "", b""))
                .is_none()
        );
    }
}
