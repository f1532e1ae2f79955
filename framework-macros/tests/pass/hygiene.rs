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


#[derive(Serialize, Deserialize)]
pub struct Session {
    pub user: std::string::String,
}

impl ovation::auth::AuthData for Session {
    fn user_id(&self) -> std::string::String {
        self.user.clone()
    }
}

#[ovation::auth_handler(bearer, cookie = "session")]
async fn authenticate(token: std::string::String) -> std::result::Result<Session, Error> {
    Ok(Session { user: token })
}

#[derive(Serialize, Deserialize, JsonSchema, garde::Validate)]
pub struct Signup {
    #[garde(length(chars, min = 8))]
    pub password: std::string::String,
}

#[api(auth, method = "POST", path = "/signups", tags = ["admin", "audit"])]
pub async fn signup(p: Signup) -> std::result::Result<(), Error> {
    let _ = (p, ovation::auth::data::<Session>());
    Ok(())
}

#[ovation::middleware(target = tags("admin"))]
async fn admins(
    req: ovation::middleware::Request,
    next: ovation::middleware::Next,
) -> std::result::Result<ovation::middleware::Response, Error> {
    next.run(req).await
}

#[ovation::middleware(target = all)]
async fn everything(
    req: ovation::middleware::Request,
    next: ovation::middleware::Next,
) -> ovation::Result<ovation::middleware::Response> {
    next.run(req).await
}

fn main() {}
