//! Middleware: async functions around endpoint handlers, for what many endpoints share
//! (authorization rules, auditing, rate limits).
//!
//! ```ignore
//! /// Only admins reach endpoints tagged "admin".
//! #[ovation::middleware(target = tags("admin"))]
//! async fn admins_only(req: middleware::Request, next: middleware::Next) -> Result<middleware::Response, Error> {
//!     match ovation::auth::data::<Session>() {
//!         Some(s) if s.admin => next.run(req).await,
//!         _ => Err(Error::permission_denied("admins only")),
//!     }
//! }
//! ```
//!
//! `target = all` wraps every endpoint; `target = tags("a", "b")` those with one of the tags
//! (`#[api(..., tags = ["a"])]`). A middleware runs where the handler runs (in the callee's
//! process, for a client's request and for a call alike), after authentication and request
//! validation; it sees the endpoint, the auth data ([`crate::auth`]) and the typed request,
//! may answer with an error instead of calling [`Next::run`], and may read or change the
//! typed response. Middleware run outermost first, in the order they are declared (by file,
//! then line). Like a tower `Layer` around a `Service`, with the endpoint's types instead of
//! HTTP's: an app that needs HTTP-level layers puts them in front of the app.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use crate::error::Error;
use crate::registry::{Endpoint, Method};

/// The future a middleware returns.
pub type MiddlewareFuture = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

/// Which endpoints a middleware wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every endpoint.
    All,
    /// Endpoints with at least one of these tags.
    Tags(&'static [&'static str]),
}

/// A middleware, as `#[ovation::middleware]` registers it.
#[derive(Debug)]
pub struct Middleware {
    pub name: &'static str,
    /// `file:line`, which orders middleware.
    pub location: &'static str,
    pub target: Target,
    #[doc(hidden)]
    pub run: fn(Request, Next) -> MiddlewareFuture,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct MiddlewareEntry(pub &'static Middleware);

inventory::collect!(MiddlewareEntry);

/// Every middleware of the app, in declaration order.
fn all() -> &'static [&'static Middleware] {
    static ALL: OnceLock<Vec<&'static Middleware>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<&'static Middleware> = inventory::iter::<MiddlewareEntry>
            .into_iter()
            .map(|e| e.0)
            .collect();
        all.sort_by_key(|m| {
            let (file, line) = m.location.rsplit_once(':').unwrap_or((m.location, "0"));
            (file, line.parse::<u32>().unwrap_or(0))
        });
        all
    })
}

/// The middleware wrapping an endpoint with `tags`, outermost first.
fn wrapping(tags: &[&str]) -> Vec<&'static Middleware> {
    all()
        .iter()
        .copied()
        .filter(|m| match m.target {
            Target::All => true,
            Target::Tags(wanted) => wanted.iter().any(|t| tags.contains(t)),
        })
        .collect()
}

/// An endpoint's request on its way to the handler.
pub struct Request {
    service: &'static str,
    endpoint: &'static str,
    method: Method,
    path: &'static str,
    tags: &'static [&'static str],
    params: Box<dyn Any + Send>,
    request: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// The endpoint's service.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The endpoint's name (its function's).
    pub fn endpoint(&self) -> &'static str {
        self.endpoint
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// The path pattern, as declared (`/users/:id`).
    pub fn path(&self) -> &'static str {
        self.path
    }

    pub fn tags(&self) -> &'static [&'static str] {
        self.tags
    }

    /// Whether the endpoint has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(&tag)
    }

    /// The decoded request, if it is a `T` (the endpoint's request type).
    pub fn request<T: 'static>(&self) -> Option<&T> {
        self.request.downcast_ref()
    }

    /// The decoded request, to change before the handler sees it.
    pub fn request_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.request.downcast_mut()
    }
}

/// The rest of the chain: the next middleware, or the handler.
pub struct Next {
    rest: Vec<&'static Middleware>,
    handler: fn(Request) -> MiddlewareFuture,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.rest.iter().map(|m| m.name).collect();
        f.debug_struct("Next").field("middleware", &names).finish()
    }
}

impl Next {
    /// Passes `req` on and returns what comes back.
    pub fn run(mut self, req: Request) -> MiddlewareFuture {
        if self.rest.is_empty() {
            (self.handler)(req)
        } else {
            let first = self.rest.remove(0);
            (first.run)(req, self)
        }
    }
}

/// An endpoint's typed response on its way back to the caller.
pub struct Response(Box<dyn Any + Send>);

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Response(..)")
    }
}

impl Response {
    /// The response, if it is a `T` (the endpoint's response type).
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// The response, to change before the caller sees it.
    pub fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.0.downcast_mut()
    }
}

/// The middleware that wrap an endpoint of `tags`, outermost first: none in most apps.
pub(crate) fn chain_for(tags: &[&str]) -> Vec<&'static Middleware> {
    if all().is_empty() {
        Vec::new()
    } else {
        wrapping(tags)
    }
}

/// Runs endpoint `E`'s handler inside `chain`, the middleware that wrap it.
pub(crate) fn handle<E: Endpoint>(
    chain: Vec<&'static Middleware>,
    params: E::Params,
    request: E::Request,
) -> impl Future<Output = Result<E::Response, Error>> + Send {
    let req = Request {
        service: E::service(),
        endpoint: E::NAME,
        method: E::METHOD,
        path: E::PATH,
        tags: E::TAGS,
        params: Box::new(params),
        request: Box::new(request),
    };
    let run = Next {
        rest: chain,
        handler: handler::<E>,
    }
    .run(req);
    async move { take_response(run.await?, (E::service(), E::NAME)) }
}

/// The response as the endpoint's type `T`, unless a middleware replaced it.
fn take_response<T: 'static>(
    response: Response,
    (service, name): (&str, &str),
) -> Result<T, Error> {
    match response.0.downcast::<T>() {
        Ok(response) => Ok(*response),
        Err(_) => Err(replaced(service, name, "response")),
    }
}

fn replaced(service: &str, name: &str, what: &str) -> Error {
    Error::internal(format!(
        "a middleware replaced the {what} of {service}.{name} with a value of another type"
    ))
}

fn handler<E: Endpoint>(req: Request) -> MiddlewareFuture {
    let taken = req
        .params
        .downcast::<E::Params>()
        .and_then(|p| req.request.downcast::<E::Request>().map(|r| (*p, *r)));
    match taken {
        Ok((params, request)) => Box::pin(async move {
            let response = E::handle(params, request).await?;
            Ok(Response(Box::new(response)))
        }),
        Err(_) => Box::pin(std::future::ready(Err(replaced(
            E::service(),
            E::NAME,
            "request",
        )))),
    }
}

/// Runs raw endpoint `E`'s handler inside the middleware that wrap it. Middleware see the
/// HTTP request as the request (`req.request::<axum::extract::Request>()`, no params) and the
/// HTTP response as the response.
pub(crate) async fn handle_raw<E: crate::registry::RawEndpoint>(
    request: axum::extract::Request,
) -> Result<axum::response::Response, Error> {
    let chain = if all().is_empty() {
        Vec::new()
    } else {
        wrapping(E::TAGS)
    };
    if chain.is_empty() {
        return Ok(E::handle(request).await);
    }
    let req = Request {
        service: E::service(),
        endpoint: E::NAME,
        method: E::METHOD,
        path: E::PATH,
        tags: E::TAGS,
        params: Box::new(()),
        request: Box::new(request),
    };
    let next = Next {
        rest: chain,
        handler: raw_handler::<E>,
    };
    take_response(next.run(req).await?, (E::service(), E::NAME))
}

fn raw_handler<E: crate::registry::RawEndpoint>(req: Request) -> MiddlewareFuture {
    let taken = req.request.downcast::<axum::extract::Request>();
    Box::pin(async move {
        let request = taken.map_err(|_| replaced(E::service(), E::NAME, "request"))?;
        Ok(Response(Box::new(E::handle(*request).await)))
    })
}
