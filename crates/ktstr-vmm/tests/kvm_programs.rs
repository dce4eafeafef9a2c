//! Small 64-bit guest programs on ktstr's KVM VMM: serial, CPUID topology, every vCPU, the
//! shared-memory ring, power-off, reboot, virtio-MMIO devices (console, disk, network loopback,
//! with and without the I/O thread). These run under PVM too.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{kvm_available, programs};
use ktstr_topology::{apic_id, Topology};
use ktstr_vmm::kvm::{KvmExit, KvmVm, RebootCause};

const TIMEOUT: Duration = Duration::from_secs(30);

fn run(topology: Topology, code: Vec<u8>) -> (KvmExit, ktstr_vmm::kvm::GuestIo) {
    KvmVm::builder()
        .topology(topology)
        .memory_mib(64)
        .program(code)
        .build()
        .expect("build")
        .run(TIMEOUT)
        .expect("run")
}

#[test]
fn serial_ports_reach_the_host_and_exit_status_is_kept() {
    if !kvm_available("serial_ports_reach_the_host_and_exit_status_is_kept") {
        return;
    }
    let one = Topology::new(1, 1, 1, 1).unwrap();
    let (exit, io) = run(one, programs::hello());
    assert_eq!(exit, KvmExit::PowerOff { status: 7 });
    assert_eq!(io.console.text(), "hello COM1\n");
    assert_eq!(io.app_output.text(), "hello COM2\n");
    let mut s = String::new();
    io.console.reader().read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello COM1\n", "stream ends when the VM does");
}

/// Runs the topology program and returns each vCPU's record, in vCPU order.
fn topology_records(t: Topology) -> Vec<[u8; programs::TOPOLOGY_RECORD]> {
    let (exit, io) = run(t, programs::topology());
    assert_eq!(
        exit,
        KvmExit::PowerOff { status: 0x42 },
        "{}",
        io.app_output.text()
    );
    let out = io.app_output.contents();
    assert_eq!(
        out.len(),
        programs::TOPOLOGY_RECORD * t.total_cpus() as usize
    );
    out.chunks(programs::TOPOLOGY_RECORD)
        .map(|c| c.try_into().unwrap())
        .collect()
}

#[test]
fn every_vcpu_runs_and_writes_its_index() {
    if !kvm_available("every_vcpu_runs_and_writes_its_index") {
        return;
    }
    let t = Topology::new(2, 1, 2, 2).unwrap();
    let recs = topology_records(t);
    let idx: Vec<u32> = recs.iter().map(|r| u32::from(r[1])).collect();
    assert_eq!(idx, (0..8).collect::<Vec<_>>());
    assert!(recs.iter().all(|r| r[0] == 0xa5));
}

#[test]
fn cpuid_reports_the_topology_on_each_vcpu() {
    if !kvm_available("cpuid_reports_the_topology_on_each_vcpu") {
        return;
    }
    // 2 nodes x 1 LLC x 3 cores x 2 threads: 1 SMT bit, 2 core bits, so APIC IDs have gaps.
    let t = Topology::new(2, 1, 3, 2).unwrap();
    for (cpu, r) in topology_records(t).iter().enumerate() {
        let cpu = cpu as u32;
        let want = apic_id(&t, cpu).unwrap();
        let x2apic = u32::from_le_bytes([r[3], r[4], r[5], r[6]]);
        assert_eq!(u32::from(r[1]), cpu);
        assert_eq!(u32::from(r[2]), want, "leaf 1 APIC ID of vCPU {cpu}");
        assert_eq!(x2apic, want, "leaf 0xB x2APIC ID of vCPU {cpu}");
        assert_eq!(r[7], 1, "SMT shift");
        assert_eq!(r[8], 3, "package shift: 1 SMT + 2 core bits");
        assert_eq!(u32::from(r[9]), t.cpus_per_node(), "CPUs per package");
    }
}

#[test]
fn ring_record_written_by_the_guest_is_decoded() {
    if !kvm_available("ring_record_written_by_the_guest_is_decoded") {
        return;
    }
    let (exit, io) = run(Topology::new(1, 1, 1, 1).unwrap(), programs::ring_record());
    assert_eq!(exit, KvmExit::PowerOff { status: 0 });
    let recs = io.ring.poll().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].kind, 0x77);
    assert_eq!(recs[0].payload, b"ring-record!");
    assert!(io.ring.poll().unwrap().is_empty(), "consumed");
}

#[test]
fn acpi_sleep_register_powers_off() {
    if !kvm_available("acpi_sleep_register_powers_off") {
        return;
    }
    let (exit, _) = run(Topology::new(1, 1, 1, 1).unwrap(), programs::acpi_s5());
    assert_eq!(exit, KvmExit::PowerOff { status: 0 });
}

#[test]
fn reboots_are_reported_with_their_cause() {
    if !kvm_available("reboots_are_reported_with_their_cause") {
        return;
    }
    let one = Topology::new(1, 1, 1, 1).unwrap();
    let (exit, _) = run(one, programs::keyboard_reset());
    assert!(
        matches!(
            exit,
            KvmExit::Reboot {
                cause: RebootCause::Keyboard,
                cpu: 0,
                ..
            }
        ),
        "{exit}"
    );
    let (exit, _) = run(one, programs::triple_fault());
    assert!(
        matches!(
            exit,
            KvmExit::Reboot {
                cause: RebootCause::TripleFault,
                ..
            }
        ),
        "{exit}"
    );
}

#[test]
fn hlt_without_irqchip_ends_the_run() {
    if !kvm_available("hlt_without_irqchip_ends_the_run") {
        return;
    }
    let (exit, _) = KvmVm::builder()
        .topology(Topology::new(1, 1, 2, 1).unwrap())
        .memory_mib(16)
        .irqchip(false)
        .program(programs::halt())
        .build()
        .unwrap()
        .run(TIMEOUT)
        .unwrap();
    assert_eq!(exit, KvmExit::AllHalted);
}

#[test]
fn a_spinning_guest_times_out_instead_of_hanging() {
    if !kvm_available("a_spinning_guest_times_out_instead_of_hanging") {
        return;
    }
    // jmp $
    let mut h = KvmVm::builder()
        .topology(Topology::new(1, 1, 1, 1).unwrap())
        .memory_mib(16)
        .program(vec![0xeb, 0xfe])
        .build()
        .unwrap()
        .start()
        .unwrap();
    let exit = h.wait(Duration::from_millis(300)).unwrap();
    let KvmExit::TimedOut { vcpus } = exit else {
        panic!("expected a timeout, got {exit}");
    };
    assert_eq!(vcpus.len(), 1);
    assert_eq!(vcpus[0].rip, 0x100000, "stopped at the jmp $");
    // Stopping the vCPUs records no outcome: later waits do not invent one.
    assert!(h.try_wait().unwrap().is_none());
    assert!(matches!(
        h.wait(Duration::from_millis(10)),
        Err(ktstr_vmm::kvm::KvmError::NotRunning)
    ));
}

#[test]
fn registers_are_read_while_the_guest_runs() {
    if !kvm_available("registers_are_read_while_the_guest_runs") {
        return;
    }
    // Two vCPUs at `jmp $`: each is kicked out of KVM_RUN, reads its registers, runs on.
    let mut h = KvmVm::builder()
        .topology(Topology::new(1, 1, 2, 1).unwrap())
        .memory_mib(16)
        .program(vec![0xeb, 0xfe])
        .build()
        .unwrap()
        .start()
        .unwrap();
    for _ in 0..3 {
        let regs = h.registers(Duration::from_secs(5)).expect("registers");
        assert_eq!(regs.len(), 2);
        for r in &regs {
            assert_eq!(r.rip, 0x100000, "at the jmp $: {r}");
            assert_ne!(r.efer & (1 << 10), 0, "long mode: {r}");
            assert_eq!(r.cpl, 0, "{r}");
        }
    }
    assert!(h.try_wait().unwrap().is_none(), "still running");
    h.kill();
    assert!(matches!(
        h.registers(Duration::from_secs(1)),
        Err(ktstr_vmm::kvm::KvmError::NotRunning)
    ));
}

#[test]
fn a_frozen_guest_holds_still_until_thawed() {
    if !kvm_available("a_frozen_guest_holds_still_until_thawed") {
        return;
    }
    use vm_memory::{Bytes, GuestAddress};
    const COUNTER: u64 = 0x18_0000;
    // Two vCPUs each counting in memory as fast as they can:
    //   inc qword [0x180000]; jmp back
    let count = vec![0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x18, 0x00, 0xeb, 0xf6];
    let mut h = KvmVm::builder()
        .topology(Topology::new(1, 1, 2, 1).unwrap())
        .memory_mib(16)
        .program(count)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mem = h.io().memory.clone();
    let read = || mem.read_obj::<u64>(GuestAddress(COUNTER)).unwrap();
    let moves = |what: &str| {
        let a = read();
        std::thread::sleep(Duration::from_millis(50));
        assert_ne!(read(), a, "{what}: the counter should move");
    };
    moves("before the freeze");
    let f = h.freezer();
    for round in 0..3 {
        f.freeze(Duration::from_secs(5)).expect("freeze");
        let a = read();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(read(), a, "round {round}: a frozen guest wrote memory");
        // Register reads still work while frozen, and do not let the guest run.
        assert_eq!(h.registers(Duration::from_secs(5)).unwrap().len(), 2);
        assert_eq!(
            read(),
            a,
            "round {round}: reading registers thawed the guest"
        );
        f.thaw();
        moves("after a thaw");
    }
    h.kill();
    assert!(matches!(
        f.freeze(Duration::from_secs(1)),
        Err(ktstr_vmm::kvm::KvmError::NotRunning)
    ));
}

#[test]
fn host_writes_reach_com2() {
    if !kvm_available("host_writes_reach_com2") {
        return;
    }
    // Echo: poll LSR.DR on COM2, read a byte, write it back, exit on '\n'.
    let echo = vec![
        0x66, 0xba, 0xfd, 0x02, //       0x00: mov dx, 0x2fd (LSR)
        0xec, //                         0x04: in al, dx
        0xa8, 0x01, //                   0x05: test al, 1 (data ready)
        0x74, 0xf5, //                   0x07: je 0x00
        0x66, 0xba, 0xf8, 0x02, //       0x09: mov dx, 0x2f8 (RBR/THR)
        0xec, //                         0x0d: in al, dx
        0xee, //                         0x0e: out dx, al
        0x3c, 0x0a, //                   0x0f: cmp al, '\n'
        0x75, 0xed, //                   0x11: jne 0x00
        0x66, 0xba, 0x04, 0x06, //       0x13: mov dx, 0x604
        0xb0, 0x05, //                   0x17: mov al, 5
        0xee, //                         0x19: out dx, al
        0xf4, //                         0x1a: hlt
    ];
    let vm = KvmVm::builder()
        .topology(Topology::new(1, 1, 1, 1).unwrap())
        .memory_mib(16)
        .program(echo)
        .build()
        .unwrap();
    let input = vm.io().app_input.clone();
    let mut h = vm.start().unwrap();
    // More than the 64-byte FIFO, to exercise the host-side queue.
    let line: Vec<u8> = (0..100)
        .map(|i| b'a' + (i % 26) as u8)
        .chain([b'\n'])
        .collect();
    input.send(&line);
    let exit = h.wait(TIMEOUT).unwrap();
    assert_eq!(exit, KvmExit::PowerOff { status: 5 });
    assert_eq!(h.io().app_output.contents(), line);
}

#[test]
fn pvm_emulation_failure_is_an_error_with_registers() {
    if !kvm_available("pvm_emulation_failure_is_an_error_with_registers") {
        return;
    }
    if !std::path::Path::new("/sys/module/kvm_pvm").exists() {
        // Hardware KVM delivers the INT3 (and triple-faults); only PVM fails to emulate it.
        common::skip(
            "pvm_emulation_failure_is_an_error_with_registers",
            "needs PVM's emulator",
        );
        return;
    }
    let (exit, _) = run(Topology::new(1, 1, 1, 1).unwrap(), programs::int3());
    let KvmExit::InternalError(e) = exit else {
        panic!("expected a KVM internal error, got {exit}");
    };
    assert_eq!(e.suberror, 1, "emulation failure");
    assert_eq!(e.regs.rip, 0x100007, "at the INT3");
    assert_eq!(e.regs.cr3, 0x9000);
    assert_ne!(e.regs.efer & (1 << 10), 0, "long mode active");
    assert!(e.to_string().contains("RIP=0x100007"), "{e}");
}

/// Runs [`programs::virtio`] with notifications served on the I/O thread or on the vCPU.
fn virtio_console_and_disk(io_thread: bool) {
    let img = std::env::temp_dir().join(format!(
        "ktstr-vmm-virtio-{}-{io_thread}.img",
        std::process::id()
    ));
    let mut data = b"sector zero says hello".to_vec();
    data.resize(8 * 512, 0x5a);
    std::fs::write(&img, &data).unwrap();
    let vm = KvmVm::builder()
        .topology(Topology::new(1, 1, 1, 1).unwrap())
        .memory_mib(64)
        .virtio_console(true)
        .disk(&img, true)
        .io_thread(io_thread)
        .program(programs::virtio())
        .build()
        .expect("build");
    let windows: Vec<_> = vm.virtio_mmio().iter().map(|d| (d.base, d.gsi)).collect();
    assert_eq!(windows, [(0xc000_0000, 5), (0xc000_1000, 6)]);
    let dsdt = &vm.acpi_tables().table("DSDT").unwrap().bytes;
    assert!(
        dsdt.windows(8).any(|w| w == b"LNRO0005"),
        "DSDT names the devices"
    );
    let mut h = vm.start().expect("start");
    assert_eq!(h.has_io_thread(), io_thread);
    let exit = h.wait(TIMEOUT).expect("run");
    std::fs::remove_file(&img).unwrap();
    assert_eq!(exit, KvmExit::PowerOff { status: 0 }, "{exit}");
    // One notification per device; none through the I/O thread when it is off.
    let kicks = h.io_thread_kicks();
    assert_eq!(kicks, if io_thread { 2 } else { 0 });

    let rec = h.io().app_output.contents();
    assert_eq!(rec.len(), programs::VIRTIO_RECORD, "{rec:x?}");
    let u32_at = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().unwrap());
    // Each window: magic "virt", version 2, device ID (3 = console, 2 = block).
    assert_eq!((u32_at(0), u32_at(4), u32_at(8)), (0x7472_6976, 2, 3));
    assert_eq!((u32_at(12), u32_at(16), u32_at(20)), (0x7472_6976, 2, 2));
    assert_eq!(u32_at(24) & 1, 1, "console offers VERSION_1");
    assert_eq!(u32_at(28), 0xb, "FEATURES_OK accepted");
    assert_eq!(u32_at(32), 1, "console used the transmit buffer");
    assert_eq!(u32_at(36), 1, "used-buffer interrupt pending");
    assert_ne!(u32_at(40) & (1 << 5), 0, "disk offers VIRTIO_BLK_F_RO");
    let capacity = u64::from_le_bytes(rec[44..52].try_into().unwrap());
    assert_eq!(capacity, 8, "capacity in sectors");
    assert_eq!(u32_at(52), 1, "disk used the request");
    assert_eq!(u32_at(56), 513, "512 data bytes and the status byte");
    assert_eq!(u32_at(60), 0, "VIRTIO_BLK_S_OK");
    assert_eq!(&rec[64..80], &data[..16]);

    let console = h.io().virtio_console.clone().expect("virtio console");
    assert_eq!(console.text(), "hi from virtio");
}

#[test]
fn guest_drives_virtio_console_and_disk_through_the_io_thread() {
    if !kvm_available("guest_drives_virtio_console_and_disk_through_the_io_thread") {
        return;
    }
    virtio_console_and_disk(true);
}

#[test]
fn guest_drives_virtio_console_and_disk_on_the_vcpu_thread() {
    if !kvm_available("guest_drives_virtio_console_and_disk_on_the_vcpu_thread") {
        return;
    }
    virtio_console_and_disk(false);
}

/// Runs [`programs::virtio_net`]: its frame loops back, then the host injects one.
fn virtio_net_loopback(io_thread: bool) {
    let vm = KvmVm::builder()
        .topology(Topology::new(1, 1, 1, 1).unwrap())
        .memory_mib(64)
        .virtio_net(true)
        .io_thread(io_thread)
        .program(programs::virtio_net())
        .build()
        .expect("build");
    let port = vm.io().net.clone().expect("net port");
    let mut h = vm.start().expect("start");
    assert!(
        port.wait_for_tx(1, TIMEOUT),
        "the guest transmitted nothing: {:?}",
        port.stats()
    );
    let sent = programs::virtio_net_frame();
    assert_eq!(port.transmitted(), std::slice::from_ref(&sent));
    let mut injected = [
        0x52, 0x54, 0x00, 0x6b, 0x74, 0x00, 2, 0, 0, 0, 0, 1, 0x88, 0xb5,
    ]
    .to_vec();
    injected.extend_from_slice(b"from the host");
    injected.resize(60, 0xee);
    port.inject(&injected);
    let exit = h.wait(TIMEOUT).expect("run");
    assert_eq!(exit, KvmExit::PowerOff { status: 0 }, "{exit}");

    let rec = h.io().app_output.contents();
    assert_eq!(rec.len(), programs::VIRTIO_NET_RECORD, "{rec:x?}");
    let u32_at = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().unwrap());
    assert_eq!(
        (u32_at(0), u32_at(4), u32_at(8)),
        (0x7472_6976, 2, 1),
        "a net device"
    );
    assert_eq!(
        u32_at(12) & (1 << 5 | 1 << 16),
        1 << 5 | 1 << 16,
        "MAC and STATUS"
    );
    assert_eq!(u32_at(16) & 1, 1, "VERSION_1");
    assert_eq!(u32_at(20), 0xb, "FEATURES_OK accepted");
    let mut config = rec[24..32].to_vec();
    let status = u16::from_le_bytes([config[6], config[7]]);
    config.truncate(6);
    assert_eq!(config, [0x52, 0x54, 0x00, 0x6b, 0x74, 0x00], "MAC");
    assert_eq!(status, 1, "VIRTIO_NET_S_LINK_UP");
    assert_eq!(u32_at(32), 1, "one queue pair");
    assert_eq!(u32_at(36), 1, "transmitq used the frame");
    assert_eq!(u32_at(40), 2, "receiveq used both buffers");
    assert_eq!((u32_at(44), u32_at(48)), (72, 72), "header and frame each");
    assert_eq!(u32_at(52) & 1, 1, "used-buffer interrupt pending");
    for (buf, frame) in [(&rec[56..128], &sent), (&rec[128..200], &injected)] {
        let num_buffers = u16::from_le_bytes([buf[10], buf[11]]);
        assert_eq!(num_buffers, 1);
        assert_eq!(&buf[..10], &[0; 10], "no offloads");
        assert_eq!(&buf[12..], &frame[..], "frame intact");
    }
    let stats = port.stats();
    assert_eq!(
        (stats.tx_frames, stats.rx_frames, stats.rx_dropped),
        (1, 2, 0)
    );
    assert_eq!(h.io_thread_kicks() > 0, io_thread);
}

#[test]
fn guest_frames_loop_back_through_virtio_net() {
    if !kvm_available("guest_frames_loop_back_through_virtio_net") {
        return;
    }
    virtio_net_loopback(true);
}

#[test]
fn guest_frames_loop_back_through_virtio_net_without_io_thread() {
    if !kvm_available("guest_frames_loop_back_through_virtio_net_without_io_thread") {
        return;
    }
    virtio_net_loopback(false);
}

/// Runs [`programs::virtio_notify`]: every round trip must be served, none lost.
fn notification_round_trips(io_thread: bool) {
    let vm = KvmVm::builder()
        .topology(Topology::new(1, 1, 1, 1).unwrap())
        .memory_mib(16)
        .virtio_console(true)
        .io_thread(io_thread)
        .program(programs::virtio_notify())
        .build()
        .expect("build");
    let out = vm.io().virtio_console.clone().expect("console");
    let mut h = vm.start().expect("start");
    let exit = h.wait(TIMEOUT).expect("run");
    assert_eq!(
        exit,
        KvmExit::PowerOff { status: 0 },
        "status 1: a round trip was lost"
    );
    assert_eq!(out.contents().len() as u64, programs::VIRTIO_NOTIFY_ROUNDS);
    let kicks = h.io_thread_kicks();
    if io_thread {
        // Kicks that arrive while a pass runs are served by it: at most one wake-up each.
        assert!(
            (1..=programs::VIRTIO_NOTIFY_ROUNDS).contains(&kicks),
            "{kicks}"
        );
    } else {
        assert_eq!(kicks, 0);
    }
}

#[test]
fn every_notification_is_served_by_the_io_thread() {
    if !kvm_available("every_notification_is_served_by_the_io_thread") {
        return;
    }
    notification_round_trips(true);
}

#[test]
fn every_notification_is_served_on_the_vcpu_thread() {
    if !kvm_available("every_notification_is_served_on_the_vcpu_thread") {
        return;
    }
    notification_round_trips(false);
}

#[test]
fn assembled_programs_match_their_sources() {
    // The byte arrays in tests/common/asm are generated from tests/programs/*.s; regenerate
    // them into a scratch directory and compare, so an edit of one without the other fails.
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("as") || !have("objdump") {
        common::skip(
            "assembled_programs_match_their_sources",
            "GNU as or objdump missing (binutils)",
        );
        return;
    }
    let out = std::env::temp_dir().join(format!("ktstr-asm2rust-{}", std::process::id()));
    // Every source in tests/programs, so a new program cannot go unchecked.
    let mut names: Vec<String> = std::fs::read_dir("tests/programs")
        .expect("tests/programs")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".s").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    let status = std::process::Command::new("tests/programs/asm2rust")
        .args(&names)
        .env("ASM2RUST_OUT", &out)
        .status()
        .expect("run asm2rust");
    assert!(status.success(), "asm2rust failed");
    for name in &names {
        let fresh = std::fs::read_to_string(out.join(format!("{name}.rs"))).unwrap();
        let committed = std::fs::read_to_string(format!("tests/common/asm/{name}.rs")).unwrap();
        assert!(
            fresh == committed,
            "tests/common/asm/{name}.rs is stale: run tests/programs/asm2rust {name}"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}
