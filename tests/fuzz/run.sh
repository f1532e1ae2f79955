#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, on stable Rust: libFuzzer (from libfuzzer-sys)
# guided by LLVM's SanitizerCoverage, whose flags are stable `-C` options. No sanitizer: the
# code under test is safe Rust, so a bug shows as a panic, which libFuzzer reports as a crash.
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET]     (default 30)
#
# With nightly and cargo-fuzz installed, `cargo fuzz run --fuzz-dir tests/fuzz TARGET` runs
# the same targets (with AddressSanitizer). Crashes are saved under tests/fuzz/artifacts/.
set -euo pipefail
seconds="${1:-30}"
here="$(cd "$(dirname "$0")" && pwd)"
export CARGO_TARGET_DIR="${OVATION_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$here/target}/fuzz}"
export RUSTFLAGS="-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions -Coverflow-checks --cfg fuzzing"
# An explicit --target keeps the flags off build scripts and proc macros, which run on the host.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --manifest-path "$here/Cargo.toml" --bins --target "$host"
for target in api_attr request_decoding; do
    corpus="$CARGO_TARGET_DIR/corpus/$target"
    artifacts="$here/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "fuzzing $target for ${seconds}s"
    "$CARGO_TARGET_DIR/$host/release/$target" "$corpus" "$here/corpus/$target" \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 2>&1 | tail -n 12
done
