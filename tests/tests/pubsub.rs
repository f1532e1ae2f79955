//! The behaviour of Pub/Sub, against a real Postgres: every subscription gets every message,
//! failures are retried with backoff, exhausted messages become dead letters that can be
//! redriven, the ack deadline cancels slow handlers, `max_concurrency` holds, and a message
//! written with `publish_in` exists only if its transaction commits.
//!
//! Every test runs on both backends (Postgres, and NATS JetStream with a managed
//! `nats-server`). Each test tags its messages with a run id and reads back only its own records, since every
//! test's environment runs the same subscriptions.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ovation::pubsub::{self, SubscriptionStats};
use ovation::testing::TestEnv;
use uuid::Uuid;

use shop_app as _;

mod bus {
    use std::time::Instant;

    use ovation::prelude::*;

    use super::{ATTEMPTS, HEALED, IN_FLIGHT, record};

    /// A service database, for transactions that publish.
    pub static DB: Database = ovation::database!("bus");

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Ping {
        pub run: Uuid,
        pub n: u32,
    }

    pub static PINGS: Topic<Ping> = ovation::topic!("pings");
    pub static FLAKY: Topic<Ping> = ovation::topic!("flaky");
    pub static DOOMED: Topic<Ping> = ovation::topic!("doomed");
    pub static SLOW: Topic<Ping> = ovation::topic!("slow");
    pub static NARROW: Topic<Ping> = ovation::topic!("narrow");

    #[subscription(topic = PINGS, name = "ping-a")]
    async fn ping_a(p: Ping) -> Result<(), Error> {
        record("ping-a", &p);
        Ok(())
    }

    #[subscription(topic = PINGS, name = "ping-b")]
    async fn ping_b(p: Ping) -> Result<(), Error> {
        record("ping-b", &p);
        Ok(())
    }

    /// Panics on the first attempt, fails on the second, succeeds on the third.
    #[subscription(topic = FLAKY, name = "flaky-sub", min_backoff = "200ms", max_backoff = "2s", max_retries = 5)]
    async fn flaky(p: Ping) -> Result<(), Error> {
        let attempt = note_attempt(&p);
        match attempt {
            1 => panic!("attempt 1 panics"),
            2 => Err(Error::unavailable("attempt 2 fails")),
            _ => Ok(()),
        }
    }

    /// Fails while `DOOMED_FAILS` is set.
    #[subscription(topic = DOOMED, name = "doomed-sub", min_backoff = "50ms", max_retries = 2)]
    async fn doomed(p: Ping) -> Result<(), Error> {
        record("doomed-sub", &p);
        if HEALED.lock().unwrap().contains(&p.run) {
            Ok(())
        } else {
            Err(Error::internal("the mail server is down"))
        }
    }

    /// Outlives its ack deadline on the first attempt only.
    #[subscription(topic = SLOW, name = "slow-sub", ack_deadline = "300ms", min_backoff = "50ms")]
    async fn slow(p: Ping) -> Result<(), Error> {
        let attempt = note_attempt(&p);
        if attempt == 1 {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
        record("slow-sub", &p);
        Ok(())
    }

    /// Records this delivery's attempt number and time; returns the attempt.
    fn note_attempt(p: &Ping) -> u32 {
        let attempt = ovation::pubsub::delivery()
            .expect("inside a delivery")
            .attempt;
        ATTEMPTS
            .lock()
            .unwrap()
            .entry(p.run)
            .or_default()
            .push((attempt, Instant::now()));
        attempt
    }

    pub static MIXED: Topic<Ping> = ovation::topic!("mixed");

    /// Fails every attempt for poison messages (`n` ≥ 1000), whose retries then wait 30 s;
    /// handles the others.
    #[subscription(topic = MIXED, name = "mixed-sub", max_concurrency = 4, min_backoff = "30s", max_retries = 10)]
    async fn mixed(p: Ping) -> Result<(), Error> {
        record("mixed-sub", &p);
        if p.n >= 1000 {
            Err(Error::failed_precondition("its user was deleted"))
        } else {
            Ok(())
        }
    }

    #[subscription(topic = NARROW, name = "narrow-sub", max_concurrency = 2)]
    async fn narrow(p: Ping) -> Result<(), Error> {
        {
            let mut all = IN_FLIGHT.lock().unwrap();
            let (now, max) = all.entry(p.run).or_default();
            *now += 1;
            *max = (*max).max(*now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        IN_FLIGHT.lock().unwrap().entry(p.run).or_default().0 -= 1;
        record("narrow-sub", &p);
        Ok(())
    }
}

/// (subscription, run) → the `n` of each message handled, in order.
static HANDLED: Mutex<BTreeMap<(&'static str, Uuid), Vec<u32>>> = Mutex::new(BTreeMap::new());
/// run → (attempt, when) of each delivery, for handlers that look at attempts.
static ATTEMPTS: Mutex<BTreeMap<Uuid, Vec<(u32, Instant)>>> = Mutex::new(BTreeMap::new());
/// Runs whose `doomed` messages now succeed.
static HEALED: Mutex<BTreeSet<Uuid>> = Mutex::new(BTreeSet::new());
/// run → (handlers running now, most ever running at once), for `narrow`.
static IN_FLIGHT: Mutex<BTreeMap<Uuid, (usize, usize)>> = Mutex::new(BTreeMap::new());

fn record(subscription: &'static str, p: &bus::Ping) {
    HANDLED
        .lock()
        .unwrap()
        .entry((subscription, p.run))
        .or_default()
        .push(p.n);
}

fn handled(subscription: &'static str, run: Uuid) -> Vec<u32> {
    let mut v = HANDLED
        .lock()
        .unwrap()
        .get(&(subscription, run))
        .cloned()
        .unwrap_or_default();
    v.sort_unstable();
    v
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stats_eventually(sub: &str, want: SubscriptionStats, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = pubsub::stats(sub).await.unwrap();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sub}: stats {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn every_subscription_gets_every_message(env: TestEnv) {
    let run = Uuid::new_v4();
    env.run(async {
        for n in 0..20 {
            bus::PINGS.publish(&bus::Ping { run, n }).await.unwrap();
        }
        let all: Vec<u32> = (0..20).collect();
        eventually("ping-a got all 20", Duration::from_secs(10), || {
            handled("ping-a", run) == all
        })
        .await;
        eventually("ping-b got all 20", Duration::from_secs(10), || {
            handled("ping-b", run) == all
        })
        .await;
        let done = SubscriptionStats {
            pending: 0,
            delivered: 20,
            dead: 0,
        };
        stats_eventually("ping-a", done.clone(), Duration::from_secs(5)).await;
        stats_eventually("ping-b", done, Duration::from_secs(5)).await;
    })
    .await
    .unwrap();
    env.close().await;
}

async fn a_batch_reaches_every_subscription(env: TestEnv) {
    let run = Uuid::new_v4();
    env.run(async {
        let batch: Vec<bus::Ping> = (0..50).map(|n| bus::Ping { run, n }).collect();
        let ids = bus::PINGS.publish_batch(&batch).await.unwrap();
        assert_eq!(ids.len(), 50);
        assert_eq!(
            ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
            50
        );
        let all: Vec<u32> = (0..50).collect();
        eventually("ping-a got the batch", Duration::from_secs(10), || {
            handled("ping-a", run) == all
        })
        .await;
        eventually("ping-b got the batch", Duration::from_secs(10), || {
            handled("ping-b", run) == all
        })
        .await;
    })
    .await
    .unwrap();
    env.close().await;
}

async fn failures_and_panics_are_retried_with_exponential_backoff(env: TestEnv) {
    let run = Uuid::new_v4();
    env.run(async {
        bus::FLAKY.publish(&bus::Ping { run, n: 1 }).await.unwrap();
        let attempts = || {
            ATTEMPTS
                .lock()
                .unwrap()
                .get(&run)
                .cloned()
                .unwrap_or_default()
        };
        eventually("three attempts", Duration::from_secs(10), || {
            attempts().len() >= 3
        })
        .await;
        stats_eventually(
            "flaky-sub",
            SubscriptionStats {
                pending: 0,
                delivered: 1,
                dead: 0,
            },
            Duration::from_secs(5),
        )
        .await;
        let a = attempts();
        assert_eq!(a.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2, 3]);
        // min_backoff 200 ms, doubling: ~200 ms after attempt 1, ~400 ms after attempt 2. The
        // lower bounds are the backoff; the upper ones leave room for a loaded machine.
        let gap1 = a[1].1 - a[0].1;
        let gap2 = a[2].1 - a[1].1;
        assert!(
            gap1 >= Duration::from_millis(190) && gap1 < Duration::from_millis(2000),
            "{gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_millis(390) && gap2 < Duration::from_millis(2500),
            "{gap2:?}"
        );
    })
    .await
    .unwrap();
    env.close().await;
}

async fn exhausted_messages_become_dead_letters_and_can_be_redriven(env: TestEnv) {
    let run = Uuid::new_v4();
    env.run(async {
        let id = bus::DOOMED.publish(&bus::Ping { run, n: 7 }).await.unwrap();
        // max_retries = 2: three attempts, then a dead letter.
        stats_eventually(
            "doomed-sub",
            SubscriptionStats {
                pending: 0,
                delivered: 0,
                dead: 1,
            },
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(handled("doomed-sub", run), [7, 7, 7]);
        let dead = pubsub::dead_letters("doomed-sub").await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message_id, id);
        assert_eq!(dead[0].topic, "doomed");
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(dead[0].payload["n"], 7);
        assert!(
            dead[0]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("the mail server is down")
        );

        HEALED.lock().unwrap().insert(run);
        assert_eq!(pubsub::redrive("doomed-sub", Some(id)).await.unwrap(), 1);
        stats_eventually(
            "doomed-sub",
            SubscriptionStats {
                pending: 0,
                delivered: 1,
                dead: 0,
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(pubsub::dead_letters("doomed-sub").await.unwrap().is_empty());
        assert_eq!(pubsub::redrive("doomed-sub", None).await.unwrap(), 0);
    })
    .await
    .unwrap();
    env.close().await;
}

async fn a_handler_past_its_ack_deadline_is_cancelled_and_retried(env: TestEnv) {
    let run = Uuid::new_v4();
    env.run(async {
        let started = Instant::now();
        bus::SLOW.publish(&bus::Ping { run, n: 1 }).await.unwrap();
        eventually(
            "handled on the second attempt",
            Duration::from_secs(10),
            || handled("slow-sub", run) == [1],
        )
        .await;
        let attempts = ATTEMPTS
            .lock()
            .unwrap()
            .get(&run)
            .cloned()
            .unwrap_or_default();
        assert_eq!(attempts.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2]);
        // Cancelled at 300 ms, not after the 5 s the first attempt wanted.
        let gap = attempts[1].1 - attempts[0].1;
        assert!(
            gap >= Duration::from_millis(300) && gap < Duration::from_secs(3),
            "{gap:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(4));
    })
    .await
    .unwrap();
    env.close().await;
}

async fn max_concurrency_is_respected(env: TestEnv) {
    let run = Uuid::new_v4();
    env.run(async {
        for n in 0..10 {
            bus::NARROW.publish(&bus::Ping { run, n }).await.unwrap();
        }
        eventually("all 10 handled", Duration::from_secs(10), || {
            handled("narrow-sub", run).len() == 10
        })
        .await;
        assert_eq!(IN_FLIGHT.lock().unwrap()[&run].1, 2);
    })
    .await
    .unwrap();
    env.close().await;
}

async fn the_outbox_publishes_only_what_commits(env: TestEnv) {
    let run = Uuid::new_v4();
    env.run(async {
        let mut tx = bus::DB.begin().await.unwrap();
        bus::PINGS
            .publish_in(&mut tx, &bus::Ping { run, n: 1 })
            .await
            .unwrap();
        tx.rollback().await.unwrap();

        let mut tx = bus::DB.begin().await.unwrap();
        bus::PINGS
            .publish_in(&mut tx, &bus::Ping { run, n: 2 })
            .await
            .unwrap();
        // Not delivered before the commit.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(handled("ping-a", run).is_empty());
        tx.commit().await.unwrap();

        eventually("the committed message", Duration::from_secs(10), || {
            handled("ping-a", run) == [2]
        })
        .await;
        eventually("to both subscriptions", Duration::from_secs(10), || {
            handled("ping-b", run) == [2]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            handled("ping-a", run),
            [2],
            "the rolled-back message was delivered"
        );
        let left: i64 = ovation::sqlx::query_scalar("SELECT count(*) FROM _ovation_outbox")
            .fetch_one(bus::DB.pool())
            .await
            .unwrap();
        assert_eq!(left, 0, "the relay leaves the outbox empty");
    })
    .await
    .unwrap();
    env.close().await;
}

async fn failing_messages_waiting_for_a_retry_do_not_hold_up_the_others(env: TestEnv) {
    let run = Uuid::new_v4();
    env.run(async {
        // Three times `max_concurrency` messages that fail, each tried once and now waiting
        // 30 s for its retry...
        let poison: Vec<bus::Ping> = (1000..1012).map(|n| bus::Ping { run, n }).collect();
        bus::MIXED.publish_batch(&poison).await.unwrap();
        eventually(
            "every poison message tried once",
            Duration::from_secs(10),
            || handled("mixed-sub", run).len() == 12,
        )
        .await;
        // ...take no delivery capacity: the next messages are handled at once, one by one.
        for n in 0..20 {
            let sent = Instant::now();
            bus::MIXED.publish(&bus::Ping { run, n }).await.unwrap();
            eventually(
                &format!("message {n} handled"),
                Duration::from_secs(5),
                || handled("mixed-sub", run).contains(&n),
            )
            .await;
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "message {n} took {:?} behind the poison messages",
                sent.elapsed()
            );
        }
        stats_eventually(
            "mixed-sub",
            SubscriptionStats {
                pending: 12,
                delivered: 20,
                dead: 0,
            },
            Duration::from_secs(5),
        )
        .await;
        // Tried once each, no more: their retries wait out the backoff.
        assert_eq!(handled("mixed-sub", run).len(), 32);
    })
    .await
    .unwrap();
    env.close().await;
}

/// Each behaviour test, once per backend: `postgres::name` and `nats::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(ovation::testing::TestEnv::new().await.unwrap()).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(ovation::testing::TestEnv::with_nats().await.unwrap()).await;
                }
            )*
        }
    };
}

on_both_backends!(
    every_subscription_gets_every_message,
    a_batch_reaches_every_subscription,
    failures_and_panics_are_retried_with_exponential_backoff,
    exhausted_messages_become_dead_letters_and_can_be_redriven,
    a_handler_past_its_ack_deadline_is_cancelled_and_retried,
    max_concurrency_is_respected,
    failing_messages_waiting_for_a_retry_do_not_hold_up_the_others,
    the_outbox_publishes_only_what_commits,
);
