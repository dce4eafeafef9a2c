//! Group each maximal run of precision-backtracking lines into one item.
//!
//! From kernel 7.x the verifier walks precision marks back through every iteration since the
//! last checkpoint, so each loop iteration carries runs like
//!
//! ```text
//! mark_precise: frame0: last_idx 10 first_idx 9 subseq_idx -1
//! mark_precise: frame0: regs=r6 stack= before 9: (bf) r2 = r0
//! mark_precise: frame0: regs=r6 stack= before 15: (05) goto pc-7
//! ...
//! mark_precise: frame0: parent state regs= stack=:  R0=map_value(...) R6=P8 R10=fp0
//! ```
//!
//! whose length grows with the iteration number. The folding passes see such a run as one item
//! whose identity is only which kinds of backtracking line it holds (`last_idx`, `regs=...
//! before`, `parent state`, ...) and in which frames, not its length or the instructions it
//! walks, so iterations of one loop compare equal. The run keeps its full text (printed for the
//! first and last iteration of a fold) and its line count (so fold counts still add up).

use crate::item::Item;
use crate::line::{LineKind, FOLD_PREFIX};

/// Most lines in one run item; a longer run continues in the next item.
const MAX_RUN_LINES: u64 = 4096;
/// Most bytes in one run item (a single longer line still makes a run of its own).
const MAX_RUN_BYTES: usize = 1 << 20;

/// How backtracking lines start (after `mark_precise: frameN: `); anything else is one more kind.
const KINDS: [&str; 6] = [
    "last_idx ",
    "regs=",
    "parent state ",
    "parent didn't have ",
    "propagating ",
    "falling back ",
];

/// Collects consecutive foldable backtracking lines into run items.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    text: String,
    lines: u64,
    /// Precision or Listing: what the current run is made of.
    kind: Option<LineKind>,
    kinds: u16,
    /// Instruction range of the run's listing lines.
    insns: Option<(u32, u32)>,
    /// Kind bits of each line of the run, in order.
    line_kinds: Vec<u16>,
}

/// Lines kept whole at the start of a long run (its `last_idx` line and first step).
const HEAD_LINES: usize = 2;
/// Lines kept whole at the end of a long run (its last step and `parent state` dump).
const TAIL_LINES: usize = 2;

impl Runs {
    /// True when `item` continues (or starts) a run: a foldable backtracking line.
    pub(crate) fn joins(item: &Item) -> bool {
        matches!(item.class.kind, LineKind::Precision | LineKind::Listing)
            && item.foldable
            && item.weight == 1
    }

    /// Adds a line for which [`Self::joins`] holds; gives back the run so far if it was full.
    pub(crate) fn add(&mut self, item: &Item) -> Option<Item> {
        let full = self.lines >= MAX_RUN_LINES
            || (self.lines > 0 && self.text.len() + item.text.len() > MAX_RUN_BYTES)
            || self.kind.is_some_and(|k| k != item.class.kind);
        let done = if full { self.take() } else { None };
        self.kind = Some(item.class.kind);
        if let Some(i) = item.class.insn {
            self.insns = Some(self.insns.map_or((i, i), |(a, b)| (a.min(i), b.max(i))));
        }
        self.kinds |= item.backtrack_kind;
        self.line_kinds.push(item.backtrack_kind);
        if self.lines > 0 {
            self.text.push('\n');
        }
        self.text.push_str(&item.text);
        self.lines += 1;
        done
    }

    /// Ends the current run and returns it, if there is one.
    pub(crate) fn take(&mut self) -> Option<Item> {
        if self.lines == 0 {
            return None;
        }
        if self.kind == Some(LineKind::Listing) {
            let text = abbreviate_listing(&self.text, self.lines, self.insns);
            let run = Item::listing_run(text, self.lines, self.insns);
            self.text.clear();
            self.line_kinds.clear();
            self.lines = 0;
            self.kinds = 0;
            self.kind = None;
            self.insns = None;
            return Some(run);
        }
        self.kind = None;
        self.insns = None;
        // Copy out of the reused buffer: one exact allocation per run, none per line.
        let text = abbreviate(&self.text, &self.line_kinds);
        self.text.clear();
        self.line_kinds.clear();
        if self.text.capacity() > 2 * MAX_RUN_BYTES {
            self.text.shrink_to(MAX_RUN_BYTES);
        }
        let run = Item::backtrack_run(text, self.lines, identity(self.kinds));
        self.lines = 0;
        self.kinds = 0;
        Some(run)
    }
}

/// The text of a run as written: a long run keeps its first [`HEAD_LINES`] and last
/// [`TAIL_LINES`] lines and the first line of every other kind of step it holds; each stretch
/// of steps in between becomes one fold header saying how many lines it stands for and which
/// instructions they walked back through.
fn abbreviate(text: &str, kinds: &[u16]) -> String {
    let n = kinds.len();
    if n <= HEAD_LINES + TAIL_LINES + 2 || text.matches('\n').count() + 1 != n {
        return text.to_owned();
    }
    let mut keep = vec![false; n];
    let mut kept_kinds: Vec<u16> = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        if i < HEAD_LINES || i >= n - TAIL_LINES {
            keep[i] = true;
            kept_kinds.push(*k);
        }
    }
    for (i, k) in kinds.iter().enumerate() {
        if !keep[i] && !kept_kinds.contains(k) {
            keep[i] = true;
            kept_kinds.push(*k);
        }
    }
    let mut out = String::with_capacity(text.len().min(1024));
    let mut omitted: (u64, Option<(u32, u32)>) = (0, None);
    let flush = |out: &mut String, omitted: &mut (u64, Option<(u32, u32)>)| {
        if omitted.0 == 0 {
            return;
        }
        let walk = match omitted.1 {
            Some((a, b)) if a == b => format!("back over insn {a}"),
            Some((a, b)) => format!("back through insns {a}-{b}"),
            None => "other kinds".to_string(),
        };
        out.push_str(&format!(
            "{FOLD_PREFIX}{} lines omitted: backtracking steps ({walk}); 0 notes ---\n",
            omitted.0
        ));
        *omitted = (0, None);
    };
    for (line, k) in text.split('\n').zip(&keep) {
        if *k {
            flush(&mut out, &mut omitted);
            out.push_str(line);
            out.push('\n');
        } else {
            omitted.0 += 1;
            if let Some(i) = step_insn(line) {
                omitted.1 = Some(match omitted.1 {
                    Some((a, b)) => (a.min(i), b.max(i)),
                    None => (i, i),
                });
            }
        }
    }
    flush(&mut out, &mut omitted);
    out.pop();
    out
}

/// The text of a run of listing lines as written: its first and last line, and between them
/// one fold header for the rest, saying which instructions they list.
fn abbreviate_listing(text: &str, lines: u64, insns: Option<(u32, u32)>) -> String {
    if lines <= 3 {
        return text.to_owned();
    }
    let (Some(first), Some(last)) = (text.split('\n').next(), text.rsplit('\n').next()) else {
        return text.to_owned();
    };
    let range = match insns {
        Some((a, b)) => format!("a listing of insns {a}-{b}"),
        None => "a listing".to_string(),
    };
    format!(
        "{first}\n{FOLD_PREFIX}{} lines omitted: the rest of {range} (use --raw to see it); 0 notes ---\n{last}",
        lines - 2
    )
}

/// The instruction a `regs=... before N: ...` step walks back over.
fn step_insn(line: &str) -> Option<u32> {
    let rest = &line[line.find(" before ")? + 8..];
    let end = rest.bytes().position(|c| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// The shape hash of a run holding the backtracking line kinds `kinds`.
fn identity(kinds: u16) -> u64 {
    (0x6d61_726b_5f70_7265 ^ u64::from(kinds)).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Which kind of backtracking line `line` is (bits 0-6), and in which frame (bits 8-15).
pub(crate) fn line_kind_bits(line: &str) -> u16 {
    let mut rest = line.strip_prefix("mark_precise: ").unwrap_or(line);
    let mut frame_bit = 0;
    if let Some(r) = rest.strip_prefix("frame") {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        // Frames from 7 on (and a missing number) share the last bit.
        let frame = r.bytes().take(digits).fold(0u32, |f, d| {
            f.saturating_mul(10).saturating_add(u32::from(d - b'0'))
        });
        let frame = if digits == 0 { 7 } else { frame.min(7) };
        if let Some(after) = r.get(digits..).and_then(|a| a.strip_prefix(": ")) {
            frame_bit = 1 << (8 + frame);
            rest = after;
        }
    }
    let kind = KINDS
        .iter()
        .position(|k| rest.starts_with(k))
        .unwrap_or(KINDS.len());
    frame_bit | 1 << kind
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(items: &[Item]) -> Vec<(u64, &str)> {
        items.iter().map(|i| (i.weight, i.text.as_str())).collect()
    }

    /// What the collapse pipeline does with each line.
    fn push(r: &mut Runs, item: Item, out: &mut Vec<Item>) {
        if Runs::joins(&item) {
            out.extend(r.add(&item));
        } else {
            out.extend(r.take());
            out.push(item);
        }
    }

    #[test]
    fn runs_group_and_compare_by_kinds_only() {
        let mut r = Runs::default();
        let mut out = Vec::new();
        let input = [
            "10: (0f) r2 += r6",
            "mark_precise: frame0: last_idx 10 first_idx 9 subseq_idx -1 ",
            "mark_precise: frame0: regs=r6 stack= before 9: (bf) r2 = r0",
            "mark_precise: frame0: parent state regs= stack=:  R0=map_value(map=values,ks=4,vs=160) R6=P0 R10=fp0",
            "11: R2=map_value(map=values,ks=4,vs=160) R6=0",
            "mark_precise: frame0: last_idx 14 first_idx 9 subseq_idx -1 ",
            "mark_precise: frame0: regs=r6 stack= before 13: (07) r6 += 4",
            "mark_precise: frame0: regs=r6 stack= before 12: (0f) r1 += r2",
            "mark_precise: frame0: parent state regs= stack=:  R0=map_value(map=values,ks=4,vs=160) R6=P8 R10=fp0",
        ];
        for l in input {
            push(&mut r, Item::new(l.to_string()), &mut out);
        }
        out.extend(r.take());
        assert!(r.take().is_none());
        assert_eq!(out.len(), 4);
        assert_eq!(lines(&out)[1], (3, input[1..4].join("\n").as_str()));
        assert_eq!(out[3].weight, 4);
        assert_eq!(out[1].shape, out[3].shape);
        assert_eq!(out[3].backtrack().lines, 4);
        assert_eq!(out[2].backtrack().lines, 0);
    }

    #[test]
    fn long_runs_are_abbreviated_keeping_every_kind_of_step() {
        let mut r = Runs::default();
        let mut out = Vec::new();
        let mut input =
            vec!["mark_precise: frame0: last_idx 22 first_idx 10 subseq_idx -1".to_string()];
        for i in (10..22).rev() {
            input.push(format!(
                "mark_precise: frame0: regs=r7 stack= before {i}: (07) r7 += 1"
            ));
        }
        input.insert(
            6,
            "mark_precise: frame0: falling back to forcing all scalars precise".into(),
        );
        input.push("mark_precise: frame0: parent state regs= stack=:  R7=P3 R10=fp0".into());
        for l in &input {
            push(&mut r, Item::new(l.clone()), &mut out);
        }
        out.extend(r.take());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].weight, input.len() as u64);
        let text = &out[0].text;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], input[0]);
        assert_eq!(lines[1], input[1]);
        assert_eq!(lines[lines.len() - 1], input[input.len() - 1]);
        assert_eq!(lines[lines.len() - 2], input[input.len() - 2]);
        assert!(lines.contains(&input[6].as_str()), "{text}");
        assert!(
            lines.contains(&"--- ktstr fold: 4 lines omitted: backtracking steps (back through insns 17-20); 0 notes ---"),
            "{text}"
        );
        assert_eq!(
            crate::fold::expanded_line_count(text).ok(),
            Some(input.len() as u64)
        );
        // Short runs stay whole.
        let short = abbreviate("a\nb\nc", &[1, 2, 2]);
        assert_eq!(short, "a\nb\nc");
    }

    #[test]
    fn different_kinds_or_frames_differ() {
        let one = |l: &str| {
            let mut r = Runs::default();
            let mut out = Vec::new();
            push(&mut r, Item::new(l.to_string()), &mut out);
            out.extend(r.take());
            out.pop().map(|i| i.shape)
        };
        let a = one("mark_precise: frame0: regs=r6 stack= before 9: (bf) r2 = r0");
        let b = one("mark_precise: frame0: regs=r1 stack= before 3: (b7) r1 = 0");
        let c = one("mark_precise: frame1: regs=r6 stack= before 9: (bf) r2 = r0");
        let d = one("mark_precise: frame0: last_idx 14 first_idx 9 subseq_idx -1");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn unfoldable_lines_stay_single_and_long_runs_split() {
        let mut r = Runs::default();
        let mut out = Vec::new();
        let mut it = Item::new("mark_precise: frame0: regs=r6 stack= before 9: x".into());
        it.foldable = false;
        push(&mut r, it, &mut out);
        assert_eq!(out.len(), 1);
        for _ in 0..MAX_RUN_LINES + 1 {
            push(&mut r, Item::new("propagating r6".into()), &mut out);
        }
        out.extend(r.take());
        let weights: Vec<u64> = out.iter().map(|i| i.weight).collect();
        assert_eq!(weights, vec![1, MAX_RUN_LINES, 1]);
    }
}
