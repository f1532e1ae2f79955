//! Registration is checked, not trusted: every `#[api]` function in the shop's source must be
//! in the runtime's registry (inventory entries can be dropped by a linker), with the method,
//! path and access its attribute states.

use std::path::Path;

use shop_app as _;

/// `(service, function, attribute text)` of every `#[api(...)]` in `src/`.
fn declared_in_source() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        let service = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path()).unwrap().flatten() {
            if file.path().extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(file.path()).unwrap();
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                let Some(attr) = line.trim().strip_prefix("#[api(") else {
                    continue;
                };
                let func = lines
                    .by_ref()
                    .find_map(|l| {
                        l.trim()
                            .strip_prefix("pub async fn ")
                            .or(l.trim().strip_prefix("async fn "))
                    })
                    .and_then(|rest| rest.split('(').next())
                    .expect("an #[api] attribute is followed by its function");
                found.push((service.clone(), func.to_owned(), attr.to_owned()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_api_in_the_source_is_registered() {
    let declared = declared_in_source();
    assert!(
        declared.len() >= 9,
        "the shop declares at least 9 endpoints: {declared:?}"
    );
    let all: Vec<_> = ovation::tooling::endpoints()
        .iter()
        .map(|e| e.info())
        .collect();
    // Static files are routes of `static_files!`, not `#[api]` functions.
    let (files, registered): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|i| i.kind == ovation::EndpointKind::Static);
    let file_routes: Vec<(&str, &str)> = files.iter().map(|i| (i.service, i.path)).collect();
    assert_eq!(file_routes, [("orders", "/"), ("orders", "/*path")]);
    for (service, func, attr) in &declared {
        let info = registered
            .iter()
            .find(|i| i.service == service && i.name == func)
            .unwrap_or_else(|| {
                panic!("{service}::{func} is declared with #[api] but not registered")
            });
        let flags: Vec<&str> = attr.split(',').map(str::trim).collect();
        if flags.contains(&"stream") {
            // A stream is opened with a GET, which its attribute does not say.
            assert!(info.kind.is_stream(), "{service}::{func}: {attr}");
        } else {
            assert!(
                attr.contains(&format!("method = \"{}\"", info.method)),
                "{service}::{func}: {attr}"
            );
            assert_eq!(
                flags.contains(&"raw"),
                info.kind == ovation::EndpointKind::Raw,
                "{service}::{func}: {attr}"
            );
        }
        assert!(
            attr.contains(&format!("path = \"{}\"", info.path)),
            "{service}::{func}: {attr}"
        );
        let public = flags.contains(&"public");
        assert_eq!(
            public,
            info.access == ovation::Access::Public,
            "{service}::{func}: {attr}"
        );
    }
    assert_eq!(
        registered.len(),
        declared.len(),
        "registered endpoints not found in the source"
    );
}

#[test]
fn the_topic_and_its_subscriptions_are_registered() {
    let topics: Vec<&str> = ovation::pubsub::topics().iter().map(|t| t.name).collect();
    assert_eq!(topics, ["order-created"]);
    let subs: Vec<(&str, &str, &str)> = ovation::pubsub::subscriptions()
        .iter()
        .map(|s| (s.name, s.service(), (s.topic)()))
        .collect();
    assert_eq!(
        subs,
        [
            ("confirm-reservations", "products", "order-created"),
            ("live-orders", "orders", "order-created"),
            ("send-order-confirmation", "notifications", "order-created")
        ]
    );
}

#[test]
fn the_reservation_sweep_is_a_cron_job_of_products() {
    let jobs: Vec<(&str, &str, &str)> = ovation::cron::jobs()
        .iter()
        .map(|j| (j.name, j.service(), j.schedule_text))
        .collect();
    assert_eq!(jobs, [("expire-reservations", "products", "every 1m")]);
}

#[test]
fn checkout_and_placing_an_order_are_workflows_of_their_services() {
    let flows: Vec<(&str, &str)> = ovation::workflow::workflows()
        .iter()
        .map(|w| (w.name, w.service()))
        .collect();
    assert_eq!(flows, [("checkout", "checkout"), ("place-order", "orders")]);
    // The one start-up task: the live order feed's listener.
    let tasks: Vec<(&str, &str)> = ovation::tooling::start_tasks()
        .iter()
        .map(|t| (t.module, t.name))
        .collect();
    assert_eq!(tasks, [("shop_app::orders::live", "listen")]);
}

#[test]
fn every_service_database_is_registered() {
    let names: Vec<(&str, &str)> = ovation::sqldb::declared()
        .iter()
        .map(|d| (d.service(), d.name))
        .collect();
    assert_eq!(
        names,
        [
            ("notifications", "notifications"),
            ("orders", "orders"),
            ("payments", "payments"),
            ("products", "products"),
            ("users", "users")
        ]
    );
}
