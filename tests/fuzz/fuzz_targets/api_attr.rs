//! `#[api]` on arbitrary input: the attribute parser, the endpoint checks and the expansion
//! must turn anything into tokens (the expansion, or `compile_error!`s), never panic.
//!
//! The macro crate is a proc-macro crate, which cannot be linked as a library: its modules are
//! compiled into this target from their sources (they only use `proc_macro2`).

#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use proc_macro2::TokenStream;

#[allow(dead_code)]
#[path = "../../../framework-macros/src/api.rs"]
mod api;
#[allow(dead_code)]
#[path = "../../../framework-macros/src/attr.rs"]
mod attr;
#[allow(dead_code)]
#[path = "../../../framework-macros/src/errors.rs"]
mod errors;

/// Functions the attribute goes on when the input is only an attribute.
const ITEMS: [&str; 4] = [
    "pub async fn get(id: Uuid) -> Result<User, Error> { Err(Error::not_found(\"no user\")) }",
    "pub async fn create(p: CreateParams) -> Result<Order, Error> { orders::insert(p).await }",
    "async fn files(bucket: String, key: String, q: Query) -> Result<(), ovation::Error> { Ok(()) }",
    "fn not_async(a: u32, b: u32) -> u32 { a + b }",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `attr \u{1} item`: both fuzzed; otherwise the attribute on one of the fixed items.
    let (attr, item) = match text.split_once('\u{1}') {
        Some((attr, item)) => (attr.to_owned(), item.to_owned()),
        None => {
            let pick = data.first().map_or(0, |b| usize::from(*b) % ITEMS.len());
            (text.to_owned(), ITEMS[pick].to_owned())
        }
    };
    let (Ok(attr), Ok(item)) = (TokenStream::from_str(&attr), TokenStream::from_str(&item)) else {
        return;
    };
    let out = api::expand(attr, item);
    // The output is tokens a compiler reads back.
    assert!(TokenStream::from_str(&out.to_string()).is_ok());
});
