//! Helpers shared by the VM tests.

#![allow(dead_code)]

pub mod asm;
pub mod programs;

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
