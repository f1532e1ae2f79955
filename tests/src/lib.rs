//! End-to-end tests live in `tests/`, benchmarks in `benches/`; this library holds what the
//! benchmarks share: the figures they report ([`report`]).

pub mod report;

/// The target folder a bench binary runs from (`<target>/release/deps/<bench>-…`).
pub fn target_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the bench knows its own path");
    exe.ancestors()
        .nth(3)
        .expect("bench binaries live in <target>/<profile>/deps/")
        .to_owned()
}

/// Where criterion keeps its results: `<target>/criterion`.
pub fn criterion_dir() -> std::path::PathBuf {
    target_dir().join("criterion")
}

/// The mean time per iteration criterion estimated for `<group>/<function>` under `out`, in ns.
pub fn criterion_mean_ns(out: &std::path::Path, group: &str, function: &str) -> f64 {
    let path = out.join(group).join(function).join("new/estimates.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("criterion wrote no {}: {e}", path.display()));
    let estimates: serde_json::Value = serde_json::from_str(&text).unwrap();
    estimates["mean"]["point_estimate"].as_f64().unwrap()
}
