//! The BTF parser and resolver: any bytes, as raw BTF or as an ELF holding it, parse or
//! fail cleanly, and resolving field paths in whatever parsed never panics.
#![no_main]

use ktstr_btf_monitor::{resolve, Btf};
use libfuzzer_sys::fuzz_target;

const PATHS: [(&str, &str); 5] = [
    ("rq", "nr_running"),
    ("rq", "scx.nr_running"),
    ("task_struct", "se.vruntime"),
    ("task_struct", "comm"),
    ("a", "b.c.d[3].e"),
];

fuzz_target!(|data: &[u8]| {
    for btf in [Btf::parse(data), Btf::from_elf(data)].into_iter().flatten() {
        for (ty, path) in PATHS {
            let _ = resolve(&btf, ty, path);
        }
    }
});
