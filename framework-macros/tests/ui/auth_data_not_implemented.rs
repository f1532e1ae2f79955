use ovation::prelude::*;

#[derive(Serialize, Deserialize)]
pub struct Session {
    pub user: String,
}

#[ovation::auth_handler(bearer)]
async fn by_token(token: String) -> Result<Session, Error> {
    Ok(Session { user: token })
}

fn main() {}
