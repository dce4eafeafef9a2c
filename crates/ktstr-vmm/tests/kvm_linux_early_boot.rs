//! Boots the cached Debian kernel on ktstr's KVM VMM and checks what it prints on COM1 in
//! early boot. Under PVM the kernel dies early on an instruction PVM cannot emulate; the
//! test then checks that the end is reported as a KVM internal error with registers. On
//! hardware KVM the kernel boots on and panics without a root; that reboot ends the test.

mod common;

use std::time::Duration;

use common::{cached_vmlinux_or_skip, kvm_available};
use ktstr_topology::Topology;
use ktstr_vmm::kvm::{KvmExit, KvmVm};

const TEST: &str = "linux_early_boot_prints_our_setup";

#[test]
fn linux_early_boot_prints_our_setup() {
    if !kvm_available(TEST) {
        return;
    }
    let Some(vmlinux) = cached_vmlinux_or_skip(TEST) else {
        return;
    };
    let cmdline =
        "earlyprintk=serial,ttyS0,115200 console=ttyS0 loglevel=8 panic=-1 ktstr.marker=42";
    let topology = Topology::new(2, 1, 2, 1).unwrap();
    let vm = KvmVm::builder()
        .topology(topology)
        .memory_mib(256)
        .kernel(&vmlinux)
        .cmdline(cmdline)
        .console_file(std::env::temp_dir().join("ktstr-kvm-early-boot.log"))
        .build()
        .expect("build");
    let console = vm.io().console.clone();
    let mut h = vm.start().expect("start");
    let exit = h.wait(Duration::from_secs(75)).expect("wait");
    let log = console.text();
    let _ = std::io::Write::write_all(&mut std::io::stderr(), log.as_bytes());
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("END: {exit}\n").as_bytes());
    assert!(log.contains("Linux version "), "kernel version line");
    assert!(
        log.contains(&format!("Command line: {cmdline}")),
        "our command line"
    );
    // Our e820 map: RAM from 0, the EBDA/BIOS area reserved, the ring reserved.
    for line in [
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff]  System RAM",
        "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff]  device reserved",
        "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff]  System RAM",
        "BIOS-e820: [mem 0x00000000d0000000-0x00000000d00fffff]  device reserved",
    ] {
        assert!(log.contains(line), "e820 line `{line}`");
    }
    // The MADT's CPUs and the SRAT's nodes, 128 MiB each.
    assert!(
        log.contains("Allowing 4 present CPUs plus 0 hotplug CPUs"),
        "MADT CPU count"
    );
    assert!(log.contains("ACPI: SRAT: Node 0 PXM 0 [mem 0x00000000-0x07ffffff]"));
    assert!(log.contains("ACPI: SRAT: Node 1 PXM 1 [mem 0x08000000-0x0fffffff]"));
    // ACPI: the RSDP where we put it and our tables.
    assert!(log.contains("ACPI: RSDP 0x00000000000E0000"), "RSDP");
    for sig in ["XSDT", "FACP", "DSDT", "APIC", "SRAT", "SLIT"] {
        assert!(log.contains(&format!("ACPI: {sig} 0x")), "{sig} table");
    }
    match exit {
        KvmExit::InternalError(e) => {
            assert_eq!(e.suberror, 1, "emulation failure: {e}");
            assert_ne!(e.regs.rip, 0, "registers were read: {e}");
            assert_ne!(e.regs.cr3, 0, "registers were read: {e}");
        }
        // Under PVM this kernel stops making progress after "refined-jiffies" without an
        // emulation failure; the bounded run must then show the boot vCPU inside the kernel
        // on the kernel's own page tables, not in our entry stub.
        KvmExit::TimedOut { vcpus } => {
            let bsp = vcpus[0];
            assert!(
                bsp.rip >= 0xffff_ffff_8000_0000,
                "vCPU 0 in kernel text: {bsp}"
            );
            assert_ne!(bsp.cr3, 0x9000, "kernel page tables: {bsp}");
            assert_ne!(bsp.efer & (1 << 10), 0, "long mode: {bsp}");
        }
        // Hardware KVM boots on: without an initramfs or a root disk the kernel panics,
        // and `panic=-1` reboots through the ACPI reset register.
        KvmExit::Reboot { .. } if !ktstr_vmm::host_kvm().pvm => {
            assert!(log.contains("Kernel panic"), "a reboot after the panic");
        }
        other => panic!("unexpected end of an early boot: {other}"),
    }
}
