//! The HTTP layer, server and client side.
//!
//! - `router`: the routes of the endpoints a process serves, checked, with the 404 every
//!   unknown, wrong-method or unsigned-private request gets;
//! - `endpoint`: one endpoint's pipeline (access, decoding, handler, response);
//! - `wire`: reading and decoding requests; `observe`: their spans;
//! - `admin`: `/__ovation/*`; `openapi`: the OpenAPI document;
//! - `gateway`: forwarding to the process hosting a service (gateway mode, `ovation run --watch`);
//! - `client`: sending to another process; `listener`: the accept loop and its drain.
//!
//! Every failure a client can cause is answered with an [`Error`](crate::Error) body and a 4xx
//! status: an unknown route or a private endpoint without a valid service signature is 404
//! `not_found` (the same answer, so private endpoints cannot be discovered); bad JSON, a
//! missing or mistyped field, a path parameter that does not parse, a body whose content type
//! is not JSON (curl's default `application/x-www-form-urlencoded` is accepted for a JSON body,
//! as Encore does) are 400 `invalid_argument` naming the field; an oversized body is 413
//! `resource_exhausted`, one too slow to arrive 408. A panicking handler is answered with 500
//! `internal`, and the server keeps serving.

pub(crate) mod admin;
pub(crate) mod client;
pub(crate) mod endpoint;
pub(crate) mod gateway;
pub(crate) mod listener;
pub(crate) mod observe;
pub(crate) mod openapi;
pub(crate) mod raw;
pub(crate) mod router;
pub(crate) mod static_files;
pub(crate) mod stream;
pub(crate) mod wire;

pub(crate) use router::{RouteError, check_routes, router};
