//! Fold the resumptions of one branch: after a loop the verifier pops the states it pushed at
//! a branch, one per iteration, and each resumes the same code (`from 16 to 24: R7=38 ...`)
//! until it reaches the exit or a state already explored (`26: safe`).
//!
//! A *segment* runs from a `from X to Y:` line to the next one. Consecutive segments of the
//! same branch form a group: the first is written whole, the middle ones fold into one block
//!
//! ```text
//! --- ktstr fold: 731 lines omitted: 36 resumptions of the branch from 16 to 24 (34 pruned as safe at insns 16, 26); R7 37 -> 2 step -1; 1 note ---
//! ---   R7 (insn 24): 37 -> 2 step -1
//! ```
//!
//! and the last is written whole. A middle segment holding a line of a kind not yet written in
//! the group is written whole instead (and starts the folding afresh), so no kind of line is
//! lost. Lines that must not be folded (errors, the log's tail) end the group. At most
//! [`MAX_SEGMENT_ITEMS`] items are held, so memory stays bounded.

use std::collections::HashSet;

use crate::fold::{push_summary, render_note, SlotStats};
use crate::item::Item;
use crate::line::{self, classify, LineKind, FOLD_PREFIX};

/// Most items held for one segment; a longer segment ends its group unfolded.
const MAX_SEGMENT_ITEMS: usize = 4096;
/// Most instruction indices listed for the `safe` lines of a fold.
const MAX_SAFE_INSNS: usize = 6;

/// The `from X to Y` of a branch line.
fn branch_key(it: &Item) -> Option<(u32, u32)> {
    if it.class.kind != LineKind::Branch {
        return None;
    }
    let rest = it.text.strip_prefix("from ")?;
    let end = rest.bytes().position(|c| !c.is_ascii_digit())?;
    let from = rest.get(..end)?.parse().ok()?;
    Some((from, it.class.insn?))
}

/// What the folded middle segments of a group held.
#[derive(Debug, Default)]
struct Middle {
    segments: u64,
    weight: u64,
    safe: u64,
    safe_insns: Vec<u32>,
    /// Values of the branch line's state, by label.
    slots: Vec<(String, SlotStats)>,
}

/// One group of resumptions of the same branch.
#[derive(Debug)]
struct Group {
    key: (u32, u32),
    /// Shapes of every item written whole in this group.
    seen: HashSet<u64>,
    /// Whether the held segment is the group's first (written whole once complete).
    first: bool,
    held: Vec<Item>,
    middle: Middle,
}

/// The resumption-folding stage.
#[derive(Debug)]
pub(crate) struct Resumptions {
    group: Option<Group>,
    max_notes: usize,
    folds: u64,
}

impl Resumptions {
    /// A stage writing at most `max_notes` notes under a fold header.
    pub(crate) fn new(max_notes: usize) -> Self {
        Self {
            group: None,
            max_notes,
            folds: 0,
        }
    }

    /// Folds written so far.
    pub(crate) fn folds(&self) -> u64 {
        self.folds
    }

    /// Feeds one item; finished items are appended to `out`.
    pub(crate) fn push(&mut self, item: Item, out: &mut Vec<Item>) {
        if !item.foldable {
            self.flush(out);
            out.push(item);
            return;
        }
        if let Some(key) = branch_key(&item) {
            match self.group.as_mut() {
                Some(g) if g.key == key => {
                    let seg = std::mem::take(&mut g.held);
                    if g.first {
                        g.first = false;
                        g.seen.extend(seg.iter().map(|i| i.shape));
                        out.extend(seg);
                    } else if seg.iter().all(|i| g.seen.contains(&i.shape)) {
                        absorb(&mut g.middle, seg);
                    } else {
                        // A new kind of line: write what was folded, then this one whole.
                        self.folds += u64::from(emit_fold(g, self.max_notes, out));
                        g.seen.extend(seg.iter().map(|i| i.shape));
                        out.extend(seg);
                    }
                    g.held.push(item);
                }
                _ => {
                    self.flush(out);
                    self.group = Some(Group {
                        key,
                        seen: HashSet::new(),
                        first: true,
                        held: vec![item],
                        middle: Middle::default(),
                    });
                }
            }
            return;
        }
        match self.group.as_mut() {
            Some(g) if g.held.len() < MAX_SEGMENT_ITEMS => g.held.push(item),
            Some(_) => {
                self.flush(out);
                out.push(item);
            }
            None => out.push(item),
        }
    }

    /// Ends the current group: its fold block, if any, then its held segment.
    pub(crate) fn flush(&mut self, out: &mut Vec<Item>) {
        if let Some(mut g) = self.group.take() {
            self.folds += u64::from(emit_fold(&mut g, self.max_notes, out));
            out.append(&mut g.held);
        }
    }
}

/// Adds a middle segment to the fold.
fn absorb(m: &mut Middle, seg: Vec<Item>) {
    m.segments += 1;
    for (k, it) in seg.iter().enumerate() {
        m.weight = m.weight.saturating_add(it.weight);
        let safe = it.class.kind == LineKind::Safe
            || (it.class.kind == LineKind::Branch && it.text.ends_with(": safe"));
        if safe {
            m.safe += 1;
            if let Some(i) = it.class.insn {
                if !m.safe_insns.contains(&i) && m.safe_insns.len() < MAX_SAFE_INSNS {
                    m.safe_insns.push(i);
                }
            }
        }
        if k == 0 {
            let mut counts: Vec<(String, usize)> = Vec::new();
            line::scan(&it.text, &it.class, |n| {
                let base = line::label(&n, 0);
                let c = match counts.iter_mut().find(|(b, _)| *b == base) {
                    Some((_, c)) => {
                        *c += 1;
                        *c
                    }
                    None => {
                        counts.push((base.clone(), 0));
                        0
                    }
                };
                let label = if c == 0 { base } else { line::label(&n, c) };
                match m.slots.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, s)) => s.push(n.value),
                    None => m.slots.push((label, SlotStats::new(n.value, n.hex))),
                }
            });
        }
    }
}

/// Writes the fold block of a group's middle segments, if it has any; true if it did.
fn emit_fold(g: &mut Group, max_notes: usize, out: &mut Vec<Item>) -> bool {
    let m = std::mem::take(&mut g.middle);
    if m.segments == 0 {
        return false;
    }
    let (from, to) = g.key;
    let plural = if m.segments == 1 {
        "resumption"
    } else {
        "resumptions"
    };
    let safe = if m.safe == 0 {
        "none pruned as safe".to_string()
    } else {
        let at: Vec<String> = m.safe_insns.iter().map(u32::to_string).collect();
        let s = if at.len() == 1 { "" } else { "s" };
        format!("{} pruned as safe at insn{s} {}", m.safe, at.join(", "))
    };
    let mut notes = Vec::new();
    let mut summary: Vec<String> = Vec::new();
    let mut more = 0usize;
    for (label, s) in &m.slots {
        if s.constant() {
            continue;
        }
        push_summary(&mut summary, label, &s.describe());
        if notes.len() < max_notes {
            notes.push(render_note(label, Some(to), 0, &s.describe()));
        } else {
            more += 1;
        }
    }
    if more > 0 {
        notes.push(format!(
            "{}... {more} more changing values",
            line::NOTE_PREFIX
        ));
    }
    let n = notes.len();
    let base = format!(
        "{FOLD_PREFIX}{} lines omitted: {} {plural} of the branch from {from} to {to} ({safe})",
        m.weight, m.segments,
    );
    let shape = line::shape_hash(&base);
    let mut header = base;
    for s in &summary {
        header.push_str("; ");
        header.push_str(s);
    }
    header.push_str(&format!(
        "; {n} {} ---",
        if n == 1 { "note" } else { "notes" }
    ));
    let mut text = header;
    for note in notes {
        text.push('\n');
        text.push_str(&note);
    }
    let class = classify(&text);
    let mut item = Item::with_weight(text, class, m.weight);
    item.shape = shape;
    out.push(item);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::expanded_line_count;

    fn run(lines: &[String]) -> Vec<Item> {
        let mut r = Resumptions::new(16);
        let mut out = Vec::new();
        for l in lines {
            r.push(Item::new(l.clone()), &mut out);
        }
        r.flush(&mut out);
        out
    }

    fn resumption(i: u32, safe_at: u32) -> Vec<String> {
        vec![
            format!(
                "from 16 to 24: R6=map_value(map=full,ks=4,vs=160,imm={}) R7={i} R10=fp0",
                4 * i
            ),
            "24: (61) r1 = *(u32 *)(r6 +0)         ; R1=scalar()".into(),
            "25: (05) goto pc-8".into(),
            format!("{safe_at}: safe"),
        ]
    }

    #[test]
    fn resumptions_of_one_branch_fold_into_one_block() {
        let mut lines = vec!["22: (15) if r7 == 0x28 goto pc+3".to_string()];
        for i in (1..=38).rev() {
            lines.extend(resumption(i, if i % 2 == 0 { 26 } else { 16 }));
        }
        lines.push("processed 1963 insns".into());
        let out = run(&lines);
        let text: Vec<&str> = out.iter().map(|i| i.text.as_str()).collect();
        let all = text.join("\n");
        assert_eq!(expanded_line_count(&all).ok(), Some(lines.len() as u64));
        let fold = out
            .iter()
            .find(|i| i.class.kind == LineKind::Fold)
            .map(|i| i.text.as_str())
            .unwrap_or_default();
        assert!(
            fold.contains("lines omitted: 35 resumptions of the branch from 16 to 24 (35 pruned as safe at insns 26, 16); R6.imm 144 -> 8 step -4; R7 36 -> 2 step -1; 2 notes"),
            "{all}"
        );
        assert!(fold.contains("R7 (insn 24): 36 -> 2 step -1"), "{fold}");
        // The first two (the second brings `16: safe`) and the last resumption stay whole.
        assert_eq!(out.len(), 1 + 4 + 4 + 1 + 4 + 1, "{all}");
    }

    #[test]
    fn different_branches_and_errors_are_not_folded() {
        let mut lines = Vec::new();
        for i in 0..5 {
            lines.push(format!("from {} to 24: R7={i}", 10 + i));
            lines.push("24: safe".into());
        }
        let out = run(&lines);
        assert_eq!(out.len(), lines.len());
        let mut lines = Vec::new();
        for i in 0..6 {
            lines.extend(resumption(i, 26));
        }
        let mut r = Resumptions::new(16);
        let mut out = Vec::new();
        for (k, l) in lines.iter().enumerate() {
            let mut it = Item::new(l.clone());
            it.foldable = k != 13;
            r.push(it, &mut out);
        }
        r.flush(&mut out);
        let total: u64 = out.iter().map(|i| i.weight).sum();
        assert_eq!(total, lines.len() as u64);
        assert!(out.iter().any(|i| i.text == lines[13] && !i.foldable));
    }
}
