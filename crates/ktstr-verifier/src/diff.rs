//! A/B comparison of two captures (two builds of a scheduler, or two kernels): one
//! [`DiffRow`] per program with its figures on each side and their difference.
//!
//! ```
//! use ktstr_verifier::diff::{diff, render_diff, ProgramResult};
//! use ktstr_verifier::VerifierStats;
//!
//! let stats = |insns, states, stack| VerifierStats {
//!     processed_insns: Some(insns),
//!     total_states: Some(states),
//!     peak_states: Some(states),
//!     stack_depth: vec![stack],
//!     ..VerifierStats::default()
//! };
//! let a = vec![ProgramResult::new("enqueue", true, stats(1200, 40, 16))];
//! let b = vec![ProgramResult::new("enqueue", false, stats(1000000, 9000, 16))];
//! let rows = diff(&a, &b);
//! assert_eq!(rows[0].delta.processed_insns, Some(998_800));
//! assert!(rows[0].verdict_changed());
//! assert!(render_diff(&rows, "old", "new").contains("passes -> FAILS"));
//! ```

use std::fmt::Write as _;

use crate::stats::VerifierStats;

/// One program's result on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramResult {
    /// The program's name.
    pub name: String,
    /// Whether it loaded.
    pub loaded: bool,
    /// Its verifier statistics.
    pub stats: VerifierStats,
}

impl ProgramResult {
    /// A result of `name`.
    pub fn new(name: &str, loaded: bool, stats: VerifierStats) -> Self {
        Self {
            name: name.to_string(),
            loaded,
            stats,
        }
    }
}

/// The figures a row compares, for one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Side {
    /// Whether the program loaded.
    pub loaded: bool,
    /// Instructions processed.
    pub processed_insns: Option<u64>,
    /// States created in total.
    pub total_states: Option<u64>,
    /// Most states alive at once.
    pub peak_states: Option<u64>,
    /// Stack depth in bytes, as [`VerifierStats::max_stack_depth`] gives it.
    pub stack_depth: Option<u64>,
}

impl Side {
    fn of(p: &ProgramResult) -> Self {
        Self {
            loaded: p.loaded,
            processed_insns: p.stats.processed_insns,
            total_states: p.stats.total_states,
            peak_states: p.stats.peak_states,
            stack_depth: p.stats.max_stack_depth(),
        }
    }
}

/// B minus A for each figure both sides have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Change in instructions processed.
    pub processed_insns: Option<i128>,
    /// Change in total states.
    pub total_states: Option<i128>,
    /// Change in peak states.
    pub peak_states: Option<i128>,
    /// Change in stack depth.
    pub stack_depth: Option<i128>,
}

/// One program compared: `a` or `b` is `None` when the program exists on one side only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRow {
    /// The program's name.
    pub name: String,
    /// Side A (the first `--kernel` or `--object`).
    pub a: Option<Side>,
    /// Side B.
    pub b: Option<Side>,
    /// B minus A.
    pub delta: Delta,
}

impl DiffRow {
    /// True when the program loads on one side and fails (or is missing) on the other.
    pub fn verdict_changed(&self) -> bool {
        self.a.map(|s| s.loaded) != self.b.map(|s| s.loaded)
    }

    /// The row as one JSON object.
    pub fn to_json(&self) -> String {
        let side = |s: Option<Side>| {
            match s {
            None => "null".to_string(),
            Some(s) => format!(
                "{{\"loaded\":{},\"processed_insns\":{},\"total_states\":{},\"peak_states\":{},\"stack_depth\":{}}}",
                s.loaded,
                json_num(s.processed_insns),
                json_num(s.total_states),
                json_num(s.peak_states),
                json_num(s.stack_depth)
            ),
        }
        };
        let d = &self.delta;
        format!(
            "{{\"name\":{},\"a\":{},\"b\":{},\"delta\":{{\"processed_insns\":{},\"total_states\":{},\"peak_states\":{},\"stack_depth\":{}}},\"verdict_changed\":{}}}",
            json_str(&self.name),
            side(self.a),
            side(self.b),
            json_num(d.processed_insns),
            json_num(d.total_states),
            json_num(d.peak_states),
            json_num(d.stack_depth),
            self.verdict_changed()
        )
    }
}

fn json_num<T: std::fmt::Display>(n: Option<T>) -> String {
    n.map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn sub(a: Option<u64>, b: Option<u64>) -> Option<i128> {
    Some(i128::from(b?) - i128::from(a?))
}

/// Compares two captures program by program: A's programs in order, then those only B has.
/// A name that occurs several times on a side (one object embedding several) is matched in
/// order of occurrence.
pub fn diff(a: &[ProgramResult], b: &[ProgramResult]) -> Vec<DiffRow> {
    let mut used = vec![false; b.len()];
    let mut rows = Vec::with_capacity(a.len().max(b.len()));
    for pa in a {
        let mb = b
            .iter()
            .enumerate()
            .find(|(i, pb)| !used.get(*i).copied().unwrap_or(true) && pb.name == pa.name)
            .map(|(i, pb)| {
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
                Side::of(pb)
            });
        rows.push(row(&pa.name, Some(Side::of(pa)), mb));
    }
    for (pb, u) in b.iter().zip(&used) {
        if !u {
            rows.push(row(&pb.name, None, Some(Side::of(pb))));
        }
    }
    rows
}

fn row(name: &str, a: Option<Side>, b: Option<Side>) -> DiffRow {
    let d = |f: fn(&Side) -> Option<u64>| sub(a.as_ref().and_then(f), b.as_ref().and_then(f));
    DiffRow {
        name: name.to_string(),
        a,
        b,
        delta: Delta {
            processed_insns: d(|s| s.processed_insns),
            total_states: d(|s| s.total_states),
            peak_states: d(|s| s.peak_states),
            stack_depth: d(|s| s.stack_depth),
        },
    }
}

/// The rows as a JSON array, one object per row.
pub fn rows_json(rows: &[DiffRow]) -> String {
    let items: Vec<String> = rows.iter().map(DiffRow::to_json).collect();
    format!("[{}]", items.join(","))
}

/// The comparison table: per program, A and B and their difference for instructions
/// processed, states (total/peak) and stack depth, and a mark where the verdict differs.
pub fn render_diff(rows: &[DiffRow], label_a: &str, label_b: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "A: {label_a}\nB: {label_b}");
    let _ = writeln!(
        s,
        "{:<28} {:>21} {:>23} {:>17}  VERDICT",
        "PROGRAM", "PROCESSED A -> B", "STATES(T/P) A -> B", "STACK A -> B"
    );
    let num = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let signed = |n: Option<i128>| match n {
        Some(n) if n > 0 => format!("+{n}"),
        Some(n) => n.to_string(),
        None => "-".to_string(),
    };
    for r in rows {
        let pair = |f: fn(&Side) -> Option<u64>| {
            (num(r.a.as_ref().and_then(f)), num(r.b.as_ref().and_then(f)))
        };
        let (pa, pb) = pair(|s| s.processed_insns);
        let (ta, tb) = pair(|s| s.total_states);
        let (ka, kb) = pair(|s| s.peak_states);
        let (sa, sb) = pair(|s| s.stack_depth);
        let verdict = |s: Option<Side>| match s {
            None => "missing",
            Some(s) if s.loaded => "passes",
            Some(_) => "FAILS",
        };
        let mark = if r.verdict_changed() {
            format!("{} -> {}  <-- differs", verdict(r.a), verdict(r.b))
        } else {
            verdict(r.a).to_string()
        };
        let _ = writeln!(
            s,
            "{:<28} {:>21} {:>23} {:>17}  {mark}",
            r.name,
            format!("{pa} -> {pb} ({})", signed(r.delta.processed_insns)),
            format!("{ta}/{ka} -> {tb}/{kb} ({})", signed(r.delta.total_states)),
            format!("{sa} -> {sb} ({})", signed(r.delta.stack_depth)),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, loaded: bool, insns: u64, stack: u64) -> ProgramResult {
        ProgramResult::new(
            name,
            loaded,
            VerifierStats {
                processed_insns: Some(insns),
                total_states: Some(insns / 10),
                peak_states: Some(insns / 20),
                stack_depth: vec![stack, stack / 2],
                ..VerifierStats::default()
            },
        )
    }

    #[test]
    fn rows_match_by_name_and_mark_changed_verdicts() {
        let a = vec![
            p("x", true, 100, 16),
            p("y", true, 50, 8),
            p("gone", true, 5, 0),
        ];
        let b = vec![
            p("y", false, 60, 8),
            p("x", true, 80, 32),
            p("new", true, 7, 0),
        ];
        let rows = diff(&a, &b);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["x", "y", "gone", "new"]);
        assert_eq!(rows[0].delta.processed_insns, Some(-20));
        // Stack depth is VerifierStats::max_stack_depth: here the subprograms' sum, 24 -> 48.
        assert_eq!(rows[0].delta.stack_depth, Some(24));
        assert_eq!(rows[0].delta.total_states, Some(-2));
        assert!(!rows[0].verdict_changed());
        assert!(rows[1].verdict_changed());
        assert!(rows[2].verdict_changed() && rows[2].b.is_none());
        assert_eq!(rows[2].delta, Delta::default());
        assert!(rows[3].a.is_none());
        let t = render_diff(&rows, "old.o", "new.o");
        assert!(t.contains("100 -> 80 (-20)"), "{t}");
        assert!(t.contains("passes -> FAILS  <-- differs"), "{t}");
        assert!(t.contains("passes -> missing  <-- differs"), "{t}");
        assert!(t.contains("missing -> passes  <-- differs"), "{t}");
    }

    #[test]
    fn json_rows() {
        let rows = diff(&[p("a\"b", true, 10, 8)], &[p("a\"b", false, 12, 8)]);
        assert_eq!(
            rows_json(&rows),
            "[{\"name\":\"a\\\"b\",\"a\":{\"loaded\":true,\"processed_insns\":10,\"total_states\":1,\"peak_states\":0,\"stack_depth\":12},\"b\":{\"loaded\":false,\"processed_insns\":12,\"total_states\":1,\"peak_states\":0,\"stack_depth\":12},\"delta\":{\"processed_insns\":2,\"total_states\":0,\"peak_states\":0,\"stack_depth\":0},\"verdict_changed\":true}]"
        );
        assert_eq!(rows_json(&[]), "[]");
    }

    #[test]
    fn repeated_names_match_in_order() {
        let a = vec![p("probe", true, 1, 0), p("probe", true, 2, 0)];
        let b = vec![p("probe", true, 3, 0), p("probe", true, 5, 0)];
        let rows = diff(&a, &b);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].delta.processed_insns, Some(2));
        assert_eq!(rows[1].delta.processed_insns, Some(3));
    }
}
