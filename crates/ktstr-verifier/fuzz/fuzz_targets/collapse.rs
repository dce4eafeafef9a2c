//! Feeds arbitrary bytes to `collapse` and checks what must hold for any input: no panic, the
//! fold counts expand back to the input's line count, and the input's last error line is in
//! the output verbatim.

#![no_main]

use ktstr_verifier::{classify, collapse, expanded_line_count, fold, LineKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = collapse(data).expect("collapse of in-memory bytes cannot fail");
    let text = String::from_utf8_lossy(data);
    let lines_in = text.lines().count() as u64;
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
    if let Some(last_err) = text
        .lines()
        .filter(|l| classify(l).kind == LineKind::Error)
        .last()
    {
        let want = fold::escape(last_err);
        assert!(
            c.text.lines().any(|l| l == want),
            "last error line lost: {last_err:?}"
        );
    }
});
