//! Typed clients of a running shop, through its gateway: a Rust program with the app's own
//! stubs (`ovation::Client`), and the TypeScript client `ovation gen client --lang ts` writes,
//! compiled with `tsc` and run with Node.js. Each places an order that the shop then has.

mod util;

use std::process::Command;

use ovation::ErrCode;
use shop_app::{orders, payments, products, users};
use util::{split, target_dir, workspace};

#[tokio::test]
async fn a_rust_program_places_an_order_through_the_gateway_with_the_apps_stubs() {
    let shop = split().await;
    let client = ovation::Client::new(&shop.g.url()).unwrap();
    let email = format!("client-{}@example.com", uuid::Uuid::new_v4());
    let user = client
        .run(users::create(users::CreateUserParams {
            email: email.clone(),
            name: "Ada".into(),
            password: Some("correct horse battery".into()),
        }))
        .await
        .unwrap();
    let product = client
        .run(products::create(products::CreateProductParams {
            name: "Lamp".into(),
            price_cents: 2_500,
            inventory: 5,
        }))
        .await
        .unwrap();
    let order = client
        .run(orders::create(orders::CreateOrderParams {
            user_id: user.id,
            product_id: product.id,
            quantity: 2,
        }))
        .await
        .unwrap();
    assert_eq!((order.quantity, order.total_cents), (2, 5_000));

    // The shop has it: read back over plain HTTP.
    let read: serde_json::Value = reqwest::get(format!("{}/orders/{}", shop.g.url(), order.id))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["userId"], user.id.to_string());
    assert_eq!(read["totalCents"], 5_000);

    // The app's errors come back with their codes.
    let missing = client
        .run(orders::get(uuid::Uuid::new_v4()))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), ErrCode::NotFound, "{missing}");

    // An `auth` endpoint: no credential is the auth handler's 401; a bearer token is the user.
    let anonymous = client.run(orders::my_orders()).await.unwrap_err();
    assert_eq!(anonymous.code(), ErrCode::Unauthenticated, "{anonymous}");
    let session = client
        .run(users::create_session(users::CreateSessionParams {
            email,
            password: "correct horse battery".into(),
        }))
        .await
        .unwrap();
    let mine = client
        .bearer(&session.token)
        .run(orders::my_orders())
        .await
        .unwrap();
    assert_eq!(mine.orders, [order]);

    // Private endpoints are the app's own: refused before any request leaves.
    let private = client.run(payments::charges(user.id)).await.unwrap_err();
    assert_eq!(private.code(), ErrCode::PermissionDenied, "{private}");
    assert!(
        private.message().contains("payments.charges is private"),
        "{private}"
    );
    shop.env.close().await;
}

/// `tsc` from `tests/browser` (pinned by its lock file), or `None` (after saying why) when a
/// tool is missing off CI.
fn tsc() -> Option<std::path::PathBuf> {
    let tsc = workspace().join("tests/browser/node_modules/.bin/tsc");
    let missing = if Command::new("node").arg("--version").output().is_err() {
        Some("Node.js (`node`)".to_owned())
    } else if !tsc.is_file() {
        Some(format!(
            "TypeScript (`npm ci` in {})",
            workspace().join("tests/browser").display()
        ))
    } else {
        None
    };
    if let Some(missing) = missing {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the TypeScript client test needs {missing}; .ci/run installs it"
        );
        eprintln!("SKIPPED: the TypeScript client test needs {missing}");
        return None;
    }
    Some(tsc)
}

/// The program the TypeScript test compiles against the generated client: it places an order
/// as a new user and prints what it got, as JSON.
const PROGRAM: &str = r#"import { APIError, Client } from "./client.js";

declare const process: { argv: string[] };

const base = process.argv[2];
const shop = new Client(base);
const email = `ts-${Date.now()}-${Math.random()}@example.com`;
const user = await shop.users.create({ email, name: "Grace", password: "correct horse battery" });
const product = await shop.products.create({ name: "Desk", priceCents: 12000, inventory: 3 });
const order = await shop.orders.create({ userId: user.id, productId: product.id, quantity: 1 });
const again = await shop.orders.get(order.id);

let missing: { status: number; code: string } | undefined;
try {
  await shop.products.get("00000000-0000-0000-0000-000000000000");
} catch (e) {
  if (e instanceof APIError) missing = { status: e.status, code: e.code };
}

const session = await shop.users.createSession({ email, password: "correct horse battery" });
const signedIn = new Client(base, { token: session.token });
const mine = await signedIn.orders.myOrders();
const total: number = mine.orders.reduce((sum, o) => sum + o.totalCents, 0);

console.log(JSON.stringify({ order, again, missing, total, userId: user.id }));
"#;

#[tokio::test]
async fn the_generated_typescript_client_places_an_order_from_node() {
    let Some(tsc) = tsc() else { return };
    let dir = target_dir().join(format!("ovation-ts-client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let generated = Command::new(util::ovation())
        .args(["gen", "client", "--lang", "ts", "--app"])
        .arg(workspace().join("examples/shop-app"))
        .arg("--out")
        .arg(dir.join("client.ts"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let client = std::fs::read_to_string(dir.join("client.ts")).unwrap();
    for expected in [
        "export interface Order {",
        "totalCents: number;",
        "async create(params: CreateOrderParams): Promise<Order>",
        "async get(id: string): Promise<Order>",
        "async deleteMe(): Promise<void>",
        "paymentsWebhook(init: RequestInit = {}): Promise<Response>",
    ] {
        assert!(client.contains(expected), "no {expected:?} in:\n{client}");
    }
    assert!(
        !client.contains("charges("),
        "a private endpoint is in the client"
    );
    std::fs::write(dir.join("main.ts"), PROGRAM).unwrap();
    std::fs::write(dir.join("package.json"), r#"{"type": "module"}"#).unwrap();
    let compiled = Command::new(&tsc)
        .args([
            "--strict",
            "--noUnusedLocals",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--lib",
            "es2022,dom",
            "--outDir",
        ])
        .arg(dir.join("out"))
        .arg(dir.join("main.ts"))
        .arg(dir.join("client.ts"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        compiled.status.success(),
        "tsc:\n{}{}",
        String::from_utf8_lossy(&compiled.stdout),
        String::from_utf8_lossy(&compiled.stderr)
    );
    std::fs::write(dir.join("out/package.json"), r#"{"type": "module"}"#).unwrap();

    let shop = split().await;
    let ran = tokio::process::Command::new("node")
        .arg(dir.join("out/main.js"))
        .arg(shop.g.url())
        .output()
        .await
        .unwrap();
    assert!(
        ran.status.success(),
        "node:\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(out["order"]["quantity"], 1);
    assert_eq!(out["order"]["totalCents"], 12_000);
    assert_eq!(out["again"], out["order"]);
    assert_eq!(
        out["missing"],
        serde_json::json!({"status": 404, "code": "not_found"})
    );
    assert_eq!(out["total"], 12_000);

    // The shop has the order.
    let id: uuid::Uuid = out["order"]["id"].as_str().unwrap().parse().unwrap();
    let read: serde_json::Value = reqwest::get(format!("{}/orders/{id}", shop.g.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["userId"], out["userId"]);
    shop.env.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
