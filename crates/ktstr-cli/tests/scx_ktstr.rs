//! VM tests of scx_ktstr (`schedulers/scx-ktstr`) under `ktstr exec --scheduler`:
//! it attaches and schedules a CPU-bound workload, and its stall and error knobs
//! make the run fail with the kernel's reason.
//!
//! They need QEMU, a cached kernel and the scx_ktstr binary next to this test's
//! executable (`cargo test --workspace` builds it) or in `KTSTR_SCX_KTSTR`.
//! Without them each test prints why it skipped, unless `KTSTR_REQUIRE_VM=1`.
//! VMs run one at a time, sharing vm.rs's lock file.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::{skip, test_kernel, KTSTR};

/// scx_ktstr: `KTSTR_SCX_KTSTR`, else beside the test binary (`target/<profile>/scx_ktstr`).
fn scx_ktstr() -> Option<PathBuf> {
    let path = std::env::var_os("KTSTR_SCX_KTSTR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let deps = exe.parent()?;
            Some(deps.parent()?.join("scx_ktstr"))
        })?;
    path.is_file().then_some(path)
}

/// The VM lock plus what these tests boot and attach.
struct VmSlot {
    _lock: common::VmSlot,
    kernel: &'static str,
    scheduler: String,
}

/// `None` (after saying why) when these tests cannot run here.
fn vm_slot() -> Option<VmSlot> {
    let Some(scheduler) = scx_ktstr() else {
        skip("no scx_ktstr binary: `cargo build -p scx-ktstr` (or set KTSTR_SCX_KTSTR)");
        return None;
    };
    let lock = common::vm_slot()?;
    Some(VmSlot {
        _lock: lock,
        kernel: test_kernel()?,
        scheduler: scheduler.display().to_string(),
    })
}

/// `ktstr exec` with scx_ktstr and `sched_args`, running `sh -c script`; (exit code, stdout, stderr).
fn exec(slot: &VmSlot, sched_args: &str, script: &str) -> (Option<i32>, String, String) {
    let started = Instant::now();
    let out: Output = Command::new(KTSTR)
        .args([
            "exec",
            "--kernel",
            slot.kernel,
            "--scheduler",
            &slot.scheduler,
        ])
        .args(["--scheduler-args", sched_args, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("run ktstr");
    eprintln!(
        "ktstr exec --scheduler-args {sched_args:?}: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Four busy loops of about three seconds each, then `done`.
const BUSY: &str = "for i in 1 2 3 4; do \
    (end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do :; done) & \
    done; wait; echo done";

#[test]
fn vm_scx_ktstr_schedules_a_cpu_bound_workload() {
    let Some(slot) = vm_slot() else { return };
    let script = format!("cat /sys/kernel/sched_ext/state /sys/kernel/sched_ext/root/ops; {BUSY}");
    let (code, out, err) = exec(&slot, "", &script);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "enabled\nktstr\ndone\n", "{err}");
    assert!(err.contains("scheduler scx_ktstr: attached in"), "{err}");
    assert!(
        err.contains("as `ktstr`; still attached when the command ended"),
        "{err}"
    );
}

#[test]
fn vm_scx_ktstr_stall_knob_is_caught_with_the_stalled_task() {
    let Some(slot) = vm_slot() else { return };
    // A script's comm is its file name: the busy loop runs as `spin`.
    let script = "printf '#!/bin/sh\\nwhile :; do :; done\\n' > /tmp/spin; chmod +x /tmp/spin; \
                  /tmp/spin & sleep 8; echo slept";
    let (code, _, err) = exec(&slot, "--stall-comm spin --watchdog-ms 2000", script);
    assert_eq!(code, Some(126), "{err}");
    assert!(err.contains("FAILED: ejected by the kernel"), "{err}");
    assert!(err.contains("runnable task stall"), "{err}");
    assert!(
        err.lines().any(|l| l.contains("kernel|")
            && l.contains(": spin[")
            && l.contains("failed to run for")),
        "the stalled task in the kernel's lines: {err}"
    );
    assert!(
        err.contains("scx_ktstr| EXIT: runnable task stall (spin["),
        "the scheduler's own exit line: {err}"
    );
}

#[test]
fn vm_scx_ktstr_error_knob_fails_with_the_message() {
    let Some(slot) = vm_slot() else { return };
    let (code, _, err) = exec(&slot, "--error-after 100", "sleep 3");
    assert_eq!(code, Some(126), "{err}");
    assert!(err.contains("FAILED: ejected by the kernel"), "{err}");
    assert!(
        err.contains("kernel| sched_ext: BPF scheduler \"ktstr\" disabled (scx_bpf_error)"),
        "the kernel's reason: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("kernel|") && l.contains("error-after: 100 tasks dispatched")),
        "the message in the kernel's lines: {err}"
    );
    assert!(
        err.contains("scx_ktstr| EXIT: scx_bpf_error (src/bpf/main.bpf.c:"),
        "the scheduler's own exit line: {err}"
    );
    assert!(err.contains("error-after: 100 tasks dispatched)"), "{err}");
}

#[test]
fn vm_scx_ktstr_error_while_loading_is_a_start_up_exit() {
    let Some(slot) = vm_slot() else { return };
    let (code, out, err) = exec(&slot, "--error-on init-task", "echo should-not-run");
    assert_eq!(code, Some(126), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("scheduler scx_ktstr: never attached; exited at start-up (status 1)"),
        "{err}"
    );
    assert!(err.contains("error-on init_task"), "{err}");
}
