//! The auth data: the app's type for who the caller is ([`AuthData`]), its erased form
//! ([`Authenticated`]), and the task-local it travels in while a request is served. It
//! imports nothing of the runtime, so the runtime (`spawn`) and the Pub/Sub engine (which
//! runs handlers for nobody) can carry it without depending on the auth handler's logic.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The app's own type for who the caller is, returned by its auth handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the app's auth data",
    label = "an auth handler returns `Result<T, Error>` where `T: ovation::auth::AuthData`",
    note = "derive `Serialize` and `Deserialize` for `{Self}` and implement `ovation::auth::AuthData` (its `user_id`)"
)]
pub trait AuthData: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The user's id, as traces show it (never a token or anything secret).
    fn user_id(&self) -> String;
}

/// The authenticated end user a request is served for: the handler's data, its user id and
/// its JSON (what travels to another process). Cheap to clone.
#[derive(Clone)]
pub struct Authenticated(Arc<Inner>);

struct Inner {
    user_id: String,
    data: Arc<dyn Any + Send + Sync>,
    json: Vec<u8>,
}

impl std::fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticated")
            .field("user_id", &self.0.user_id)
            .finish_non_exhaustive()
    }
}

impl Authenticated {
    /// Wraps `data`; an error if it cannot be encoded as JSON (so could not travel).
    pub fn new<T: AuthData>(data: T) -> Result<Authenticated, Error> {
        let json = serde_json::to_vec(&data).map_err(|e| {
            Error::internal(format!(
                "the auth data cannot be encoded as JSON, so cannot travel with calls: {e}"
            ))
        })?;
        Ok(Authenticated(Arc::new(Inner {
            user_id: data.user_id(),
            data: Arc::new(data),
            json,
        })))
    }

    /// The user's id.
    pub fn user_id(&self) -> &str {
        &self.0.user_id
    }

    pub(crate) fn json(&self) -> &[u8] {
        &self.0.json
    }
}

/// What generated code turns the handler's outcome into.
#[doc(hidden)]
pub async fn authenticated<T: AuthData>(
    outcome: impl Future<Output = Result<T, Error>>,
) -> Result<Authenticated, Error> {
    Authenticated::new(outcome.await?)
}

/// Decodes auth data that came in a signed envelope.
#[doc(hidden)]
pub fn decode<T: AuthData>(json: &[u8]) -> Result<Authenticated, Error> {
    let data: T = serde_json::from_slice(json).map_err(|e| {
        Error::unauthenticated("the auth data of this call does not decode").with_source(e)
    })?;
    Authenticated::new(data)
}

tokio::task_local! {
    static AUTH: Option<Authenticated>;
}

/// The authenticated user the current code runs for, if any.
pub(crate) fn current() -> Option<Authenticated> {
    AUTH.try_with(Clone::clone).ok().flatten()
}

/// Runs `fut` for `auth` (or for nobody).
pub(crate) fn scope<F: Future>(
    auth: Option<Authenticated>,
    fut: F,
) -> impl Future<Output = F::Output> {
    AUTH.scope(auth, fut)
}

/// The auth data of the request being served, if it was made by an authenticated user (or
/// by code acting for one, see [`with_data`]); `None` for another type than the handler's.
pub fn data<T: AuthData>() -> Option<Arc<T>> {
    current().and_then(|a| a.0.data.clone().downcast::<T>().ok())
}

/// [`data`], or `unauthenticated` when the request has none: for `public` endpoints that
/// need a user on some paths.
pub fn require<T: AuthData>() -> Result<Arc<T>, Error> {
    data::<T>().ok_or_else(|| Error::unauthenticated("this request needs an authenticated user"))
}

/// The id of the authenticated user the current code runs for.
pub fn user_id() -> Option<String> {
    current().map(|a| a.user_id().to_owned())
}

/// Runs `fut` as if serving a request of the user `data` describes: calls it makes carry the
/// auth data, `auth` endpoints accept them. For tests and for work done on a user's behalf
/// outside a request.
pub async fn with_data<T: AuthData, F: Future>(data: T, fut: F) -> Result<F::Output, Error> {
    let auth = Authenticated::new(data)?;
    Ok(AUTH.scope(Some(auth), fut).await)
}
