//! A call behaves the same wherever its callee runs: values that do not survive JSON, values
//! that cannot be encoded at all, errors and panics give the caller the same outcome when the
//! callee is in the same process as when it is in another one, reached over HTTP.

mod util;

use std::future::Future;

use ovation::Error;
use ovation::testing::{Hosting, TestEnv};
use serde::Serialize;
use serde_json::{Value, json};

/// Endpoints whose types do not all survive the trip; part of this test binary's app only.
mod odd {
    use std::collections::BTreeMap;

    use ovation::prelude::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Skipping {
        pub kept: u32,
        #[serde(skip)]
        pub skipped: u32,
    }

    /// Answers what it was given, and sets the skipped field on the way back.
    #[api(private, method = "POST", path = "/odd/skipping")]
    pub async fn skipping(s: Skipping) -> Result<(Skipping, Skipping), Error> {
        let back = Skipping {
            kept: s.kept,
            skipped: 7,
        };
        Ok((s, back))
    }

    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Reading {
        pub value: f64,
    }

    #[api(private, method = "POST", path = "/odd/reading")]
    pub async fn reading(r: Reading) -> Result<Reading, Error> {
        Ok(r)
    }

    #[api(private, method = "GET", path = "/odd/nan")]
    pub async fn nan() -> Result<Reading, Error> {
        Ok(Reading { value: f64::NAN })
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
    pub struct Point {
        pub x: i32,
        pub y: i32,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Grid {
        /// A map keyed by a struct: JSON objects have string keys only.
        pub cells: BTreeMap<Point, u32>,
    }

    pub fn a_grid() -> Grid {
        Grid {
            cells: BTreeMap::from([(Point { x: 1, y: 2 }, 3)]),
        }
    }

    #[api(private, method = "POST", path = "/odd/grid")]
    pub async fn count(g: Grid) -> Result<u32, Error> {
        Ok(g.cells.len() as u32)
    }

    #[api(private, method = "GET", path = "/odd/grid")]
    pub async fn grid() -> Result<Grid, Error> {
        Ok(a_grid())
    }

    /// Degrees, sent rounded to whole degrees: a lossy `Serialize`.
    #[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
    pub struct Degrees(pub f64);

    impl Serialize for Degrees {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_f64(self.0.round())
        }
    }

    #[api(private, method = "POST", path = "/odd/warmer")]
    pub async fn warmer(d: Degrees) -> Result<Degrees, Error> {
        Ok(Degrees(d.0 + 0.25))
    }

    #[api(private, method = "GET", path = "/odd/named/:name")]
    pub async fn named(name: String) -> Result<String, Error> {
        Ok(name)
    }

    #[api(private, method = "GET", path = "/odd/panic")]
    pub async fn panics() -> Result<(), Error> {
        panic!("a bug in a callee");
    }

    #[api(private, method = "POST", path = "/odd/write")]
    pub async fn write_then_panic() -> Result<(), Error> {
        panic!("a bug in a write");
    }

    /// Steps taken by `two_steps`.
    pub static STEPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    /// A write in two steps with a wait between them.
    #[api(private, method = "POST", path = "/odd/two-steps")]
    pub async fn two_steps() -> Result<(), Error> {
        STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Ids `forget` was called with.
    pub static FORGOTTEN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

    /// Returns nothing: `204 No Content`.
    #[api(public, method = "DELETE", path = "/odd/things/:id")]
    pub async fn forget(id: u32) -> Result<(), Error> {
        FORGOTTEN.lock().unwrap().push(id);
        Ok(())
    }

    #[api(private, method = "GET", path = "/odd/failing")]
    pub async fn failing() -> Result<(), Error> {
        Err(Error::failed_precondition("not yet")
            .with_details(serde_json::json!({ "retryAfter": 3 }))
            .with_source(std::io::Error::other("a cause that stays in the callee")))
    }
}

/// What the caller saw: the response as JSON, or the error's code, message, details and
/// whether it carried a cause.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(Value),
    Err {
        code: String,
        message: String,
        details: Option<Value>,
        has_cause: bool,
    },
}

fn outcome<T: Serialize>(result: Result<T, Error>) -> Outcome {
    match result {
        Ok(v) => Outcome::Ok(serde_json::to_value(v).unwrap()),
        Err(e) => Outcome::Err {
            code: e.code().as_str().to_owned(),
            message: e.message().to_owned(),
            details: e.details().cloned(),
            has_cause: std::error::Error::source(&e).is_some(),
        },
    }
}

/// Makes the same call with `odd` in this process and in another one (a server of its own),
/// asserts both outcomes are equal, and returns it.
async fn both<T, F, Fut>(env: &TestEnv, there: &str, call: F) -> Outcome
where
    T: Serialize,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let here = outcome(env.run(call()).await.unwrap());
    let caller = Hosting::only(["users"]).remote("odd", there);
    let remote = outcome(env.run_hosting(caller, call()).await.unwrap());
    assert_eq!(here, remote, "in-process and remote calls differ");
    here
}

fn internal_naming(outcome: &Outcome, endpoint: &str, field: &str) {
    let Outcome::Err {
        code,
        message,
        details,
        ..
    } = outcome
    else {
        panic!("expected an error, got {outcome:?}");
    };
    assert_eq!(code, "internal", "{outcome:?}");
    assert!(
        message.contains(&format!("`{endpoint}`")) && message.contains(field),
        "{message}"
    );
    assert_eq!(
        details.as_ref().unwrap()["endpoint"],
        endpoint,
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_call_has_the_same_outcome_in_one_process_and_across_two() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::only(["odd"])).await.unwrap();
    let there = server.url();

    // `#[serde(skip)]` reaches the callee, and comes back, as its default.
    let sent = odd::Skipping {
        kept: 1,
        skipped: 5,
    };
    let got = both(&env, &there, || odd::skipping(sent.clone())).await;
    assert_eq!(got, Outcome::Ok(json!([{ "kept": 1 }, { "kept": 1 }])));
    let (received, back) = env.run(odd::skipping(sent.clone())).await.unwrap().unwrap();
    assert_eq!((received.skipped, back.skipped), (0, 0));

    // NaN becomes `null` in JSON, which no f64 decodes: an error at the call site, both ways.
    let nan = both(&env, &there, || {
        odd::reading(odd::Reading { value: f64::NAN })
    })
    .await;
    internal_naming(&nan, "odd.reading", "`value`");
    // ... and in a response.
    let nan = both(&env, &there, odd::nan).await;
    internal_naming(&nan, "odd.nan", "`value`");
    // A finite one travels.
    let fine = both(&env, &there, || odd::reading(odd::Reading { value: 1.5 })).await;
    assert_eq!(fine, Outcome::Ok(json!({ "value": 1.5 })));

    // A map with non-string keys cannot be encoded at all: as a request, and as a response.
    let grid = both(&env, &there, || odd::count(odd::a_grid())).await;
    internal_naming(&grid, "odd.count", "key must be a string");
    let grid = both(&env, &there, odd::grid).await;
    internal_naming(&grid, "odd.grid", "key must be a string");

    // A lossy `Serialize` loses the same both ways: 1.4 travels as 1, the callee adds 0.25,
    // and 1.25 travels back as 1.
    let warmer = both(&env, &there, || odd::warmer(odd::Degrees(1.4))).await;
    assert_eq!(warmer, Outcome::Ok(json!(1.0)));

    // An empty path parameter matches no route over HTTP: refused at the call site both ways.
    let empty = both(&env, &there, || odd::named(String::new())).await;
    internal_naming(&empty, "odd.named", "`name` is empty");
    let named = both(&env, &there, || odd::named("a b/c".into())).await;
    assert_eq!(named, Outcome::Ok(json!("a b/c")));

    // A panicking callee: `internal`, and nothing of the panic.
    for panicked in [
        both(&env, &there, odd::panics).await,
        both(&env, &there, odd::write_then_panic).await,
    ] {
        assert_eq!(
            panicked,
            Outcome::Err {
                code: "internal".into(),
                message: "internal error".into(),
                details: None,
                has_cause: false,
            }
        );
    }

    // An error keeps its code, message and details; its cause stays with the callee.
    let failed = both(&env, &there, odd::failing).await;
    assert_eq!(
        failed,
        Outcome::Err {
            code: "failed_precondition".into(),
            message: "not yet".into(),
            details: Some(json!({ "retryAfter": 3 })),
            has_cause: false,
        }
    );

    drop(server);
    env.close().await;
}

/// A caller that stops waiting does not cut a write in two, wherever the callee runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_runs_to_its_end_when_its_caller_stops_waiting() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::only(["odd"])).await.unwrap();
    let gives_up = || async {
        let call = tokio::time::timeout(Duration::from_millis(250), odd::two_steps()).await;
        assert!(call.is_err(), "the caller gave up first: {call:?}");
    };
    for (round, remote) in [(1, false), (2, true)] {
        if remote {
            let caller = Hosting::only(["users"]).remote("odd", server.url());
            env.run_hosting(caller, gives_up()).await.unwrap();
        } else {
            env.run(gives_up()).await.unwrap();
        }
        assert_eq!(odd::STEPS.load(SeqCst), 2 * round - 1, "between the steps");
        let deadline = Instant::now() + Duration::from_secs(10);
        while odd::STEPS.load(SeqCst) < 2 * round {
            assert!(
                Instant::now() < deadline,
                "the write was cut (remote: {remote})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(server);
    env.close().await;
}

/// `#[ovation::test(split)]`: the body's calls reach the services over HTTP.
#[ovation::test(split)]
async fn a_split_test_calls_every_service_over_http() {
    assert_eq!(odd::named("a b/c".into()).await.unwrap(), "a b/c");
    // The same trip rules as in one process.
    let nan = outcome(odd::reading(odd::Reading { value: f64::NAN }).await);
    internal_naming(&nan, "odd.reading", "`value`");
    // The shop works split: a user made through its service, read back through it.
    let user = shop_app::users::create(shop_app::users::CreateUserParams {
        email: "split@example.com".into(),
        name: "Split".into(),
        password: None,
    })
    .await
    .unwrap();
    assert_eq!(
        shop_app::users::get(user.id).await.unwrap().email,
        "split@example.com"
    );
}

#[tokio::test]
async fn a_split_environment_has_a_server_per_service_and_calls_go_through_them() {
    let env = TestEnv::new().await.unwrap();
    let (body, mut servers) = env.split().await.unwrap();
    let services: Vec<&str> = servers.iter().map(|(s, _)| *s).collect();
    assert!(
        services.contains(&"odd") && services.contains(&"users"),
        "{services:?}"
    );
    let http = reqwest::Client::new();
    for (service, server) in &servers {
        let health = http
            .get(format!("{}/__ovation/health", server.url()))
            .send()
            .await
            .unwrap();
        assert!(health.status().is_success(), "{service}: {health:?}");
    }
    // With `odd`'s server gone, a call to it from the body fails as a call to a stopped
    // process does; the other services still answer.
    assert_eq!(env.run_in(body, odd::named("x".into())).await.unwrap(), "x");
    let at = servers.iter().position(|(s, _)| *s == "odd").unwrap();
    drop(servers.remove(at));
    let call = env.run_in(body, odd::named("x".into())).await;
    assert_eq!(call.unwrap_err().code(), ovation::ErrCode::Unavailable);
    let users = env
        .run_in(body, shop_app::users::get(uuid::Uuid::nil()))
        .await;
    assert_eq!(users.unwrap_err().code(), ovation::ErrCode::NotFound);
    drop(servers);
    env.close().await;
}

#[tokio::test]
async fn an_endpoint_returning_nothing_answers_204_with_no_body() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::only(["odd"])).await.unwrap();

    // Over HTTP: 204, no body, no content type; the OpenAPI document says so.
    let response = reqwest::Client::new()
        .delete(format!("{}/odd/things/7", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.headers().get("content-type").is_none());
    assert!(response.bytes().await.unwrap().is_empty());
    assert!(odd::FORGOTTEN.lock().unwrap().contains(&7));
    let doc: Value = reqwest::get(format!("{}/__ovation/openapi.json", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let responses = &doc["paths"]["/odd/things/{id}"]["delete"]["responses"];
    assert!(
        responses["204"].is_object() && responses["200"].is_null(),
        "{responses:#}"
    );

    // A typed call gets `()` either way.
    let got = both(&env, &server.url(), || odd::forget(8)).await;
    assert_eq!(got, Outcome::Ok(Value::Null));
    drop(server);
    env.close().await;
}
