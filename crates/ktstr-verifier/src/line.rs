//! Classify verifier log lines and abstract the values they carry.
//!
//! A line's *shape* is its text with register values, immediates and scalar ranges in the
//! register-state part replaced by placeholders; instruction indices, opcodes, instruction text,
//! register names and source annotations stay literal. Two iterations of an unrolled loop have the
//! same shapes line for line even though the values differ, which is what the folding passes fold.

use std::borrow::Cow;

use crate::bytes::{find_byte, find_colon_space};

/// What a verifier log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineKind {
    /// An instruction, `12: (bf) r1 = r6 ; R1_w=ctx() R6=ctx()`.
    Insn,
    /// Register state at an instruction, `12: R1=ctx() R10=fp0`.
    InsnState,
    /// Register state without an instruction index, ` frame1: R1=ctx()`.
    State,
    /// A branch being explored, `from 12 to 15: R0=scalar()`.
    Branch,
    /// A source annotation, `; for (i = 0; i < 40; i++) @ main.bpf.c:33`.
    Source,
    /// Precision backtracking, `mark_precise: frame0: ...`, `propagating r7`.
    Precision,
    /// A state pruned as equivalent to an explored one, `12: safe`.
    Safe,
    /// Statistics, `processed 12 insns ...`, `stack depth 8`, `verification time 5 usec`.
    Stats,
    /// An error the verifier or libbpf rejected the program with.
    Error,
    /// libbpf's `-- BEGIN PROG LOAD LOG --` and `-- END PROG LOAD LOG --`.
    Marker,
    /// Any other `libbpf: ...` line.
    Libbpf,
    /// Subprogram and call bookkeeping, `func#0 @0`, `caller:`, `returning from callee:`.
    Func,
    /// An empty or all-blank line.
    Blank,
    /// A fold header written by this crate.
    Fold,
    /// A note line following a fold header.
    FoldNote,
    /// A line of the program listings 7.x prints before its walk (`subprog#0 name:`, `stack
    /// use/def ...`, `Live regs before insn:`): `  12: (bf) r1 = r7`, `  1  10: ..6.. (63) ...`.
    Listing,
    /// Anything else, compared literally.
    Other,
}

/// How the tail of a line (from [`Classified::abstract_from`]) is abstracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abstraction {
    /// Nothing is abstracted; the whole line is compared literally.
    Literal,
    /// Register-state tokens `name=value`: names stay literal, numbers in values are abstracted.
    State,
    /// Every number is abstracted (fold headers and notes).
    Numbers,
}

/// The result of classifying one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// What the line is.
    pub kind: LineKind,
    /// The instruction index the line refers to, if any.
    pub insn: Option<u32>,
    /// Byte offset where abstraction starts; everything before it is literal.
    pub abstract_from: usize,
    /// How the bytes from `abstract_from` on are abstracted.
    pub mode: Abstraction,
}

impl Classified {
    const fn literal(kind: LineKind, insn: Option<u32>) -> Self {
        Self {
            kind,
            insn,
            abstract_from: usize::MAX,
            mode: Abstraction::Literal,
        }
    }

    const fn state(kind: LineKind, insn: Option<u32>, from: usize) -> Self {
        Self {
            kind,
            insn,
            abstract_from: from,
            mode: Abstraction::State,
        }
    }
}

/// Prefix of every fold header line this crate writes.
pub const FOLD_PREFIX: &str = "--- ktstr fold: ";
/// Prefix of every note line following a fold header.
pub const NOTE_PREFIX: &str = "---   ";

/// Substrings that mark a line as a verifier or libbpf error.
const ERROR_NEEDLES: &[&str] = &[
    "invalid",
    "Invalid",
    "not allowed",
    "too large",
    "too complex",
    "too many",
    "unbounded",
    "!read_ok",
    "Unreleased reference",
    "expected",
    "unknown ",
    "cannot ",
    "can't ",
    "misaligned",
    "out of bounds",
    "out of range",
    "outside of",
    "infinite loop",
    "back-edge",
    "unreachable insn",
    "Possibly NULL",
    "prohibited",
    "not supported",
    "unsupported",
    "At program exit",
    "dereference of modified",
    "math between",
    "failed",
    "denied",
    "is negative",
    "exceeds",
    "must be",
    "must point",
    "leads to",
    "error",
    "Error",
];

/// Classifies one line (without its trailing newline).
pub fn classify(line: &str) -> Classified {
    let b = line.as_bytes();
    let Some(&first) = b.first() else {
        return Classified::literal(LineKind::Blank, None);
    };
    if first.is_ascii_digit() {
        return classify_indexed(line);
    }
    match first {
        b';' => return Classified::literal(LineKind::Source, None),
        b'f' => {
            if let Some(c) = classify_from(line) {
                return c;
            }
            if line.starts_with("func#") {
                return Classified::literal(LineKind::Func, None);
            }
        }
        b' ' | b'\t' => {
            let t = line.trim_start();
            if t.is_empty() {
                return Classified::literal(LineKind::Blank, None);
            }
            if starts_state(t) {
                return Classified::state(LineKind::State, None, line.len() - t.len());
            }
            if let Some(at) = explanation_text(t) {
                if !is_error_text(line) {
                    // Numbers in a 7.x error explanation's source and instruction context
                    // (`offset 8 to ... offset 12`) change from one step of a loop to the next.
                    return Classified {
                        kind: LineKind::Other,
                        insn: None,
                        abstract_from: line.len() - t.len() + at,
                        mode: Abstraction::Numbers,
                    };
                }
            }
            if let Some(insn) = listing_insn(t) {
                return Classified {
                    kind: LineKind::Listing,
                    insn: Some(insn),
                    abstract_from: 0,
                    mode: Abstraction::Numbers,
                };
            }
        }
        b'-' => {
            if line.starts_with(FOLD_PREFIX) {
                return Classified {
                    kind: LineKind::Fold,
                    insn: None,
                    abstract_from: FOLD_PREFIX.len(),
                    mode: Abstraction::Numbers,
                };
            }
            if line.starts_with(NOTE_PREFIX) {
                let from = line.find("): ").map_or(NOTE_PREFIX.len(), |p| p + 3);
                return Classified {
                    kind: LineKind::FoldNote,
                    insn: None,
                    abstract_from: from,
                    mode: Abstraction::Numbers,
                };
            }
            if line.starts_with("-- BEGIN PROG LOAD LOG")
                || line.starts_with("-- END PROG LOAD LOG")
            {
                return Classified::literal(LineKind::Marker, None);
            }
        }
        b'm' if line.starts_with("mark_precise:") => return classify_precise(line),
        b'p' => {
            if line.starts_with("processed ") || line.starts_with("prog size ") {
                return Classified::literal(LineKind::Stats, None);
            }
            if line.starts_with("propagating ") || line.starts_with("parent ") {
                return Classified::literal(LineKind::Precision, None);
            }
        }
        b'l' => {
            if let Some(rest) = line.strip_prefix("libbpf: ") {
                if rest.contains("-- BEGIN PROG LOAD LOG") || rest.contains("-- END PROG LOAD LOG")
                {
                    return Classified::literal(LineKind::Marker, None);
                }
                let kind = if is_error_text(rest) {
                    LineKind::Error
                } else {
                    LineKind::Libbpf
                };
                return Classified::literal(kind, None);
            }
            if line.starts_with("last_idx ") {
                return Classified::literal(LineKind::Precision, None);
            }
        }
        b's' if line.starts_with("stack depth ") => {
            return Classified::literal(LineKind::Stats, None)
        }
        b'v' if line.starts_with("verification time ") => {
            return Classified::literal(LineKind::Stats, None)
        }
        b'c' | b'r' | b'F' | b'V' => {
            for (p, off) in [
                ("caller:", 7),
                ("callee:", 7),
                ("returning from callee:", 22),
            ] {
                if line.starts_with(p) {
                    return Classified::state(LineKind::Func, None, off);
                }
            }
            if line.starts_with("Func#") || line.starts_with("Validating ") {
                return Classified::literal(LineKind::Func, None);
            }
        }
        b'R' if starts_state(line) && !is_error_text(line) => {
            return Classified::state(LineKind::State, None, 0)
        }
        _ => {}
    }
    if line.starts_with("to caller at ") {
        return Classified::literal(LineKind::Func, None);
    }
    if is_error_text(line) {
        return Classified::literal(LineKind::Error, None);
    }
    Classified::literal(LineKind::Other, None)
}

/// True when `text` reads like a verifier or libbpf error message.
fn is_error_text(text: &str) -> bool {
    ERROR_NEEDLES.iter().any(|n| text.contains(n))
}

/// True for a line that starts one of the program listings 7.x prints before its walk:
/// `subprog#0: analyzing (depth 0)...`, `subprog#0 name:`, `stack use/def subprog#0 name
/// (d0,cs0):`, `Live regs before insn:`. The instruction lines after it, up to the first line
/// of any other kind, are [`LineKind::Listing`] lines (see [`ListingContext`]).
pub fn starts_listing(line: &str) -> bool {
    if !matches!(line.as_bytes().first(), Some(b's' | b'L')) {
        return false;
    }
    line.starts_with("subprog#")
        || line.starts_with("stack use/def ")
        || line.starts_with("Live regs before insn:")
}

/// Tells program-listing lines from the walk's instruction lines, which look alike
/// (`158: (bf) r1 = r10`), by what came before them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListingContext {
    in_listing: bool,
}

impl ListingContext {
    /// The kind of the next line, given its context-free classification.
    pub fn kind(&mut self, line: &str, c: &Classified) -> LineKind {
        if !self.in_listing && c.kind != LineKind::Other {
            return c.kind;
        }
        if starts_listing(line) {
            self.in_listing = true;
            return c.kind;
        }
        match c.kind {
            LineKind::Listing => LineKind::Listing,
            LineKind::Insn if self.in_listing => LineKind::Listing,
            k => {
                self.in_listing = false;
                k
            }
        }
    }
}

/// Where a register-state dump starts after an instruction's text, `... 26: R0=...`.
fn trailing_state(t: &str) -> Option<usize> {
    let b = t.as_bytes();
    let mut from = 0;
    while let Some(p) = t.get(from..)?.find(": ") {
        let colon = from + p;
        let digits = b[..colon]
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let at = colon + 2;
        if digits > 0 && b.get(colon - digits - 1) == Some(&b' ') && starts_state(t.get(at..)?) {
            return Some(at);
        }
        from = at;
    }
    None
}

/// True for a stack-slot token name, `fp-8` (not `fp0`, a frame pointer value's name).
pub(crate) fn is_stack_slot(name: &[u8]) -> bool {
    name.starts_with(b"fp-")
}

/// Where the text starts in a line of a 7.x error explanation's context (leading blanks
/// removed): `>>> 26 | for (...)`, `24 | if (!v)`, `| ^-- update: ...`, `15 | (85) call ...`.
fn explanation_text(t: &str) -> Option<usize> {
    let rest = t.strip_prefix(">>> ").map_or(t, str::trim_start);
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let after = &rest[digits..];
    let bar = if digits > 0 {
        after.strip_prefix(" |")?
    } else {
        after.strip_prefix('|')?
    };
    let bar = bar.strip_prefix(' ').unwrap_or(bar);
    Some(t.len() - bar.len())
}

/// The instruction index of a listing line (leading blanks removed): `12: (bf) ...`, or with
/// a loop-depth column first, `1  10: ......678. (63) ...`.
fn listing_insn(t: &str) -> Option<u32> {
    let (a, rest) = split_number(t)?;
    if let Some(rest) = rest.strip_prefix(": ") {
        return (!rest.is_empty()).then_some(a);
    }
    let rest2 = rest.trim_start_matches(' ');
    if rest2.len() == rest.len() {
        return None;
    }
    let (b, rest) = split_number(rest2)?;
    rest.strip_prefix(": ").filter(|r| !r.is_empty()).map(|_| b)
}

/// True when `t` starts like a register-state dump: `R1=`, `R1_w=`, `fp-8=`, `frame1:`.
fn starts_state(t: &str) -> bool {
    let b = t.as_bytes();
    if t.starts_with("frame") {
        return b.get(5).is_some_and(u8::is_ascii_digit);
    }
    if t.starts_with("fp-") {
        return t.contains('=');
    }
    if b.first() == Some(&b'R') && b.get(1).is_some_and(u8::is_ascii_digit) {
        let mut i = 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        return matches!(b.get(i), Some(b'=' | b'_'));
    }
    false
}

/// Classifies a line starting with a digit: `12: (bf) ...`, `12: R1=...`, `12: safe`.
fn classify_indexed(line: &str) -> Classified {
    let b = line.as_bytes();
    let mut i = 0;
    let mut idx: u32 = 0;
    while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        idx = idx.saturating_mul(10).saturating_add(u32::from(d - b'0'));
        i += 1;
    }
    if b.get(i) != Some(&b':') {
        return fallback(line);
    }
    let rest = &line[i + 1..];
    let rest_t = rest.trim_start();
    let rest_at = line.len() - rest_t.len();
    let rb = rest_t.as_bytes();
    if rb.len() >= 4
        && rb[0] == b'('
        && rb[1].is_ascii_hexdigit()
        && rb[2].is_ascii_hexdigit()
        && rb[3] == b')'
    {
        let from = find_byte(rb, b';').map_or(usize::MAX, |p| rest_at + p + 1);
        if from == usize::MAX {
            // Level 1 prints the state at the next instruction on the same line:
            // `25: (85) call bpf_iter_num_next#66894 26: R0=rdonly_mem(...) R6=...`.
            return match trailing_state(rest_t) {
                Some(p) => Classified::state(LineKind::Insn, Some(idx), rest_at + p),
                None => Classified::literal(LineKind::Insn, Some(idx)),
            };
        }
        return Classified::state(LineKind::Insn, Some(idx), from);
    }
    if rest_t == "safe" || rest_t.starts_with("safe ") {
        return Classified::literal(LineKind::Safe, Some(idx));
    }
    if starts_state(rest_t) {
        return Classified::state(LineKind::InsnState, Some(idx), rest_at);
    }
    fallback(line)
}

/// Classifies `from 12 to 15: ...` and `from 12 to 15 (speculative execution): ...`.
fn classify_from(line: &str) -> Option<Classified> {
    let rest = line.strip_prefix("from ")?;
    let (_, rest) = split_number(rest)?;
    let rest = rest.strip_prefix(" to ")?;
    let (to, rest) = split_number(rest)?;
    let colon = rest.find(':')?;
    let from = line.len() - rest.len() + colon + 1;
    Some(Classified::state(LineKind::Branch, Some(to), from))
}

/// Classifies `mark_precise: ...`; only a `parent state` dump carries register state.
fn classify_precise(line: &str) -> Classified {
    // `mark_precise: frame0: parent state regs=r1 stack=:  R0_w=scalar() ...`
    let rest = line.strip_prefix("mark_precise: ").unwrap_or(line);
    let rest = match rest.strip_prefix("frame") {
        Some(r) => find_colon_space(r).map_or(r, |p| r.get(p + 2..).unwrap_or_default()),
        None => rest,
    };
    if rest.starts_with("parent state regs=") {
        if let Some(colon) = find_colon_space(rest) {
            let at = line.len() - rest.len() + colon + 1;
            return Classified::state(LineKind::Precision, None, at);
        }
    }
    Classified::literal(LineKind::Precision, None)
}

/// Error or other line for anything that did not match a structured form.
fn fallback(line: &str) -> Classified {
    if is_error_text(line) {
        Classified::literal(LineKind::Error, None)
    } else {
        Classified::literal(LineKind::Other, None)
    }
}

/// Splits a leading decimal number off `s`.
fn split_number(s: &str) -> Option<(u32, &str)> {
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n = s[..end].parse().ok()?;
    Some((n, &s[end..]))
}

/// One number found in the abstracted part of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number<'a> {
    /// The value; out-of-range literals saturate.
    pub value: i128,
    /// Whether the literal was written in hex.
    pub hex: bool,
    /// The state token's name (`R7_w`, `fp-8`), empty outside state tokens.
    pub token: &'a str,
    /// The nearest `field=` key before the number inside the token (`smax`), may be empty.
    pub field: &'a str,
    /// Byte offset of the literal in the line.
    pub start: usize,
    /// Byte offset just past the literal.
    pub end: usize,
}

/// A 64-bit multiplicative hash fed in 8-byte words (FxHash style; deterministic).
struct Hasher64(u64);

impl Hasher64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            if let Ok(w) = <[u8; 8]>::try_from(c) {
                self.add(u64::from_le_bytes(w));
            }
        }
        // Assemble the tail by hand: a variable-length copy would call memcpy.
        let mut w = 0u64;
        for (k, b) in chunks.remainder().iter().enumerate() {
            w |= u64::from(*b) << (8 * k);
        }
        self.add(w ^ ((bytes.len() as u64) << 56));
    }
}

/// Computes the shape hash of `line` and reports every abstracted number to `on_num`.
///
/// In a register-state part ([`Abstraction::State`]) only the token names (`R7`, `fp-8`) are
/// hashed, not their values: two iterations of a loop whose registers change in shape
/// (`scalar()` becoming `scalar(id=3)`, a precision mark `P`, a new `var_off`, a liveness
/// suffix `R7_w`) hash equal,
/// and the fold's notes say how each register changed.
pub(crate) fn scan(line: &str, c: &Classified, mut on_num: impl FnMut(Number<'_>)) -> u64 {
    let b = line.as_bytes();
    let mut h = Hasher64(c.kind as u64 + 1);
    let start = c.abstract_from.min(b.len());
    h.write(&b[..start]);
    if c.mode == Abstraction::Literal || start == b.len() {
        return h.0;
    }
    let state = c.mode == Abstraction::State;
    let n = b.len();
    let mut i = start;
    let mut lit = start;
    let mut depth = 0u32;
    let mut in_name = state;
    let mut tok_start = start;
    let mut name_end = start;
    let mut ident_start = start;
    let mut field = (start, start);
    let mut prev_word = false;
    let mut prev_digit = false;
    let mut prev_slot = false;
    while i < n {
        let ch = b[i];
        // Digits in a token's name (`R10`) are plain too: no number starts in a name.
        let plain = if in_name { PLAIN | DIGIT } else { PLAIN };
        if byte_class(ch) & plain != 0 {
            // Fast path: a run of bytes that neither start a number nor change the token state.
            let mut j = i;
            let mut last = 0;
            while let Some(&c) = b.get(j) {
                let class = byte_class(c);
                if class & plain == 0 {
                    break;
                }
                let word = class & WORD != 0;
                if word && !prev_word {
                    ident_start = j;
                }
                prev_word = word;
                last = class;
                j += 1;
            }
            if in_name && state {
                name_end = j;
            }
            prev_digit = last & DIGIT != 0;
            i = j;
            continue;
        }
        let num_start = !in_name
            && ((ch.is_ascii_digit() && (!prev_word || is_value_prefix(&b[ident_start..i])))
                || (ch == b'-' && !prev_digit && b.get(i + 1).is_some_and(u8::is_ascii_digit)));
        if num_start {
            let (value, hex, end) = parse_number(b, i);
            if !state {
                h.write(&b[lit..i]);
                h.add(if hex { 0xa1 } else { 0xd1 });
            }
            on_num(Number {
                value,
                hex,
                token: &line[tok_start..name_end],
                field: &line[field.0..field.1],
                start: i,
                end,
            });
            i = end;
            lit = end;
            prev_word = true;
            prev_digit = true;
            continue;
        }
        let word = ch.is_ascii_alphanumeric() || ch == b'_';
        match ch {
            b' ' if depth == 0 && state => {
                // A new token: its name is hashed, the previous token's value was not.
                lit = i;
                in_name = true;
                tok_start = i + 1;
                name_end = i + 1;
                field = (i + 1, i + 1);
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'=' => {
                if in_name && depth == 0 {
                    in_name = false;
                    name_end = i;
                    if state {
                        // `R7_w` and `R7` are one register: the liveness suffix is state.
                        let cut = b[lit..i]
                            .iter()
                            .position(|&c| c == b'_')
                            .map_or(i, |p| lit + p);
                        let name = &b[lit..cut];
                        let trimmed = name.strip_prefix(b" ").unwrap_or(name);
                        if is_stack_slot(trimmed) {
                            // Stack slots: which ones are printed moves with a loop over an
                            // array on the stack; a run of them hashes as one.
                            if !prev_slot {
                                h.add(0x6670);
                            }
                            prev_slot = true;
                        } else {
                            h.write(name);
                            h.add(0x3d);
                            prev_slot = false;
                        }
                        lit = i + 1;
                    }
                } else {
                    field = if prev_word { (ident_start, i) } else { (i, i) };
                }
            }
            _ => {}
        }
        if word && !prev_word {
            ident_start = i;
        }
        if in_name && state {
            name_end = i + 1;
        }
        prev_word = word;
        prev_digit = ch.is_ascii_digit();
        i += 1;
    }
    if !state || in_name {
        h.write(&b[lit..]);
    }
    h.0
}

/// [`byte_class`] bit: the byte neither starts a number nor changes the token state in [`scan`].
const PLAIN: u8 = 1;
/// [`byte_class`] bit: the byte is part of a word (ASCII alphanumeric or `_`).
const WORD: u8 = 2;
/// [`byte_class`] bit: the byte is an ASCII digit.
const DIGIT: u8 = 4;

/// Classes of every byte value, for [`scan`]'s fast path.
const BYTE_CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let word = c.is_ascii_alphanumeric() || c == b'_';
        let special = c.is_ascii_digit()
            || matches!(
                c,
                b' ' | b'-' | b'=' | b'(' | b')' | b'[' | b']' | b'{' | b'}'
            );
        t[i] = if special { 0 } else { PLAIN }
            | if word { WORD } else { 0 }
            | if c.is_ascii_digit() { DIGIT } else { 0 };
        i += 1;
    }
    t
};

/// The [`PLAIN`], [`WORD`] and [`DIGIT`] bits of `c`.
fn byte_class(c: u8) -> u8 {
    BYTE_CLASSES[usize::from(c)]
}

/// Words that prefix a constant in a state value: precise `P5`, older kernels' `inv5`,
/// `invP5`, and a stack slot's byte marks before a spilled constant, `pppp38`, `mmmm0`.
fn is_value_prefix(word: &[u8]) -> bool {
    matches!(word, b"P" | b"inv" | b"invP")
        || (!word.is_empty() && word.len() <= 8 && word.iter().all(|c| matches!(c, b'p' | b'm')))
}

/// Parses a decimal or `0x` hex literal, optionally negative, starting at `b[i]`.
fn parse_number(b: &[u8], mut i: usize) -> (i128, bool, usize) {
    let neg = b.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let hex = b.get(i) == Some(&b'0')
        && matches!(b.get(i + 1), Some(b'x' | b'X'))
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
    let radix: u8 = if hex {
        i += 2;
        16
    } else {
        10
    };
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' if radix == 16 => Some(c - b'a' + 10),
        b'A'..=b'F' if radix == 16 => Some(c - b'A' + 10),
        _ => None,
    };
    // Exact in `u64` while it fits (nearly always), then saturating in `i128`.
    let mut small: u64 = 0;
    while let Some(d) = b.get(i).and_then(|&c| digit(c)) {
        match small
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => small = v,
            None => break,
        }
        i += 1;
    }
    let mut v = i128::from(small);
    while let Some(d) = b.get(i).and_then(|&c| digit(c)) {
        v = v
            .saturating_mul(i128::from(radix))
            .saturating_add(i128::from(d));
        i += 1;
    }
    (if neg { -v } else { v }, hex, i)
}

/// The shape hash of a line: equal for lines that differ only in abstracted values.
pub fn shape_hash(line: &str) -> u64 {
    scan(line, &classify(line), |_| {})
}

/// The shape of a line as text, abstracted numbers written as `#` (decimal) or `#x` (hex).
pub fn shape(line: &str) -> Cow<'_, str> {
    let c = classify(line);
    let start = c.abstract_from.min(line.len());
    if c.mode == Abstraction::Literal || start == line.len() {
        return Cow::Borrowed(line);
    }
    let mut spans = Vec::new();
    scan(line, &c, |n| spans.push((n.start, n.end, n.hex)));
    let mut out = String::with_capacity(line.len());
    let mut last = 0;
    for (s, e, hex) in spans {
        out.push_str(&line[last..s]);
        out.push_str(if hex { "#x" } else { "#" });
        last = e;
    }
    out.push_str(&line[last..]);
    Cow::Owned(out)
}

/// The numbers abstracted out of a line, in order.
pub fn values(line: &str) -> Vec<i128> {
    let mut v = Vec::new();
    scan(line, &classify(line), |n| v.push(n.value));
    v
}

/// A register-ish label for a number: `R7`, `R3.smax`, `fp-8`, `R3.var_off[1]`.
pub(crate) fn label(n: &Number<'_>, same_field_before: usize) -> String {
    let mut name = n.token;
    if let Some(u) = name.find('_') {
        name = &name[..u];
    }
    let mut s = String::from(name);
    if !n.field.is_empty() && n.field != name {
        if !s.is_empty() {
            s.push('.');
        }
        s.push_str(n.field);
    }
    if same_field_before > 0 || s.is_empty() {
        s.push_str(&format!("[{same_field_before}]"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insn_line_keeps_text_and_abstracts_state() {
        let l = "12: (bf) r1 = r7                      ; R1_w=5 R7_w=5";
        let c = classify(l);
        assert_eq!(c.kind, LineKind::Insn);
        assert_eq!(c.insn, Some(12));
        assert_eq!(
            shape(l),
            "12: (bf) r1 = r7                      ; R1_w=# R7_w=#"
        );
        assert_eq!(values(l), vec![5, 5]);
    }

    #[test]
    fn equal_shape_for_different_values_only() {
        let a = "9: (07) r7 += 1                       ; R7_w=1";
        let b = "9: (07) r7 += 1                       ; R7_w=38";
        let c = "9: (07) r7 += 2                       ; R7_w=38";
        assert_eq!(shape_hash(a), shape_hash(b));
        assert_ne!(shape_hash(a), shape_hash(c));
    }

    #[test]
    fn scalar_ranges_and_hex_are_abstracted_names_are_not() {
        let l = "from 10 to 2: R3=scalar(id=2,smin=0,smax=umax=39,var_off=(0x0; 0x3f)) R10=fp0 fp-8=mmmmmmmm";
        let c = classify(l);
        assert_eq!(c.kind, LineKind::Branch);
        assert_eq!(c.insn, Some(2));
        assert_eq!(
            shape(l),
            "from 10 to 2: R3=scalar(id=#,smin=#,smax=umax=#,var_off=(#x; #x)) R10=fp0 fp-8=mmmmmmmm"
        );
        let mut labels = Vec::new();
        scan(l, &c, |n| labels.push(label(&n, 0)));
        assert_eq!(labels[0], "R3.id");
        assert_eq!(labels[2], "R3.umax");
        assert_eq!(labels[3], "R3.var_off");
    }

    #[test]
    fn fp_offsets_in_values_are_numbers() {
        let l = "4: R1_w=fp-16 R10=fp0";
        assert_eq!(classify(l).kind, LineKind::InsnState);
        assert_eq!(shape(l), "4: R1_w=fp# R10=fp0");
        assert_eq!(values(l), vec![-16]);
    }

    #[test]
    fn kinds() {
        let cases = [
            ("; for (i = 0; i < 40; i++) @ main.bpf.c:33", LineKind::Source),
            ("mark_precise: frame0: last_idx 10 first_idx 2 subseq_idx -1", LineKind::Precision),
            ("processed 1234 insns (limit 1000000) max_states_per_insn 4 total_states 56 peak_states 56 mark_read 12", LineKind::Stats),
            ("stack depth 8+0", LineKind::Stats),
            ("verification time 123 usec", LineKind::Stats),
            ("R7 invalid mem access 'scalar'", LineKind::Error),
            ("R1 invalid mem access 'scalar'", LineKind::Error),
            ("-- BEGIN PROG LOAD LOG --", LineKind::Marker),
            ("libbpf: prog 'x': -- BEGIN PROG LOAD LOG --", LineKind::Marker),
            ("libbpf: prog 'x': BPF program load failed: Permission denied", LineKind::Error),
            ("libbpf: map 'bss': created", LineKind::Libbpf),
            ("15: safe", LineKind::Safe),
            ("func#0 @0", LineKind::Func),
            ("", LineKind::Blank),
            ("BPF program is too large. Processed 1000001 insn", LineKind::Error),
            ("some other text", LineKind::Other),
            (" frame1: R1=ctx() R10=fp0", LineKind::State),
            ("  12: (bf) r2 = r10\tr2: _ -> fp0+0", LineKind::Listing),
            ("  1  10: ......678. (63) *(u32 *)(r10 -8) = r7", LineKind::Listing),
            ("      13 | (07) r6 += 8", LineKind::Other),
            ("         |                 ^-- error: access may be outside object bounds", LineKind::Error),
            ("0: R1=ctx() R10=fp0", LineKind::InsnState),
        ];
        for (l, k) in cases {
            assert_eq!(classify(l).kind, k, "{l}");
        }
    }

    #[test]
    fn explanation_context_abstracts_numbers_after_the_gutter() {
        let a = "         |             from short_by_one at offset 8";
        let b = "         |             from short_by_one at offset 12";
        assert_eq!(shape_hash(a), shape_hash(b));
        let c = "  >>> 26 |         NO_UNROLL for (__u32 i = 0; i < N; i++) {";
        assert_eq!(classify(c).abstract_from, 11);
        assert_eq!(values("      17 | (79) r1 = *(u64 *)(r0 +0)"), vec![79, 0]);
    }

    #[test]
    fn level1_state_after_an_instruction_is_abstracted() {
        let a = "25: (85) call bpf_iter_num_next#66894 26: R0=rdonly_mem(id=3,parent_id=1,sz=4) R9=0 refs=1";
        let b = "25: (85) call bpf_iter_num_next#66894 26: R0=rdonly_mem(id=4,parent_id=1,sz=4) R9=1 refs=1";
        assert_eq!(classify(a).kind, LineKind::Insn);
        assert_eq!(shape_hash(a), shape_hash(b));
        assert_ne!(
            shape_hash(a),
            shape_hash("25: (85) call bpf_iter_num_new#66893 26: R0=rdonly_mem(id=4,parent_id=1,sz=4) R9=1 refs=1")
        );
        assert_eq!(classify("3: (05) goto pc+1").mode, Abstraction::Literal);
    }

    #[test]
    fn stack_slots_hash_as_one_run() {
        let a =
            "8: (7b) *(u64 *)(r7 +0) = r1          ; R1=scalar(id=2) R7=fp-184 fp-184=scalar(id=2)";
        let b =
            "8: (7b) *(u64 *)(r7 +0) = r1          ; R1=scalar(id=3) R7=fp-176 fp-176=scalar(id=3)";
        assert_eq!(shape_hash(a), shape_hash(b));
        let c = "11: R6=P28 R7=fp-160 R10=fp0 fp-168=scalar() fp-176=scalar()";
        let d = "11: R6=P35 R7=fp-152 R10=fp0 fp-160=scalar() fp-168=scalar() fp-176=scalar()";
        assert_eq!(shape_hash(c), shape_hash(d));
        assert_ne!(shape_hash(c), shape_hash("11: R6=P28 R7=fp-160 R10=fp0"));
    }

    #[test]
    fn spilled_constants_after_slot_marks_are_numbers() {
        assert_eq!(
            values("10: (63) *(u32 *)(r10 -8) = r7 ; R7=38 fp-8=pppp38"),
            vec![38, 38]
        );
    }

    #[test]
    fn precise_and_old_style_constants_are_numbers() {
        assert_eq!(
            shape("9: (07) r1 += 1 ; R1_rw=P5"),
            "9: (07) r1 += 1 ; R1_rw=P#"
        );
        assert_eq!(values("5: R2_w=inv7 R3=invP0 R4=ptr5"), vec![7, 0]);
    }

    #[test]
    fn multibyte_text_never_splits_a_char() {
        for l in [
            "5: R1\u{e9}=3 R2=\u{e9}5 \u{fc}=7 R\u{fc}\u{fc}=x(a\u{e9}=9)",
            "from 1 to 2: \u{1f600}=1 R1=\u{1f600}2",
            "3: (bf) r1 = r2 ; R1_w=\u{e9}(\u{e9}=1,\u{e9}\u{e9}=2)",
        ] {
            let mut labels = Vec::new();
            scan(l, &classify(l), |n| labels.push(label(&n, 0)));
            assert!(!shape(l).is_empty());
        }
        assert_eq!(values("5: R1=3 R2=\u{e9}5"), vec![3, 5]);
    }

    #[test]
    fn negative_and_saturating_numbers() {
        let l = "3: R0=scalar(smin=-9223372036854775808,umax=999999999999999999999999999999999999999999)";
        let v = values(l);
        assert_eq!(v[0], -9_223_372_036_854_775_808);
        assert_eq!(v[1], i128::MAX);
        let l =
            "3: R0=scalar(umax=18446744073709551615,x=18446744073709551616,y=0x1ffffffffffffffff)";
        assert_eq!(
            values(l),
            vec![
                i128::from(u64::MAX),
                i128::from(u64::MAX) + 1,
                2 * i128::from(u64::MAX) + 1
            ]
        );
    }

    #[test]
    fn fold_lines_abstract_every_number() {
        let h = "--- ktstr fold: 418 lines omitted: iterations 2-39 of 40 (period 11 lines, insns 2-10); 2 notes ---";
        assert_eq!(classify(h).kind, LineKind::Fold);
        assert_eq!(values(h), vec![418, 2, 39, 40, 11, 2, 10, 2]);
        let n = "---   R7 (insn 2): 0 -> 39 step 1";
        assert_eq!(classify(n).kind, LineKind::FoldNote);
        assert_eq!(values(n), vec![0, 39, 1]);
    }
}
