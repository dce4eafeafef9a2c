//! The fold block format: header, notes, value summaries, and counting a collapsed log back.
//!
//! A fold replaces the middle iterations of a repeated block:
//!
//! ```text
//! <first iteration, verbatim>
//! --- ktstr fold: 418 lines omitted: iterations 2-39 of 40 (period 11 lines, insns 2-10); R7 0 -> 39 step 1; R3.smax varies (5 distinct, 0..100); 3 notes ---
//! ---   backtracking (mark_precise runs): 76 of the omitted lines, 38 runs of 2 lines
//! ---   R7 (insn 2): 0 -> 39 step 1
//! ---   R3.smax (insn 7): varies (5 distinct, 0..100)
//! <last iteration, verbatim>
//! ```
//!
//! The header's first number is how many original lines it stands for (nested folds included);
//! the first few changes follow, so the header reads on its own; its last `N notes` says how
//! many note lines follow. A note describes one value across *all*
//! iterations, first and last included, except the `backtracking` note, which counts the
//! precision-backtracking lines among the omitted ones (each run of them is compared as one
//! unit, whatever its length, so iterations may differ in length: `period 28-133 lines`). Counting every other line as one original line gives
//! back the input's line count ([`expanded_line_count`]). An input line that itself starts with
//! the header prefix (after any backslashes) is written with one more leading backslash.

use std::borrow::Cow;

use crate::error::VerifierError;
use crate::item::Backtrack;
use crate::line::{FOLD_PREFIX, NOTE_PREFIX};

/// Distinct values remembered per slot before a note says `>N distinct`.
const MAX_DISTINCT: usize = 16;

/// How one abstracted value evolved over a fold's iterations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotStats {
    first: i128,
    last: i128,
    count: u64,
    step: Option<i128>,
    arithmetic: bool,
    min: i128,
    max: i128,
    distinct: Vec<i128>,
    distinct_overflow: bool,
    hex: bool,
}

impl SlotStats {
    /// Stats holding one value.
    pub(crate) fn new(v: i128, hex: bool) -> Self {
        Self {
            first: v,
            last: v,
            count: 1,
            step: None,
            arithmetic: true,
            min: v,
            max: v,
            distinct: vec![v],
            distinct_overflow: false,
            hex,
        }
    }

    /// Adds the value of the next iteration.
    pub(crate) fn push(&mut self, v: i128) {
        let d = v.saturating_sub(self.last);
        match self.step {
            None => self.step = Some(d),
            Some(s) if s != d => self.arithmetic = false,
            Some(_) => {}
        }
        self.last = v;
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if !self.distinct_overflow && !self.distinct.contains(&v) {
            if self.distinct.len() < MAX_DISTINCT {
                self.distinct.push(v);
            } else {
                self.distinct_overflow = true;
            }
        }
    }

    /// The latest value.
    pub(crate) fn last(&self) -> i128 {
        self.last
    }

    /// True when the value never changed.
    pub(crate) fn constant(&self) -> bool {
        self.min == self.max
    }

    /// What makes two slots of one register tell the same story: an arithmetic progression
    /// with the same step (the values then differ by a constant visible in the kept
    /// iterations), or the same description.
    pub(crate) fn pattern(&self) -> String {
        match (self.arithmetic, self.step) {
            (true, Some(s)) => format!("step {s} x{}", self.count),
            _ => self.describe(),
        }
    }

    /// `0 -> 39 step 1`, or `varies (5 distinct, 0..100)`.
    pub(crate) fn describe(&self) -> String {
        let f = |v: i128| fmt_value(v, self.hex);
        match (self.arithmetic, self.step) {
            (true, Some(s)) => {
                let step = if s < 0 {
                    format!("-{}", fmt_value(s.saturating_neg(), self.hex))
                } else {
                    f(s)
                };
                format!("{} -> {} step {}", f(self.first), f(self.last), step)
            }
            _ => {
                let n = if self.distinct_overflow {
                    format!(">{MAX_DISTINCT}")
                } else {
                    self.distinct.len().to_string()
                };
                format!("varies ({n} distinct, {}..{})", f(self.min), f(self.max))
            }
        }
    }
}

/// Formats a value in the radix it was written in.
fn fmt_value(v: i128, hex: bool) -> String {
    if !hex {
        return v.to_string();
    }
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

/// What a fold header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// Original lines the fold stands for.
    pub(crate) omitted_lines: u64,
    /// Total iterations, first and last included.
    pub(crate) iterations: u64,
    /// Fewest and most lines per iteration (a backtracking run counts its lines, a nested
    /// fold one).
    pub(crate) period: (u64, u64),
    /// Instruction index range covered by the iteration.
    pub(crate) insns: Option<(u32, u32)>,
    /// Number of note lines that follow.
    pub(crate) notes: usize,
    /// The first few changes, repeated in the header so it reads on its own
    /// (`R7 0 -> 39 step 1`).
    pub(crate) summary: Vec<String>,
}

impl Header {
    /// The header line.
    pub(crate) fn render(&self) -> String {
        let insns = match self.insns {
            Some((a, b)) => format!(", insns {a}-{b}"),
            None => String::new(),
        };
        let plural = if self.notes == 1 { "note" } else { "notes" };
        let period = match self.period {
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        };
        let mut summary = String::new();
        for s in &self.summary {
            summary.push_str("; ");
            summary.push_str(s);
        }
        format!(
            "{FOLD_PREFIX}{} lines omitted: iterations 2-{} of {} (period {period} lines{insns}){summary}; {} {plural} ---",
            self.omitted_lines,
            self.iterations.saturating_sub(1),
            self.iterations,
            self.notes,
        )
    }
}

/// Most changes repeated in a fold header.
pub(crate) const SUMMARY_ITEMS: usize = 3;

/// Adds a change as the header repeats it (`R7 0 -> 39 step 1`, `R2 changes shape`) unless
/// the header already has [`SUMMARY_ITEMS`] of them or one for `label`.
pub(crate) fn push_summary(summary: &mut Vec<String>, label: &str, desc: &str) {
    if summary.len() >= SUMMARY_ITEMS
        || summary
            .iter()
            .any(|s| s.strip_prefix(label).is_some_and(|r| r.starts_with(' ')))
    {
        return;
    }
    let desc = match desc.split_once(':') {
        Some((head, _)) if head == "changes shape" => head,
        _ => desc,
    };
    summary.push(format!("{label} {desc}"));
}

/// A note line: `---   R7 (insn 2): 0 -> 39 step 1`.
pub(crate) fn render_note(label: &str, insn: Option<u32>, line_off: usize, desc: &str) -> String {
    match insn {
        Some(i) => format!("{NOTE_PREFIX}{label} (insn {i}): {desc}"),
        None => format!("{NOTE_PREFIX}{label} (line +{line_off}): {desc}"),
    }
}

/// The note counting the precision-backtracking lines a fold omitted:
/// `---   backtracking (mark_precise runs): 2210 of the omitted lines, 76 runs of 7-75 lines`.
pub(crate) fn render_backtrack_note(b: &Backtrack) -> String {
    let sizes = if b.min_run == b.max_run {
        b.max_run.to_string()
    } else {
        format!("{}-{}", b.min_run, b.max_run)
    };
    let runs = if b.runs == 1 { "run" } else { "runs" };
    format!(
        "{NOTE_PREFIX}backtracking (mark_precise runs): {} of the omitted lines, {} {runs} of {sizes} lines",
        b.lines, b.runs
    )
}

/// Parses `(omitted lines, note count)` from a header line; `None` if it is not well formed.
pub fn parse_header(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix(FOLD_PREFIX)?;
    let end = rest.bytes().position(|c| !c.is_ascii_digit())?;
    let omitted = rest[..end].parse().ok()?;
    let tail = &rest[rest.rfind("; ")? + 2..];
    let nend = tail.bytes().position(|c| !c.is_ascii_digit())?;
    let notes = tail[..nend].parse().ok()?;
    let word = &tail[nend..];
    if !(word.starts_with(" note ") || word.starts_with(" notes ")) {
        return None;
    }
    Some((omitted, notes))
}

/// Escapes an input line that would otherwise read as a fold header.
pub fn escape(line: &str) -> Cow<'_, str> {
    let t = line.trim_start_matches('\\');
    if t.starts_with(FOLD_PREFIX) {
        Cow::Owned(format!("\\{line}"))
    } else {
        Cow::Borrowed(line)
    }
}

/// Undoes [`escape`].
pub fn unescape(line: &str) -> &str {
    match line.strip_prefix('\\') {
        Some(rest) if rest.trim_start_matches('\\').starts_with(FOLD_PREFIX) => rest,
        _ => line,
    }
}

/// Counts the original lines a collapsed log stands for: each fold header counts as the lines
/// it omitted, its notes as none, every other line as one.
pub fn expanded_line_count(collapsed: &str) -> Result<u64, VerifierError> {
    let mut total: u64 = 0;
    let mut skip: u64 = 0;
    let mut open = (0u64, 0u64);
    for (i, line) in collapsed.lines().enumerate() {
        let lineno = i as u64 + 1;
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if line.starts_with(FOLD_PREFIX) {
            let (omitted, notes) =
                parse_header(line).ok_or(VerifierError::MalformedFold { line: lineno })?;
            total = total.saturating_add(omitted);
            skip = notes;
            open = (lineno, notes);
        } else {
            total = total.saturating_add(1);
        }
    }
    if skip > 0 {
        return Err(VerifierError::TruncatedFold {
            line: open.0,
            notes: open.1,
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_description() {
        let mut s = SlotStats::new(0, false);
        for v in 1..40 {
            s.push(v);
        }
        assert_eq!(s.describe(), "0 -> 39 step 1");
        assert!(!s.constant());
    }

    #[test]
    fn negative_hex_step() {
        let mut s = SlotStats::new(0x40, true);
        s.push(0x38);
        s.push(0x30);
        assert_eq!(s.describe(), "0x40 -> 0x30 step -0x8");
    }

    #[test]
    fn varies_description() {
        let mut s = SlotStats::new(5, false);
        for v in [1, 9, 1, 100] {
            s.push(v);
        }
        assert_eq!(s.describe(), "varies (4 distinct, 1..100)");
        let mut s = SlotStats::new(0, false);
        for v in 0..40 {
            s.push(v * v);
        }
        assert_eq!(s.describe(), "varies (>16 distinct, 0..1521)");
    }

    #[test]
    fn constant_is_constant() {
        let mut s = SlotStats::new(7, false);
        s.push(7);
        assert!(s.constant());
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            omitted_lines: 418,
            iterations: 40,
            period: (11, 11),
            insns: Some((2, 10)),
            notes: 1,
            summary: Vec::new(),
        };
        let text = h.render();
        assert_eq!(
            text,
            "--- ktstr fold: 418 lines omitted: iterations 2-39 of 40 (period 11 lines, insns 2-10); 1 note ---"
        );
        assert_eq!(parse_header(&text), Some((418, 1)));
        assert_eq!(parse_header("--- ktstr fold: lots"), None);
        let with_summary = Header {
            summary: vec!["R7 0 -> 39 step 1".into(), "R2 changes shape".into()],
            ..h.clone()
        }
        .render();
        assert_eq!(
            with_summary,
            "--- ktstr fold: 418 lines omitted: iterations 2-39 of 40 (period 11 lines, insns 2-10); R7 0 -> 39 step 1; R2 changes shape; 1 note ---"
        );
        assert_eq!(parse_header(&with_summary), Some((418, 1)));
        let h = Header {
            period: (13, 133),
            notes: 0,
            ..h
        };
        assert_eq!(
            h.render(),
            "--- ktstr fold: 418 lines omitted: iterations 2-39 of 40 (period 13-133 lines, insns 2-10); 0 notes ---"
        );
    }

    #[test]
    fn expanded_count() {
        let text = "a\n--- ktstr fold: 10 lines omitted: iterations 2-3 of 4 (period 5 lines); 2 notes ---\n---   x\n---   y\nb\n";
        assert_eq!(expanded_line_count(text).ok(), Some(12));
        let bad = "--- ktstr fold: 10 lines omitted: iterations 2-3 of 4 (period 5 lines); 3 notes ---\n---   x\n";
        assert!(matches!(
            expanded_line_count(bad),
            Err(VerifierError::TruncatedFold { line: 1, notes: 3 })
        ));
        assert!(matches!(
            expanded_line_count("--- ktstr fold: nonsense"),
            Err(VerifierError::MalformedFold { line: 1 })
        ));
    }

    #[test]
    fn escaping_round_trips() {
        let l =
            "--- ktstr fold: 3 lines omitted: iterations 2-2 of 3 (period 1 lines); 0 notes ---";
        let e = escape(l);
        assert_eq!(e, format!("\\{l}"));
        assert_eq!(unescape(&e), l);
        let ee = escape(&e);
        assert_eq!(unescape(&ee), e);
        assert_eq!(escape("plain"), "plain");
        assert_eq!(unescape("\\plain"), "\\plain");
    }
}
