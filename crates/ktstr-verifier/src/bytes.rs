//! Byte searches, eight bytes at a time (no `unsafe`, no dependencies).

/// Position of the first `needle` in `b`.
pub(crate) fn find_byte(b: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pat = LO * u64::from(needle);
    let mut chunks = b.chunks_exact(8);
    let mut off = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w) ^ pat;
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(off + (found.trailing_zeros() / 8) as usize);
        }
        off += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == needle)
        .map(|p| off + p)
}

/// Byte offset of the first `": "` in `s`.
pub(crate) fn find_colon_space(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(p) = b.get(from..).and_then(|rest| find_byte(rest, b':')) {
        let at = from + p;
        if b.get(at + 1) == Some(&b' ') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_search_matches_naive() {
        for len in 0..40 {
            for at in 0..=len {
                let mut v = vec![b'a'; len];
                if at < len {
                    v[at] = b'\n';
                }
                assert_eq!(find_byte(&v, b'\n'), v.iter().position(|&c| c == b'\n'));
            }
        }
        assert_eq!(find_byte(b"\x8a\x0b\n", b'\n'), Some(2));
        assert_eq!(find_byte(b"\xbb\xbb;\xbb;", b';'), Some(2));
    }

    #[test]
    fn colon_space_matches_find() {
        for s in [
            "",
            ":",
            ": ",
            "a:b: c",
            "frame0:: x",
            "::::: ",
            "\u{e9}: x",
            "abc",
        ] {
            assert_eq!(find_colon_space(s), s.find(": "), "{s:?}");
        }
    }
}
