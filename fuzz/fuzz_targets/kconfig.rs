//! The kernel config parser: any text parses without panic, and every `CONFIG_X=y` line it
//! saw is in the result.
#![no_main]

use ktstr::kernel::{parse_config, ConfigValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let config = parse_config(&text);
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("CONFIG_").and_then(|l| l.strip_suffix("=y")) {
            if !name.is_empty() && !name.contains(['=', ' ', '#']) {
                // A later line may set it again; the name is known either way.
                assert!(config.contains_key(name), "{name} lost");
            }
        }
    }
    let _ = config.values().filter(|v| matches!(v, ConfigValue::Yes)).count();
});
