//! What Ovation costs at compile time, against the same code without it, built in the same run
//! (dev profile, the edit–compile loop; dependencies built beforehand; every copy with the
//! workspace's `[profile.*]` sections, which `ovation new` also writes):
//! - an incremental rebuild after editing one handler of the order flow written with Ovation
//!   (`examples/order-flow`), against the same edit in the same flow written by hand with
//!   axum+sqlx (`tests/src/bin/axum_shop.rs`); and of the whole shop app, which does much more
//!   (23 endpoints, sessions, payments, a saga, a live stream), against the same baseline;
//! - the `#[api]` macro: a crate of N generated endpoints against a crate of the same N
//!   handlers written for a plain axum router, each built from scratch (its dependencies
//!   prebuilt, incremental compilation off). Stable rustc has no `-Zself-profile`, so the
//!   difference per endpoint is what the macro and the code it generates cost.
//!
//! Everything is copied under `<target>/bench-compile/` with a target folder of its own; the
//! workspace is not touched. `cargo bench -p ovation-tests --bench compile`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ovation_tests::report::{Figure, Target, median};

const ENDPOINTS: usize = 50;
/// Builds of each crate measured, taken in turns with its counterpart's (so a stretch of a
/// slower machine slows both alike).
const EDITS: usize = 5;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let root = ovation_tests::target_dir().join("bench-compile");
    let _ = std::fs::remove_dir_all(root.join("crates"));
    let deps = Deps::read(&workspace);

    // The order flow with Ovation and by hand, one edit of the same handler each; and the
    // whole shop, which does much more than the hand-written flow.
    let flow = copy_app(
        &workspace,
        &deps,
        "examples/order-flow",
        &root.join("crates/order-flow"),
    );
    let shop = copy_app(
        &workspace,
        &deps,
        "examples/shop-app",
        &root.join("crates/shop-app"),
    );
    let axum = root.join("crates/axum-shop");
    std::fs::create_dir_all(axum.join("src")).unwrap();
    std::fs::copy(
        workspace.join("tests/src/bin/axum_shop.rs"),
        axum.join("src/main.rs"),
    )
    .unwrap();
    deps.manifest(
        &axum,
        "axum-shop",
        &[
            "axum",
            "futures-util",
            "serde",
            "serde_json",
            "sqlx",
            "tokio",
            "uuid",
            "log",
        ],
    );
    let target = root.join("target");
    // The two apps apart: each links its own build of `ovation-dylib` (the shop's dependencies
    // have other features), and the shared library's file name is the same for both.
    let [flow_edit, axum_edit, flow_static] = in_turns([
        &mut Rebuild::new(&flow, &target, "src/products/mod.rs", "product not found")
            .built_as_ovation_run_builds_it(),
        &mut Rebuild::new(&axum, &target, "src/main.rs", "product not found"),
        &mut Rebuild::new(&flow, &target, "src/products/mod.rs", "product not found"),
    ]);
    let [shop_edit, axum_again] = in_turns([
        &mut Rebuild::new(&shop, &target, "src/users/mod.rs", "no user {id}")
            .built_as_ovation_run_builds_it(),
        &mut Rebuild::new(&axum, &target, "src/main.rs", "product not found"),
    ]);
    println!(
        "incremental rebuild after one handler edit: order flow {flow_edit:.2} s \
         ({flow_static:.2} s linked statically), by hand {axum_edit:.2} s; \
         whole shop {shop_edit:.2} s, by hand {axum_again:.2} s"
    );
    Figure::new(
        "Compile cost",
        "order flow: incremental rebuild after editing one handler, as `ovation run` builds it",
        flow_edit,
        "s",
    )
    .against(
        "the same flow hand-written with axum+sqlx, same edit",
        axum_edit,
    )
    .target(Target::RatioAtMost(1.3))
    .record();
    Figure::new(
        "Compile cost",
        "order flow: the same, linked statically (`cargo build`, a release)",
        flow_static,
        "s",
    )
    .against(
        "the same flow hand-written with axum+sqlx, same edit",
        axum_edit,
    )
    .record();
    // Not like for like: 23 endpoints, sessions, payments, a saga and a live stream against
    // the four routes of the hand-written flow. What a bigger app costs to rebuild.
    Figure::new(
        "Compile cost",
        "whole shop app: incremental rebuild after editing one handler, as `ovation run` builds it",
        shop_edit,
        "s",
    )
    .against(
        "the hand-written order flow (4 routes), same kind of edit",
        axum_again,
    )
    .record();

    // N endpoints through `#[api]` against N plain axum handlers.
    let with_macro = root.join("crates/endpoints-ovation");
    std::fs::create_dir_all(with_macro.join("src")).unwrap();
    std::fs::write(with_macro.join("src/lib.rs"), ovation_endpoints(ENDPOINTS)).unwrap();
    deps.manifest(
        &with_macro,
        "endpoints-ovation",
        &["ovation", "serde", "schemars"],
    );
    let plain = root.join("crates/endpoints-axum");
    std::fs::create_dir_all(plain.join("src")).unwrap();
    std::fs::write(plain.join("src/lib.rs"), axum_endpoints(ENDPOINTS)).unwrap();
    deps.manifest(&plain, "endpoints-axum", &["axum", "serde", "schemars"]);
    let [macro_build, plain_build] = in_turns([
        &mut FreshBuild::new(&with_macro, &target),
        &mut FreshBuild::new(&plain, &target),
    ]);
    println!(
        "{ENDPOINTS} endpoints, crate built from scratch: #[api] {macro_build:.2} s, plain axum {plain_build:.2} s"
    );
    Figure::new(
        "Compile cost",
        format!("a crate of {ENDPOINTS} #[api] endpoints, built from scratch"),
        macro_build,
        "s",
    )
    .against(format!("{ENDPOINTS} plain axum handlers"), plain_build)
    .record();
    Figure::new(
        "Compile cost",
        "#[api] cost per endpoint (macro and generated code)",
        (macro_build - plain_build) / ENDPOINTS as f64 * 1000.0,
        "ms",
    )
    .target(Target::AtMost(40.0))
    .record();
}

/// The `[dependencies]` a crate's manifest takes from the workspace (`name.workspace = true`,
/// or `name = { workspace = true, features = [..] }` as `name+feature+feature`): the copy of
/// the shop depends on what the shop does, whatever it adds.
fn workspace_deps_of(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    text.lines()
        .skip_while(|l| l.trim() != "[dependencies]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| {
            let l = l.trim();
            if let Some(name) = l.strip_suffix(".workspace = true") {
                return Some(name.to_owned());
            }
            let (name, rest) = l.split_once(" = { workspace = true")?;
            let features: Vec<&str> = rest
                .split('[')
                .nth(1)
                .and_then(|f| f.split(']').next())
                .map(|f| f.split(',').map(|x| x.trim().trim_matches('"')).collect())
                .unwrap_or_default();
            Some(
                std::iter::once(name)
                    .chain(features)
                    .collect::<Vec<_>>()
                    .join("+"),
            )
        })
        .collect()
}

/// The root `Cargo.toml`'s `[workspace.dependencies]`, line by line, so the copies build
/// with the workspace's versions and features (and its `Cargo.lock`).
struct Deps {
    workspace: PathBuf,
    lines: Vec<String>,
}

impl Deps {
    fn read(workspace: &Path) -> Deps {
        let text = std::fs::read_to_string(workspace.join("Cargo.toml")).unwrap();
        Deps {
            workspace: workspace.to_owned(),
            lines: text.lines().map(str::to_owned).collect(),
        }
    }

    fn line(&self, name: &str) -> String {
        if let Some((name, features)) = name.split_once('+') {
            let extra: Vec<String> = features.split('+').map(|f| format!("{f:?}, ")).collect();
            return self.line(name).replacen(
                "features = [",
                &format!("features = [{}", extra.concat()),
                1,
            );
        }
        if name == "ovation" {
            let path = self.workspace.join("framework-runtime");
            return format!("ovation = {{ path = {:?} }}", path.display().to_string());
        }
        if name == "ovation-dylib" {
            let path = self.workspace.join("framework-runtime/dylib");
            return format!(
                "ovation-dylib = {{ path = {:?}, optional = true }}",
                path.display().to_string()
            );
        }
        self.lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("{name} is not in [workspace.dependencies]"))
            .clone()
    }

    /// The root manifest's `[profile.*]` sections, which every copy builds with: the same
    /// debug info for the code with Ovation and the code without.
    fn profiles(&self) -> String {
        let mut out = String::new();
        let mut inside = false;
        for line in &self.lines {
            if line.starts_with('[') {
                inside = line.starts_with("[profile.");
            }
            if inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn manifest(&self, dir: &Path, name: &str, deps: &[&str]) {
        let deps: Vec<String> = deps.iter().map(|d| self.line(d)).collect();
        let manifest = format!(
            "[package]\nname = {name:?}\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\n{}\n\n[workspace]\n\n{}",
            deps.join("\n"),
            self.profiles()
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        std::fs::copy(self.workspace.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    }
}

/// A copy of the app in `workspace/app` at `to`: its source, what it embeds (a status page)
/// and its checked queries' data, with the dependencies its manifest takes from the workspace.
fn copy_app(workspace: &Path, deps: &Deps, app: &str, to: &Path) -> PathBuf {
    let from = workspace.join(app);
    for folder in ["src", "public", ".sqlx"] {
        if from.join(folder).exists() {
            copy_dir(&from.join(folder), &to.join(folder));
        }
    }
    let app_deps = workspace_deps_of(&from.join("Cargo.toml"));
    let app_deps: Vec<&str> = app_deps.iter().map(String::as_str).collect();
    let name = from.file_name().unwrap().to_str().unwrap();
    deps.manifest(to, name, &app_deps);
    to.to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn build(dir: &Path, target: &Path, incremental: bool, features: &[&str]) -> Duration {
    let started = Instant::now();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .args(features.iter().flat_map(|f| ["--features", f]))
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_INCREMENTAL", if incremental { "1" } else { "0" })
        // The shop's checked queries build from their data in `.sqlx`.
        .env("SQLX_OFFLINE", "true")
        .status()
        .unwrap();
    assert!(status.success(), "building {} failed", dir.display());
    started.elapsed()
}

/// One measured build of a crate.
trait Measured {
    /// Builds it once, unmeasured (its dependencies, its incremental state).
    fn prepare(&mut self);
    /// Seconds of one measured build.
    fn measure(&mut self) -> f64;
}

/// The median time of each build, measured `EDITS` times in turns (so a stretch of a slower
/// machine slows all alike).
fn in_turns<const N: usize>(mut builds: [&mut dyn Measured; N]) -> [f64; N] {
    for build in builds.iter_mut() {
        build.prepare();
    }
    let mut times = [(); N].map(|()| Vec::with_capacity(EDITS));
    for _ in 0..EDITS {
        for (build, times) in builds.iter_mut().zip(&mut times) {
            times.push(build.measure());
        }
    }
    times.map(|mut t| median(&mut t))
}

/// Rebuilding after changing `needle` in `file` (a handler's message), incrementally.
struct Rebuild {
    dir: PathBuf,
    /// `ovation-dylib` for an Ovation app, as `ovation run` builds it.
    features: &'static [&'static str],
    target: PathBuf,
    path: PathBuf,
    original: String,
    needle: &'static str,
    edits: usize,
}

impl Rebuild {
    fn new(dir: &Path, target: &Path, file: &str, needle: &'static str) -> Rebuild {
        let path = dir.join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        assert!(original.contains(needle), "{file} has no {needle:?}");
        Rebuild {
            dir: dir.to_owned(),
            features: &[],
            target: target.to_owned(),
            path,
            original,
            needle,
            edits: 0,
        }
    }
}

impl Rebuild {
    /// Built as `ovation run` builds an app that has `ovation-dylib`: linked against the
    /// framework as one shared library.
    fn built_as_ovation_run_builds_it(mut self) -> Rebuild {
        self.features = &["ovation-dylib"];
        self
    }
}

impl Measured for Rebuild {
    fn prepare(&mut self) {
        build(&self.dir, &self.target, true, self.features);
    }

    fn measure(&mut self) -> f64 {
        self.edits += 1;
        let edited = format!("{} (edit {})", self.needle, self.edits);
        std::fs::write(&self.path, self.original.replace(self.needle, &edited)).unwrap();
        build(&self.dir, &self.target, true, self.features).as_secs_f64()
    }
}

/// Building the crate itself from scratch, its dependencies built.
struct FreshBuild {
    dir: PathBuf,
    target: PathBuf,
}

impl FreshBuild {
    fn new(dir: &Path, target: &Path) -> FreshBuild {
        FreshBuild {
            dir: dir.to_owned(),
            target: target.to_owned(),
        }
    }
}

impl Measured for FreshBuild {
    fn prepare(&mut self) {
        build(&self.dir, &self.target, false, &[]);
    }

    fn measure(&mut self) -> f64 {
        // A new comment: the crate is rebuilt, nothing else.
        let lib = self.dir.join("src/lib.rs");
        let mut text = std::fs::read_to_string(&lib).unwrap();
        text.push_str("//\n");
        std::fs::write(&lib, text).unwrap();
        build(&self.dir, &self.target, false, &[]).as_secs_f64()
    }
}

/// `n` endpoints through `#[api]`: a typed request and response each, a path parameter in
/// every other one.
fn ovation_endpoints(n: usize) -> String {
    let mut src =
        String::from("//! Generated by tests/benches/compile.rs.\nuse ovation::prelude::*;\n\n");
    for i in 0..n {
        src.push_str(&format!(
            "#[derive(Debug, Serialize, Deserialize, JsonSchema)]\npub struct Req{i} {{ pub a: i64, pub b: String }}\n\
             #[derive(Debug, Serialize, Deserialize, JsonSchema)]\npub struct Resp{i} {{ pub sum: i64, pub text: String }}\n"
        ));
        if i % 2 == 0 {
            src.push_str(&format!(
                "#[api(public, method = \"POST\", path = \"/e{i}/:id\")]\n\
                 pub async fn e{i}(id: i64, r: Req{i}) -> Result<Resp{i}, Error> {{\n    Ok(Resp{i} {{ sum: r.a + id, text: r.b }})\n}}\n\n"
            ));
        } else {
            src.push_str(&format!(
                "#[api(public, method = \"POST\", path = \"/e{i}\")]\n\
                 pub async fn e{i}(r: Req{i}) -> Result<Resp{i}, Error> {{\n    Ok(Resp{i} {{ sum: r.a, text: r.b }})\n}}\n\n"
            ));
        }
    }
    src
}

/// The same `n` handlers for a hand-written axum router, with the same derives (schemas
/// included, as an API documented with OpenAPI would have).
fn axum_endpoints(n: usize) -> String {
    let mut src = String::from(
        "//! Generated by tests/benches/compile.rs.\nuse axum::{Json, extract::Path, routing::post};\nuse schemars::JsonSchema;\nuse serde::{Deserialize, Serialize};\n\n",
    );
    let mut routes = String::new();
    for i in 0..n {
        src.push_str(&format!(
            "#[derive(Debug, Serialize, Deserialize, JsonSchema)]\npub struct Req{i} {{ pub a: i64, pub b: String }}\n\
             #[derive(Debug, Serialize, Deserialize, JsonSchema)]\npub struct Resp{i} {{ pub sum: i64, pub text: String }}\n"
        ));
        if i % 2 == 0 {
            src.push_str(&format!(
                "pub async fn e{i}(Path(id): Path<i64>, Json(r): Json<Req{i}>) -> Json<Resp{i}> {{\n    Json(Resp{i} {{ sum: r.a + id, text: r.b }})\n}}\n\n"
            ));
            routes.push_str(&format!("        .route(\"/e{i}/{{id}}\", post(e{i}))\n"));
        } else {
            src.push_str(&format!(
                "pub async fn e{i}(Json(r): Json<Req{i}>) -> Json<Resp{i}> {{\n    Json(Resp{i} {{ sum: r.a, text: r.b }})\n}}\n\n"
            ));
            routes.push_str(&format!("        .route(\"/e{i}\", post(e{i}))\n"));
        }
    }
    src.push_str(&format!(
        "pub fn router() -> axum::Router {{\n    axum::Router::new()\n{routes}}}\n"
    ));
    src
}
