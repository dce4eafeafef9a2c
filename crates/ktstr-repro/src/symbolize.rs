//! Kernel addresses (a trigger record's stack) back to `function+0xoff`, from a symbol
//! table such as the guest's `/proc/kallsyms`.

use ktstr_btf_monitor::SymbolTable;

/// Farthest an address may be from its symbol: no kernel function is this large.
pub const MAX_FUNCTION_SIZE: u64 = 1 << 20;

/// Text symbols sorted by address, for address lookups.
#[derive(Clone, Debug, Default)]
pub struct Symbolizer {
    /// `(address, name)`, sorted by address.
    text: Vec<(u64, String)>,
}

impl Symbolizer {
    /// Takes the text (`t`/`T`) symbols of `table`.
    pub fn new(table: &SymbolTable) -> Symbolizer {
        let mut text: Vec<(u64, String)> = table
            .iter()
            .filter(|s| matches!(s.kind, 't' | 'T'))
            .map(|s| (s.addr, s.name.clone()))
            .collect();
        text.sort();
        Symbolizer { text }
    }

    /// `function+0xoff` for `addr`: the nearest text symbol at or below it. `None` below
    /// the first symbol, or more than [`MAX_FUNCTION_SIZE`] past its symbol
    /// (JIT code of BPF programs whose kallsyms entries are gone). The table must be
    /// whole: with symbols missing, the one before a gap takes its addresses.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let i = self.text.partition_point(|(a, _)| *a <= addr);
        let (base, name) = self.text.get(i.checked_sub(1)?)?;
        let off = addr - base;
        (off <= MAX_FUNCTION_SIZE).then(|| format!("{name}+{off:#x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_text_symbol_below() {
        let t = SymbolTable::from_text(
            "ffffffff813f5ac0 T scx_exit_bstr\n\
             ffffffff813f5bd0 T scx_bpf_error_bstr\n\
             ffffffff813f5b00 d some_data\n",
        )
        .unwrap();
        let s = Symbolizer::new(&t);
        assert_eq!(
            s.symbolize(0xffff_ffff_813f_5b9d).as_deref(),
            Some("scx_exit_bstr+0xdd")
        );
        assert_eq!(
            s.symbolize(0xffff_ffff_813f_5bd0).as_deref(),
            Some("scx_bpf_error_bstr+0x0")
        );
        assert_eq!(s.symbolize(0xffff_ffff_8000_0000), None);
        // JIT code far above the last symbol is unknown, not the last symbol's.
        assert_eq!(s.symbolize(0xffff_ffff_c000_1294), None);
        // Data symbols are not functions.
        assert_eq!(
            s.symbolize(0xffff_ffff_813f_5b00).as_deref(),
            Some("scx_exit_bstr+0x40")
        );
    }
}
