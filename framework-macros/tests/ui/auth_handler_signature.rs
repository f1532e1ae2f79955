use ovation::prelude::*;

#[derive(Serialize, Deserialize)]
pub struct Session {
    pub user: u32,
}

#[ovation::auth_handler(bearer, cookie = "bad name")]
fn by_token(token: u32) -> Session {
    Session { user: token }
}

fn main() {}
