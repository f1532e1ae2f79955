//! What crosses the wire in a remote call: path parameters with characters that need escaping,
//! wildcard paths, query-string requests, and a request body, decoded on the other side exactly
//! as the caller sent them.

use ovation::testing::{Hosting, TestEnv};
use shop_app as _;

/// A service hosted by the "remote" runtime of these tests.
mod echo {
    use ovation::prelude::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Search {
        pub q: String,
        pub limit: Option<u32>,
    }

    #[api(method = "GET", path = "/echo/segment/:name")]
    pub async fn segment(name: String) -> Result<String, Error> {
        Ok(name)
    }

    #[api(method = "GET", path = "/echo/files/:bucket/*key")]
    pub async fn file(bucket: String, key: String) -> Result<(String, String), Error> {
        Ok((bucket, key))
    }

    #[api(method = "GET", path = "/echo/search")]
    pub async fn search(s: Search) -> Result<Search, Error> {
        Ok(s)
    }

    #[api(method = "PUT", path = "/echo/body/:n")]
    pub async fn body(n: i64, s: Search) -> Result<(i64, Search), Error> {
        Ok((n, s))
    }

    #[api(method = "DELETE", path = "/echo/fail/:code")]
    pub async fn fail(code: String) -> Result<(), Error> {
        let code: ErrCode = serde_json::from_value(serde_json::Value::String(code))
            .map_err(|_| Error::invalid_argument("unknown code"))?;
        Err(Error::new(code, "failed on purpose").with_details(serde_json::json!({"why": "test"})))
    }
}

#[tokio::test]
async fn remote_calls_carry_every_kind_of_parameter_intact() {
    let env = TestEnv::new().await.unwrap();
    let remote = env.serve(Hosting::only(["echo"])).await.unwrap();
    let caller = Hosting::only(["users"]).remote("echo", remote.url());
    env.run_hosting(caller, async {
        for name in ["plain", "a b", "slash/inside", "ünïcödé", "100%", "?&#=+"] {
            assert_eq!(echo::segment(name.to_owned()).await.unwrap(), name);
        }
        let (bucket, key) = echo::file("b 1".into(), "dir/sub dir/file.txt".into())
            .await
            .unwrap();
        assert_eq!(
            (bucket.as_str(), key.as_str()),
            ("b 1", "dir/sub dir/file.txt")
        );

        let s = echo::Search {
            q: "rust & go = ?".into(),
            limit: Some(3),
        };
        assert_eq!(echo::search(s.clone()).await.unwrap(), s);
        let s = echo::Search {
            q: String::new(),
            limit: None,
        };
        assert_eq!(echo::search(s.clone()).await.unwrap(), s);

        let s = echo::Search {
            q: "body".into(),
            limit: Some(u32::MAX),
        };
        assert_eq!(echo::body(-7, s.clone()).await.unwrap(), (-7, s));

        let err = echo::fail("permission_denied".into()).await.unwrap_err();
        assert_eq!(err.code(), ovation::ErrCode::PermissionDenied);
        assert_eq!(err.message(), "failed on purpose");
        assert_eq!(err.details(), Some(&serde_json::json!({"why": "test"})));
    })
    .await
    .unwrap();
    drop(remote);
    env.close().await;
}

#[tokio::test]
async fn the_same_calls_in_process_give_the_same_results() {
    let env = TestEnv::new().await.unwrap();
    env.run(async {
        assert_eq!(
            echo::segment("slash/inside".into()).await.unwrap(),
            "slash/inside"
        );
        let s = echo::Search {
            q: "x".into(),
            limit: None,
        };
        assert_eq!(echo::search(s.clone()).await.unwrap(), s);
        let err = echo::fail("permission_denied".into()).await.unwrap_err();
        assert_eq!(err.code(), ovation::ErrCode::PermissionDenied);
    })
    .await
    .unwrap();
    env.close().await;
}
