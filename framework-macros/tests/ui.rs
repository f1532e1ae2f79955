//! The diagnostics of `#[api]`, one misuse per file; the `.stderr` files are the record of
//! what users see. Regenerate with `TRYBUILD=overwrite cargo test -p ovation-macros --test ui`
//! and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/pass/*.rs");
}
