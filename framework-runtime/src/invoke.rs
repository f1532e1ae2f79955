//! The one part of a typed endpoint's paths that knows its types: decoding a request as it
//! arrives into the handler's run, and encoding the response that run gives back.
//!
//! A request reaches a typed endpoint from a client (`http::endpoint`) or from a call in this
//! process (`call`), and both hand over the same [`Incoming`]: path segments, and a query or a
//! JSON body. Everything around the decoding (admission, scopes, deadlines, spans, retries,
//! the HTTP exchange) takes a [`Spec`] instead of the endpoint's type, so it is compiled once
//! for the app rather than once per endpoint; per endpoint there is [`invoke`], the call
//! stub's encoding and decoding, and the schemas.

use std::future::Future;
use std::pin::Pin;

use crate::error::Error;
use crate::registry::{Access, Endpoint, Method};

/// A request to a typed endpoint, as its server reads it: the path's values (in
/// `PATH_PARAMS` order), the query string and the body.
pub(crate) struct Incoming<'a> {
    pub segments: &'a [&'a str],
    pub query: &'a str,
    pub body: &'a [u8],
}

/// An endpoint's handler, its request decoded, not yet run: the handler's error (outer), or
/// the JSON of its response, whose encoding may fail on its own (inner). Validation and
/// middleware run within it, where the handler runs.
pub(crate) type Invocation =
    Pin<Box<dyn Future<Output = Result<Result<Vec<u8>, Error>, Error>> + Send + 'static>>;

/// What the paths of a typed endpoint need of it, without its types.
#[derive(Clone, Copy)]
pub(crate) struct Spec {
    pub service: &'static str,
    pub name: &'static str,
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub path_params: &'static [&'static str],
    pub has_request: bool,
    pub no_content: bool,
    /// Decodes a request into its handler's run; a decoding error is the client's
    /// (`invalid_argument`).
    pub invoke: fn(&Incoming<'_>) -> Result<Invocation, Error>,
}

impl Spec {
    pub(crate) fn of<E: Endpoint>() -> Spec {
        Spec {
            service: E::service(),
            name: E::NAME,
            method: E::METHOD,
            path: E::PATH,
            access: E::ACCESS,
            path_params: E::PATH_PARAMS,
            has_request: E::HAS_REQUEST,
            no_content: E::NO_CONTENT,
            invoke: invoke::<E>,
        }
    }
}

/// Decodes `incoming` as `E` takes it, into the run of its handler: the request's own rules
/// checked first, then the middleware that wrap it, then the handler.
fn invoke<E: Endpoint>(incoming: &Incoming<'_>) -> Result<Invocation, Error> {
    let params = E::parse_params(incoming.segments)?;
    let request = E::decode_request(incoming.body, incoming.query)?;
    let chain = crate::middleware::chain_for(E::TAGS);
    Ok(Box::pin(async move {
        E::validate(&request)?;
        let response = if chain.is_empty() {
            E::handle(params, request).await?
        } else {
            crate::middleware::handle::<E>(chain, params, request).await?
        };
        Ok(encode_response(&response, (E::service(), E::NAME)))
    }))
}

/// A response as its server encodes it.
pub(crate) fn encode_response<T: serde::Serialize>(
    response: &T,
    (service, name): (&str, &str),
) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(response).map_err(|e| {
        trip_error(
            (service, name),
            "response",
            "cannot be encoded as JSON",
            e.to_string(),
        )
    })
}

/// A value of a call to `service.name` that cannot make the trip between services:
/// `internal`, naming the endpoint and (in `reason`) the field.
pub(crate) fn trip_error(
    (service, name): (&str, &str),
    part: &str,
    what: &str,
    reason: String,
) -> Error {
    let endpoint = format!("{service}.{name}");
    Error::internal(format!("the {part} of `{endpoint}` {what}: {reason}"))
        .with_details(serde_json::json!({ "endpoint": endpoint, "part": part, "reason": reason }))
}
