//! The page-table walker over arbitrary guest memory: any tables, any root and any address
//! translate or fail cleanly, and a translation lands inside what the walk may reach.
#![no_main]

use ktstr_btf_monitor::{BufferMemory, Translator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let (head, mem) = data.split_at(17);
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let (cr3, va, la57) = (word(0) % 0x1_0000, word(8), head[16] & 1 == 1);
    let memory = BufferMemory::new(0, mem.to_vec());
    let t = Translator::new(cr3, la57);
    if let Ok((gpa, size)) = t.walk(&memory, va) {
        assert!(size.is_power_of_two(), "page size {size:#x}");
        assert_eq!(gpa & (size - 1), va & (size - 1), "offset within the page kept");
    }
    let _ = t
        .with_direct_map(0xffff_8880_0000_0000, mem.len() as u64)
        .translate(&memory, va);
});
