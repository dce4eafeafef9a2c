//! One folding pass: find blocks of lines that repeat with the same shapes and fold them.
//!
//! The pass keeps a window of at most `4 * max_period + min_fold_lines` pending lines. For every
//! new line it looks up where a line of the same shape was last seen; the distance is a candidate
//! period. Each candidate carries the length of the current run of lines that match the line one
//! period earlier, updated in O(1) per line. When a run covers enough iterations the pass enters
//! a cycle: it writes the first iteration, keeps only the newest complete iteration and the one in
//! progress, and folds every older iteration into per-value statistics. When a line breaks the
//! pattern it writes the fold block and the last iteration, then goes on searching. Memory is
//! bounded by the window, whatever the input size.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::mem;

use crate::fold::{push_summary, render_backtrack_note, render_note, Header, SlotStats};
use crate::item::{Backtrack, Item};
use crate::line::{self, classify, LineKind, NOTE_PREFIX};
use crate::pool::TextPool;

/// Tuning of one pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassParams {
    /// Longest block (in lines) that can be detected as repeating.
    pub(crate) max_period: usize,
    /// Fewest lines a fold must hide before one is made.
    pub(crate) min_fold_lines: usize,
    /// Most note lines under one fold header.
    pub(crate) max_notes: usize,
}

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap = HashMap<u64, u64, BuildHasherDefault<IdHasher>>;

/// Most candidate periods tracked at once.
const MAX_CANDIDATES: usize = 8;

/// A candidate period and the current run of period-matching lines.
#[derive(Debug, Clone, Copy)]
struct Cand {
    period: usize,
    run: usize,
    need: usize,
    /// Rotation of the cycle start chosen by [`Folder::phase`], once computed.
    rot: Option<usize>,
}

/// Most distinct value shapes remembered per register.
const MAX_SHAPES: usize = 4;

/// A value of the repeated block: one number of one line, found again by its label (the
/// register, the field inside its value and which occurrence), not by its position, so
/// iterations whose registers change shape still line up.
#[derive(Debug)]
struct Slot {
    key: u64,
    label: String,
    stats: SlotStats,
}

/// How one register of one line changed shape across the iterations.
#[derive(Debug)]
struct TokenShapes {
    name: String,
    /// Which token of that name on the line.
    occurrence: usize,
    /// Distinct value shapes (numbers written `#`) in the order first seen.
    shapes: Vec<String>,
    /// Their [`value_shape_hash`]es.
    hashes: Vec<u64>,
    /// More distinct shapes than `shapes` holds.
    overflow: bool,
    /// Iterations in which the register was printed.
    seen: u64,
}

/// What one line of the period carried over the iterations.
#[derive(Debug, Default)]
struct LineVals {
    slots: Vec<Slot>,
    tokens: Vec<TokenShapes>,
    /// Hash of the last line observed, and the slots and tokens it fed, in order: a line
    /// equal to the last one (common in loops) feeds them again without being scanned.
    last_hash: Option<u64>,
    last_slots: Vec<usize>,
    last_tokens: Vec<usize>,
    /// The first line's [`Item::detail`] and the slots and tokens its values and registers
    /// fed, in order: a line of the same detail (the usual case in a loop) feeds them
    /// positionally from the values its classification kept, without being scanned again.
    detail: Option<u64>,
    detail_slots: Vec<usize>,
    detail_tokens: Vec<usize>,
}

impl LineVals {
    /// Adds one iteration's line.
    fn observe(&mut self, it: &Item) {
        if self.detail == Some(it.detail)
            && it.vals.complete
            && it.vals.n as usize == self.detail_slots.len()
        {
            for (&si, &v) in self.detail_slots.iter().zip(&it.vals.v) {
                if let Some(s) = self.slots.get_mut(si) {
                    s.stats.push(i128::from(v));
                }
            }
            for &ti in &self.detail_tokens {
                if let Some(t) = self.tokens.get_mut(ti) {
                    t.seen += 1;
                }
            }
            return;
        }
        self.observe_scan(it);
        if self.detail.is_none() && it.class.kind != LineKind::Fold {
            self.detail = Some(it.detail);
            self.detail_slots.clone_from(&self.last_slots);
            self.detail_tokens.clone_from(&self.last_tokens);
        }
    }

    /// [`Self::observe`] by scanning the line.
    fn observe_scan(&mut self, it: &Item) {
        let h = text_hash(&it.text);
        if self.last_hash == Some(h) {
            for &i in &self.last_slots {
                if let Some(s) = self.slots.get_mut(i) {
                    let v = s.stats.last();
                    s.stats.push(v);
                }
            }
            for &i in &self.last_tokens {
                if let Some(t) = self.tokens.get_mut(i) {
                    t.seen += 1;
                }
            }
            return;
        }
        self.last_hash = Some(h);
        self.last_slots.clear();
        self.last_tokens.clear();
        if it.class.kind == LineKind::Fold {
            for (label, value, hex) in value_labels(it) {
                let key = hash_str(&label, 0);
                self.push(key, value, hex, || label.clone());
            }
            return;
        }
        let mut counts: Vec<(u64, usize)> = Vec::new();
        line::scan(&it.text, &it.class, |n| {
            let name = n.token.split('_').next().unwrap_or(n.token);
            let name = if line::is_stack_slot(name.as_bytes()) {
                "fp-*"
            } else {
                name
            };
            let field = if n.field == name { "" } else { n.field };
            let base = hash_str(field, hash_str(name, 0x5107));
            let k = match counts.iter_mut().find(|(b, _)| *b == base) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    counts.push((base, 0));
                    0
                }
            };
            let key = base ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            self.push(key, n.value, n.hex, || line::label(&n, k));
        });
        if it.class.mode == line::Abstraction::State {
            let from = it.class.abstract_from.min(it.text.len());
            let mut names: Vec<(&str, usize)> = Vec::new();
            for (name, value) in state_tokens(it.text.get(from..).unwrap_or_default()) {
                // The k-th token of that name on the line (a name seldom appears twice).
                let k = match names.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => {
                        *c += 1;
                        *c
                    }
                    None => {
                        names.push((name, 0));
                        0
                    }
                };
                let shape = value_shape_hash(value);
                match self
                    .tokens
                    .iter_mut()
                    .enumerate()
                    .find(|(_, t)| t.name == name && t.occurrence == k)
                {
                    Some((i, t)) => {
                        self.last_tokens.push(i);
                        t.seen += 1;
                        if !t.hashes.contains(&shape) {
                            if t.shapes.len() < MAX_SHAPES {
                                t.hashes.push(shape);
                                t.shapes.push(value_shape(value));
                            } else {
                                t.overflow = true;
                            }
                        }
                    }
                    None => {
                        self.last_tokens.push(self.tokens.len());
                        self.tokens.push(TokenShapes {
                            name: name.to_string(),
                            occurrence: k,
                            hashes: vec![shape],
                            shapes: vec![value_shape(value)],
                            overflow: false,
                            seen: 1,
                        });
                    }
                }
            }
        }
    }

    fn push(&mut self, key: u64, value: i128, hex: bool, label: impl FnOnce() -> String) {
        match self.slots.iter_mut().position(|s| s.key == key) {
            Some(i) => {
                self.last_slots.push(i);
                if let Some(s) = self.slots.get_mut(i) {
                    s.stats.push(value);
                }
            }
            None => {
                self.last_slots.push(self.slots.len());
                self.slots.push(Slot {
                    key,
                    label: label(),
                    stats: SlotStats::new(value, hex),
                });
            }
        }
    }
}

/// A hash of a whole line, to tell a line equal to the last one.
fn text_hash(s: &str) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    let mut chunks = s.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    (h ^ s.len() as u64).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// A hash of `s` mixed into `seed`.
fn hash_str(s: &str, seed: u64) -> u64 {
    s.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `name=value` tokens of a register-state part, split at spaces outside brackets.
fn state_tokens(s: &str) -> impl Iterator<Item = (&str, &str)> {
    let b = s.as_bytes();
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        while pos <= b.len() {
            let start = pos;
            let mut depth = 0u32;
            let mut end = b.len();
            for (i, c) in b.iter().enumerate().skip(start) {
                match c {
                    b'(' | b'[' | b'{' => depth += 1,
                    b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                    b' ' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            pos = end + 1;
            let Some((name, value)) = s.get(start..end).and_then(|t| t.split_once('=')) else {
                continue;
            };
            let name = name.split('_').next().unwrap_or(name);
            let name = if line::is_stack_slot(name.as_bytes()) {
                "fp-*"
            } else {
                name
            };
            return Some((name, value));
        }
        None
    })
}

/// A value with its numbers written `#`: `scalar(id=3,smax=7)` -> `scalar(id=#,smax=#)`,
/// `P5` -> `P#`; digits inside a name (`map=loop40`) stay.
fn value_shape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    value_shape_chars(v, |c| out.push(c));
    out
}

/// A hash of [`value_shape`] without building it.
fn value_shape_hash(v: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    value_shape_chars(v, |c| h = (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3));
    h
}

/// Calls `f` with each character of [`value_shape`]. A number starts at a digit that no word
/// character precedes, or that follows a whole word `P` (precise) or of `p`/`m` slot marks.
fn value_shape_chars(v: &str, mut f: impl FnMut(char)) {
    let mut in_num = false;
    // The word (alphanumerics and `_`) just before this character: its length, whether it is
    // `P`, and whether it is all `p`/`m`.
    let (mut word_len, mut word_p, mut word_pm) = (0usize, false, true);
    for c in v.chars() {
        let starts = c.is_ascii_digit()
            && !in_num
            && (word_len == 0 || word_p || (word_pm && word_len <= 8));
        let num = starts || (in_num && (c.is_ascii_hexdigit() || c == 'x'));
        if num {
            if !in_num {
                f('#');
            }
        } else {
            f(c);
        }
        in_num = num;
        if c.is_ascii_alphanumeric() || c == '_' {
            word_len += 1;
            word_p = word_len == 1 && c == 'P';
            word_pm &= matches!(c, 'p' | 'm');
        } else {
            (word_len, word_p, word_pm) = (0, false, true);
        }
    }
}

/// An active cycle.
#[derive(Debug)]
struct Cycle {
    shapes: Vec<u64>,
    line_insn: Vec<Option<u32>>,
    /// What each line of the period carried.
    lines: Vec<LineVals>,
    insns: Option<(u32, u32)>,
    iterations: u64,
    folded_weight: u64,
    /// Backtracking lines among the folded ones.
    folded_backtrack: Backtrack,
    /// Fewest and most lines in one iteration.
    span: (u64, u64),
    held: Vec<Item>,
    partial: Vec<Item>,
}

impl Cycle {
    /// Starts a cycle from its first iteration.
    fn new(first: &[Item]) -> Self {
        let mut insns: Option<(u32, u32)> = None;
        let mut lines = Vec::with_capacity(first.len());
        for it in first {
            let mut v = LineVals::default();
            v.observe(it);
            lines.push(v);
            if let Some((a, b)) = it.insns {
                insns = Some(match insns {
                    Some((x, y)) => (x.min(a), y.max(b)),
                    None => (a, b),
                });
            }
        }
        Self {
            shapes: first.iter().map(|i| i.shape).collect(),
            line_insn: first.iter().map(|i| i.class.insn).collect(),
            lines,
            insns,
            iterations: 1,
            folded_weight: 0,
            folded_backtrack: Backtrack::default(),
            span: (iteration_lines(first), iteration_lines(first)),
            held: Vec::new(),
            partial: Vec::with_capacity(first.len()),
        }
    }

    /// Takes the next line if it continues the pattern; gives it back otherwise.
    fn accept(&mut self, item: Item, spent: &mut TextPool) -> Option<Item> {
        let k = self.partial.len();
        if !item.foldable || self.shapes.get(k) != Some(&item.shape) {
            return Some(item);
        }
        self.partial.push(item);
        if self.partial.len() == self.shapes.len() {
            let done = mem::take(&mut self.partial);
            let n = iteration_lines(&done);
            self.span = (self.span.0.min(n), self.span.1.max(n));
            let mut prev = mem::replace(&mut self.held, done);
            if !prev.is_empty() {
                self.absorb(&prev);
                for it in &prev {
                    self.folded_weight = self.folded_weight.saturating_add(it.weight);
                    if it.run || it.folded_backtrack.is_some() {
                        self.folded_backtrack.add(&it.backtrack());
                    }
                }
            }
            for it in prev.drain(..) {
                spent.put(it.text);
            }
            self.partial = prev;
            self.iterations += 1;
        }
        None
    }

    /// Adds one iteration's values and register shapes.
    fn absorb(&mut self, iteration: &[Item]) {
        for (v, it) in self.lines.iter_mut().zip(iteration) {
            v.observe(it);
        }
    }

    /// Ends the cycle: writes the fold block and the last iteration; returns whether a fold
    /// block was written and the unfinished iteration.
    fn finish(mut self, p: &PassParams, out: &mut Vec<Item>) -> (bool, Vec<Item>) {
        let last = mem::take(&mut self.held);
        if last.is_empty() {
            return (false, self.partial);
        }
        self.absorb(&last);
        let folded = self.folded_weight > 0;
        if folded {
            out.push(self.fold_block(p));
        }
        out.extend(last);
        (folded, self.partial)
    }

    /// Builds the header-plus-notes item.
    fn fold_block(&self, p: &PassParams) -> Item {
        let mut seen: HashSet<(&str, String)> = HashSet::new();
        let mut notes = Vec::new();
        if self.folded_backtrack.runs > 0 {
            notes.push(render_backtrack_note(&self.folded_backtrack));
        }
        let mut more = 0usize;
        let mut summary = Vec::new();
        let room = p.max_notes + usize::from(self.folded_backtrack.runs > 0);
        for (l, v) in self.lines.iter().enumerate() {
            let insn = self.line_insn.get(l).copied().flatten();
            for t in &v.tokens {
                let desc = if t.shapes.len() > 1 || t.overflow {
                    let more = if t.overflow { ", ..." } else { "" };
                    format!("changes shape: {}{more}", t.shapes.join(", "))
                } else if t.seen < self.iterations {
                    format!("printed in {} of {} iterations", t.seen, self.iterations)
                } else {
                    continue;
                };
                if !seen.insert((t.name.as_str(), desc.clone())) {
                    continue;
                }
                push_summary(&mut summary, &t.name, &desc);
                if notes.len() < room {
                    notes.push(render_note(&t.name, insn, l, &desc));
                } else {
                    more += 1;
                }
            }
            for slot in &v.slots {
                if slot.stats.constant() {
                    continue;
                }
                if !seen.insert((slot.label.as_str(), slot.stats.pattern())) {
                    continue;
                }
                push_summary(&mut summary, &slot.label, &slot.stats.describe());
                if notes.len() < room {
                    notes.push(render_note(&slot.label, insn, l, &slot.stats.describe()));
                } else {
                    more += 1;
                }
            }
        }
        if more > 0 {
            notes.push(format!("{NOTE_PREFIX}... {more} more changing values"));
        }
        let header = Header {
            omitted_lines: self.folded_weight,
            iterations: self.iterations,
            period: self.span,
            insns: self.insns,
            notes: notes.len(),
            summary,
        };
        let mut text = header.render();
        // A fold compares by its header alone (numbers abstracted), not by its notes and the
        // changes it repeats, which differ from one run of an inner loop to the next: so
        // loops around it fold too.
        let shape = line::shape_hash(
            &Header {
                summary: Vec::new(),
                ..header
            }
            .render(),
        );
        for n in &notes {
            text.push('\n');
            text.push_str(n);
        }
        let class = classify(&text);
        let mut item = Item::with_weight(text, class, self.folded_weight);
        item.shape = shape;
        item.insns = self.insns;
        if self.folded_backtrack.runs > 0 {
            item.folded_backtrack = Some(Box::new(self.folded_backtrack));
        }
        item
    }
}

/// Lines of one iteration as its header reports them: a backtracking run counts its lines,
/// any other item (a nested fold too) one.
fn iteration_lines(items: &[Item]) -> u64 {
    items.iter().fold(0u64, |n, it| {
        n.saturating_add(if it.run { it.weight } else { 1 })
    })
}

/// Labels and values of every abstracted number of an item, in order.
fn value_labels(it: &Item) -> Vec<(String, i128, bool)> {
    let mut v = Vec::new();
    if it.class.kind == LineKind::Fold {
        // Label numbers of a nested fold block by the note line they sit on.
        let mut line_starts = vec![0usize];
        line_starts.extend(it.text.match_indices('\n').map(|(i, _)| i + 1));
        let mut counts: Vec<usize> = vec![0; line_starts.len()];
        line::scan(&it.text, &it.class, |n| {
            let l = line_starts
                .partition_point(|&s| s <= n.start)
                .saturating_sub(1);
            let k = counts.get(l).copied().unwrap_or(0);
            if let Some(c) = counts.get_mut(l) {
                *c += 1;
            }
            let line_text = it
                .text
                .get(line_starts.get(l).copied().unwrap_or(0)..)
                .unwrap_or("");
            let name = match line_text.strip_prefix(NOTE_PREFIX) {
                Some(rest) => rest.split(" (").next().unwrap_or("note"),
                None => "fold",
            };
            v.push((format!("{name}#{k}"), n.value, n.hex));
        });
        return v;
    }
    let mut fields: Vec<(String, usize)> = Vec::new();
    line::scan(&it.text, &it.class, |n| {
        let base = line::label(&n, 0);
        let k = match fields.iter_mut().find(|(b, _)| *b == base) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                fields.push((base.clone(), 0));
                0
            }
        };
        let label = if k == 0 { base } else { line::label(&n, k) };
        v.push((label, n.value, n.hex));
    });
    v
}

/// One folding pass over a stream of items.
#[derive(Debug)]
pub(crate) struct Folder {
    params: PassParams,
    cap: usize,
    buf: VecDeque<Item>,
    base: u64,
    last_seen: IdMap,
    cands: Vec<Cand>,
    cycle: Option<Cycle>,
    folds: u64,
    /// Text buffers of folded-away lines, for reuse.
    spent: TextPool,
}

impl Folder {
    /// A pass with the given tuning.
    pub(crate) fn new(params: PassParams) -> Self {
        let cap = params
            .max_period
            .saturating_mul(4)
            .saturating_add(params.min_fold_lines)
            .saturating_add(1);
        Self {
            params,
            cap,
            buf: VecDeque::new(),
            base: 0,
            last_seen: IdMap::default(),
            cands: Vec::new(),
            cycle: None,
            folds: 0,
            spent: TextPool::default(),
        }
    }

    /// Number of folds this pass has written.
    pub(crate) fn folds(&self) -> u64 {
        self.folds
    }

    /// Moves the text buffers of folded-away lines into `pool`.
    pub(crate) fn spent_texts(&mut self, pool: &mut TextPool) {
        pool.take_from(&mut self.spent);
    }

    /// Iterations needed before a cycle of period `p` is folded.
    fn need(&self, p: usize) -> usize {
        let extra = self.params.min_fold_lines.div_ceil(p);
        3usize.max(2 + extra)
    }

    /// Feeds one item; finished items are appended to `out`.
    pub(crate) fn push(&mut self, item: Item, out: &mut Vec<Item>) {
        let item = match self.cycle.as_mut() {
            Some(c) => match c.accept(item, &mut self.spent) {
                None => return,
                Some(item) => item,
            },
            None => return self.search(item, out),
        };
        self.end_cycle(out);
        self.push(item, out);
    }

    /// Ends the active cycle, if any, and feeds its unfinished iteration back in.
    fn end_cycle(&mut self, out: &mut Vec<Item>) {
        if let Some(c) = self.cycle.take() {
            let (folded, rest) = c.finish(&self.params, out);
            if folded {
                self.folds += 1;
            }
            for it in rest {
                self.push(it, out);
            }
        }
    }

    /// Ends the stream: flushes everything still held.
    pub(crate) fn finish(&mut self, out: &mut Vec<Item>) {
        while self.cycle.is_some() {
            self.end_cycle(out);
        }
        out.extend(self.buf.drain(..));
        self.reset_search();
    }

    fn reset_search(&mut self) {
        self.base = 0;
        self.buf.clear();
        self.cands.clear();
        self.last_seen.clear();
    }

    /// Search mode: look for the start of a cycle.
    fn search(&mut self, item: Item, out: &mut Vec<Item>) {
        if !item.foldable {
            out.extend(self.buf.drain(..));
            out.push(item);
            self.reset_search();
            return;
        }
        let shape = item.shape;
        let i = self.base + self.buf.len() as u64;
        self.buf.push_back(item);
        let (base, buf) = (self.base, &self.buf);
        let at = |pos: u64| -> Option<u64> {
            let idx = usize::try_from(pos.checked_sub(base)?).ok()?;
            buf.get(idx).map(|it| it.shape)
        };
        self.cands.retain_mut(|c| {
            if at(i - c.period as u64) == Some(shape) {
                c.run += 1;
                true
            } else {
                false
            }
        });
        if let Some(&j) = self.last_seen.get(&shape) {
            let p = i.saturating_sub(j);
            let p_us = usize::try_from(p).unwrap_or(usize::MAX);
            if j >= base
                && p_us >= 1
                && p_us <= self.params.max_period
                && !self.cands.iter().any(|c| c.period == p_us)
            {
                let mut run = 1usize;
                let mut k = i;
                while k > base + p && run < self.cap {
                    k -= 1;
                    match (at(k), at(k - p)) {
                        (Some(a), Some(b)) if a == b => run += 1,
                        _ => break,
                    }
                }
                let cand = Cand {
                    period: p_us,
                    run,
                    need: self.need(p_us),
                    rot: None,
                };
                if self.cands.len() < MAX_CANDIDATES {
                    self.cands.push(cand);
                } else if let Some(w) = self.cands.iter_mut().min_by_key(|c| c.run) {
                    if w.run < run {
                        *w = cand;
                    }
                }
            }
        }
        self.last_seen.insert(shape, i);
        let ready = self
            .cands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.run >= (c.need - 1) * c.period)
            .min_by_key(|(_, c)| c.period)
            .map(|(k, c)| (k, *c));
        if let Some((k, c)) = ready {
            let start = (i + 1)
                .saturating_sub((c.run + c.period) as u64)
                .max(self.base);
            let len = usize::try_from(i + 1 - start).unwrap_or(0);
            let rot = match c.rot {
                Some(r) => r,
                None => {
                    let r = self.phase(start, c.period);
                    if let Some(cand) = self.cands.get_mut(k) {
                        cand.rot = Some(r);
                    }
                    r
                }
            };
            // Wait until enough iterations follow the rotated start.
            if len >= rot && (len - rot) / c.period >= c.need {
                self.enter(start + rot as u64, c.period, out);
                return;
            }
        }
        while self.buf.len() > self.cap {
            if let Some(it) = self.buf.pop_front() {
                out.push(it);
            }
            self.base += 1;
        }
        if self.last_seen.len() > self.cap.saturating_mul(4) {
            let keep_from = self.base;
            self.last_seen.retain(|_, v| *v >= keep_from);
        }
    }

    /// How far to rotate a cycle found at `start` so that its iterations begin where a reader
    /// expects a loop iteration to begin. A start on a source annotation or a jump-target state
    /// dump is kept; otherwise the cycle is rotated to the state dump with the lowest
    /// instruction index (the loop head), or else to the first source annotation, and a source
    /// annotation just before the chosen line moves with it.
    fn phase(&self, start: u64, p: usize) -> usize {
        let Ok(skip) = usize::try_from(start - self.base) else {
            return 0;
        };
        let kinds: Vec<(LineKind, Option<u32>)> = self
            .buf
            .iter()
            .skip(skip)
            .take(p)
            .map(|it| (it.class.kind, it.class.insn))
            .collect();
        let boundary =
            |k: LineKind| matches!(k, LineKind::Source | LineKind::InsnState | LineKind::Branch);
        if kinds.first().is_none_or(|(k, _)| boundary(*k)) {
            return 0;
        }
        let head = kinds
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| matches!(k, LineKind::InsnState | LineKind::Branch))
            .min_by_key(|(r, (_, insn))| (*insn, *r))
            .map(|(r, _)| r);
        let r = head
            .or_else(|| kinds.iter().position(|(k, _)| *k == LineKind::Source))
            .unwrap_or(0);
        match r.checked_sub(1).and_then(|q| kinds.get(q)) {
            Some((LineKind::Source, _)) => r - 1,
            _ => r,
        }
    }

    /// Enters a cycle of period `p` starting at absolute position `start`.
    fn enter(&mut self, start: u64, p: usize, out: &mut Vec<Item>) {
        let skip = usize::try_from(start - self.base).unwrap_or(0);
        out.extend(self.buf.drain(..skip));
        let mut rest: Vec<Item> = self.buf.drain(..).collect();
        self.reset_search();
        let tail = rest.split_off(p.min(rest.len()));
        self.cycle = Some(Cycle::new(&rest));
        out.extend(rest);
        for it in tail {
            self.push(it, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[String], p: PassParams) -> Vec<Item> {
        let mut f = Folder::new(p);
        let mut out = Vec::new();
        for l in lines {
            f.push(Item::new(l.clone()), &mut out);
        }
        f.finish(&mut out);
        out
    }

    const P: PassParams = PassParams {
        max_period: 64,
        min_fold_lines: 4,
        max_notes: 16,
    };

    fn loop_lines(n: i64) -> Vec<String> {
        let mut v = vec!["0: (b7) r7 = 0                       ; R7_w=0".to_string()];
        for i in 0..n {
            v.push("; for (i = 0; i < 40; i++) @ t.c:3".into());
            v.push(format!(
                "1: (bf) r1 = r7                       ; R1_w={i} R7_w={i}"
            ));
            v.push(format!(
                "2: (67) r1 <<= 3                      ; R1_w={}",
                i * 8
            ));
            v.push(format!(
                "3: (07) r7 += 1                       ; R7_w={}",
                i + 1
            ));
            v.push(format!(
                "4: (a5) if r7 < 0x{n:x} goto pc-4       ; R7_w={}",
                i + 1
            ));
        }
        v.push("5: (95) exit".into());
        v
    }

    #[test]
    fn folds_a_counted_loop_with_changing_values() {
        let out = run(&loop_lines(40), P);
        let texts: Vec<&str> = out.iter().map(|i| i.text.as_str()).collect();
        // header line + 5 lines first + 5 lines last + 2 outside.
        assert_eq!(out.len(), 1 + 5 + 1 + 5 + 1, "{texts:#?}");
        let fold = &out[6];
        assert_eq!(fold.weight, 38 * 5);
        assert!(
            fold.text
                .contains("190 lines omitted: iterations 2-39 of 40 (period 5 lines, insns 1-4)"),
            "{}",
            fold.text
        );
        assert!(
            fold.text.contains("R1 (insn 1): 0 -> 39 step 1"),
            "{}",
            fold.text
        );
        assert!(
            fold.text.contains("R1 (insn 2): 0 -> 312 step 8"),
            "{}",
            fold.text
        );
        assert!(
            fold.text.contains("R7 (insn 1): 0 -> 39 step 1"),
            "{}",
            fold.text
        );
        let total: u64 = out.iter().map(|i| i.weight).sum();
        assert_eq!(total, 40 * 5 + 2);
        assert_eq!(out.last().map(|i| i.text.as_str()), Some("5: (95) exit"));
    }

    #[test]
    fn registers_changing_shape_fold_with_a_note() {
        let mut lines = vec!["9: (b7) r8 = 0                       ; R8=0".to_string()];
        for i in 0..20i64 {
            let r8 = if i == 0 {
                "0".to_string()
            } else {
                format!("scalar(id={})", 2 * i)
            };
            lines.push(format!(
                "18: (0f) r1 += r8                     ; R1=scalar() R8={r8}"
            ));
            lines.push(format!(
                "20: (07) r7 += 1                      ; R7{}={}",
                if i > 10 { "" } else { "_w" },
                if i > 10 {
                    format!("P{}", i + 1)
                } else {
                    (i + 1).to_string()
                }
            ));
            lines.push("23: (05) goto pc-14".into());
        }
        let out = run(&lines, P);
        let fold = out
            .iter()
            .find(|i| i.class.kind == LineKind::Fold)
            .map(|f| f.text.clone())
            .unwrap_or_default();
        assert!(fold.contains("iterations 2-19 of 20"), "{fold}");
        assert!(
            fold.contains("R8 (insn 18): changes shape: #, scalar(id=#)"),
            "{fold}"
        );
        assert!(fold.contains("R8.id (insn 18): 2 -> 38 step 2"), "{fold}");
        assert!(
            fold.contains("R7 (insn 20): changes shape: #, P#"),
            "{fold}"
        );
        assert!(fold.contains("R7 (insn 20): 1 -> 20 step 1"), "{fold}");
    }

    #[test]
    fn value_shapes_mask_numbers_not_names() {
        assert_eq!(value_shape("scalar(id=3,smax=0x7f)"), "scalar(id=#,smax=#)");
        assert_eq!(value_shape("P5"), "P#");
        assert_eq!(
            value_shape("map_value(map=loop40.bss,ks=4)"),
            "map_value(map=loop40.bss,ks=#)"
        );
        assert_eq!(value_shape("fp-8"), "fp-#");
        assert_eq!(value_shape("pppp38"), "pppp#");
    }

    #[test]
    fn too_few_iterations_are_kept() {
        let lines = loop_lines(2);
        let out = run(&lines, P);
        assert_eq!(out.len(), lines.len());
    }

    #[test]
    fn error_breaks_a_cycle_and_survives() {
        let mut lines = loop_lines(40);
        lines.insert(100, "R1 invalid mem access 'scalar'".into());
        let out = run(&lines, P);
        assert!(out
            .iter()
            .any(|i| i.text == "R1 invalid mem access 'scalar'"));
        let total: u64 = out.iter().map(|i| i.weight).sum();
        assert_eq!(total, lines.len() as u64);
    }

    #[test]
    fn non_arithmetic_values_say_varies() {
        let mut lines = Vec::new();
        for i in 0..10i64 {
            lines.push(format!(
                "7: (79) r3 = *(u64 *)(r2 +0)          ; R3_w={}",
                (i * 7919) % 13
            ));
            lines.push("8: (0f) r8 += r3".into());
        }
        let out = run(&lines, P);
        let fold = out.iter().find(|i| i.class.kind == LineKind::Fold);
        let text = fold.map(|f| f.text.as_str()).unwrap_or("");
        assert!(
            text.contains("R3 (insn 7): varies (10 distinct, 0..12)"),
            "{text}"
        );
    }

    #[test]
    fn too_many_notes_are_summarised() {
        let mut lines = Vec::new();
        for i in 0..5i64 {
            let regs: Vec<String> = (0..10).map(|r| format!("R{r}_w={}", i * r + i)).collect();
            lines.push(format!("1: R0=ctx() {}", regs.join(" ")));
            lines.push("2: (05) goto pc-2".into());
        }
        let p = PassParams { max_notes: 3, ..P };
        let out = run(&lines, p);
        let fold = out
            .iter()
            .find(|i| i.class.kind == LineKind::Fold)
            .map(|f| f.text.clone())
            .unwrap_or_default();
        assert!(fold.contains("; 4 notes ---"), "{fold}");
        assert!(fold.ends_with("---   ... 7 more changing values"), "{fold}");
    }

    #[test]
    fn window_stays_bounded_without_cycles() {
        let mut f = Folder::new(P);
        let mut out = Vec::new();
        for i in 0..10_000u32 {
            f.push(Item::new(format!("{i}: (b7) r0 = {i}")), &mut out);
            assert!(f.buf.len() <= f.cap);
            assert!(f.last_seen.len() <= f.cap * 4 + 1);
        }
        f.finish(&mut out);
        assert_eq!(out.len(), 10_000);
    }
}
