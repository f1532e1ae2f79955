//! The `users` service: accounts, each with a unique email, and their sessions: a user with a
//! password logs in for a token, which the app's auth handler turns back into the user.

use ovation::prelude::*;

use crate::check_text;

mod sessions;

pub use sessions::{
    CreateSessionParams, MAX_FAILED_LOGINS, Session, SessionToken, authenticate, create_session,
};

static DB: Database = ovation::database!("users", migrations = "./migrations");

#[ovation::model]
#[derive(PartialEq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
}

#[ovation::model]
#[derive(garde::Validate)]
pub struct CreateUserParams {
    #[garde(skip)]
    pub email: String,
    #[garde(skip)]
    pub name: String,
    /// To log in with (`POST /sessions`); a user without one cannot log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(chars, min = 8, max = 1024))]
    pub password: Option<String>,
}

/// Creates a user. A second user with the same email is `already_exists`.
#[api(public, method = "POST", path = "/users")]
pub async fn create(p: CreateUserParams) -> Result<User, Error> {
    check_text("email", &p.email, 254)?;
    check_text("name", &p.name, 200)?;
    if !p.email.contains('@') {
        return Err(Error::invalid_argument("`email` must be an email address"));
    }
    let password_hash = match p.password {
        Some(password) => Some(sessions::hash_password(password).await?),
        None => None,
    };
    sqlx::query_as!(
        User,
        "INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3)
         RETURNING id, email, name",
        p.email.trim(),
        p.name.trim(),
        password_hash
    )
    .fetch_one(DB.pool())
    .await
    .map_err(|e| match Error::from(e) {
        e if e.code() == ErrCode::AlreadyExists => Error::already_exists(format!(
            "a user with email {} exists already",
            p.email.trim()
        )),
        e => e,
    })
}

/// Gets a user by id.
#[api(public, method = "GET", path = "/users/:id")]
pub async fn get(id: Uuid) -> Result<User, Error> {
    sqlx::query_as!(User, "SELECT id, email, name FROM users WHERE id = $1", id)
        .fetch_optional(DB.pool())
        .await?
        .ok_or_else(|| Error::not_found(format!("no user {id}")))
}

/// The signed-in user.
#[api(auth, method = "GET", path = "/me", tags = ["account"])]
pub async fn me() -> Result<User, Error> {
    let session = ovation::auth::require::<Session>()?;
    get(session.user_id).await
}

/// Deletes the signed-in user's account; its sessions stop working at once.
#[api(auth, method = "DELETE", path = "/me", tags = ["account"])]
pub async fn delete_me() -> Result<(), Error> {
    let session = ovation::auth::require::<Session>()?;
    sqlx::query!("DELETE FROM users WHERE id = $1", session.user_id)
        .execute(DB.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The guide's TestCreateAndGetUser.
    #[ovation::test]
    async fn create_and_get_user() {
        let user = create(CreateUserParams {
            email: "test@example.com".into(),
            name: "Test User".into(),
            password: None,
        })
        .await
        .unwrap();
        assert_eq!(user.email, "test@example.com");
        let fetched = get(user.id).await.unwrap();
        assert_eq!(fetched, user);
    }

    #[ovation::test]
    async fn duplicate_email_is_already_exists() {
        let p = CreateUserParams {
            email: "dup@example.com".into(),
            name: "A".into(),
            password: None,
        };
        create(p.clone()).await.unwrap();
        let err = create(p).await.unwrap_err();
        assert_eq!(err.code(), ErrCode::AlreadyExists);
        assert!(err.message().contains("dup@example.com"), "{err}");
    }

    #[ovation::test]
    async fn unknown_user_is_not_found() {
        let id = Uuid::new_v4();
        let err = get(id).await.unwrap_err();
        assert_eq!(err.code(), ErrCode::NotFound);
        assert_eq!(err.message(), format!("no user {id}"));
    }

    #[ovation::test]
    async fn invalid_fields_are_invalid_argument() {
        for (email, name) in [("", "A"), ("no-at-sign", "A"), ("a@b.c", "  ")] {
            let err = create(CreateUserParams {
                email: email.into(),
                name: name.into(),
                password: None,
            })
            .await
            .unwrap_err();
            assert_eq!(
                err.code(),
                ErrCode::InvalidArgument,
                "{email:?} {name:?}: {err}"
            );
        }
    }

    // Each test has its own databases: this user is invisible to every other test, and
    // the same email can be created in parallel tests without conflict.
    #[ovation::test]
    async fn tests_are_isolated() {
        let n: i64 = sqlx::query_scalar!("SELECT count(*) AS \"n!\" FROM users")
            .fetch_one(DB.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
        create(CreateUserParams {
            email: "test@example.com".into(),
            name: "Other".into(),
            password: None,
        })
        .await
        .unwrap();
    }
}
