//! Feeds arbitrary bytes to `collapse` and checks what must hold for any input: no panic, the
//! fold counts expand back to the input's line count, every error line and the last line are
//! in the output verbatim. The same checks run on the input truncated at a byte the input
//! chooses, and on its two halves interleaved line by line in blocks, as two programs' logs
//! written to one stream would be. Seed it with the bad-input fixtures:
//! `cargo +nightly fuzz run collapse ../tests/fixtures/bad`.

#![no_main]

use ktstr_verifier::collapse::MAX_LINE_BYTES;
use ktstr_verifier::{classify, collapse, expanded_line_count, fold, LineKind};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    let c = collapse(data).expect("collapse of in-memory bytes cannot fail");
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    let lines_in = lines.len() as u64;
    assert_eq!(c.summary.lines_in, lines_in, "lines read");
    assert_eq!(
        expanded_line_count(&c.text).expect("own output parses"),
        lines_in,
        "fold counts do not expand to the input's line count"
    );
    assert_eq!(
        c.summary.lines_out,
        c.text.lines().count() as u64,
        "lines written"
    );
    // Compared without trailing CRs: a line read as `x\r` (its CR-LF's CR stripped, or a
    // bare CR at the end of the input) is written as `x\r\n`, which reads back as `x`.
    let cr = |l: &str| l.trim_end_matches('\r').to_string();
    let out: Vec<String> = c.text.lines().map(cr).collect();
    for l in &lines {
        if l.len() <= MAX_LINE_BYTES && classify(l).kind == LineKind::Error {
            let want = cr(&fold::escape(l.strip_suffix('\r').unwrap_or(l)));
            assert!(out.contains(&want), "error line lost: {l:?}");
        }
    }
    if let Some(last) = lines.last().filter(|l| l.len() <= MAX_LINE_BYTES) {
        let last = last.strip_suffix('\r').unwrap_or(last);
        assert_eq!(
            out.last().cloned(),
            Some(cr(&fold::escape(last))),
            "last line lost"
        );
    }
}

fn is_newline(c: &u8) -> bool {
    *c == b'\n'
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // Truncated: a log buffer that filled at any byte.
    let cut = rest.len() * usize::from(sel) / 255;
    check(&rest[..cut]);
    // Interleaved: the two halves' lines alternate in blocks of 1 + sel % 16 lines.
    let half = rest.len() / 2;
    let (a, b) = rest.split_at(half);
    let block = 1 + usize::from(sel % 16);
    let (mut la, mut lb) = (a.split(is_newline), b.split(is_newline));
    let mut mixed = Vec::with_capacity(rest.len() + 2);
    loop {
        let mut any = false;
        for it in [&mut la, &mut lb] {
            for l in it.by_ref().take(block) {
                mixed.extend_from_slice(l);
                mixed.push(b'\n');
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    check(&mixed);
});
