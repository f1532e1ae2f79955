use ovation::prelude::*;

#[derive(Serialize, Deserialize)]
pub struct Session {
    pub user: String,
}

impl ovation::auth::AuthData for Session {
    fn user_id(&self) -> String {
        self.user.clone()
    }
}

mod users {
    use super::*;

    #[ovation::auth_handler(bearer)]
    async fn by_token(token: String) -> Result<Session, Error> {
        Ok(Session { user: token })
    }
}

mod admin {
    use super::*;

    #[ovation::auth_handler(header = "x-api-key")]
    async fn by_key(key: String) -> Result<Session, Error> {
        Ok(Session { user: key })
    }
}

fn main() {}
