//! Raw-log / expected-output fixture tests (see tests/fixtures/README.md).
//!
//! Set `KTSTR_BLESS=1` to rewrite the `.collapsed` files after an intended format change.

mod common;
use common::{kind_keys, plain_lines};

use std::fs;
use std::path::PathBuf;

use ktstr_verifier::line::{FOLD_PREFIX, NOTE_PREFIX};
use ktstr_verifier::{collapse, expanded_line_count, Collapsed, LineKind};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> String {
    fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

/// A zstd-compressed fixture, decompressed.
fn read_zst(name: &str) -> String {
    let f = fs::File::open(fixture(name)).unwrap_or_else(|e| panic!("opening fixture {name}: {e}"));
    let mut d = ruzstd::decoding::StreamingDecoder::new(f)
        .unwrap_or_else(|e| panic!("fixture {name}: zstd: {e}"));
    let mut s = String::new();
    std::io::Read::read_to_string(&mut d, &mut s)
        .unwrap_or_else(|e| panic!("fixture {name}: decompressing: {e}"));
    s
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

/// Invariants every collapse of a fixture must keep.
fn check_invariants(log: &str, c: &Collapsed) {
    assert_eq!(
        expanded_line_count(&c.text).ok(),
        Some(log.lines().count() as u64)
    );
    assert_eq!(c.summary.lines_in, log.lines().count() as u64);
    assert_eq!(c.summary.lines_out, c.text.lines().count() as u64);
    let shapes_in = kind_keys(log.lines());
    let shapes_out = kind_keys(plain_lines(&c.text));
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
    assert!(n.contains(&"R1 (insn 4): 0 -> 37 step 1"), "{n:#?}");
    assert!(n.contains(&"R3 (insn 5): 0 -> 296 step 8"), "{n:#?}");
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

/// A real 7.3 log: the note for `reg` at instruction `insn` inside a fold, as (first, last, step).
fn note_for(c: &Collapsed, prefix: &str) -> Vec<(i64, i64, i64)> {
    notes(c)
        .into_iter()
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| {
            let (range, step) = rest.split_once(" step ")?;
            let (a, b) = range.split_once(" -> ")?;
            Some((a.parse().ok()?, b.parse().ok()?, step.parse().ok()?))
        })
        .collect()
}

/// The fold headers covering the loop body (insns 9-15) and their iteration counts.
fn body_folds(c: &Collapsed) -> Vec<(&str, u64)> {
    c.text
        .lines()
        .filter(|l| l.starts_with(FOLD_PREFIX) && l.contains(", insns 9-15)"))
        .filter_map(|h| {
            let of = h.split_once(" of ")?.1;
            let n = of.split_once(' ')?.0.parse().ok()?;
            Some((h, n))
        })
        .collect()
}

/// The backtracking note's count of omitted backtracking lines.
fn backtracking_lines(c: &Collapsed) -> Vec<u64> {
    notes(c)
        .into_iter()
        .filter_map(|n| n.strip_prefix("backtracking (mark_precise runs): "))
        .filter_map(|n| n.split_once(' ')?.0.parse().ok())
        .collect()
}

#[test]
fn real_loop40_pass_from_kernel_7_3() {
    let log = read_zst("real-loop40-pass.log.zst");
    let c = collapse(log.as_bytes()).expect("collapse");
    check_invariants(&log, &c);
    assert_eq!(c.summary.lines_in, 3477);
    // 7.3 backtracks precision through every iteration since the last checkpoint, so the
    // iterations grow; each run of backtracking lines compares as one unit, so the loop body
    // folds across the iterations, and long runs are abbreviated: 3477 -> 137 lines (3.9%).
    assert!(
        c.summary.lines_out * 100 < c.summary.lines_in * 5,
        "{} -> {} lines",
        c.summary.lines_in,
        c.summary.lines_out
    );
    let folds = body_folds(&c);
    assert_eq!(folds.len(), 1, "{folds:#?}");
    let (header, iterations) = folds[0];
    assert!(iterations >= 38, "{header}");
    assert!(header.contains(" iterations 2-"), "{header}");
    // The index register r6 steps by 4 bytes (one u32) per iteration across the whole fold.
    assert!(
        notes(&c).contains(&"R6 (insn 11): 0 -> 152 step 4"),
        "{:#?}",
        notes(&c)
    );
    assert_eq!(note_for(&c, "R6 (insn 11): "), vec![(0, 152, 4)]);
    // Most of what the fold omits is backtracking, and the note says how much.
    let bt = backtracking_lines(&c);
    assert_eq!(bt.len(), 1, "{:#?}", notes(&c));
    assert!(bt[0] > 2000 && bt[0] < 3108, "{bt:?}");
    // The exit test sees the index at its bound 40 * 4, verbatim.
    assert!(c.text.lines().any(|l| l == "14: R6=160"));
    let p = c.summary.last_program().expect("stats");
    assert_eq!(p.processed_insns, Some(291));
    assert_eq!(p.total_states, Some(6));
    assert_eq!(p.peak_states, Some(6));
    assert_eq!(p.stack_depth_max, Some(16));
    assert_eq!(p.stack_depth, vec![8]);
}

#[test]
fn real_loop40_fail_from_kernel_7_3_keeps_the_failing_iteration() {
    let log = read_zst("real-loop40-fail.log.zst");
    let c = collapse(log.as_bytes()).expect("collapse");
    check_invariants(&log, &c);
    assert_eq!(c.summary.lines_in, 4078);
    // 4078 -> 252 lines (6.2%): the loop body folds across 37 iterations; the last two
    // iterations, the failing one with its (abbreviated) backtracking, and the error report
    // stay; the causal path's per-iteration steps fold too.
    assert!(
        c.summary.lines_out * 100 < c.summary.lines_in * 7,
        "{} -> {} lines",
        c.summary.lines_in,
        c.summary.lines_out
    );
    let folds = body_folds(&c);
    assert_eq!(folds.len(), 1, "{folds:#?}");
    assert!(folds[0].1 >= 36, "{}", folds[0].0);
    assert_eq!(note_for(&c, "R6 (insn 11): "), vec![(0, 152, 4)]);
    let out: Vec<&str> = c.text.lines().collect();
    let err = out
        .iter()
        .position(|l| *l == "invalid access to map value, value_size=156 off=156 size=4")
        .expect("error line");
    assert_eq!(out[err - 1], "11: (61) r2 = *(u32 *)(r2 +0)");
    assert_eq!(
        out[err - 2],
        "11: R2=map_value(map=values,ks=4,vs=156,imm=156) R6=156"
    );
    assert_eq!(
        out[err + 1],
        "R2 min value is outside of the allowed memory range"
    );
    assert!(out[err..].contains(&"Verification failed: Memory Safety: Access outside bounds"));
    let fold_at = out
        .iter()
        .position(|l| l.starts_with(FOLD_PREFIX))
        .expect("a fold");
    assert!(fold_at < err);
    // The failing iteration is printed whole: from its loop head to the error, no fold between.
    let head = out[..err]
        .iter()
        .rposition(|l| l.starts_with("9: (bf) r2 = r0"))
        .expect("loop head of the failing iteration");
    assert!(head > fold_at);
    // No iteration is folded inside it; only its long backtracking walk is abbreviated.
    assert!(
        !out[head..err]
            .iter()
            .any(|l| l.starts_with(FOLD_PREFIX)
                && !l.contains(" lines omitted: backtracking steps ("))
    );
    let insns_in: Vec<&str> = {
        let lines: Vec<&str> = log.lines().collect();
        let h = lines
            .iter()
            .rposition(|l| l.starts_with("9: (bf) r2 = r0"))
            .expect("loop head in the input");
        lines[h..]
            .iter()
            .take_while(|l| !l.starts_with("invalid access"))
            .filter(|l| !l.starts_with("mark_precise"))
            .copied()
            .collect()
    };
    let insns_out: Vec<&str> = out[head..err]
        .iter()
        .filter(|l| !l.starts_with("mark_precise") && !l.starts_with(FOLD_PREFIX))
        .copied()
        .collect();
    assert_eq!(
        insns_in, insns_out,
        "the failing iteration's own lines are all kept"
    );
    assert!(out[head..err].contains(&"10: (0f) r2 += r6"));
    // 7.3's explanation after the error (the reason and the source line it points at) survives.
    for want in [
        "Reason:",
        "         |                 ^-- error: access may be outside object bounds",
    ] {
        assert!(out[err..].contains(&want), "{want:?} lost");
    }
    let p = c.summary.last_program().expect("stats");
    assert_eq!(p.processed_insns, Some(284));
    assert_eq!(p.total_states, Some(5));
}
