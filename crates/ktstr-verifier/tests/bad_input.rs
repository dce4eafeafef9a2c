//! Inputs that are not one clean 7.x log: truncated logs, two programs' logs interleaved, lines
//! longer than 1 MiB, invalid UTF-8, and logs in the 5.15 and 6.1 formats (hand-written, see
//! tests/fixtures/bad/gen_bad.py). Each collapses without panicking, its fold counts expand
//! back to its line count, its error lines and its end survive verbatim, and the changes that
//! cannot be shown (an over-long line's dropped bytes, replaced invalid bytes) are marked.
//! The fuzz target (fuzz/fuzz_targets/collapse.rs) checks the same on arbitrary bytes and on
//! truncated and interleaved versions of them; seed it with tests/fixtures/bad.

use std::fs;
use std::path::PathBuf;

use ktstr_verifier::collapse::MAX_LINE_BYTES;
use ktstr_verifier::line::NOTE_PREFIX;
use ktstr_verifier::{classify, collapse, expanded_line_count, fold, Collapsed, LineKind};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_bytes(name: &str) -> Vec<u8> {
    let p = fixtures().join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A corpus log, decompressed.
fn corpus(name: &str) -> String {
    let p = fixtures().join("corpus").join(name);
    let f = fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut d = ruzstd::decoding::StreamingDecoder::new(f).expect("zstd");
    let mut s = String::new();
    std::io::Read::read_to_string(&mut d, &mut s).expect("decompress");
    s
}

/// What must hold for any input; returns the collapse.
fn check(name: &str, input: &[u8]) -> Collapsed {
    let c = collapse(input).unwrap_or_else(|e| panic!("{name}: {e}"));
    let text = String::from_utf8_lossy(input);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(c.summary.lines_in, lines.len() as u64, "{name}: lines read");
    assert_eq!(
        c.summary.lines_out,
        c.text.lines().count() as u64,
        "{name}: lines written"
    );
    assert_eq!(
        expanded_line_count(&c.text).ok(),
        Some(lines.len() as u64),
        "{name}: fold counts do not expand to the input's line count"
    );
    let out: Vec<&str> = c.text.lines().collect();
    for l in &lines {
        if l.len() <= MAX_LINE_BYTES && classify(l).kind == LineKind::Error {
            let want = fold::escape(l);
            assert!(out.contains(&want.as_ref()), "{name}: error line lost: {l}");
        }
    }
    if let Some(last) = lines.last().filter(|l| l.len() <= MAX_LINE_BYTES) {
        let last = last.strip_suffix('\r').unwrap_or(last);
        assert_eq!(
            out.last().copied(),
            Some(fold::escape(last).as_ref()),
            "{name}: the last line is not kept"
        );
    }
    c
}

fn notes(c: &Collapsed) -> Vec<&str> {
    c.text
        .lines()
        .filter_map(|l| l.strip_prefix(NOTE_PREFIX))
        .collect()
}

#[test]
fn kernel_5_15_format_folds() {
    for (name, fail) in [
        ("k5.15-loop40-pass.log", false),
        ("k5.15-loop40-fail.log", true),
    ] {
        let log = read_bytes(&format!("bad/{name}"));
        let c = check(name, &log);
        assert!(
            c.summary.lines_out * 4 < c.summary.lines_in,
            "{name}: {} -> {}",
            c.summary.lines_in,
            c.summary.lines_out
        );
        // `invP8` is a precise constant 8: the index register steps by 4 bytes.
        let n = notes(&c);
        assert!(
            n.iter()
                .any(|l| l.starts_with("R6 (insn ") && l.ends_with(" step 4")),
            "{name}: {n:#?}"
        );
        let p = c.summary.last_program().expect("stats");
        assert_eq!(
            p.processed_insns,
            Some(if fail { 556 } else { 563 }),
            "{name}"
        );
    }
}

#[test]
fn kernel_6_1_format_folds() {
    for name in ["k6.1-loop40-pass.log", "k6.1-loop40-fail.log"] {
        let log = read_bytes(&format!("bad/{name}"));
        let c = check(name, &log);
        assert!(
            c.summary.lines_out * 4 < c.summary.lines_in,
            "{name}: {} -> {}",
            c.summary.lines_in,
            c.summary.lines_out
        );
        let n = notes(&c);
        assert!(
            n.iter()
                .any(|l| l.starts_with("R6 (insn ") && l.ends_with(" step 4")),
            "{name}: {n:#?}"
        );
        assert!(c.summary.last_program().is_some(), "{name}");
    }
}

#[test]
fn truncated_logs_keep_their_cut_end() {
    let log = corpus("loop_bounded_fail.l2.log.zst");
    for cut in [1, log.len() / 3, log.len() * 2 / 3, log.len() - 7] {
        let Some(part) = log.get(..cut) else {
            continue;
        };
        let c = check(&format!("truncated at {cut}"), part.as_bytes());
        // A log cut before its statistics has none to report.
        if !part.contains("\nprocessed ") {
            assert!(c.summary.last_program().is_none());
        }
    }
    let part = &log[..log.len() * 2 / 3];
    let c = collapse(part.as_bytes()).expect("collapse");
    assert!(c.summary.lines_out * 3 < c.summary.lines_in);
}

#[test]
fn interleaved_logs_of_two_programs() {
    let a = corpus("loop_bounded_pass.l2.log.zst");
    let b = corpus("map_elems_fail.l2.log.zst");
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for block in [1, 7, 50, 400] {
        let mut mixed = String::new();
        for k in (0..a.len().max(b.len())).step_by(block) {
            for l in a
                .iter()
                .skip(k)
                .take(block)
                .chain(b.iter().skip(k).take(block))
            {
                mixed.push_str(l);
                mixed.push('\n');
            }
        }
        let c = check(&format!("interleaved by {block}"), mixed.as_bytes());
        // Both programs' statistics are read, in the order their lines came.
        assert_eq!(c.summary.programs.len(), 2, "interleaved by {block}");
    }
}

#[test]
fn lines_longer_than_a_mebibyte_are_cut_with_a_marker() {
    let mut log = corpus("may_goto_pass.l2.log.zst");
    let at = log.find("\n; __u32 zero").expect("a source line") + 1;
    let long = format!("; {}\n", "x".repeat(3 << 20));
    log.insert_str(at, &long);
    let c = check("3 MiB line", log.as_bytes());
    let cut = c
        .text
        .lines()
        .find(|l| l.starts_with("; xxx"))
        .expect("the long line, cut");
    assert!(cut.len() < MAX_LINE_BYTES + 64, "{}", cut.len());
    assert!(
        cut.ends_with(&format!(
            " [ktstr: line truncated, {} bytes dropped]",
            (3 << 20) + 2 - MAX_LINE_BYTES
        )),
        "{}",
        &cut[cut.len() - 60..]
    );
    // A long line ends no fold early and makes the output no longer than the input.
    assert!(c.summary.lines_out < c.summary.lines_in);
}

#[test]
fn invalid_utf8_is_replaced_not_fatal() {
    let log = read_bytes("bad/invalid-utf8-may_goto_pass.log");
    assert!(std::str::from_utf8(&log).is_err());
    let c = check("invalid UTF-8", &log);
    assert!(
        c.text.contains("; __u32 z\u{fffd}ro"),
        "replaced, not dropped"
    );
    assert!(c.summary.lines_out < c.summary.lines_in);
}

/// Found by the fuzz target: an error line ending in bare CRs, with no newline after it, is
/// kept (its last CR read as a CR-LF's, as every line's is).
#[test]
fn an_error_line_ending_in_bare_carriage_returns_is_kept() {
    let c = collapse(&b"\terror\r\r"[..]).expect("in-memory input");
    assert_eq!(c.text, "\terror\r\n");
    assert_eq!(expanded_line_count(&c.text).expect("own output"), 1);
    let c = collapse(&b"R1 bad\r\nerror: invalid access\r\r\n"[..]).expect("in-memory input");
    assert!(c.text.contains("error: invalid access\r"), "{:?}", c.text);
}
