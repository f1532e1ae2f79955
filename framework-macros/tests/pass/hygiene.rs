// Generated code must name only `::ovation::__private::...`: these shadowing types would break
// any expansion that wrote `Result`, `Option`, `Vec` or `String` unqualified.
#![allow(dead_code)]

use ovation::prelude::*;

struct Result;
struct Option;
struct Vec;
struct String;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Params {
    pub quantity: i32,
}

#[api(public, method = "GET", path = "/items/:id")]
pub async fn get(id: Uuid) -> std::result::Result<Params, Error> {
    let _ = id;
    Ok(Params { quantity: 1 })
}

#[api(method = "POST", path = "/items/:id/*rest")]
pub async fn nested(id: i64, rest: std::string::String, p: Params) -> ovation::Result<()> {
    let _ = (id, rest, p);
    Ok(())
}

#[api(public, method = "GET", path = "/search")]
pub async fn search(q: Params) -> std::result::Result<(), Error> {
    let _ = q;
    Ok(())
}

fn main() {}
