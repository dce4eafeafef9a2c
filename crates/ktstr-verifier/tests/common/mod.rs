//! What the verifier's test files share: the lines a collapse kept outside its folds, and
//! the "no line kind lost" check's idea of a line's kind.

#![allow(dead_code)]

use std::collections::BTreeSet;

use ktstr_verifier::fold::parse_header;
use ktstr_verifier::line::FOLD_PREFIX;
use ktstr_verifier::{classify, LineKind};

/// Output lines outside fold blocks.
pub fn plain_lines(collapsed: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut skip = 0u64;
    for l in collapsed.lines() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if l.starts_with(FOLD_PREFIX) {
            skip = parse_header(l).map_or(0, |(_, n)| n);
            continue;
        }
        out.push(l);
    }
    out
}

/// A line's kind as the "no line kind lost" check sees it: what the line is and its literal
/// part (an instruction's index and text, a state dump's instruction index, a message's whole
/// text), without the register values and their shape, which a fold summarises in its notes.
/// A precision-backtracking line's kind is what step it is (`last_idx`, `regs=`, `parent
/// state`, ...), as the collapse compares runs of them: a run folds whatever instructions it
/// walks. Every line of the program listings 7.x prints before its walk is of one kind.
pub fn kind_key(l: &str, kind: LineKind) -> String {
    let c = classify(l);
    if kind == LineKind::Listing {
        return "Listing".to_string();
    }
    let lit = l.get(..c.abstract_from.min(l.len())).unwrap_or(l);
    if c.kind != LineKind::Precision {
        return format!("{:?} {lit}", c.kind);
    }
    let step = match lit.find('=') {
        Some(eq) => &lit[..eq],
        None => {
            let end = lit.match_indices(' ').nth(2).map_or(lit.len(), |(i, _)| i);
            &lit[..end]
        }
    };
    let mut out = format!("{:?} ", c.kind);
    for ch in step.chars() {
        if !ch.is_ascii_digit() {
            out.push(ch);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

/// The kinds of a sequence of lines, listing lines told apart by what precedes them.
pub fn kind_keys<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut ctx = ktstr_verifier::line::ListingContext::default();
    lines
        .into_iter()
        .map(|l| kind_key(l, ctx.kind(l, &classify(l))))
        .collect()
}
