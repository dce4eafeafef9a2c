//! kallsyms / System.map text and ELF symbol tables: any input parses or fails cleanly, and
//! lookups in what parsed never panic.
#![no_main]

use ktstr_btf_monitor::SymbolTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for table in [SymbolTable::from_text(&text), SymbolTable::from_elf(data)]
        .into_iter()
        .flatten()
    {
        for name in ["runqueues", "_text", "__per_cpu_offset", ""] {
            let _ = table.addr(name);
        }
    }
});
