//! Durable workflows against a real Postgres, with "processes" as runtimes of one test: a run
//! whose process stops is taken over by another, which replays the completed steps (a counter
//! proves they ran once) and runs the rest; compensations run newest first and are retried, also
//! for an error the function returns after its last step;
//! final errors are not retried, retryable ones are; a durable sleep survives a restart; a run
//! whose code changed stops with an error naming the step; idempotency keys reach the callee,
//! in this process and over HTTP; an id runs once; a failed run is retried from its failed step.

use std::time::{Duration, Instant};

use ovation::sqlx::{self, PgPool};
use ovation::testing::{Hosting, TestEnv};
use ovation::workflow::{RunState, StepState};
use ovation::{ErrCode, Error};

/// What the steps did, by test tag: shared by every runtime of the test process.
mod log {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    static EVENTS: LazyLock<Mutex<HashMap<String, Vec<String>>>> = LazyLock::new(Default::default);
    static OPEN: LazyLock<Mutex<Vec<String>>> = LazyLock::new(Default::default);

    pub fn push(tag: &str, event: impl Into<String>) -> usize {
        let mut all = EVENTS.lock().unwrap();
        let events = all.entry(tag.to_owned()).or_default();
        events.push(event.into());
        events.len()
    }

    pub fn events(tag: &str) -> Vec<String> {
        EVENTS.lock().unwrap().get(tag).cloned().unwrap_or_default()
    }

    pub fn count(tag: &str, event: &str) -> usize {
        events(tag).iter().filter(|e| *e == event).count()
    }

    pub fn open(tag: &str) {
        OPEN.lock().unwrap().push(tag.to_owned());
    }

    pub fn is_open(tag: &str) -> bool {
        OPEN.lock().unwrap().iter().any(|t| t == tag)
    }
}

mod flows {
    use std::time::Duration;

    use ovation::prelude::*;
    use ovation::workflow::{Retry, step};

    use super::log;

    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Input {
        pub tag: String,
    }

    fn input(tag: &str) -> Input {
        Input {
            tag: tag.to_owned(),
        }
    }

    /// Waits until the test opens the gate of `tag`.
    async fn gate(tag: String) -> Result<(), Error> {
        log::push(&tag, "gate");
        while !log::is_open(&tag) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Counts, then waits at a gate, then counts again.
    #[ovation::workflow]
    pub async fn gated(p: Input) -> Result<usize, Error> {
        let first = step("count", || {
            std::future::ready(Ok(log::push(&p.tag, "count")))
        })
        .await?;
        step("gate", || gate(p.tag.clone())).await?;
        let key = step("key", || {
            std::future::ready(Ok(ovation::idempotency_key().unwrap_or_default()))
        })
        .await?;
        log::push(&p.tag, format!("key {key}"));
        step("after", || {
            std::future::ready(Ok(log::push(&p.tag, "after")))
        })
        .await?;
        Ok(first)
    }

    #[api(public, method = "POST", path = "/gated/:tag")]
    pub async fn start_gated(tag: String) -> Result<String, Error> {
        gated.start_with_id(&tag, input(&tag)).await
    }

    /// Two undoable steps, then one that fails: with a final error, or (`retryable`) with one
    /// that outlasts its retries. The second undo fails twice before it succeeds.
    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Saga {
        pub tag: String,
        pub retryable: bool,
    }

    #[ovation::workflow]
    pub async fn saga(p: Saga) -> Result<(), Error> {
        let tag = p.tag.clone();
        step("one", || std::future::ready(Ok(log::push(&p.tag, "one"))))
            .compensate_with({
                let tag = tag.clone();
                move || {
                    log::push(&tag, "undo one");
                    std::future::ready(Ok(()))
                }
            })
            .await?;
        step("two", || std::future::ready(Ok(log::push(&p.tag, "two"))))
            .compensate_with({
                let tag = tag.clone();
                move || {
                    let n = log::push(&tag, "undo two");
                    let fails = log::count(&tag, "undo two") <= 2;
                    std::future::ready(if fails {
                        Err(Error::unavailable(format!("undo two failed ({n})")))
                    } else {
                        Ok(())
                    })
                }
            })
            .await?;
        let retryable = p.retryable;
        step("three", || {
            log::push(&p.tag, "three");
            std::future::ready(Err::<(), _>(if retryable {
                Error::unavailable("the bank is down")
            } else {
                Error::failed_precondition("payment declined")
            }))
        })
        .retry(Retry {
            attempts: 3,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        })
        .compensate_with({
            let tag = tag.clone();
            move || {
                log::push(&tag, "undo three");
                std::future::ready(Ok(()))
            }
        })
        .await?;
        Ok(())
    }

    /// A step that fails with `unavailable` `fails` times, then succeeds.
    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Flaky {
        pub tag: String,
        pub fails: usize,
    }

    /// An undoable step, then an error of the function's own, after its last step.
    #[ovation::workflow]
    pub async fn regrets(p: Input) -> Result<(), Error> {
        let tag = p.tag.clone();
        step("one", || std::future::ready(Ok(log::push(&p.tag, "one"))))
            .compensate_with(move || {
                log::push(&tag, "undo one");
                std::future::ready(Ok(()))
            })
            .await?;
        Err(Error::failed_precondition("changed its mind"))
    }

    #[ovation::workflow]
    pub async fn flaky(p: Flaky) -> Result<usize, Error> {
        step("flaky", || {
            let n = log::push(&p.tag, "try");
            std::future::ready(if n <= p.fails {
                Err(Error::unavailable(format!("try {n} failed")))
            } else {
                Ok(n)
            })
        })
        .retry(Retry {
            attempts: 5,
            min_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        })
        .await
    }

    /// Refused at its first run (the gate of the tag is closed), accepted once it is open.
    #[ovation::workflow]
    pub async fn refused_once(p: Input) -> Result<(), Error> {
        step("before", || {
            std::future::ready(Ok(log::push(&p.tag, "before")))
        })
        .await?;
        step("check", || {
            log::push(&p.tag, "check");
            std::future::ready(if log::is_open(&p.tag) {
                Ok(())
            } else {
                Err(Error::failed_precondition("not yet"))
            })
        })
        .await
    }

    /// Sleeps 4 s between two steps.
    #[ovation::workflow]
    pub async fn sleeper(p: Input) -> Result<(), Error> {
        step("before", || {
            std::future::ready(Ok(log::push(&p.tag, "before")))
        })
        .await?;
        ovation::workflow::sleep(Duration::from_secs(4)).await?;
        step("after", || {
            std::future::ready(Ok(log::push(&p.tag, "after")))
        })
        .await?;
        Ok(())
    }

    #[api(public, method = "POST", path = "/sleeper/:tag")]
    pub async fn start_sleeper(tag: String) -> Result<String, Error> {
        sleeper.start_with_id(&tag, input(&tag)).await
    }

    /// Calls `keys.seen` (a step by itself) and returns the key it saw.
    #[ovation::workflow]
    pub async fn calls_keys(p: Input) -> Result<Option<String>, Error> {
        let seen = crate::keys::seen().await?;
        log::push(&p.tag, "called");
        Ok(seen.key)
    }

    #[ovation::workflow(name = "once")]
    pub async fn counted(p: Input) -> Result<usize, Error> {
        let n = step("count", || {
            std::future::ready(Ok(log::push(&p.tag, "count")))
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(n)
    }
}

mod keys {
    use ovation::prelude::*;

    #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
    pub struct Seen {
        pub key: Option<String>,
    }

    /// The idempotency key of the request.
    #[api(method = "POST", path = "/keys/seen")]
    pub async fn seen() -> Result<Seen, Error> {
        Ok(Seen {
            key: ovation::idempotency_key(),
        })
    }

    /// The same, public: a client's header is not a key.
    #[api(public, method = "POST", path = "/keys/public")]
    pub async fn public_seen() -> Result<Seen, Error> {
        seen().await
    }
}

fn input(tag: &str) -> flows::Input {
    flows::Input {
        tag: tag.to_owned(),
    }
}

fn tag(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

async fn workflow_pool(env: &TestEnv) -> PgPool {
    let server = ovation::testing::test_server().await.unwrap();
    let db = env.database_name("ovation_workflows").unwrap();
    PgPool::connect_with(server.options(db)).await.unwrap()
}

async fn post(url: &str) -> String {
    let response = reqwest::Client::new().post(url).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// Waits (at most `within`) until `done` holds for run `id`'s status.
async fn wait_for(
    env: &TestEnv,
    rt: &'static ovation::tooling::Runtime,
    id: &str,
    within: Duration,
    done: impl Fn(&ovation::workflow::RunStatus) -> bool,
) -> ovation::workflow::RunStatus {
    let start = Instant::now();
    loop {
        if let Ok(status) = env.run_in(rt, ovation::workflow::status(id)).await
            && done(&status)
        {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "run {id} did not get there in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resumes runs in `rt` until one was taken (the stopped owner's connection may take a moment
/// to close).
async fn recover_within(env: &TestEnv, rt: &'static ovation::tooling::Runtime, within: Duration) {
    let start = Instant::now();
    while env
        .run_in(rt, ovation::workflow::recover_now())
        .await
        .unwrap()
        == 0
    {
        assert!(
            start.elapsed() < within,
            "no run to resume within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A process runs the first step, then stops while the second waits; another process, which
/// serves the service, takes the run over within seconds: the first step is replayed (it ran
/// once), the second runs again with the same idempotency key, the rest runs.
#[tokio::test]
async fn a_run_whose_process_stops_is_resumed_by_another_without_rerunning_done_steps() {
    let env = TestEnv::new().await.unwrap();
    let t = tag("takeover");
    let a = env.serve(Hosting::only(["flows"])).await.unwrap();
    let id = post(&format!("{}/gated/{t}", a.url())).await;
    assert_eq!(id, t);
    let observer = env.runtime(Hosting::only(["flows"])).unwrap();
    wait_for(&env, observer, &id, Duration::from_secs(5), |_| {
        log::count(&t, "gate") == 1
    })
    .await;
    a.shutdown().await;
    let status = env
        .run_in(observer, ovation::workflow::status(&id))
        .await
        .unwrap();
    assert_eq!(status.state, RunState::Running);
    assert_eq!(
        status.steps.len(),
        1,
        "only `count` is recorded: {status:?}"
    );

    log::open(&t);
    let stopped = Instant::now();
    let b = env.serve(Hosting::only(["flows"])).await.unwrap();
    let done = wait_for(&env, observer, &id, Duration::from_secs(10), |s| {
        s.state == RunState::Completed
    })
    .await;
    // Taken over at B's first look (a second), not at the lease's end (30 s).
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(done.output, Some(serde_json::json!(1)));
    assert_eq!(done.executions, 2);
    assert_eq!(log::count(&t, "count"), 1, "{:?}", log::events(&t));
    assert_eq!(log::count(&t, "gate"), 2, "{:?}", log::events(&t));
    assert_eq!(log::count(&t, "after"), 1);
    assert!(
        log::events(&t).contains(&format!("key {id}/2")),
        "{:?}",
        log::events(&t)
    );
    let names: Vec<&str> = done.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["count", "gate", "key", "after"]);
    assert!(done.steps.iter().all(|s| s.state == StepState::Succeeded));
    b.shutdown().await;
    env.close().await;
}

/// The function fails at its third step with a final error: the undos of the first two run,
/// newest first, the second retried until it succeeds; the refused step's undo does not run.
#[tokio::test]
async fn compensations_run_newest_first_retried_until_they_succeed() {
    let env = TestEnv::new().await.unwrap();
    let t = tag("saga");
    let rt = env.runtime(Hosting::only(["flows"])).unwrap();
    let saga = flows::Saga {
        tag: t.clone(),
        retryable: false,
    };
    let err = env
        .run_in(rt, flows::saga.run_with_id(&t, saga))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (ErrCode::FailedPrecondition, "payment declined")
    );
    assert_eq!(
        log::events(&t),
        [
            "one", "two", "three", "undo two", "undo two", "undo two", "undo one"
        ]
    );
    let status = env.run_in(rt, ovation::workflow::status(&t)).await.unwrap();
    assert_eq!(status.state, RunState::Failed);
    assert_eq!(status.error.unwrap().message(), "payment declined");
    let undone: Vec<bool> = status
        .steps
        .iter()
        .map(|s| s.compensated_at.is_some())
        .collect();
    assert_eq!(undone, [true, true, false]);
    assert_eq!(status.steps[1].undo_attempts, 3);
    assert_eq!(status.steps[2].attempts, 1, "a final error is not retried");
    env.close().await;
}

/// The function returns an error after its last step succeeded: that step, whose checkpoint
/// was not written yet (it goes with the run's outcome), is recorded, then undone.
#[tokio::test]
async fn an_error_after_the_last_step_records_that_step_and_undoes_it() {
    let env = TestEnv::new().await.unwrap();
    let t = tag("regrets");
    let rt = env.runtime(Hosting::only(["flows"])).unwrap();
    let err = env
        .run_in(rt, flows::regrets.run_with_id(&t, input(&t)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (ErrCode::FailedPrecondition, "changed its mind")
    );
    assert_eq!(log::events(&t), ["one", "undo one"]);
    let status = env.run_in(rt, ovation::workflow::status(&t)).await.unwrap();
    assert_eq!(status.state, RunState::Failed);
    assert_eq!(status.steps.len(), 1, "{status:?}");
    assert_eq!(status.steps[0].name, "one");
    assert_eq!(status.steps[0].state, StepState::Succeeded);
    assert!(status.steps[0].compensated_at.is_some(), "{status:?}");
    assert_eq!(status.steps[0].undo_attempts, 1);
    env.close().await;
}

/// A step that fails with a retryable error until its attempts run out may have done its
/// work: its own undo runs too, before the others.
#[tokio::test]
async fn a_step_out_of_retries_is_undone_with_the_others() {
    let env = TestEnv::new().await.unwrap();
    let t = tag("saga-retryable");
    let rt = env.runtime(Hosting::only(["flows"])).unwrap();
    let saga = flows::Saga {
        tag: t.clone(),
        retryable: true,
    };
    let err = env.run_in(rt, flows::saga.run(saga)).await.unwrap_err();
    assert_eq!(err.code(), ErrCode::Unavailable);
    assert_eq!(
        log::events(&t),
        [
            "one",
            "two",
            "three",
            "three",
            "three",
            "undo three",
            "undo two",
            "undo two",
            "undo two",
            "undo one"
        ]
    );
    env.close().await;
}

/// Retryable errors are retried with backoff; the attempts are recorded.
#[tokio::test]
async fn retryable_errors_are_retried() {
    let env = TestEnv::new().await.unwrap();
    let t = tag("flaky");
    let rt = env.runtime(Hosting::only(["flows"])).unwrap();
    let flaky = flows::Flaky {
        tag: t.clone(),
        fails: 2,
    };
    let n = env
        .run_in(rt, flows::flaky.run_with_id(&t, flaky))
        .await
        .unwrap();
    assert_eq!(n, 3);
    let status = env.run_in(rt, ovation::workflow::status(&t)).await.unwrap();
    assert_eq!(
        (status.steps[0].attempts, status.steps[0].state),
        (3, StepState::Succeeded)
    );

    let t2 = tag("flaky-out");
    let flaky = flows::Flaky {
        tag: t2.clone(),
        fails: 99,
    };
    let err = env.run_in(rt, flows::flaky.run(flaky)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (ErrCode::Unavailable, "try 5 failed")
    );
    assert_eq!(log::count(&t2, "try"), 5);
    env.close().await;
}

/// A failed run is retried from its failed step: the step before keeps its output and does
/// not run again. A run that is not failed cannot be retried.
#[tokio::test]
async fn a_failed_run_is_retried_from_its_failed_step() {
    let env = TestEnv::new().await.unwrap();
    let t = tag("retry");
    let rt = env.runtime(Hosting::only(["flows"])).unwrap();
    let err = env
        .run_in(rt, flows::refused_once.run_with_id(&t, input(&t)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrCode::FailedPrecondition);
    log::open(&t);
    env.run_in(rt, ovation::workflow::retry(&t)).await.unwrap();
    assert_eq!(
        env.run_in(rt, ovation::workflow::recover_now())
            .await
            .unwrap(),
        1
    );
    let status = env.run_in(rt, ovation::workflow::status(&t)).await.unwrap();
    assert_eq!(status.state, RunState::Completed);
    assert_eq!(log::events(&t), ["before", "check", "check"]);
    let again = env
        .run_in(rt, ovation::workflow::retry(&t))
        .await
        .unwrap_err();
    assert_eq!(again.code(), ErrCode::FailedPrecondition);
    let unknown = env
        .run_in(rt, ovation::workflow::retry("nope"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), ErrCode::NotFound);
    env.close().await;
}

/// A run sleeping 4 s whose process stops after 1 s ends when its recorded sleep ends, not 4 s
/// after it was resumed.
#[tokio::test]
async fn a_durable_sleep_survives_a_restart() {
    let env = TestEnv::new().await.unwrap();
    let t = tag("sleep");
    let a = env.serve(Hosting::only(["flows"])).await.unwrap();
    post(&format!("{}/sleeper/{t}", a.url())).await;
    let observer = env.runtime(Hosting::only(["flows"])).unwrap();
    wait_for(&env, observer, &t, Duration::from_secs(5), |s| {
        s.steps.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.shutdown().await;
    let b = env.serve(Hosting::only(["flows"])).await.unwrap();
    let done = wait_for(&env, observer, &t, Duration::from_secs(15), |s| {
        s.state == RunState::Completed
    })
    .await;
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(done.steps[1].output.clone().unwrap()).unwrap();
    let after_sleep = done.steps[2].finished_at.unwrap() - until;
    // Slept to the recorded end: a restarted sleep would end ≥ 2 s later (1 s run before the
    // stop, ~1 s to take over).
    assert!(
        after_sleep >= chrono::Duration::zero()
            && after_sleep < chrono::Duration::milliseconds(1500),
        "{after_sleep:?}"
    );
    assert_eq!(log::events(&t), ["before", "after"]);
    b.shutdown().await;
    env.close().await;
}

/// A resumed run whose recorded step at a position is not the one the code now runs stops
/// with an error naming the workflow, the position and both steps; nothing else runs.
#[tokio::test]
async fn a_run_whose_code_changed_stops_naming_the_step() {
    let env = TestEnv::new().await.unwrap();
    let t = tag("diverged");
    let a = env.serve(Hosting::only(["flows"])).await.unwrap();
    post(&format!("{}/gated/{t}", a.url())).await;
    let observer = env.runtime(Hosting::only(["flows"])).unwrap();
    wait_for(&env, observer, &t, Duration::from_secs(5), |_| {
        log::count(&t, "gate") == 1
    })
    .await;
    a.shutdown().await;
    // As if the code that recorded the run had another first step.
    let pool = workflow_pool(&env).await;
    sqlx::query("UPDATE ovation_workflow_steps SET name = 'reserve' WHERE run_id = $1")
        .bind(&t)
        .execute(&pool)
        .await
        .unwrap();
    log::open(&t);
    recover_within(&env, observer, Duration::from_secs(5)).await;
    let status = env
        .run_in(observer, ovation::workflow::status(&t))
        .await
        .unwrap();
    assert_eq!(status.state, RunState::Failed);
    let err = status.error.unwrap();
    assert_eq!(err.code(), ErrCode::FailedPrecondition);
    for part in ["workflow `gated`", "step 0", "`reserve`", "`count`"] {
        assert!(err.message().contains(part), "{part}: {}", err.message());
    }
    assert_eq!(
        log::events(&t),
        ["count", "gate"],
        "nothing ran after the divergence"
    );
    env.close().await;
}

/// A call made by a workflow carries its step's key to the callee: in this process, and
/// over HTTP to another. A client's request cannot set one.
#[tokio::test]
async fn idempotency_keys_reach_the_callee_here_and_over_http() {
    let env = TestEnv::new().await.unwrap();
    let local = env.runtime(Hosting::only(["flows", "keys"])).unwrap();
    let t = tag("keys");
    let seen = env
        .run_in(local, flows::calls_keys.run_with_id(&t, input(&t)))
        .await
        .unwrap();
    assert_eq!(seen, Some(format!("{t}/0")));

    let keys = env.serve(Hosting::only(["keys"])).await.unwrap();
    let split = env
        .runtime(Hosting::only(["flows"]).remote("keys", keys.url()))
        .unwrap();
    let t2 = tag("keys-remote");
    let seen = env
        .run_in(split, flows::calls_keys.run_with_id(&t2, input(&t2)))
        .await
        .unwrap();
    assert_eq!(seen, Some(format!("{t2}/0")));
    let status = env
        .run_in(split, ovation::workflow::status(&t2))
        .await
        .unwrap();
    assert_eq!(status.steps[0].name, "keys.seen");
    assert_eq!(status.steps[0].kind, "call");

    // Outside a workflow, no key; a client's header is no key either.
    let none = env.run_in(local, keys::seen()).await.unwrap();
    assert_eq!(none.key, None);
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/keys/public", keys.url()))
        .header("x-ovation-idempotency-key", "forged/1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response, serde_json::json!({ "key": null }));
    keys.shutdown().await;
    env.close().await;
}

/// Two concurrent starts under one id run it once, and both get its output; `start` returns
/// the id and `result` waits for the output; an unknown id is `not_found`.
#[tokio::test]
async fn an_id_runs_once_and_its_result_can_be_awaited() {
    let env = TestEnv::new().await.unwrap();
    let rt = env.runtime(Hosting::only(["flows"])).unwrap();
    let t = tag("once");
    let (a, b) = env
        .run_in(rt, async {
            tokio::join!(
                flows::counted.run_with_id(&t, input(&t)),
                flows::counted.run_with_id(&t, input(&t))
            )
        })
        .await;
    assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
    assert_eq!(log::count(&t, "count"), 1);
    assert_eq!(flows::counted.name(), "once");

    let t2 = tag("started");
    let id = env
        .run_in(rt, flows::counted.start_with_id(&t2, input(&t2)))
        .await
        .unwrap();
    let n = env.run_in(rt, flows::counted.result(&id)).await.unwrap();
    assert_eq!(n, 1);
    let id = env
        .run_in(rt, flows::counted.start(input(&t2)))
        .await
        .unwrap();
    assert_eq!(env.run_in(rt, flows::counted.result(&id)).await.unwrap(), 2);

    let err = env
        .run_in(rt, flows::counted.result("no-such-run"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrCode::NotFound);
    let err = env.run_in(rt, flows::gated.result(&id)).await.unwrap_err();
    assert_eq!(err.code(), ErrCode::FailedPrecondition, "{err}");
    let err: Error = env
        .run_in(rt, flows::counted.run_with_id("bad id!", input(&t2)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrCode::InvalidArgument);
    env.close().await;
}

/// `/__ovation/workflows` (the dashboard's source) answers signed requests only: the runs with
/// their counts, a run with its steps, and "Retry" of a failed run.
#[tokio::test]
async fn the_admin_endpoints_show_and_retry_runs_for_signed_requests_only() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::only(["flows"])).await.unwrap();
    let rt = env.runtime(Hosting::only(["flows"])).unwrap();
    let t = tag("admin");
    env.run_in(rt, flows::refused_once.run_with_id(&t, input(&t)))
        .await
        .unwrap_err();
    let http = reqwest::Client::new();
    let signed = |method: &'static str, path: String| {
        let signature = env.service_auth_key().sign(
            ovation::tooling::Signed {
                method,
                path: &path,
                query: "",
                body: b"",
            },
            "dashboard",
        );
        http.request(method.parse().unwrap(), format!("{}{path}", server.url()))
            .header(ovation::tooling::HEADER, signature)
            .send()
    };
    for (method, path) in [
        ("GET", "/__ovation/workflows".to_owned()),
        ("GET", format!("/__ovation/workflows/runs/{t}")),
        ("POST", format!("/__ovation/workflows/runs/{t}/retry")),
    ] {
        let unsigned = http
            .request(method.parse().unwrap(), format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(unsigned.status(), 404, "{method} {path}");
    }
    let state: serde_json::Value = signed("GET", "/__ovation/workflows".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        state["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "refused_once" && w["service"] == "flows"),
        "{state}"
    );
    assert!(
        state["counts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["workflow"] == "refused_once" && c["state"] == "failed"),
        "{state}"
    );
    let run: serde_json::Value = signed("GET", format!("/__ovation/workflows/runs/{t}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["state"], "failed");
    assert_eq!(run["error"]["message"], "not yet");
    assert_eq!(run["steps"][1]["name"], "check");
    assert_eq!(run["steps"][1]["state"], "failed");

    log::open(&t);
    let retried = signed("POST", format!("/__ovation/workflows/runs/{t}/retry"))
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    // The serving process resumes it within its next look.
    wait_for(&env, rt, &t, Duration::from_secs(5), |s| {
        s.state == RunState::Completed
    })
    .await;
    let again = signed("POST", format!("/__ovation/workflows/runs/{t}/retry"))
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    let missing = signed("GET", "/__ovation/workflows/runs/nope".into())
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.shutdown().await;
    env.close().await;
}
