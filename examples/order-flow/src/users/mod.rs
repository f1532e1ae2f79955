//! The `users` service.

use ovation::prelude::*;

static DB: Database = ovation::database!("users", migrations = "./migrations");

#[ovation::model(row)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
}

#[ovation::model]
pub struct CreateUserParams {
    pub email: String,
    pub name: String,
}

/// Creates a user.
#[api(public, method = "POST", path = "/users")]
pub async fn create(p: CreateUserParams) -> Result<User, Error> {
    let user = sqlx::query_as::<_, User>(
        "INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id, email, name",
    )
    .bind(p.email.trim())
    .bind(p.name.trim())
    .fetch_one(DB.pool())
    .await?;
    Ok(user)
}

/// Gets a user by id: for the other services only.
#[api(method = "GET", path = "/users/:id")]
pub async fn get(id: Uuid) -> Result<User, Error> {
    sqlx::query_as::<_, User>("SELECT id, email, name FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(DB.pool())
        .await?
        .ok_or_else(|| Error::not_found("user not found"))
}
