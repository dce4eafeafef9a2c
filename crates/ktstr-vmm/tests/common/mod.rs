//! Helpers shared by the VM tests.

#![allow(dead_code)]

pub mod asm;
pub mod programs;

use std::path::PathBuf;

/// Whether `/dev/kvm` can be used; prints `SKIPPED <test>: <reason>` when not, and panics
/// instead when `KTSTR_REQUIRE_VM=1`.
pub fn kvm_available(test: &str) -> bool {
    let ok = ktstr_vmm::host_kvm().dev_kvm;
    if !ok {
        skip(test, "/dev/kvm is absent or not accessible");
    }
    ok
}

/// Prints `SKIPPED <test>: <reason>`, or panics with it when `KTSTR_REQUIRE_VM=1`.
pub fn skip(test: &str, reason: &str) {
    let msg = format!("SKIPPED {test}: {reason}\n");
    if std::env::var("KTSTR_REQUIRE_VM").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
}

/// The first `kernels/*/vmlinux` of ktstr's cache, found as ktstr finds it:
/// `$KTSTR_CACHE_DIR`, else `$XDG_CACHE_HOME/ktstr`, else `~/.cache/ktstr`.
fn cached_vmlinux() -> Option<PathBuf> {
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let cache = nonempty("KTSTR_CACHE_DIR")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("ktstr")))
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache/ktstr")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache.join("kernels"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("vmlinux"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// [`cached_vmlinux`], or `None` after [`skip`] said there is none.
pub fn cached_vmlinux_or_skip(test: &str) -> Option<PathBuf> {
    let found = cached_vmlinux();
    if found.is_none() {
        skip(
            test,
            "no cached kernel with a vmlinux: run `ktstr kernel fetch`",
        );
    }
    found
}
