//! Helpers for this crate's tests.

use std::io::Write;

/// Says visibly (libtest hides a passing test's `eprintln!`) that a test skips for lack of
/// a prerequisite, and fails it instead when `KTSTR_REQUIRE_VM=1` (CI, after `scripts/setup`).
pub(crate) fn skip(why: &str) {
    assert!(
        std::env::var("KTSTR_REQUIRE_VM").as_deref() != Ok("1"),
        "KTSTR_REQUIRE_VM=1 but {why}"
    );
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}
