//! An app with an `auth` endpoint and no auth handler does not start, and its tests fail
//! naming the endpoint. (Not a compile error: a proc macro sees one item, and stable Rust
//! gives it no way to ask whether another module of the crate declares a handler.)

mod svc {
    use ovation::prelude::*;

    #[api(auth, method = "GET", path = "/me")]
    pub async fn me() -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn an_auth_endpoint_without_a_handler_stops_start_up_and_tests() {
    let config = ovation::Config {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let err = ovation::start(config).await.unwrap_err().to_string();
    assert!(
        err.contains("endpoint svc.me") && err.contains("no auth handler"),
        "{err}"
    );
    assert!(err.contains("#[ovation::auth_handler"), "{err}");
    let err = ovation::testing::TestEnv::new().await.unwrap_err();
    assert!(err.message().contains("endpoint svc.me"), "{err}");
}
