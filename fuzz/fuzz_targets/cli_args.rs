//! What users type: topology strings, CPU lists and memory sizes parse or fail with an
//! error, never a panic or an overflowed value.
#![no_main]

use ktstr_topology::{parse_cpu_list, Topology};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = text.parse::<Topology>() {
        assert!(t.validate().is_ok(), "{text:?} parsed into an invalid topology");
    }
    if let Ok(cpus) = parse_cpu_list(&text) {
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{text:?}: {cpus:?}");
    }
    // A size beyond the host (here 4096 MiB) or beyond 64 bits of bytes is refused before
    // boot; one that fits passes.
    if let Ok(mib) = ktstr_cli::parse_memory_mib(&text) {
        let checked = ktstr::run::check_memory(mib, Some(4096));
        assert_eq!(checked.is_ok(), mib <= 4096, "{text:?}: {mib} MiB");
    }
});
