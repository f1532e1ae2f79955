//! `ovation::Error`: the one error type every endpoint returns, with Encore's codes.
//!
//! The codes are gRPC's canonical set, mapped to HTTP statuses as Encore maps them
//! (<https://encore.dev/docs/go/primitives/api-errors>). On the wire an error is
//! `{"code":"not_found","message":"...","details":null}`, and a service calling another over
//! HTTP decodes that body back into an `Error` with the same code, so `e.code()` means the
//! same thing whether the callee ran in this process or in another one.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The canonical error codes, as Encore's `errs` package has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrCode {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl ErrCode {
    /// Every code, in gRPC's numeric order.
    pub const ALL: [ErrCode; 16] = [
        ErrCode::Canceled,
        ErrCode::Unknown,
        ErrCode::InvalidArgument,
        ErrCode::DeadlineExceeded,
        ErrCode::NotFound,
        ErrCode::AlreadyExists,
        ErrCode::PermissionDenied,
        ErrCode::ResourceExhausted,
        ErrCode::FailedPrecondition,
        ErrCode::Aborted,
        ErrCode::OutOfRange,
        ErrCode::Unimplemented,
        ErrCode::Internal,
        ErrCode::Unavailable,
        ErrCode::DataLoss,
        ErrCode::Unauthenticated,
    ];

    /// The HTTP status this code is served with.
    pub fn http_status(self) -> StatusCode {
        match self {
            // 499 is nginx's "client closed request", which Encore uses for `canceled`.
            ErrCode::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ErrCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            ErrCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrCode::NotFound => StatusCode::NOT_FOUND,
            ErrCode::AlreadyExists => StatusCode::CONFLICT,
            ErrCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrCode::FailedPrecondition => StatusCode::BAD_REQUEST,
            ErrCode::Aborted => StatusCode::CONFLICT,
            ErrCode::OutOfRange => StatusCode::BAD_REQUEST,
            ErrCode::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            ErrCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrCode::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            ErrCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }

    /// The code's wire name, e.g. `"not_found"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrCode::Canceled => "canceled",
            ErrCode::Unknown => "unknown",
            ErrCode::InvalidArgument => "invalid_argument",
            ErrCode::DeadlineExceeded => "deadline_exceeded",
            ErrCode::NotFound => "not_found",
            ErrCode::AlreadyExists => "already_exists",
            ErrCode::PermissionDenied => "permission_denied",
            ErrCode::ResourceExhausted => "resource_exhausted",
            ErrCode::FailedPrecondition => "failed_precondition",
            ErrCode::Aborted => "aborted",
            ErrCode::OutOfRange => "out_of_range",
            ErrCode::Unimplemented => "unimplemented",
            ErrCode::Internal => "internal",
            ErrCode::Unavailable => "unavailable",
            ErrCode::DataLoss => "data_loss",
            ErrCode::Unauthenticated => "unauthenticated",
        }
    }

    /// The code a caller should assume for an HTTP status whose body was not an Ovation error
    /// (a proxy's 502, say).
    pub fn from_http_status(status: StatusCode) -> ErrCode {
        match status.as_u16() {
            400 => ErrCode::InvalidArgument,
            401 => ErrCode::Unauthenticated,
            403 => ErrCode::PermissionDenied,
            404 => ErrCode::NotFound,
            409 => ErrCode::AlreadyExists,
            413 | 429 => ErrCode::ResourceExhausted,
            499 => ErrCode::Canceled,
            501 => ErrCode::Unimplemented,
            502 | 503 => ErrCode::Unavailable,
            504 => ErrCode::DeadlineExceeded,
            _ => ErrCode::Unknown,
        }
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every endpoint: a code, a message meant for the caller, and optional
/// structured details.
///
/// ```
/// use ovation::{Error, ErrCode};
///
/// let e = Error::not_found("user not found");
/// assert_eq!(e.code(), ErrCode::NotFound);
/// assert_eq!(e.to_string(), "not_found: user not found");
/// ```
///
/// Errors converted from other errors (`sqlx::Error`, ...) keep their cause for the server's
/// logs, but the cause is never sent to callers: the wire body carries only `code`, `message`
/// and `details`.
#[derive(Serialize, Deserialize)]
pub struct Error {
    code: ErrCode,
    message: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
    /// The HTTP status, where it differs from the code's (413 for an oversized body).
    #[serde(skip)]
    status: Option<StatusCode>,
    #[serde(skip)]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Self {
                Self::new(ErrCode::$code, message)
            }
        )*
    };
}

impl Error {
    /// An error with `code` and a message for the caller.
    pub fn new(code: ErrCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            details: None,
            status: None,
            source: None,
        }
    }

    constructors! {
        /// 400: the request is malformed; the message should say which field and why.
        invalid_argument => InvalidArgument,
        /// 404: the resource (or endpoint) does not exist.
        not_found => NotFound,
        /// 409: a resource with the same identity exists already.
        already_exists => AlreadyExists,
        /// 400: the system is not in a state where the operation can run (e.g. stock too low).
        failed_precondition => FailedPrecondition,
        /// 403: the caller is known but may not do this.
        permission_denied => PermissionDenied,
        /// 401: the caller must authenticate.
        unauthenticated => Unauthenticated,
        /// 429: a quota or size limit was hit.
        resource_exhausted => ResourceExhausted,
        /// 503: a dependency is down; retrying later may help.
        unavailable => Unavailable,
        /// 504: the operation did not finish in time.
        deadline_exceeded => DeadlineExceeded,
        /// 500: a bug or an unexpected failure on the server.
        internal => Internal,
        /// 501: not implemented.
        unimplemented => Unimplemented,
        /// 409: aborted, typically by a concurrency conflict.
        aborted => Aborted,
        /// 400: a value is past the valid range.
        out_of_range => OutOfRange,
        /// 499: the caller canceled.
        canceled => Canceled,
        /// 500: unknown error.
        unknown => Unknown,
        /// 500: unrecoverable data loss.
        data_loss => DataLoss,
    }

    /// Attaches structured details, sent to the caller as `details`.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Keeps `source` as the cause, for the server's logs only.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Serves this error with `status` instead of its code's usual status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrCode {
        self.code
    }

    /// The message meant for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Structured details, if any.
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.details.as_ref()
    }

    /// The HTTP status this error is served with.
    pub fn http_status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.http_status())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Error");
        s.field("code", &self.code).field("message", &self.message);
        if let Some(details) = &self.details {
            s.field("details", details);
        }
        if let Some(source) = &self.source {
            s.field("source", source);
        }
        s.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// Logs a server error with its cause: the one place the cause is seen, since it never
    /// travels to the caller.
    fn log_if_server_error(&self) {
        if !self.http_status().is_server_error() {
            return;
        }
        match &self.source {
            Some(source) => {
                tracing::error!(code = %self.code, message = %self.message, cause = %source, "request failed")
            }
            None => tracing::error!(code = %self.code, message = %self.message, "request failed"),
        }
    }

    /// A copy as a caller receives it: code, message and details, without the cause.
    pub(crate) fn clone_received(&self) -> Error {
        Error {
            code: self.code,
            message: self.message.clone(),
            details: self.details.clone(),
            status: None,
            source: None,
        }
    }

    /// The error as a caller in another process receives it: code, message and details; the
    /// cause stays here (logged if it is a server error) and the status follows from the code.
    /// A call to a service in this process returns this too, so where the callee runs makes
    /// no difference to the caller.
    pub(crate) fn into_received(self) -> Error {
        self.log_if_server_error();
        Error {
            code: self.code,
            message: self.message,
            details: self.details,
            status: None,
            source: None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.http_status();
        self.log_if_server_error();
        let code = self.code;
        let mut response = (status, axum::Json(self)).into_response();
        // For the request span (see `http::observe::record_outcome`).
        response.extensions_mut().insert(code);
        response
    }
}

/// Postgres SQLSTATE codes we translate (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
mod sqlstate {
    pub(super) const UNIQUE_VIOLATION: &str = "23505";
    pub(super) const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub(super) const CHECK_VIOLATION: &str = "23514";
    pub(super) const NOT_NULL_VIOLATION: &str = "23502";
    pub(super) const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub(super) const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub(super) const QUERY_CANCELED: &str = "57014";
    pub(super) const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub(super) const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    pub(super) const UNTRANSLATABLE_CHARACTER: &str = "22P05";
    /// The connection went away: the server shut down (`pg_ctl stop`, a crash restart) or
    /// terminated the backend, or cannot take connections yet.
    pub(super) const ADMIN_SHUTDOWN: &str = "57P01";
    pub(super) const CRASH_SHUTDOWN: &str = "57P02";
    pub(super) const CANNOT_CONNECT_NOW: &str = "57P03";
    /// Class 08, connection exceptions, and class 53, insufficient resources (too many
    /// connections, out of memory or disk).
    pub(super) const CONNECTION_EXCEPTION_CLASS: &str = "08";
    pub(super) const INSUFFICIENT_RESOURCES_CLASS: &str = "53";
}

/// Maps database errors to codes a caller can act on. The SQL text and Postgres' own message
/// stay in the error's source (logged on the server), never in the message sent to callers.
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        let (code, message) = match &err {
            sqlx::Error::RowNotFound => (ErrCode::NotFound, "not found".to_owned()),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some(sqlstate::UNIQUE_VIOLATION) => (
                    ErrCode::AlreadyExists,
                    match db.constraint() {
                        Some(c) => format!("already exists (unique constraint {c})"),
                        None => "already exists".to_owned(),
                    },
                ),
                Some(sqlstate::FOREIGN_KEY_VIOLATION) => (
                    ErrCode::FailedPrecondition,
                    "a referenced resource does not exist".to_owned(),
                ),
                Some(sqlstate::CHECK_VIOLATION | sqlstate::NOT_NULL_VIOLATION) => (
                    ErrCode::InvalidArgument,
                    "a value violates a constraint".to_owned(),
                ),
                Some(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE) => (
                    ErrCode::OutOfRange,
                    "a numeric value is out of range".to_owned(),
                ),
                Some(sqlstate::INVALID_TEXT_REPRESENTATION) => (
                    ErrCode::InvalidArgument,
                    "a value has an invalid format".to_owned(),
                ),
                // Text Postgres cannot store (a NUL character) or that does not fit its
                // column came from the caller: their mistake, not the server's.
                Some(
                    sqlstate::CHARACTER_NOT_IN_REPERTOIRE | sqlstate::UNTRANSLATABLE_CHARACTER,
                ) => (
                    ErrCode::InvalidArgument,
                    "a text value holds a character that cannot be stored (such as NUL)".to_owned(),
                ),
                Some(sqlstate::STRING_DATA_RIGHT_TRUNCATION) => (
                    ErrCode::InvalidArgument,
                    "a text value is too long".to_owned(),
                ),
                Some(sqlstate::QUERY_CANCELED) => (
                    ErrCode::DeadlineExceeded,
                    "the query took too long".to_owned(),
                ),
                // Retryable: the same request succeeds once the server is back.
                Some(
                    sqlstate::ADMIN_SHUTDOWN
                    | sqlstate::CRASH_SHUTDOWN
                    | sqlstate::CANNOT_CONNECT_NOW,
                ) => (
                    ErrCode::Unavailable,
                    "the database is unavailable".to_owned(),
                ),
                Some(code)
                    if code.starts_with(sqlstate::CONNECTION_EXCEPTION_CLASS)
                        || code.starts_with(sqlstate::INSUFFICIENT_RESOURCES_CLASS) =>
                {
                    (
                        ErrCode::Unavailable,
                        "the database is unavailable".to_owned(),
                    )
                }
                _ => (ErrCode::Internal, "internal error".to_owned()),
            },
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => (
                ErrCode::Unavailable,
                "the database is unavailable".to_owned(),
            ),
            _ => (ErrCode::Internal, "internal error".to_owned()),
        };
        Error::new(code, message).with_source(err)
    }
}

impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// `Result` with [`Error`] as its error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of a panic's payload (a `&str` or a `String`), for the error that reports it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_name() {
        for code in ErrCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn statuses_match_encore() {
        let expect = [
            (ErrCode::InvalidArgument, 400),
            (ErrCode::NotFound, 404),
            (ErrCode::AlreadyExists, 409),
            (ErrCode::FailedPrecondition, 400),
            (ErrCode::PermissionDenied, 403),
            (ErrCode::Unauthenticated, 401),
            (ErrCode::ResourceExhausted, 429),
            (ErrCode::Unavailable, 503),
            (ErrCode::DeadlineExceeded, 504),
            (ErrCode::Internal, 500),
            (ErrCode::Unimplemented, 501),
            (ErrCode::Canceled, 499),
        ];
        for (code, status) in expect {
            assert_eq!(code.http_status().as_u16(), status, "{code}");
        }
    }

    #[test]
    fn wire_body_has_code_message_details() {
        let e = Error::not_found("user not found");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "not_found", "message": "user not found", "details": null})
        );
        let back: Error = serde_json::from_value(v).unwrap();
        assert_eq!(back.code(), ErrCode::NotFound);
        assert_eq!(back.message(), "user not found");
    }

    #[test]
    fn row_not_found_is_not_found() {
        assert_eq!(
            Error::from(sqlx::Error::RowNotFound).code(),
            ErrCode::NotFound
        );
    }

    #[test]
    fn other_sqlx_errors_are_internal_without_their_text() {
        let e = Error::from(sqlx::Error::Protocol("SELECT secret FROM t".into()));
        assert_eq!(e.code(), ErrCode::Internal);
        let wire = serde_json::to_string(&e).unwrap();
        assert!(!wire.contains("SELECT"), "{wire}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
