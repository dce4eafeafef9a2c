//! `--vmm kvm` where KVM cannot boot Linux: a full `ktstr::run::run` on ktstr's own KVM VMM
//! under PVM must end as a KVM internal error carrying the vCPU's registers, in bounded
//! time, not as a boot timeout; the host monitor, asked for, runs beside it and says why it
//! took no sample.
//!
//! Under PVM the fetched Debian kernel reaches `start_kernel` and dies on an instruction
//! PVM's emulator lacks (CMPXCHG16B) after about 60-75 s of early boot (measured with 4
//! vCPUs on this 2-CPU host), so the boot timeout is 150 s: twice that, and anything slower
//! or a hang fails the test. Without /dev/kvm or a cached vmlinux it prints
//! `SKIPPED <test>: <reason>` (and fails under `KTSTR_REQUIRE_VM=1`); on hardware KVM,
//! which boots Linux, there is nothing to check here.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ktstr::kernel::Kernel;
use ktstr::monitor::MonitorOptions;
use ktstr::run::{self, GuestFailure, Mode, Outcome, RunOptions};
use ktstr::vmm::{host_kvm, Engine, VmmKind};
use ktstr::Topology;

const TEST: &str = "kvm_vmm_on_pvm_reports_internal_error_with_registers";
/// Boot bound: twice the ~75 s PVM needs to reach the failing instruction.
const BOOT_BOUND: Duration = Duration::from_secs(150);

fn say(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

fn skip(reason: &str) {
    let msg = format!("SKIPPED {TEST}: {reason}");
    if std::env::var("KTSTR_REQUIRE_VM").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    say(&msg);
}

/// The newest cached kernel that has an uncompressed vmlinux, booted from it.
fn cached_vmlinux_kernel() -> Option<Kernel> {
    let k = ktstr::kernel::list()
        .ok()?
        .into_iter()
        .find(|k| k.kernel.vmlinux.is_some())?
        .kernel;
    let vmlinux = k.vmlinux.clone()?;
    Some(Kernel {
        boot_image: vmlinux,
        ..k
    })
}

/// The value of `NAME=0x...` in a register dump.
fn reg(detail: &str, name: &str) -> Option<u64> {
    let hex = detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=0x")))?;
    u64::from_str_radix(hex.trim_end_matches([',', ';']), 16).ok()
}

#[test]
fn kvm_vmm_on_pvm_reports_internal_error_with_registers() {
    let host = host_kvm();
    if !host.dev_kvm {
        skip("/dev/kvm is absent or not accessible");
        return;
    }
    if !host.pvm {
        // Not a missing prerequisite: on hardware KVM the kernel boots, and the tests that
        // boot it there are the other VM tests. Said visibly, not failed under KTSTR_REQUIRE_VM.
        say(&format!(
            "SKIPPED {TEST}: KVM here is hardware KVM, not PVM: the early death this test proves does not happen"
        ));
        return;
    }
    let Some(kernel) = cached_vmlinux_kernel() else {
        skip("no cached kernel with a vmlinux (run `ktstr kernel fetch`)");
        return;
    };
    let _slot = ktstr::test_support::vm_slot().expect("VM slot");
    let mut opts = RunOptions::new(kernel, Topology::default()).expect("options");
    opts.vmm = VmmKind::Ktstr;
    opts.max_attempts = 1;
    opts.boot_timeout = BOOT_BOUND;
    opts.timeout = BOOT_BOUND;
    // The run's `quiet` hides the early lines; these show them on COM1 (the console log).
    opts.extra_cmdline = "earlyprintk=serial,ttyS0,115200 loglevel=8".into();
    // The monitor runs on ktstr's VMM too (its memory, its vCPU threads' registers); here the
    // guest dies before init sends the kernel's symbols, which its summary must say.
    let monitor_out =
        std::env::temp_dir().join(format!("ktstr-pvm-mon-{}.jsonl", std::process::id()));
    opts.monitor = Some(MonitorOptions::new(monitor_out.clone(), 100));
    let started = Instant::now();
    let report = run::run(
        &opts,
        &Mode::Exec(vec!["true".into()]),
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .expect("run");
    let took = started.elapsed();
    say(&format!(
        "{TEST}: engine {} ({}) ended after {:.1}s: {:?}",
        report.engine.engine,
        report.engine.reason,
        took.as_secs_f64(),
        report.outcome
    ));
    assert_eq!(report.engine.engine, Engine::KtstrKvm);
    assert!(
        report.engine.reason.contains("PVM"),
        "{}",
        report.engine.reason
    );
    let detail = match &report.outcome {
        Outcome::Infrastructure(GuestFailure::KvmInternalError { detail }) => detail,
        other => panic!("expected a KVM internal error, got {other:?}"),
    };
    assert!(detail.contains("emulation failure"), "{detail}");
    let rip = reg(detail, "RIP").unwrap_or_else(|| panic!("no RIP in {detail}"));
    assert!(
        rip >= 0xffff_ffff_8000_0000,
        "RIP {rip:#x} is not in kernel text"
    );
    assert_ne!(reg(detail, "CR3"), Some(0), "{detail}");
    assert!(took < BOOT_BOUND, "reported after {took:?}");
    let monitor = report.monitor.as_ref().expect("monitor summary");
    let _ = std::fs::remove_file(&monitor_out);
    assert!(
        monitor
            .setup_error
            .as_deref()
            .is_some_and(|e| e.contains("symbols")),
        "{monitor:?}"
    );
    // COM1 went to the run's console log file, as on QEMU.
    let console = std::fs::read_to_string(&report.console_log).unwrap_or_default();
    assert!(
        console.contains("Kernel command line: rdinit=/init"),
        "kernel command line in the console log {}",
        report.console_log.display()
    );
}

#[test]
fn register_parsing() {
    let d =
        "KVM internal error on vCPU 0: suberror 1; RIP=0xffffffff8170e3f7 RSP=0x1 CR3=0x302a000";
    assert_eq!(reg(d, "RIP"), Some(0xffff_ffff_8170_e3f7));
    assert_eq!(reg(d, "CR3"), Some(0x302a000));
    assert_eq!(reg(d, "RAX"), None);
}
