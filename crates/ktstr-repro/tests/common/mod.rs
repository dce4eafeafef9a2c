//! Shared by the integration tests: fixtures, and the cached 7.3 kernel's BTF and symbols.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use ktstr_btf_monitor::{Btf, SymbolTable};

/// The release of the kernel the fixtures were captured on.
pub const RELEASE: &str = "7.3.4+deb13-cloud-amd64";

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture's bytes.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The vmlinux `ktstr kernel fetch` caches for Debian's 7.3 kernel, found as
/// ktstr-btf-monitor's kernel tests find it: `$KTSTR_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/ktstr`, else `~/.cache/ktstr`.
pub fn vmlinux_7_3() -> PathBuf {
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    };
    let cache = nonempty("KTSTR_CACHE_DIR")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("ktstr")))
        .unwrap_or_else(|| nonempty("HOME").unwrap_or_default().join(".cache/ktstr"));
    cache.join(format!("kernels/{RELEASE}/vmlinux"))
}

/// Says visibly that a test skips, and fails it under `KTSTR_REQUIRE_VM=1`.
pub fn skip(why: &str) {
    assert!(
        std::env::var("KTSTR_REQUIRE_VM").as_deref() != Ok("1"),
        "KTSTR_REQUIRE_VM=1 but {why}"
    );
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The 7.3 kernel's BTF, parsed once; `None` (after saying so) when the kernel is not
/// cached. (Its vmlinux has no `.symtab`: symbols come from the captured kallsyms.)
pub fn kernel_7_3() -> Option<&'static Btf> {
    static CELL: OnceLock<Option<Btf>> = OnceLock::new();
    let path = vmlinux_7_3();
    let k = CELL
        .get_or_init(|| {
            if !path.exists() {
                return None;
            }
            Some(Btf::from_file(&path).expect("7.3 BTF parses"))
        })
        .as_ref();
    if k.is_none() {
        skip(&format!(
            "{} is absent (`ktstr kernel fetch`)",
            path.display()
        ));
    }
    k
}

/// The captured guest's `/proc/kallsyms`, cut to the names in `7.3-names.txt`.
pub fn kallsyms_7_3() -> SymbolTable {
    SymbolTable::from_text(&fixture("7.3-kallsyms.txt")).expect("kallsyms fixture parses")
}

/// The captured guest's `available_filter_functions`, cut the same way.
pub fn traceable_7_3() -> HashSet<String> {
    ktstr_repro::plan::parse_filter_functions(&fixture("7.3-available_filter_functions.txt"))
}

/// The captured guest's kprobe blacklist, cut the same way.
pub fn blacklist_7_3() -> HashSet<String> {
    ktstr_repro::plan::parse_kprobe_blacklist(&fixture("7.3-kprobe-blacklist.txt"))
}

pub mod btf_subset;

/// The failure fixtures the plans are made for.
pub const FAILURES: &[&[&str]] = &[
    &["scx-ktstr-error-after.sched.txt"],
    &["scx-ktstr-stall.sched.txt", "scx-ktstr-stall.dmesg.txt"],
    &["sysrq-crash-panic.console.txt"],
];

/// The committed BTF subset.
pub const SUBSET: &str = "btf-7.3-subset.btf";

/// The FUNCs a plan for the fixtures can look up: the failures' functions, every
/// callback's callers and CFI stub, and the exit-trigger functions.
pub fn subset_funcs() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for names in FAILURES {
        let text: String = names.iter().map(|n| fixture(n)).collect();
        let f = ktstr_repro::Failure::parse(&text).expect("fixture parses");
        for s in f.functions() {
            if let ktstr_repro::SymbolKind::Kernel { function, .. } = s.kind {
                v.push(function);
            }
        }
    }
    for o in ktstr_repro::OPS {
        v.push(format!("sched_ext_ops__{}", o.name));
        for path in o.callers {
            v.extend(path.iter().map(|f| f.to_string()));
        }
    }
    v.extend(["scx_vexit".to_string(), "scx_dump_state".to_string()]);
    v
}

/// The committed BTF subset, parsed.
pub fn subset_btf() -> Btf {
    Btf::parse(&fixture_bytes(SUBSET)).expect("committed subset parses")
}
