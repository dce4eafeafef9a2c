//! Raw-log / expected-output fixture tests (see tests/fixtures/README.md).
//!
//! Set `KTSTR_BLESS=1` to rewrite the `.collapsed` files after an intended format change.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use ktstr_verifier::fold::parse_header;
use ktstr_verifier::line::{shape, FOLD_PREFIX, NOTE_PREFIX};
use ktstr_verifier::{collapse, expanded_line_count, Collapsed, LineKind};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> String {
    fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

/// Collapses a fixture and compares it with its golden `.collapsed` file.
fn check_golden(name: &str) -> (String, Collapsed) {
    let log = read(name);
    let c = collapse(log.as_bytes()).expect("collapse");
    let golden = fixture(&name.replace(".log", ".collapsed"));
    if std::env::var_os("KTSTR_BLESS").is_some() {
        fs::write(&golden, &c.text).expect("bless");
    }
    let want = fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    assert_eq!(
        c.text,
        want,
        "{name}: output differs from {}",
        golden.display()
    );
    (log, c)
}

/// Output lines outside fold blocks.
fn plain_lines(collapsed: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut skip = 0u64;
    for l in collapsed.lines() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if l.starts_with(FOLD_PREFIX) {
            skip = parse_header(l).map_or(0, |(_, n)| n);
            continue;
        }
        out.push(l);
    }
    out
}

/// Invariants every collapse of a fixture must keep.
fn check_invariants(log: &str, c: &Collapsed) {
    assert_eq!(
        expanded_line_count(&c.text).ok(),
        Some(log.lines().count() as u64)
    );
    assert_eq!(c.summary.lines_in, log.lines().count() as u64);
    assert_eq!(c.summary.lines_out, c.text.lines().count() as u64);
    let shapes_in: BTreeSet<String> = log.lines().map(|l| shape(l).into_owned()).collect();
    let shapes_out: BTreeSet<String> = plain_lines(&c.text)
        .into_iter()
        .map(|l| shape(l).into_owned())
        .collect();
    let lost: Vec<&String> = shapes_in.difference(&shapes_out).collect();
    assert!(lost.is_empty(), "line kinds lost: {lost:#?}");
    for l in log.lines() {
        if ktstr_verifier::classify(l).kind == LineKind::Error {
            assert!(c.text.lines().any(|o| o == l), "error line lost: {l}");
        }
    }
    let tail_in: Vec<&str> = log.lines().rev().take(32).collect();
    let tail_out: Vec<&str> = c.text.lines().rev().take(32).collect();
    assert_eq!(tail_in, tail_out, "the last 32 lines must survive verbatim");
}

fn notes(c: &Collapsed) -> Vec<&str> {
    c.text
        .lines()
        .filter_map(|l| l.strip_prefix(NOTE_PREFIX))
        .collect()
}

#[test]
fn loop40_pass() {
    let (log, c) = check_golden("synthetic_loop40_pass.log");
    check_invariants(&log, &c);
    assert!(
        c.summary.ratio() > 5.0,
        "ratio {} ({} -> {})",
        c.summary.ratio(),
        c.summary.lines_in,
        c.summary.lines_out
    );
    let n = notes(&c);
    assert!(n.contains(&"R1 (insn 2): 1 -> 37 step 1"), "{n:#?}");
    assert!(n.contains(&"R3 (insn 5): 8 -> 296 step 8"), "{n:#?}");
    assert!(n.contains(&"R2.off (insn 6): 8 -> 296 step 8"), "{n:#?}");
    let p = c.summary.last_program().expect("stats");
    assert_eq!(p.processed_insns, Some(363));
    assert_eq!(p.total_states, Some(40));
    assert_eq!(p.verification_time_us, Some(262));
    assert_eq!(p.stack_depth, vec![0]);
}

#[test]
fn loop40_fail_keeps_error_and_failing_iteration() {
    let (log, c) = check_golden("synthetic_loop40_fail.log");
    check_invariants(&log, &c);
    assert!(c.summary.ratio() > 4.0, "ratio {}", c.summary.ratio());
    let out: Vec<&str> = c.text.lines().collect();
    let err = out
        .iter()
        .position(|l| *l == "R1 invalid mem access 'scalar'")
        .expect("error line");
    assert_eq!(out[err - 1], "10: (61) r1 = *(u32 *)(r1 +0)");
    assert!(out[..err].iter().any(|l| l.starts_with(FOLD_PREFIX)));
    let p = c.summary.last_program().expect("stats");
    assert_eq!(p.processed_insns, Some(401));
    assert_eq!(p.verification_time_us, Some(371));
}

#[test]
fn nested_loops_fold_in_two_levels() {
    let (log, c) = check_golden("synthetic_nested8x16_pass.log");
    check_invariants(&log, &c);
    assert!(c.summary.ratio() > 5.0, "ratio {}", c.summary.ratio());
    let headers: Vec<&str> = c
        .text
        .lines()
        .filter(|l| l.starts_with(FOLD_PREFIX))
        .collect();
    assert!(
        headers
            .iter()
            .any(|h| h.contains(" of 7 (period 29 lines, insns 2-11)")),
        "{headers:#?}"
    );
    assert!(
        headers
            .iter()
            .any(|h| h.contains(" of 15 (period 7 lines, insns 5-9)")),
        "{headers:#?}"
    );
    let n = notes(&c);
    assert!(n.contains(&"R6 (insn 3): 0 -> 6 step 1"), "{n:#?}");
    assert!(n.contains(&"R7 (insn 5): 0 -> 14 step 1"), "{n:#?}");
}

#[test]
fn collapsing_twice_changes_nothing_more_than_once() {
    let log = read("synthetic_loop40_pass.log");
    let once = collapse(log.as_bytes()).expect("collapse");
    let twice = collapse(once.text.as_bytes()).expect("collapse");
    assert!(twice.summary.lines_out <= once.summary.lines_out);
    assert_eq!(
        expanded_line_count(&twice.text).ok(),
        Some(once.summary.lines_out)
    );
}
