//! The cache's keyspaces against a real Redis (the managed `redis-server`, or `REDIS_URL`):
//! expiry, atomic increments, JSON values, lists and sets, isolation between tests running at
//! once, and a Redis that is down answering `unavailable` over HTTP, promptly.

use std::time::{Duration, Instant};

use ovation::ErrCode;
use ovation::testing::TestEnv;

mod counters {
    use std::time::Duration;

    use ovation::cache::{
        CacheCluster, IntKeyspace, ListKeyspace, SetKeyspace, StringKeyspace, StructKeyspace,
    };
    use ovation::prelude::*;

    pub static CACHE: CacheCluster = ovation::cache!("counters");

    pub static HITS: IntKeyspace<String> = IntKeyspace::new(&CACHE, "hits/:page");
    pub static WINDOW: IntKeyspace<String> =
        IntKeyspace::new(&CACHE, "window/:page").expire_after(Duration::from_millis(600));
    pub static NOTES: StringKeyspace<u64> =
        StringKeyspace::new(&CACHE, "notes/:id").expire_after(Duration::from_millis(400));

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Profile {
        pub name: String,
        pub tags: Vec<String>,
    }

    #[derive(Debug, Serialize)]
    pub struct ProfileKey {
        pub user: i64,
        pub locale: String,
    }

    pub static PROFILES: StructKeyspace<ProfileKey, Profile> =
        StructKeyspace::new(&CACHE, "profiles/:user/:locale");
    pub static QUEUE: ListKeyspace<String, Profile> = ListKeyspace::new(&CACHE, "queue/:name");
    pub static SEEN: SetKeyspace<String, u32> = SetKeyspace::new(&CACHE, "seen/:name");

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    pub struct Count {
        pub count: i64,
    }

    /// Counts a hit on `page`.
    #[api(public, method = "POST", path = "/hits/:page")]
    pub async fn hit(page: String) -> Result<Count, Error> {
        Ok(Count {
            count: HITS.increment(&page, 1).await?,
        })
    }
}

use counters::*;

#[ovation::test]
async fn fifty_concurrent_increments_make_fifty() {
    let page = "home".to_owned();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let page = page.clone();
            ovation::spawn(async move { HITS.increment(&page, 1).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().unwrap());
    }
    seen.sort_unstable();
    // Each increment saw a different count: none was lost or counted twice.
    assert_eq!(seen, (1..=50).collect::<Vec<i64>>());
    assert_eq!(HITS.get(&page).await.unwrap(), Some(50));
    assert_eq!(HITS.decrement(&page, 8).await.unwrap(), 42);
    assert!(HITS.delete(&page).await.unwrap());
    assert_eq!(HITS.get(&page).await.unwrap(), None);
    assert!(!HITS.delete(&page).await.unwrap());
}

#[ovation::test]
async fn values_expire_after_the_keyspace_default() {
    NOTES.set(&7, "remember").await.unwrap();
    assert_eq!(NOTES.get(&7).await.unwrap().as_deref(), Some("remember"));
    assert!(!NOTES.set_if_not_exists(&7, "other").await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(NOTES.get(&7).await.unwrap(), None, "expired after 400 ms");
    assert!(NOTES.set_if_not_exists(&7, "again").await.unwrap());
    assert_eq!(NOTES.get(&7).await.unwrap().as_deref(), Some("again"));
}

#[ovation::test]
async fn a_counter_window_counts_from_its_first_increment() {
    let page = "login".to_owned();
    assert_eq!(WINDOW.increment(&page, 1).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // A later increment does not extend the window...
    assert_eq!(WINDOW.increment(&page, 1).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(450)).await;
    // ...so 800 ms after the first, the 600 ms window is over.
    assert_eq!(WINDOW.get(&page).await.unwrap(), None);
    assert_eq!(WINDOW.increment(&page, 1).await.unwrap(), 1);
}

#[ovation::test]
async fn struct_values_round_trip_as_json_under_struct_keys() {
    let fr = ProfileKey {
        user: 1,
        locale: "fr".into(),
    };
    let en = ProfileKey {
        user: 1,
        locale: "en".into(),
    };
    let profile = Profile {
        name: "Zoé".into(),
        tags: vec!["a/b".into(), "%".into()],
    };
    assert_eq!(PROFILES.get(&fr).await.unwrap(), None);
    PROFILES.set(&fr, &profile).await.unwrap();
    assert_eq!(PROFILES.get(&fr).await.unwrap(), Some(profile.clone()));
    assert_eq!(PROFILES.get(&en).await.unwrap(), None, "another key");
    assert!(!PROFILES.set_if_not_exists(&fr, &profile).await.unwrap());
    assert!(PROFILES.set_if_not_exists(&en, &profile).await.unwrap());
}

#[ovation::test]
async fn lists_and_sets_keep_their_values() {
    let q = "jobs".to_owned();
    let job = |n: &str| Profile {
        name: n.into(),
        tags: vec![],
    };
    assert_eq!(QUEUE.push_back(&q, &job("b")).await.unwrap(), 1);
    assert_eq!(QUEUE.push_back(&q, &job("c")).await.unwrap(), 2);
    assert_eq!(QUEUE.push_front(&q, &job("a")).await.unwrap(), 3);
    let names: Vec<String> = QUEUE
        .items(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(QUEUE.pop_front(&q).await.unwrap(), Some(job("a")));
    assert_eq!(QUEUE.pop_back(&q).await.unwrap(), Some(job("c")));
    assert_eq!(QUEUE.len(&q).await.unwrap(), 1);

    let s = "visitors".to_owned();
    assert!(SEEN.add(&s, &3).await.unwrap());
    assert!(!SEEN.add(&s, &3).await.unwrap(), "already there");
    assert!(SEEN.add(&s, &4).await.unwrap());
    assert!(SEEN.contains(&s, &4).await.unwrap());
    assert!(!SEEN.contains(&s, &5).await.unwrap());
    let mut items = SEEN.items(&s).await.unwrap();
    items.sort_unstable();
    assert_eq!(items, [3, 4]);
    assert!(SEEN.remove(&s, &3).await.unwrap());
    assert_eq!(SEEN.len(&s).await.unwrap(), 1);
}

#[ovation::test]
async fn a_value_of_another_kind_is_an_internal_error_naming_the_keyspace() {
    let page = "mixed".to_owned();
    QUEUE
        .push_back(
            &page,
            &Profile {
                name: "x".into(),
                tags: vec![],
            },
        )
        .await
        .unwrap();
    // The same Redis key through a keyspace of another shape: `queue/mixed` is a list.
    static WRONG: ovation::cache::IntKeyspace<String> =
        ovation::cache::IntKeyspace::new(&CACHE, "queue/:name");
    let err = WRONG.increment(&page, 1).await.unwrap_err();
    assert_eq!(err.code(), ErrCode::Internal, "{err:?}");
    assert!(err.message().contains("keyspace `queue/:name`"), "{err}");
}

/// Two environments at once, the same keys: each sees only its own.
#[tokio::test]
async fn tests_running_at_once_do_not_see_each_others_keys() {
    let (a, b) = (TestEnv::new().await.unwrap(), TestEnv::new().await.unwrap());
    let page = "shared".to_owned();
    let (ra, rb) = tokio::join!(
        a.run(async {
            for _ in 0..30 {
                HITS.increment(&page, 1).await.unwrap();
            }
            HITS.get(&page).await.unwrap()
        }),
        b.run(async {
            for _ in 0..20 {
                HITS.increment(&page, 1).await.unwrap();
            }
            HITS.get(&page).await.unwrap()
        }),
    );
    assert_eq!((ra.unwrap(), rb.unwrap()), (Some(30), Some(20)));
    a.close().await;
    // `b` still has its keys after `a` closed (and deleted its own).
    assert_eq!(b.run(HITS.get(&page)).await.unwrap().unwrap(), Some(20));
    b.close().await;
}

/// A Redis that is down: the endpoint answers 503 `unavailable` promptly, and the server goes
/// on serving.
#[tokio::test]
async fn a_cache_that_is_down_is_unavailable_not_a_hang() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ovation::Config {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        redis_url: Some(format!("redis://127.0.0.1:{port}/")),
        ..Default::default()
    };
    let server = ovation::start(config).await.unwrap();
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let started = Instant::now();
        let response = client
            .post(format!("{}/hits/home", server.url()))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unavailable", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("cache `counters`"), "{message}");
        assert!(
            started.elapsed() < ovation::cache::OPERATION_TIMEOUT + Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }
    let health = client
        .get(format!("{}/__ovation/health", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.shutdown().await;
}

#[test]
fn a_cluster_belongs_to_the_declaring_service() {
    assert_eq!(CACHE.name(), "counters");
    assert_eq!(CACHE.service(), "counters");
    assert_eq!(PROFILES.pattern(), "profiles/:user/:locale");
}
