//! End-to-end tests live in `tests/`, benchmarks in `benches/`; this library holds what the
//! benchmarks share: the figures they report ([`report`]).

pub mod report;
