//! A handler that panics or runs too long must not take the server down or hang a client.

mod util;

use ovation::testing::{Hosting, TestEnv};
use util::Client;

/// Endpoints that misbehave on purpose; part of this test binary's app only.
mod chaos {
    use ovation::prelude::*;

    #[api(public, method = "GET", path = "/chaos/panic")]
    pub async fn panic() -> Result<(), Error> {
        panic!("a bug in a handler");
    }

    #[api(auth, method = "GET", path = "/chaos/me")]
    pub async fn me() -> Result<String, Error> {
        Ok("someone".into())
    }

    #[api(public, method = "GET", path = "/chaos/ok/:n")]
    pub async fn ok(n: u32) -> Result<u32, Error> {
        Ok(n + 1)
    }

    /// Steps taken by `two_steps`.
    pub static STEPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    /// A write in two steps with a wait between them, as an order is (stock, then the order).
    #[api(public, method = "POST", path = "/chaos/two-steps")]
    pub async fn two_steps() -> Result<(), Error> {
        STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_server_keeps_serving() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let c = Client::new(server.url());

    let r = c.get("/chaos/panic").await;
    assert_eq!(
        (r.status, r.code(), r.message()),
        (500, "internal", "internal error"),
        "{r:?}"
    );
    let r = c.get("/chaos/ok/41").await;
    assert_eq!((r.status, r.body.as_u64()), (200, Some(42)), "{r:?}");
    // A number too large for u32 in the path: named, 400.
    let r = c.get("/chaos/ok/4294967296").await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{r:?}");
    assert!(r.message().contains("`n`"), "{r:?}");

    drop(server);
    env.close().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_does_not_cut_a_write_in_two() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let wait_for = |steps: u32, why: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while chaos::STEPS.load(SeqCst) < steps {
            assert!(Instant::now() < deadline, "{why}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    // The client sends the request and hangs up once the handler is between its steps.
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&addr).await.unwrap();
    client
        .write_all(
            format!("POST /chaos/two-steps HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    wait_for(1, "the first step never ran").await;
    drop(client);
    assert_eq!(chaos::STEPS.load(SeqCst), 1, "hung up between the steps");
    // Nobody waits for the answer any more, and the handler still runs to its end.
    wait_for(
        2,
        "the handler was dropped with its connection, between its two steps",
    )
    .await;
    drop(server);
    env.close().await;
}

// An `auth` endpoint answers only for a user: not a client without a credential, not a call
// made for nobody; a call made for a user (here in another process) reaches it.
#[tokio::test]
async fn auth_endpoints_refuse_unauthenticated_callers() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let r = Client::new(server.url()).get("/chaos/me").await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");
    let caller = Hosting::only(["users"]).remote("chaos", server.url());
    let nobody = env.run_hosting(caller.clone(), chaos::me()).await.unwrap();
    assert_eq!(
        nobody.unwrap_err().code(),
        ovation::ErrCode::Unauthenticated
    );
    let session = shop_app::users::Session {
        user_id: uuid::Uuid::new_v4(),
        expires_at: i64::MAX,
    };
    let me = env
        .run_hosting(caller, ovation::auth::with_data(session, chaos::me()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(me.unwrap(), "someone");
    drop(server);
    env.close().await;
}

#[tokio::test]
async fn calls_outside_any_runtime_are_an_error_not_a_panic() {
    let err = shop_app::users::get(uuid::Uuid::new_v4())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ovation::ErrCode::Internal);
    assert!(err.message().contains("no Ovation runtime here"), "{err}");
}
