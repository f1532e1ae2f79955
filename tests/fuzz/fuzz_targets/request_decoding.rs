//! The request decoding path on arbitrary bytes: JSON bodies, query strings, content types and
//! path parameters. Every input decodes to a value that survives a round trip, or fails with
//! `invalid_argument` (a 400): never a panic, never another code.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ovation::{ErrCode, fuzzing};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    user_id: uuid::Uuid,
    quantity: i32,
    total: Option<i64>,
    note: Option<String>,
    tags: Vec<String>,
    nested: Option<Box<Body>>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Query {
    q: String,
    limit: Option<u32>,
    after: Option<uuid::Uuid>,
}

fn must_be_client_error(e: &ovation::Error, what: &str) {
    assert_eq!(e.code(), ErrCode::InvalidArgument, "{what}: {e}");
}

fuzz_target!(|data: &[u8]| {
    match fuzzing::decode_json::<Body>(data) {
        Ok(body) => {
            let again = serde_json::to_vec(&body).expect("a decoded body encodes");
            let back: Body = fuzzing::decode_json(&again).expect("an encoded body decodes");
            assert_eq!(back, body);
        }
        Err(e) => must_be_client_error(&e, "body"),
    }
    if let Err(e) = fuzzing::decode_json::<serde_json::Value>(data) {
        must_be_client_error(&e, "value");
    }
    if let Err(e) = fuzzing::check_content_type(data) {
        must_be_client_error(&e, "content type");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = fuzzing::decode_query::<Query>(text) {
        must_be_client_error(&e, "query");
    }
    for result in [
        fuzzing::parse_param::<uuid::Uuid>(text).err(),
        fuzzing::parse_param::<i64>(text).err(),
        fuzzing::parse_param::<u32>(text).err(),
        fuzzing::parse_param::<String>(text).err(),
    ]
    .into_iter()
    .flatten()
    {
        must_be_client_error(&result, "path parameter");
    }
});
