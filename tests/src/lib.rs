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
