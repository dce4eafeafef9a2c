//! What the VM test files share: the prerequisites check, the VM slots,
//! the kernel they boot, and running the ktstr binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The ktstr binary under test.
pub const KTSTR: &str = env!("CARGO_BIN_EXE_ktstr");

/// True when a missing prerequisite must fail the test (`KTSTR_REQUIRE_VM=1`, set by `.ci/run`).
pub fn required() -> bool {
    std::env::var("KTSTR_REQUIRE_VM").is_ok_and(|v| v == "1")
}

/// Says why a test skips, or fails it under `KTSTR_REQUIRE_VM=1`. Written to the real
/// stderr: libtest hides what a passing test prints with `eprintln!`.
pub fn skip(why: &str) {
    assert!(!required(), "KTSTR_REQUIRE_VM=1 but {why}");
    say_skipped(why);
}

/// Says why a test skips, even under `KTSTR_REQUIRE_VM=1`: for tests of what only runs
/// elsewhere by design (ktstr's own VMM where KVM cannot boot Linux: the nested lane runs
/// them). Written to the real stderr, as [`skip`].
pub fn say_skipped(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {why}\n").as_bytes(),
    );
}

/// The kernel VM tests boot: `KTSTR_KERNEL` if set, else the fetched Debian kernel
/// (modules, SysRq, BTF and sched_ext included), whatever else is cached.
pub fn test_kernel() -> Option<&'static str> {
    static KERNEL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    KERNEL
        .get_or_init(|| {
            if let Ok(k) = std::env::var("KTSTR_KERNEL") {
                return Some(k);
            }
            let out = Command::new(KTSTR)
                .args(["kernel", "fetch"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// Holds a VM slot while a test runs: the same slots `#[ktstr_test]`s take
/// (`ktstr::test_support::vm_slot`), so every VM test of the workspace shares one limit.
pub type VmSlot = ktstr::test_support::VmSlot;

/// A VM slot, or `None` (after saying why) when QEMU or a kernel is missing.
pub fn vm_slot() -> Option<VmSlot> {
    if !vm_runnable() {
        return None;
    }
    Some(ktstr::test_support::vm_slot().expect("VM slot lock"))
}

/// True when an engine and a kernel are here; otherwise says which is missing and returns
/// false. ktstr's own VMM needs no QEMU where KVM can boot Linux (the nested lane's inner
/// runs, `scripts/nested`), unless `$KTSTR_VMM` asks for QEMU.
pub fn vm_runnable() -> bool {
    let ours = ours_runs();
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    if qemu.is_err() && !ours {
        skip("qemu-system-x86_64 is not installed (scripts/setup installs it)");
        return false;
    }
    if test_kernel().is_none() {
        skip("no kernel: run `ktstr kernel fetch` or set KTSTR_KERNEL");
        return false;
    }
    true
}

/// True when runs that do not name a VMM get ktstr's own: KVM can boot Linux here and
/// `$KTSTR_VMM` does not ask for QEMU.
pub fn ours_runs() -> bool {
    ktstr::vmm::host_kvm().unusable_reason().is_none()
        && ktstr::vmm::VmmKind::from_env().is_ok_and(|v| v != ktstr::vmm::VmmKind::Qemu)
}

/// How ktstr's engine line starts for runs that do not name a VMM (see [`ours_runs`]).
pub fn default_engine_line() -> &'static str {
    if ours_runs() {
        "engine ktstr/kvm"
    } else {
        "engine qemu/"
    }
}

/// Runs ktstr with `args`, booting [`test_kernel`] unless `args` say otherwise.
pub fn ktstr(args: &[&str]) -> Output {
    let mut cmd = Command::new(KTSTR);
    cmd.args(args).stdin(Stdio::null());
    if let Some(k) = test_kernel() {
        cmd.env("KTSTR_KERNEL", k);
    }
    cmd.output().expect("run ktstr")
}

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// scx_simple from the kernel's tools/sched_ext (`scripts/build-scx-examples`), or
/// `KTSTR_SCX_SIMPLE`; `None` (after saying why) when it is missing.
pub fn scx_simple() -> Option<String> {
    let path = std::env::var("KTSTR_SCX_SIMPLE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| ktstr::kernel::cache_root().join("schedulers/scx_simple"));
    if path.is_file() {
        return Some(path.display().to_string());
    }
    skip(&format!(
        "{} is missing (scripts/build-scx-examples)",
        path.display()
    ));
    None
}
