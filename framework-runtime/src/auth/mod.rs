//! End-user authentication: the app's auth handler, the auth data of the request being served,
//! and how it travels with the calls made while serving it.
//!
//! ```ignore
//! #[derive(Serialize, Deserialize)]
//! pub struct Session { pub user_id: Uuid }
//!
//! impl ovation::auth::AuthData for Session {
//!     fn user_id(&self) -> String { self.user_id.to_string() }
//! }
//!
//! /// Turns the request's bearer token into the user it was issued to.
//! #[ovation::auth_handler(bearer)]
//! async fn authenticate(token: String) -> Result<Session, Error> { ... }
//!
//! #[api(auth, method = "GET", path = "/me")]
//! pub async fn me() -> Result<User, Error> {
//!     let session = ovation::auth::require::<Session>()?;
//!     ...
//! }
//! ```
//!
//! The handler runs once per external request, in the process that received it (the gateway,
//! in a split deployment): for an `auth` endpoint it must succeed, or the answer is its error
//! (`401 unauthenticated` when no credential was sent); a `public` endpoint runs with the auth
//! data when the credential is valid and without it when there is none or the handler answers
//! `unauthenticated`. A call made while serving the request carries the auth data to its
//! callee: in this process in the task context, to another process inside the call's signed
//! envelope (see [`crate::service_auth`]), never in a header a client could set. Pub/Sub
//! messages carry none; [`with_data`] acts for a user where no request does (a test, a job).

use std::future::Future;
use std::pin::Pin;

use axum::http::HeaderMap;

use crate::error::{ErrCode, Error};

pub(crate) mod data;

pub use data::{AuthData, Authenticated, data, require, user_id, with_data};
#[doc(hidden)]
pub use data::{authenticated, decode};
pub(crate) use data::{current, scope};

/// Where the auth handler finds the request's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The cookie of this name.
    Cookie(&'static str),
    /// The header of this name (lower case), e.g. `x-api-key`.
    Header(&'static str),
}

impl Credential {
    /// The credential in `headers`, if it is there and not empty.
    pub(crate) fn read(self, headers: &HeaderMap) -> Option<String> {
        let found = match self {
            Credential::Bearer => headers
                .get_all(axum::http::header::AUTHORIZATION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| token.trim().to_owned())
                }),
            Credential::Cookie(name) => headers
                .get_all(axum::http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (n, value) = pair.trim().split_once('=')?;
                    (n == name).then(|| value.trim().trim_matches('"').to_owned())
                }),
            Credential::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned()),
        };
        found.filter(|token| !token.is_empty())
    }

    /// How a client sends it, for error messages.
    pub(crate) fn describe(self) -> String {
        match self {
            Credential::Bearer => "an `Authorization: Bearer <token>` header".into(),
            Credential::Cookie(name) => format!("the `{name}` cookie"),
            Credential::Header(name) => format!("the `{name}` header"),
        }
    }
}

/// The future an auth handler returns, with its auth data erased.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Authenticated, Error>> + Send>>;

/// The app's auth handler, as `#[ovation::auth_handler]` registers it.
#[derive(Debug)]
pub struct AuthHandler {
    /// `module_path!()` of the declaring module; its service is the handler's.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// Source location, for diagnostics.
    pub location: &'static str,
    /// Where the credential is looked for, in order; the first present is used.
    pub credentials: &'static [Credential],
    #[doc(hidden)]
    pub run: fn(String) -> HandlerFuture,
    #[doc(hidden)]
    pub decode: fn(&[u8]) -> Result<Authenticated, Error>,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct AuthHandlerEntry(pub &'static AuthHandler);

inventory::collect!(AuthHandlerEntry);

/// The app's auth handler. `#[ovation::auth_handler]` makes a second one a compile error; the
/// start-up check reports one anyway, in case two crates each bring theirs.
pub(crate) fn handler() -> Option<&'static AuthHandler> {
    inventory::iter::<AuthHandlerEntry>
        .into_iter()
        .next()
        .map(|e| e.0)
}

/// Why the app's auth set-up is wrong: two handlers, or an `auth` endpoint and no handler.
pub(crate) fn check_setup() -> Result<(), String> {
    let handlers: Vec<&AuthHandler> = inventory::iter::<AuthHandlerEntry>
        .into_iter()
        .map(|e| e.0)
        .collect();
    if let [first, second, ..] = handlers.as_slice() {
        return Err(format!(
            "the app has two auth handlers, {} ({}) and {} ({}): an app has one",
            first.name, first.location, second.name, second.location
        ));
    }
    if handlers.is_empty()
        && let Some(e) = crate::registry::endpoints()
            .into_iter()
            .map(|e| e.info())
            .find(|i| i.access == crate::registry::Access::Auth)
    {
        return Err(format!(
            "endpoint {}.{} ({}) is `auth`, but the app has no auth handler: add an async fn \
             marked `#[ovation::auth_handler(bearer)]` that turns a token into the app's auth \
             data, or make the endpoint `public`",
            e.service, e.name, e.location
        ));
    }
    Ok(())
}

/// Runs the app's auth handler on the credential in `headers`, in the handler's service's
/// context: `Ok(None)` when no credential is there (or the app has no handler).
pub(crate) async fn authenticate(
    rt: &'static crate::runtime::Runtime,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, Error> {
    let Some(handler) = handler() else {
        return Ok(None);
    };
    let Some(token) = handler.credentials.iter().find_map(|c| c.read(headers)) else {
        return Ok(None);
    };
    let service = crate::runtime::service_of(handler.module);
    let run = crate::runtime::scope_in(rt, service, handler.name, (handler.run)(token));
    // The handler's own calls are made for nobody yet.
    let outcome = scope(None, run).await;
    outcome.map(Some)
}

/// Who an endpoint of access `access` runs for, on an external request (one no service
/// signed), decided by `deadline`: the handler's outcome for an `auth` endpoint must be a
/// user, for a `public` one a missing or rejected credential means nobody. A private endpoint
/// never serves one.
pub(crate) async fn for_external_request(
    rt: &'static crate::runtime::Runtime,
    access: crate::registry::Access,
    headers: &HeaderMap,
    deadline: tokio::time::Instant,
) -> Result<Option<Authenticated>, Error> {
    use crate::registry::Access;
    // No handler: nobody, without setting a timer for it.
    if access == Access::Private || (access == Access::Public && handler().is_none()) {
        return Ok(None);
    }
    let outcome = tokio::time::timeout_at(deadline, authenticate(rt, headers))
        .await
        .map_err(|_| Error::deadline_exceeded("authenticating the request took too long"))?;
    match (access, outcome) {
        (Access::Auth, Ok(None)) => Err(missing_credential()),
        (Access::Public, Err(e)) if e.code() == ErrCode::Unauthenticated => Ok(None),
        (_, outcome) => outcome,
    }
}

/// The 401 of an `auth` endpoint reached without a credential.
pub(crate) fn missing_credential() -> Error {
    let how = handler()
        .map(|h| {
            h.credentials
                .iter()
                .map(|c| c.describe())
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .unwrap_or_else(|| "credentials".into());
    Error::unauthenticated(format!("this endpoint needs authentication: send {how}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn credentials_are_read_where_the_handler_says() {
        let h = headers(&[
            ("authorization", "Bearer  abc.def "),
            ("cookie", "theme=dark; session=\"s1\"; other=x"),
            ("x-api-key", "k1"),
        ]);
        assert_eq!(Credential::Bearer.read(&h).as_deref(), Some("abc.def"));
        assert_eq!(
            Credential::Cookie("session").read(&h).as_deref(),
            Some("s1")
        );
        assert_eq!(Credential::Cookie("sess").read(&h), None);
        assert_eq!(
            Credential::Header("x-api-key").read(&h).as_deref(),
            Some("k1")
        );
        let basic = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(Credential::Bearer.read(&basic), None);
        let empty = headers(&[("authorization", "Bearer ")]);
        assert_eq!(Credential::Bearer.read(&empty), None);
        let lower = headers(&[("authorization", "bearer t")]);
        assert_eq!(Credential::Bearer.read(&lower).as_deref(), Some("t"));
    }
}
