//! The whole verifier-log corpus (tests/fixtures/corpus, see its README.md): every log is
//! collapsed, its lines in, lines out and the share kept are printed (run with `--nocapture`
//! to see the table), and what a reader needs must survive.

mod common;
use common::{kind_keys, plain_lines};

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use ktstr_verifier::{classify, collapse, expanded_line_count, Collapsed, LineKind};

/// One log of the corpus, as MANIFEST lists it.
#[derive(Debug)]
struct Entry {
    file: String,
    loaded: bool,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

fn manifest() -> Vec<Entry> {
    let path = corpus_dir().join("MANIFEST");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            let file = f.next().unwrap_or_default().to_string();
            let loaded = f.next() == Some("true");
            Entry { file, loaded }
        })
        .collect()
}

/// A zstd-compressed log, decompressed.
fn read_zst(path: &Path) -> String {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut d = ruzstd::decoding::StreamingDecoder::new(f)
        .unwrap_or_else(|e| panic!("{}: zstd: {e}", path.display()));
    let mut s = String::new();
    std::io::Read::read_to_string(&mut d, &mut s)
        .unwrap_or_else(|e| panic!("{}: decompressing: {e}", path.display()));
    s
}

/// True when `needle` occurs in `hay` as consecutive lines.
fn contains_run(hay: &[&str], needle: &[&str]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Where a failed load failed: the last instruction line, the register state printed for it
/// (the state lines just before, back to the previous instruction), and the message after.
fn failing_window<'a>(lines: &[&'a str]) -> Option<Vec<&'a str>> {
    let last_insn = lines
        .iter()
        .rposition(|l| classify(l).kind == LineKind::Insn)?;
    let mut start = last_insn;
    while start > 0
        && matches!(
            classify(lines[start - 1]).kind,
            LineKind::InsnState | LineKind::State | LineKind::Branch | LineKind::Source
        )
    {
        start -= 1;
    }
    let end = (last_insn + 2).min(lines.len());
    Some(lines[start..end].to_vec())
}

/// Checks everything a collapse of one log must keep; panics naming the log.
fn check(name: &str, log: &str, loaded: bool, c: &Collapsed) {
    let lines: Vec<&str> = log.lines().collect();
    let out: Vec<&str> = c.text.lines().collect();
    assert_eq!(c.summary.lines_in, lines.len() as u64, "{name}");
    assert_eq!(c.summary.lines_out, out.len() as u64, "{name}");
    assert_eq!(
        expanded_line_count(&c.text).ok(),
        Some(lines.len() as u64),
        "{name}: the collapsed log does not expand back to the input's line count"
    );
    let kinds_in = kind_keys(lines.iter().copied());
    let kinds_out = kind_keys(plain_lines(&c.text));
    let lost: Vec<&String> = kinds_in.difference(&kinds_out).collect();
    assert!(lost.is_empty(), "{name}: line kinds lost: {lost:#?}");
    for l in &lines {
        if classify(l).kind == LineKind::Error {
            assert!(out.contains(l), "{name}: error line lost: {l}");
        }
    }
    if let Some(stats) = lines.iter().rfind(|l| l.starts_with("processed ")) {
        assert!(out.contains(stats), "{name}: final stats line lost");
    }
    if !loaded {
        let w = failing_window(&lines)
            .unwrap_or_else(|| panic!("{name}: a failed load's log without an instruction"));
        assert!(
            contains_run(&out, &w),
            "{name}: the failing instruction with its register state and error is not kept \
             verbatim: {w:#?}"
        );
    }
}

/// Lines in and out of one log.
struct Row {
    name: String,
    loaded: bool,
    scheduler: bool,
    lines_in: u64,
    lines_out: u64,
}

impl Row {
    /// A log the verifier walked loop iteration by iteration: one of our own loop programs
    /// with at least 500 lines (shorter ones, bpf_loop and bpf_for, the verifier does not walk
    /// iteration by iteration).
    fn loop_heavy(&self) -> bool {
        !self.scheduler && self.lines_in >= 500
    }
}

fn kept(out: u64, inp: u64) -> f64 {
    if inp == 0 {
        100.0
    } else {
        100.0 * out as f64 / inp as f64
    }
}

/// Sums of a set of rows: (logs, lines in, lines out).
fn total<'a>(rows: impl Iterator<Item = &'a Row>) -> (usize, u64, u64) {
    rows.fold((0, 0, 0), |(n, i, o), r| {
        (n + 1, i + r.lines_in, o + r.lines_out)
    })
}

#[test]
fn corpus_collapses_and_keeps_what_matters() {
    let entries = manifest();
    assert!(entries.len() >= 64, "corpus too small: {}", entries.len());
    let own_programs: BTreeSet<&str> = entries
        .iter()
        .filter(|e| !e.file.starts_with("sched-"))
        .filter_map(|e| e.file.split('.').next())
        .collect();
    assert!(own_programs.len() >= 16, "{own_programs:#?}");
    let mut rows = Vec::new();
    for e in &entries {
        let log = read_zst(&corpus_dir().join(&e.file));
        let c = collapse(log.as_bytes()).unwrap_or_else(|err| panic!("{}: {err}", e.file));
        check(&e.file, &log, e.loaded, &c);
        rows.push(Row {
            name: e.file.trim_end_matches(".log.zst").to_string(),
            loaded: e.loaded,
            scheduler: e.file.starts_with("sched-"),
            lines_in: c.summary.lines_in,
            lines_out: c.summary.lines_out,
        });
    }
    println!(
        "{:<48} {:>6} {:>9} {:>9} {:>7}",
        "log", "loads", "lines in", "lines out", "kept"
    );
    for r in &rows {
        println!(
            "{:<48} {:>6} {:>9} {:>9} {:>6.1}%{}",
            r.name,
            if r.loaded { "yes" } else { "no" },
            r.lines_in,
            r.lines_out,
            kept(r.lines_out, r.lines_in),
            if r.loop_heavy() { "  loop-heavy" } else { "" }
        );
    }
    let groups = [
        (
            "loop-heavy, passing",
            total(rows.iter().filter(|r| r.loop_heavy() && r.loaded)),
            25.0,
        ),
        (
            "loop-heavy, failing",
            total(rows.iter().filter(|r| r.loop_heavy() && !r.loaded)),
            40.0,
        ),
        (
            "schedulers",
            total(rows.iter().filter(|r| r.scheduler)),
            f64::INFINITY,
        ),
        ("whole corpus", total(rows.iter()), 35.0),
    ];
    let mut over = Vec::new();
    for (label, (n, i, o), target) in groups {
        let k = kept(o, i);
        let t = if target.is_finite() {
            format!("target <= {target}%")
        } else {
            "no target".to_string()
        };
        println!("{label:<24} {n:>4} logs {i:>9} -> {o:>8} lines, {k:>5.1}% kept ({t})");
        if k > target {
            over.push(format!("{label}: {k:.1}% kept, target {target}%"));
        }
    }
    // Each loop-heavy log meets its own target too, not just the sums.
    for r in rows.iter().filter(|r| r.loop_heavy()) {
        let target = if r.loaded { 25.0 } else { 40.0 };
        let k = kept(r.lines_out, r.lines_in);
        if k > target {
            over.push(format!("{}: {k:.1}% kept, target {target}%", r.name));
        }
    }
    assert!(over.is_empty(), "targets missed: {over:#?}");
}
