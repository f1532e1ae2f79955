//! The app model: every endpoint `#[api]` declared, registered through `inventory`.
//!
//! `#[api]` implements [`Endpoint`] for a hidden unit struct and submits an
//! [`EndpointEntry`]. The server builds its routes from these entries, `/__ovation/meta` serves
//! them, and the call stubs read the endpoint's service, method and path from the trait.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone, from outside the app.
    Public,
    /// Only the app's own services (and subscriptions); outside requests get 404.
    Private,
    /// Public, but runs only for an authenticated user: the app's auth handler must accept
    /// the request's credential (`401 unauthenticated` otherwise), or a call must be made
    /// for a user.
    Auth,
}

impl Access {
    /// Its name, as the app model spells it: `public`, `private`, `auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Private => "private",
            Access::Auth => "auth",
        }
    }
}

/// What an endpoint exchanges: JSON requests and responses (what `#[api]` makes by default),
/// raw HTTP (`#[api(raw)]`), or typed messages over a WebSocket (`#[api(stream)]`), in one
/// direction or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointKind {
    Typed,
    Raw,
    /// Files of a folder, embedded by `static_files!`.
    Static,
    /// The client sends messages ([`crate::stream::StreamIn`]).
    StreamIn,
    /// The server sends messages ([`crate::stream::StreamOut`]).
    StreamOut,
    /// Both send messages ([`crate::stream::StreamInOut`]).
    StreamInOut,
}

impl EndpointKind {
    /// Its name, as the app model spells it: `typed`, `raw`, `stream-in`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Typed => "typed",
            EndpointKind::Raw => "raw",
            EndpointKind::Static => "static",
            EndpointKind::StreamIn => "stream-in",
            EndpointKind::StreamOut => "stream-out",
            EndpointKind::StreamInOut => "stream-in-out",
        }
    }

    /// Whether it is a WebSocket stream.
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            EndpointKind::StreamIn | EndpointKind::StreamOut | EndpointKind::StreamInOut
        )
    }
}

/// The HTTP methods an endpoint can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl Method {
    /// The method's name, e.g. `"GET"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
        }
    }

    /// Whether the request travels in the body (JSON) rather than in the query string.
    pub fn has_body(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }

    /// Whether the method only reads (RFC 9110 §9.2.1): `GET` and `HEAD`.
    pub fn is_safe(self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }

    pub(crate) fn http(self) -> http::Method {
        match self {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
            Method::Patch => http::Method::PATCH,
            Method::Delete => http::Method::DELETE,
            Method::Head => http::Method::HEAD,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use crate::runtime::service_of;

/// A type an endpoint may take as a path parameter: parsed from and rendered to one segment.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a path parameter",
    label = "path parameters must implement `FromStr` and `Display`",
    note = "use a type such as `String`, `Uuid`, `i64` or `u32`, or implement `FromStr` and `Display`"
)]
pub trait PathParam: Sized {
    /// Parses the (percent-decoded) segment.
    fn parse_param(segment: &str) -> Result<Self, String>;
    /// Renders the value as a segment (before percent-encoding).
    fn render_param(&self) -> String;
}

impl<T> PathParam for T
where
    T: std::str::FromStr + fmt::Display,
    T::Err: fmt::Display,
{
    fn parse_param(segment: &str) -> Result<Self, String> {
        segment.parse().map_err(|e: T::Err| e.to_string())
    }

    fn render_param(&self) -> String {
        self.to_string()
    }
}

/// A type an endpoint may take as its request or return as its response.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as an endpoint's request or response",
    label = "derive `Serialize`, `Deserialize` and `JsonSchema` for this type",
    note = "add `#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]` to `{Self}`"
)]
pub trait Payload: Serialize + DeserializeOwned + JsonSchema + Send + 'static {}

impl<T> Payload for T where T: Serialize + DeserializeOwned + JsonSchema + Send + 'static {}

/// One endpoint, as `#[api]` describes it. Implemented by generated code.
pub trait Endpoint: Send + Sync + 'static {
    /// `module_path!()` of the declaring module; the service is its first module.
    const MODULE: &'static str;
    /// The function's name.
    const NAME: &'static str;
    const METHOD: Method;
    /// The path as written (`/users/:id`).
    const PATH: &'static str;
    const ACCESS: Access;
    /// Names of the path parameters, in path order.
    const PATH_PARAMS: &'static [&'static str];
    /// Whether the function takes a request parameter.
    const HAS_REQUEST: bool;
    /// Tags (`#[api(tags = [...])]`), which select middleware.
    const TAGS: &'static [&'static str] = &[];
    /// Whether the function returns `()` (written so): it answers `204 No Content`, no body.
    const NO_CONTENT: bool = false;
    /// Source location, for diagnostics.
    const LOCATION: &'static str;

    /// The path parameters, as a tuple.
    type Params: Send + 'static;
    type Request: Payload;
    type Response: Payload;

    /// Parses path parameters from their segments (in `PATH_PARAMS` order).
    fn parse_params(segments: &[&str]) -> Result<Self::Params, Error>;
    /// Renders path parameters to segments (in `PATH_PARAMS` order).
    fn render_params(params: &Self::Params) -> Vec<String>;
    /// Checks the decoded request's own rules (see [`crate::validate`]).
    fn validate(request: &Self::Request) -> Result<(), Error> {
        let _ = request;
        Ok(())
    }
    /// Decodes the request from where its method puts it: the JSON `body` (`POST`, `PUT`,
    /// `PATCH`) or the `query` string. Generated for the one place, so the decoder for the
    /// other is not compiled for this endpoint.
    fn decode_request(body: &[u8], query: &str) -> Result<Self::Request, Error>;
    /// Encodes the request where its method puts it (the inverse of `decode_request`).
    fn encode_request(request: &Self::Request) -> Result<EncodedRequest, EncodeError>;

    /// Runs the user's function.
    fn handle(
        params: Self::Params,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, Error>> + Send;

    /// The endpoint's service.
    fn service() -> &'static str {
        const { service_of(Self::MODULE) }
    }

    /// JSON Schemas of the path parameters (in `PATH_PARAMS` order), for those whose type
    /// implements `JsonSchema`.
    fn path_param_schemas() -> Vec<Option<schemars::Schema>> {
        Vec::new()
    }
}

/// A request as it travels (see [`Endpoint::encode_request`]).
#[doc(hidden)]
#[derive(Debug)]
pub enum EncodedRequest {
    /// The endpoint takes no request.
    None,
    /// In the query string (empty when every field was left out).
    Query(String),
    /// As a JSON body.
    Body(Vec<u8>),
}

/// Why a request cannot be encoded: what it cannot be encoded as, and serde's reason.
#[doc(hidden)]
#[derive(Debug)]
pub struct EncodeError {
    pub what: &'static str,
    pub reason: String,
}

/// A request as a JSON body, for [`Endpoint::encode_request`].
#[doc(hidden)]
pub fn encode_json<T: Serialize>(request: &T) -> Result<EncodedRequest, EncodeError> {
    serde_json::to_vec(request)
        .map(EncodedRequest::Body)
        .map_err(|e| EncodeError {
            what: "cannot be encoded as JSON",
            reason: e.to_string(),
        })
}

/// A request as a query string, for [`Endpoint::encode_request`].
#[doc(hidden)]
pub fn encode_query<T: Serialize>(request: &T) -> Result<EncodedRequest, EncodeError> {
    serde_urlencoded::to_string(request)
        .map(EncodedRequest::Query)
        .map_err(|e| EncodeError {
            what: "cannot be encoded as a query",
            reason: e.to_string(),
        })
}

/// Picks a path parameter's JSON Schema when its type has one (see [`ParamSchemaOf`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct ParamSchema<T>(PhantomData<fn() -> T>);

impl<T> ParamSchema<T> {
    pub const NEW: Self = ParamSchema(PhantomData);
}

/// `(&ParamSchema::<T>::NEW).param_schema()` in generated code: the schema when
/// `T: JsonSchema` (this impl, found first by method resolution), else `None`
/// ([`NoParamSchema`], found one auto-reference later).
#[doc(hidden)]
pub trait ParamSchemaOf {
    fn param_schema(&self) -> Option<schemars::Schema>;
}

impl<T: JsonSchema> ParamSchemaOf for ParamSchema<T> {
    fn param_schema(&self) -> Option<schemars::Schema> {
        Some(schemars::schema_for!(T))
    }
}

#[doc(hidden)]
pub trait NoParamSchema {
    fn param_schema(&self) -> Option<schemars::Schema>;
}

impl<T> NoParamSchema for &ParamSchema<T> {
    fn param_schema(&self) -> Option<schemars::Schema> {
        None
    }
}

/// Parses one path parameter, naming it in the error.
#[doc(hidden)]
pub fn parse_param<T: PathParam>(name: &str, segment: Option<&&str>) -> Result<T, Error> {
    let segment = segment
        .ok_or_else(|| Error::invalid_argument(format!("missing path parameter `{name}`")))?;
    T::parse_param(segment).map_err(|e| {
        Error::invalid_argument(format!(
            "invalid path parameter `{name}` ({segment:?}): {e}"
        ))
    })
}

/// What the registry knows of an endpoint, for routing and for the app model.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointInfo {
    pub service: &'static str,
    pub name: &'static str,
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub path_params: &'static [&'static str],
    pub location: &'static str,
    /// `module_path!()` of the declaring module.
    pub module: &'static str,
    /// Answers `204 No Content` (see [`Endpoint::NO_CONTENT`]).
    pub no_content: bool,
    /// Its tags (see [`Endpoint::TAGS`]).
    pub tags: &'static [&'static str],
    pub kind: EndpointKind,
}

/// The object-safe face of an [`Endpoint`], stored in the registry.
pub trait DynEndpoint: Sync {
    fn info(&self) -> EndpointInfo;
    /// The request's JSON Schema (a stream's: its handshake), if it takes one.
    fn request_schema(&self) -> Option<schemars::Schema>;
    /// The response's JSON Schema (a stream's: the messages the server sends); `None` for a
    /// raw endpoint and a stream the server sends nothing on.
    fn response_schema(&self) -> Option<schemars::Schema>;
    /// The JSON Schema of the messages a stream's client sends.
    fn incoming_schema(&self) -> Option<schemars::Schema> {
        None
    }
    /// JSON Schemas of the path parameters, where their types have one.
    fn path_param_schemas(&self) -> Vec<Option<schemars::Schema>>;
    #[doc(hidden)]
    fn route(&self, rt: &'static crate::runtime::Runtime) -> axum::routing::MethodRouter;
}

/// A raw endpoint (`#[api(raw)]`): the HTTP request in, anything `IntoResponse` out.
/// Implemented by generated code.
pub trait RawEndpoint: Send + Sync + 'static {
    const MODULE: &'static str;
    const NAME: &'static str;
    const METHOD: Method;
    const PATH: &'static str;
    const ACCESS: Access;
    const PATH_PARAMS: &'static [&'static str];
    const TAGS: &'static [&'static str] = &[];
    const LOCATION: &'static str;

    /// Runs the user's function (through axum's extractors).
    fn handle(
        request: axum::extract::Request,
    ) -> impl Future<Output = axum::response::Response> + Send;

    fn service() -> &'static str {
        const { service_of(Self::MODULE) }
    }
}

/// A streaming endpoint (`#[api(stream)]`): a handshake like a typed `GET`, then typed messages
/// over a WebSocket. Implemented by generated code.
pub trait StreamEndpoint: Send + Sync + 'static {
    const MODULE: &'static str;
    const NAME: &'static str;
    const PATH: &'static str;
    const ACCESS: Access;
    const PATH_PARAMS: &'static [&'static str];
    const HAS_REQUEST: bool;
    const TAGS: &'static [&'static str] = &[];
    const LOCATION: &'static str;

    type Params: Send + 'static;
    /// The handshake: decoded from the query string.
    type Request: Payload;
    /// What the function takes: `StreamIn`, `StreamOut` or `StreamInOut`.
    type Stream: crate::stream::StreamSide;

    fn parse_params(segments: &[&str]) -> Result<Self::Params, Error>;
    fn render_params(params: &Self::Params) -> Vec<String>;
    fn validate(request: &Self::Request) -> Result<(), Error> {
        let _ = request;
        Ok(())
    }

    /// Runs the user's function on an open stream.
    fn handle(
        params: Self::Params,
        request: Self::Request,
        stream: Self::Stream,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    fn service() -> &'static str {
        const { service_of(Self::MODULE) }
    }

    fn path_param_schemas() -> Vec<Option<schemars::Schema>> {
        Vec::new()
    }
}

/// Connects a [`RawEndpoint`] type to the registry.
#[doc(hidden)]
#[derive(Debug)]
pub struct RawEndpointDecl<E>(PhantomData<fn() -> E>);

impl<E> RawEndpointDecl<E> {
    pub const NEW: Self = RawEndpointDecl(PhantomData);
}

/// Connects a [`StreamEndpoint`] type to the registry.
#[doc(hidden)]
#[derive(Debug)]
pub struct StreamEndpointDecl<E>(PhantomData<fn() -> E>);

impl<E> StreamEndpointDecl<E> {
    pub const NEW: Self = StreamEndpointDecl(PhantomData);
}

/// What a raw endpoint's name stands for in code: nothing callable. Implemented by no type,
/// so calling the name fails to compile with this message.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a raw endpoint cannot be called as a typed stub",
    label = "this calls a raw endpoint (`#[api(raw)]`)",
    note = "a raw endpoint takes and answers plain HTTP, so there is no typed request or response to call it with: send it an HTTP request, or give another service a typed `#[api]` endpoint"
)]
pub trait RawEndpointIsNotCallable {
    fn refuse(self) -> std::convert::Infallible;
}

/// Connects an [`Endpoint`] type to the registry.
#[doc(hidden)]
#[derive(Debug)]
pub struct EndpointDecl<E>(PhantomData<fn() -> E>);

impl<E> EndpointDecl<E> {
    pub const NEW: Self = EndpointDecl(PhantomData);
}

// `impl DynEndpoint for EndpointDecl<E>` is in `http::endpoint`: building an endpoint's route
// is the HTTP layer's business, and the model must not depend on it.

/// A registered endpoint.
pub struct EndpointEntry(pub &'static dyn DynEndpoint);
inventory::collect!(EndpointEntry);

impl fmt::Debug for EndpointEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.info().fmt(f)
    }
}

/// Every endpoint of the app, sorted by service, path and method.
pub fn endpoints() -> Vec<&'static dyn DynEndpoint> {
    let mut all: Vec<&'static dyn DynEndpoint> = inventory::iter::<EndpointEntry>
        .into_iter()
        .map(|e| e.0)
        .collect();
    all.sort_by_key(|e| {
        let i = e.info();
        (i.service, i.path, i.method)
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_parse_with_named_errors() {
        let e = parse_param::<uuid::Uuid>("id", Some(&"not-a-uuid")).unwrap_err();
        assert_eq!(e.code(), crate::ErrCode::InvalidArgument);
        assert!(e.message().contains("`id`"), "{}", e.message());
        let n: i64 = parse_param("n", Some(&"42")).unwrap();
        assert_eq!(n, 42);
    }
}
