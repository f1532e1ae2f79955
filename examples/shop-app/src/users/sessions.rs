//! Sessions: a user with a password logs in for a token signed with the `SessionKey` secret,
//! valid 24 hours; the app's auth handler turns the token back into the user.
//!
//! Guessing is throttled: after [`MAX_FAILED_LOGINS`] failed logins for an email, the next ones
//! are `resource_exhausted` (429) until a minute has passed since the first failure. The count
//! lives in the cache, so every process hosting `users` sees the same one.

use std::sync::LazyLock;
use std::time::Duration;

use ovation::cache::{CacheCluster, IntKeyspace};

use hmac::{Hmac, Mac};
use ovation::prelude::*;
use sha2::Sha256;

use super::{DB, get};

static SESSION_KEY: Secret = ovation::secret!("SessionKey");

static CACHE: CacheCluster = ovation::cache!("users");

/// Failed logins per email (lower case), counted for a minute from the first failure.
static FAILED_LOGINS: IntKeyspace<String> =
    IntKeyspace::new(&CACHE, "failed-logins/:email").expire_after(Duration::from_secs(60));

/// Failed logins for one email within a minute, after which logins for it are refused.
pub const MAX_FAILED_LOGINS: i64 = 5;

/// How long a session token is valid.
const LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Who a request is made by: the app's auth data.
#[ovation::model]
#[derive(PartialEq)]
pub struct Session {
    pub user_id: Uuid,
    /// When the token stops working, in Unix seconds.
    pub expires_at: i64,
}

impl ovation::auth::AuthData for Session {
    fn user_id(&self) -> String {
        self.user_id.to_string()
    }
}

#[ovation::model]
pub struct CreateSessionParams {
    pub email: String,
    pub password: String,
}

#[ovation::model]
#[derive(PartialEq)]
pub struct SessionToken {
    /// Send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The same answer for a wrong password, an unknown email and a user without a password, so
/// a client cannot tell which emails have accounts.
fn wrong_credentials() -> Error {
    Error::unauthenticated("wrong email or password")
}

/// Logs in: a token for the user with this email and password, valid 24 hours. After
/// [`MAX_FAILED_LOGINS`] failures for an email within a minute, `resource_exhausted` until the
/// minute has passed.
#[api(public, method = "POST", path = "/sessions")]
pub async fn create_session(p: CreateSessionParams) -> Result<SessionToken, Error> {
    let throttle_key = p.email.trim().to_lowercase();
    if FAILED_LOGINS.get(&throttle_key).await?.unwrap_or(0) >= MAX_FAILED_LOGINS {
        return Err(Error::resource_exhausted(
            "too many failed logins for this email; try again in a minute",
        ));
    }
    let row = sqlx::query!(
        "SELECT id, password_hash FROM users WHERE email = $1",
        p.email.trim()
    )
    .fetch_optional(DB.pool())
    .await?;
    // Without a user (or a password) a hash is checked all the same: the answer takes as long.
    let (user, hash) = match row.map(|r| (r.id, r.password_hash)) {
        Some((id, Some(hash))) => (Some(id), hash),
        _ => (None, UNUSABLE_HASH.clone()),
    };
    let matches = verify_password(p.password, hash).await?;
    let Some(user) = user.filter(|_| matches) else {
        FAILED_LOGINS.increment(&throttle_key, 1).await?;
        return Err(wrong_credentials());
    };
    let expires_at = chrono::Utc::now() + LIFETIME;
    Ok(SessionToken {
        token: sign(user, expires_at.timestamp()),
        expires_at,
    })
}

/// The app's auth handler: a valid, unexpired token of a user who still exists.
#[ovation::auth_handler(bearer)]
pub async fn authenticate(token: String) -> Result<Session, Error> {
    let invalid = || Error::unauthenticated("the session token is invalid or expired");
    let session = verify(&token).ok_or_else(invalid)?;
    match get(session.user_id).await {
        Ok(_) => Ok(session),
        // A deleted user's tokens stop working at once.
        Err(e) if e.code() == ErrCode::NotFound => Err(invalid()),
        Err(e) => Err(e),
    }
}

/// `v1.<user id>.<expiry>.<hex HMAC-SHA256 of the rest under SessionKey>`.
fn sign(user: Uuid, expires_at: i64) -> String {
    let payload = format!("v1.{user}.{expires_at}");
    let mac = mac(&payload).finalize().into_bytes();
    format!("{payload}.{}", hex::encode(mac))
}

/// The session a token stands for, if SessionKey signed it and it has not expired.
fn verify(token: &str) -> Option<Session> {
    let (payload, signature) = token.rsplit_once('.')?;
    mac(payload)
        .verify_slice(&hex::decode(signature).ok()?)
        .ok()?;
    let mut parts = payload.split('.');
    let (Some("v1"), Some(user), Some(expires_at), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let session = Session {
        user_id: user.parse().ok()?,
        expires_at: expires_at.parse().ok()?,
    };
    (session.expires_at > chrono::Utc::now().timestamp()).then_some(session)
}

fn mac(payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SESSION_KEY.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    mac
}

/// An argon2id hash (PHC string) of `password`, computed off the async workers.
pub(super) async fn hash_password(password: String) -> Result<String, Error> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(format!("cannot hash the password: {e}")))
    })
    .await
    .map_err(|_| Error::internal("password hashing stopped"))?
}

async fn verify_password(password: String, hash: String) -> Result<bool, Error> {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| Error::internal(format!("a stored password hash is invalid: {e}")))?;
        Ok(argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|_| Error::internal("password checking stopped"))?
}

/// A hash no password matches (its password is random and forgotten), checked when there is
/// no user to check.
static UNUSABLE_HASH: LazyLock<String> = LazyLock::new(|| {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    let random = Uuid::new_v4().to_string();
    argon2::Argon2::default()
        .hash_password(random.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_as_signed_and_until_they_expire() {
        let user = Uuid::new_v4();
        let later = chrono::Utc::now().timestamp() + 60;
        let token = sign(user, later);
        assert_eq!(verify(&token).map(|s| s.user_id), Some(user));
        let other = Uuid::new_v4();
        let forged = token.replacen(&user.to_string(), &other.to_string(), 1);
        assert_eq!(verify(&forged), None);
        let extended = token.replacen(&later.to_string(), &(later + 3600).to_string(), 1);
        assert_eq!(verify(&extended), None);
        assert_eq!(
            verify(&sign(user, chrono::Utc::now().timestamp() - 1)),
            None
        );
        assert_eq!(verify("garbage"), None);
        assert_eq!(verify(""), None);
    }
}
