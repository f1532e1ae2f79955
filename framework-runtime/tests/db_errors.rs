//! Database failures a caller can retry are 503 `unavailable`, not 500: a connection the
//! server terminated (what a restart of Postgres does to every open connection), against a
//! real Postgres.

use ovation::ErrCode;
use ovation::sqlx::{self, Connection, PgConnection};

#[tokio::test]
async fn a_connection_the_server_terminated_is_unavailable() {
    let server = ovation::testing::test_server().await.unwrap();
    let mut victim = PgConnection::connect_with(&server.options("postgres"))
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .unwrap();
    let mut admin = PgConnection::connect_with(&server.options("postgres"))
        .await
        .unwrap();
    // What `pg_ctl stop` or a crash restart does to each backend: SQLSTATE 57P01.
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(terminated);
    let err = sqlx::query("SELECT 1")
        .execute(&mut victim)
        .await
        .unwrap_err();
    let err = ovation::Error::from(err);
    assert_eq!(err.code(), ErrCode::Unavailable, "{err:?}");
    assert_eq!(err.http_status(), 503);
    assert_eq!(err.message(), "the database is unavailable");

    // Another database error stays internal, with Postgres' text kept out of the message.
    let err = sqlx::query("SELECT * FROM no_such_table")
        .execute(&mut admin)
        .await
        .unwrap_err();
    let err = ovation::Error::from(err);
    assert_eq!(
        (err.code(), err.message()),
        (ErrCode::Internal, "internal error")
    );
    admin.close().await.unwrap();
}
