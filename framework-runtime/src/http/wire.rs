//! Requests off the wire: the body read within its limit and deadline, JSON and query strings
//! decoded naming the offending field, the content type checked. Every failure is a 4xx.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::Error;

pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // `curl -d '{...}'` sends application/x-www-form-urlencoded; Encore accepts that for JSON
    // bodies, and so do we, so the commands in guides work as written. The body must still be
    // JSON. Any other type (text/plain, multipart, XML) is a client mistake.
    let json = mime == "application/json"
        || (mime.starts_with("application/") && mime.ends_with("+json"))
        || mime == "application/x-www-form-urlencoded";
    if json {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "the request body must be JSON (Content-Type: application/json), not {mime:?}"
        )))
    }
}

/// Reads a whole request body of at most `limit` bytes by `deadline`. Past the deadline the
/// client is answered 408 (and the accept loop closes its connection): one that sends a byte a
/// second must not hold a connection and a task for ever.
pub(crate) async fn read_body(
    body: Body,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Error> {
    let read = match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(read) => read,
        Err(_) => {
            return Err(
                Error::deadline_exceeded("the request body did not arrive in time")
                    .with_status(StatusCode::REQUEST_TIMEOUT),
            );
        }
    };
    read.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut too_large = false;
        while let Some(c) = cause {
            too_large |= c.is::<http_body_util::LengthLimitError>();
            cause = c.source();
        }
        if too_large {
            Error::resource_exhausted(format!("the request body is larger than {limit} bytes"))
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            Error::invalid_argument(format!("the request body could not be read: {e}"))
        }
    })
}

/// Decodes a JSON request, naming the offending field on failure.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e, bytes))?;
    de.end()
        .map_err(|e| Error::invalid_argument(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Why `bytes` did not decode. Not generic: compiled once, not once per request type.
fn json_error(e: serde_path_to_error::Error<serde_json::Error>, bytes: &[u8]) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        Error::invalid_argument(format!("the request body is not valid JSON: {inner}"))
    } else if bytes == b"null" {
        Error::invalid_argument("the request body is missing: this endpoint takes a JSON body")
    } else if path == "." {
        Error::invalid_argument(format!("invalid request body: {}", strip_position(&inner)))
    } else {
        Error::invalid_argument(format!(
            "invalid field `{path}`: {}",
            strip_position(&inner)
        ))
    }
}

/// serde_json appends " at line L column C", useless to a client that sent one line.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Decodes a query-string request, naming the offending parameter on failure.
pub fn decode_query<T: DeserializeOwned>(query: &str) -> Result<T, Error> {
    check_query(query)?;
    let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(query_error)
}

/// form_urlencoded decodes invalid UTF-8 lossily (to U+FFFD): refuse it instead, as bodies
/// and path parameters do, rather than hand the handler text the client never sent.
fn check_query(query: &str) -> Result<(), Error> {
    for pair in query.split('&') {
        let plus_as_space = pair.replace('+', " ");
        if percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .is_err()
        {
            let name = pair.split('=').next().unwrap_or(pair);
            return Err(Error::invalid_argument(format!(
                "the query parameter {name:?} is not valid UTF-8"
            )));
        }
    }
    Ok(())
}

fn query_error(e: serde_path_to_error::Error<serde::de::value::Error>) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." {
        Error::invalid_argument(format!("invalid query: {inner}"))
    } else {
        Error::invalid_argument(format!("invalid query parameter `{path}`: {inner}"))
    }
}

/// The answer to an unknown route, a method an endpoint does not take, and a private endpoint
/// without a valid signature alike: 404 `not_found`, so private endpoints cannot be discovered.
pub(crate) fn not_found_response(method: &str, path: &str) -> Response {
    Error::not_found(format!("no endpoint serves {method} {path}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Params {
        user_id: uuid::Uuid,
        quantity: i32,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = decode_json::<Params>(br#"{"userId": "x", "quantity": 1}"#).unwrap_err();
        assert!(e.message().contains("`userId`"), "{}", e.message());
        let e = decode_json::<Params>(br#"{"userId": "6a2f41a3-c54c-fce8-32d2-0324e1c32e22"}"#)
            .unwrap_err();
        assert!(
            e.message().contains("missing field `quantity`"),
            "{}",
            e.message()
        );
        let e = decode_json::<Params>(br#"{"quantity": "#).unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{}", e.message());
        let e = decode_json::<Params>(b"").unwrap_err();
        assert!(e.message().contains("missing"), "{}", e.message());
        let e = decode_json::<Params>(
            br#"{"userId": "6a2f41a3-c54c-fce8-32d2-0324e1c32e22", "quantity": 1} x"#,
        )
        .unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{}", e.message());
    }

    #[test]
    fn query_errors_name_the_parameter() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Q {
            limit: u32,
        }
        let e = decode_query::<Q>("limit=lots").unwrap_err();
        assert!(e.message().contains("`limit`"), "{}", e.message());
        assert_eq!(decode_query::<Q>("limit=5").unwrap().limit, 5);
    }
}
