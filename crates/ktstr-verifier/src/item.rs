//! The unit flowing between folding passes: one line, one run of backtracking lines, or a fold.

use crate::backtrack;
use crate::line::{self, classify, Classified, LineKind};

/// One line (or one fold block, or one run of precision-backtracking lines) flowing between passes.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// The text, without trailing newline; a fold block or a run holds several lines.
    pub(crate) text: String,
    /// How many original input lines this item stands for.
    pub(crate) weight: u64,
    /// The line's classification.
    pub(crate) class: Classified,
    /// The line's shape hash.
    pub(crate) shape: u64,
    /// False for lines that must never be folded away (errors, the log's tail).
    pub(crate) foldable: bool,
    /// True for a run of backtracking lines (see [`Item::backtrack_run`]).
    pub(crate) run: bool,
    /// For a precision-backtracking line: its kind and frame bits (see [`crate::backtrack`]).
    pub(crate) backtrack_kind: u16,
    /// Instruction indices the item covers.
    pub(crate) insns: Option<(u32, u32)>,
    /// For a fold block: the backtracking lines it omitted (boxed: items are moved a lot).
    pub(crate) folded_backtrack: Option<Box<Backtrack>>,
    /// Hash of the whole line with its numbers left out: equal for lines that differ in
    /// numbers only, so their values line up one for one.
    pub(crate) detail: u64,
    /// The abstracted numbers, kept from the shape scan so folding need not scan again.
    pub(crate) vals: Vals,
}

/// Most values an [`Item`] keeps inline; lines with more are scanned again when folded.
pub(crate) const INLINE_VALS: usize = 6;

/// The first values of a line, and whether they are all of them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Vals {
    /// How many numbers the line has (may exceed [`INLINE_VALS`]).
    pub(crate) n: u32,
    /// False when some value is not in `v` (too many, or out of `i64` range).
    pub(crate) complete: bool,
    /// The first values.
    pub(crate) v: [i64; INLINE_VALS],
}

impl Vals {
    fn push(&mut self, value: i128) {
        match (self.v.get_mut(self.n as usize), i64::try_from(value)) {
            (Some(slot), Ok(x)) => *slot = x,
            _ => self.complete = false,
        }
        self.n = self.n.saturating_add(1);
    }
}

/// A hash of `bytes` continuing from `h`, eight bytes at a time.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let mut w = 0u64;
    for (k, b) in chunks.remainder().iter().enumerate() {
        w |= u64::from(*b) << (8 * k);
    }
    (h.rotate_left(5) ^ w ^ ((bytes.len() as u64) << 56)).wrapping_mul(K)
}

/// How many precision-backtracking lines, in how many runs, an item stands for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backtrack {
    /// Backtracking lines.
    pub(crate) lines: u64,
    /// Maximal runs of consecutive backtracking lines.
    pub(crate) runs: u64,
    /// Lines in the shortest run (0 without runs).
    pub(crate) min_run: u64,
    /// Lines in the longest run.
    pub(crate) max_run: u64,
}

impl Backtrack {
    /// One run of `lines` lines.
    pub(crate) fn run(lines: u64) -> Self {
        Self {
            lines,
            runs: 1,
            min_run: lines,
            max_run: lines,
        }
    }

    /// Adds another count to this one.
    pub(crate) fn add(&mut self, o: &Self) {
        if o.runs == 0 {
            return;
        }
        self.min_run = if self.runs == 0 {
            o.min_run
        } else {
            self.min_run.min(o.min_run)
        };
        self.max_run = self.max_run.max(o.max_run);
        self.lines = self.lines.saturating_add(o.lines);
        self.runs = self.runs.saturating_add(o.runs);
    }
}

impl Item {
    /// Classifies and hashes one input line.
    pub(crate) fn new(text: String) -> Self {
        let class = classify(&text);
        Self::with_weight(text, class, 1)
    }

    /// An item of `text` standing for `weight` original lines.
    pub(crate) fn with_weight(text: String, class: Classified, weight: u64) -> Self {
        let mut vals = Vals {
            complete: true,
            ..Vals::default()
        };
        let mut detail: u64 = 0xcbf2_9ce4_8422_2325;
        let mut last = 0usize;
        let bytes = text.as_bytes();
        let shape = line::scan(&text, &class, |n| {
            vals.push(n.value);
            detail = fnv(detail, bytes.get(last..n.start).unwrap_or_default());
            detail = (detail ^ 0x23).wrapping_mul(0x0100_0000_01b3);
            last = n.end;
        });
        let detail = fnv(detail, bytes.get(last..).unwrap_or_default());
        Self {
            detail,
            vals,
            foldable: class.kind != LineKind::Error,
            run: false,
            backtrack_kind: if class.kind == LineKind::Precision {
                backtrack::line_kind_bits(&text)
            } else {
                0
            },
            insns: class.insn.map(|i| (i, i)),
            folded_backtrack: None,
            text,
            weight,
            class,
            shape,
        }
    }

    /// The backtracking lines this item stands for: a run's own, or those a fold omitted.
    pub(crate) fn backtrack(&self) -> Backtrack {
        if self.run {
            return Backtrack::run(self.weight);
        }
        self.folded_backtrack
            .as_deref()
            .copied()
            .unwrap_or_default()
    }

    /// A run of `lines` program-listing lines (already abbreviated), covering `insns`.
    pub(crate) fn listing_run(text: String, lines: u64, insns: Option<(u32, u32)>) -> Self {
        let mut it = Self::backtrack_run(text, lines, 0x6c69_7374_696e_6773);
        it.class.kind = LineKind::Listing;
        it.run = false;
        it.insns = insns;
        it
    }

    /// A run of `lines` backtracking lines joined by newlines, compared by `identity` alone.
    pub(crate) fn backtrack_run(text: String, lines: u64, identity: u64) -> Self {
        Self {
            text,
            weight: lines,
            class: Classified {
                kind: LineKind::Precision,
                insn: None,
                abstract_from: usize::MAX,
                mode: line::Abstraction::Literal,
            },
            shape: identity,
            foldable: true,
            run: true,
            backtrack_kind: 0,
            insns: None,
            folded_backtrack: None,
            detail: identity,
            vals: Vals::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtrack_counts_add_up() {
        let mut b = Backtrack::default();
        b.add(&Backtrack::default());
        assert_eq!(b, Backtrack::default());
        b.add(&Backtrack::run(7));
        b.add(&Backtrack::run(3));
        b.add(&Backtrack::run(12));
        assert_eq!(
            b,
            Backtrack {
                lines: 22,
                runs: 3,
                min_run: 3,
                max_run: 12
            }
        );
    }
}
