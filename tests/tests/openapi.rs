//! OpenAPI: the document the app serves and `ovation gen openapi` prints, and schemathesis
//! fuzzing the running shop against it.
//!
//! The schemathesis test runs the version `tests/python/requirements.txt` pins, installed by
//! the test into a virtualenv under the target folder (`util::python_tool`), whatever version
//! the machine has. Where it cannot be installed (no `python3`, no network) it skips with a
//! message, except under `CI=true`, where it fails.

mod util;

use std::collections::BTreeSet;
use std::process::Command;

use ovation::testing::{Hosting, TestEnv};
use serde_json::Value;
use util::{Client, workspace};

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_app_serves_an_openapi_document_of_its_public_endpoints() {
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    let spec = Client::new(server.url())
        .get("/__ovation/openapi.json")
        .await;
    assert_eq!(spec.status, 200, "{spec:?}");
    let spec = spec.body;
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec["info"]["title"], "shop_app");

    // Exactly the public endpoints, each once, under its `service.name`.
    let operations: BTreeSet<String> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|methods| methods.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    let public: BTreeSet<String> = ovation::tooling::endpoints()
        .iter()
        .map(|e| e.info())
        .filter(|i| i.access != ovation::Access::Private)
        // Streams and static files are no operations OpenAPI can describe.
        .filter(|i| !i.kind.is_stream() && i.kind != ovation::EndpointKind::Static)
        .map(|i| format!("{}.{}", i.service, i.name))
        .collect();
    assert_eq!(operations, public);
    assert!(operations.contains("checkout.checkout"), "{operations:?}");
    for private in [
        "products.reserve_inventory",
        "payments.charge",
        "orders.place",
    ] {
        assert!(!operations.contains(private), "{private} is private");
    }

    // Path parameters carry their type's schema; bodies and responses are typed.
    let get_user = &spec["paths"]["/users/{id}"]["get"];
    assert_eq!(get_user["parameters"][0]["in"], "path");
    assert_eq!(get_user["parameters"][0]["schema"]["format"], "uuid");
    let create_order = &spec["paths"]["/orders"]["post"];
    let body = &create_order["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["properties"]["quantity"]["type"], "integer", "{body}");
    assert_eq!(
        create_order["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} points outside the components"));
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }

    // `ovation gen openapi` prints the same document, from the app's binary.
    let out = Command::new(util::ovation())
        .args(["gen", "openapi", "--app"])
        .arg(workspace().join("examples/shop-app"))
        .env("CARGO_TARGET_DIR", util::target_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, spec);

    drop(server);
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_off_its_schema() {
    let st = match util::python_tool("schemathesis") {
        Ok(st) => st,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let env = TestEnv::new().await.unwrap();
    let server = env.serve(Hosting::all()).await.unwrap();
    // A fixed seed keeps CI reproducible; set OVATION_SCHEMATHESIS_SEED to explore others.
    let seed = std::env::var("OVATION_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261125".into());
    let url = format!("{}/__ovation/openapi.json", server.url());
    let report = util::target_dir().join(format!("schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&report).unwrap();
    let out = tokio::process::Command::new(st)
        // schemathesis keeps a cache in `.schemathesis/` of its working folder: not the checkout.
        .current_dir(&report)
        .args(["run", &url, "--checks"])
        .arg(
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
        )
        .args(["--max-examples", "60", "--workers", "2", "--seed", &seed])
        .args(["--no-color", "--report-dir"])
        .arg(&report)
        .env("HYPOTHESIS_STORAGE_DIRECTORY", report.join("hypothesis"))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It really ran: every public operation tested, cases generated, none failing.
    let spec: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let operations: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert!(operations >= 13, "{spec:#}");
    assert!(
        stdout.contains(&format!("Selected: {operations}/{operations}"))
            && stdout.contains(&format!("Tested: {operations}")),
        "{stdout}"
    );
    assert!(stdout.contains("generated,"), "{stdout}");
    let _ = std::fs::remove_dir_all(&report);
    drop(server);
    env.close().await;
}
