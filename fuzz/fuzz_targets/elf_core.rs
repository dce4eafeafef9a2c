//! The ELF core reader (a guest dump): any file opens or fails cleanly, and reads from what
//! opened never panic.
#![no_main]

use ktstr_btf_monitor::{ElfCore, GuestMemory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("ktstr-fuzz-core-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(core) = ElfCore::open(&path) {
        let mut buf = [0u8; 64];
        for gpa in [0, 0x1000, 0xfff, u64::MAX - 8, 0x10_0000] {
            let _ = core.read(gpa, &mut buf);
        }
    }
    let _ = std::fs::remove_file(&path);
});
