//! Boots the cached Debian kernel on ktstr's KVM VMM and, from the guest's user space, does
//! what a broken or hostile guest would, then checks that the VMM refused and counted each
//! thing, and that the run still ended as the guest asked:
//!
//! - port I/O no device claims: a small program (tests/programs/port_poke.s) writes port
//!   0x1234 and reads port 0x1235 after ioperm(2); the read must give all ones;
//! - MMIO no device claims: busybox `devmem` reads and writes 0xe0000000, in the MMIO hole;
//! - a virtio-blk device driven by hand through `devmem` (no virtio-mmio driver is loaded, so
//!   its window is free): first with rings outside guest memory (DRIVER_OK must come back
//!   with DEVICE_NEEDS_RESET), then with rings in low memory and a request whose buffer is
//!   outside guest memory (the chain must come back used with length 0, the device live);
//! - a flood of the kernel console (COM1) far beyond the host's bound: the host keeps only
//!   the bounded tail and counts what it dropped.
//!
//! Skips (prints `SKIPPED`, never fails) where KVM cannot boot Linux: no `/dev/kvm`, PVM, or a
//! CPU without vmx/svm. Skips through [`common::skip`], which fails under
//! `KTSTR_REQUIRE_VM=1`, without a cached kernel, busybox or cpio.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::asm::port_poke::PORT_POKE;
use common::{busybox_root, cpio, field, linux_guest_prereqs, scratch_dir, skip, stderr};
use ktstr_topology::Topology;
use ktstr_vmm::kvm::faults::Space;
use ktstr_vmm::kvm::layout::virtio_mmio_slot;
use ktstr_vmm::kvm::{KvmExit, KvmVm};

const TEST: &str = "linux_guest_misbehaving_is_refused_and_counted";

/// How long the whole guest may take (nested KVM boots take 10-25 s).
const WAIT: Duration = Duration::from_secs(240);

/// The most of each output the host keeps in this test: small, so the flood overruns it.
const OUTPUT_LIMIT: usize = 8 << 10;
/// Bytes the guest floods COM1 with.
const FLOOD: usize = 32 << 10;
/// The line that ends the flood.
const FLOOD_END: &str = "ktstr-flood-end";

/// An MMIO address in the hole below 4 GiB that no device claims.
const STRAY_MMIO: u64 = 0xe000_0000;
/// Low-memory pages (reserved by Linux, reachable through /dev/mem) for the hand-made queue:
/// descriptors, avail ring, used ring; the guest writes every word the device reads.
const DESC: u64 = 0x3_0000;
const AVAIL: u64 = 0x3_1000;
const USED: u64 = 0x3_2000;
/// A guest-physical address far beyond guest memory (1 TiB).
const OUTSIDE_HIGH: u32 = 0x100;

/// A static ELF64 executable whose only segment holds `code`, entered at its first byte.
fn static_elf(code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let total = HEADERS + code.len() as u64;
    let mut e = Vec::with_capacity(total as usize);
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R + X
    for v in [0, BASE, BASE, total, total, 0x1000] {
        // offset, vaddr, paddr, filesz, memsz, align
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(code);
    e
}

/// The init script: everything on COM2 (`/dev/ttyS1`), terse (COM2 keeps only
/// [`OUTPUT_LIMIT`] bytes too).
fn init_script(virtio_base: u64) -> String {
    format!(
        r#"
/poke
echo "port: status $?"

echo "mmio: read $(devmem {STRAY_MMIO:#x} 32)"
devmem {stray_w:#x} 32 0x12345678
echo "mmio: wrote"

B={virtio_base}
r() {{ devmem $((B + $1)) 32; }}
w() {{ devmem $((B + $1)) 32 $2; }}
m() {{ devmem $1 32 $2; }}
echo "virtio: magic $(r 0x0) id $(r 0x8)"
queue() {{
    w 0x70 0; w 0x70 1; w 0x70 3
    w 0x24 1; w 0x20 1; w 0x24 0; w 0x20 0
    w 0x70 11
    w 0x30 0; w 0x38 8
    w 0x80 $1; w 0x84 $2; w 0x90 $3; w 0x94 $2; w 0xa0 $4; w 0xa4 $2
    w 0x44 1
    w 0x70 15
}}
queue 0 {OUTSIDE_HIGH:#x} 0x1000 0x2000
echo "virtio: rings outside, status $(r 0x70)"

m {DESC} 0; m {desc_hi:#x} {OUTSIDE_HIGH:#x}; m {desc_len:#x} 512; m {desc_flags:#x} 0
m {avail_ring:#x} 0; m {AVAIL} 0x10000
m {USED} 0; m {used_id:#x} 0; m {used_len:#x} 0
queue {DESC} 0 {AVAIL} {USED}
w 0x50 0
n=0
until [ $(($(m {USED}) >> 16)) -ge 1 ] || [ $n -ge 100 ]; do n=$((n + 1)); usleep 10000; done
echo "virtio: buffer outside, status $(r 0x70) used $(($(m {USED}) >> 16)) len $(m {used_len:#x})"

head -c {FLOOD} /dev/zero | tr '\0' x >/dev/ttyS0
echo "{FLOOD_END}" >/dev/ttyS0
echo "init: done"
poweroff -f
"#,
        stray_w = STRAY_MMIO + 0x10,
        desc_hi = DESC + 4,
        desc_len = DESC + 8,
        desc_flags = DESC + 12,
        used_id = USED + 4,
        avail_ring = AVAIL + 4,
        used_len = USED + 8,
    )
}

/// Writes the initramfs (busybox, `/poke`, `/init`) as a newc cpio at `out`.
fn build_initramfs(dir: &Path, busybox: &Path, virtio_base: u64, out: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let root = busybox_root(dir, busybox, &init_script(virtio_base))?;
    let poke = root.join("poke");
    std::fs::write(&poke, static_elf(PORT_POKE)).map_err(|e| format!("writing /poke: {e}"))?;
    std::fs::set_permissions(&poke, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod /poke: {e}"))?;
    cpio(&root, out)
}

#[test]
fn linux_guest_misbehaving_is_refused_and_counted() {
    let Some((vmlinux, busybox)) = linux_guest_prereqs(TEST) else {
        return;
    };
    let dir = scratch_dir("linux-bad-input");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 64 << 10]).expect("disk image");

    // The disk is the only virtio device: the first window.
    let base = virtio_mmio_slot(0).expect("a virtio-MMIO window").base;
    let initramfs = dir.join("initramfs.cpio");
    if let Err(why) = build_initramfs(&dir, &busybox, base, &initramfs) {
        let _ = std::fs::remove_dir_all(&dir);
        skip(TEST, &format!("cannot build the initramfs: {why}"));
        return;
    }
    let vm = KvmVm::builder()
        .topology(Topology::new(1, 1, 1, 1).expect("topology"))
        .memory_mib(256)
        .kernel(&vmlinux)
        .initramfs(&initramfs)
        .cmdline("console=ttyS0 rdinit=/init panic=-1 loglevel=6")
        .disk(&disk, false)
        .output_limit(OUTPUT_LIMIT)
        .build()
        .expect("build");
    assert_eq!(vm.virtio_mmio()[0].base, base);
    let io = vm.io().clone();
    let t0 = Instant::now();
    let mut h = vm.start().expect("start");
    let exit = h.wait(WAIT).expect("wait");
    let ran = t0.elapsed();
    let _ = std::fs::remove_dir_all(&dir);

    let app = io.app_output.text();
    let console = io.console.contents();
    let log = io.fault_log();
    stderr(&format!(
        "--- COM2 ---\n{app}\n--- faults ---\n{log:#?}\nEND: {exit} after {:.1} s\n",
        ran.as_secs_f64()
    ));
    let ctx = format!("COM2:\n{app}\nfaults: {log:#?}");

    // The host side survived all of it, and the guest ended as it asked.
    assert_eq!(exit, KvmExit::PowerOff { status: 0 }, "{exit}; {ctx}");
    assert!(app.contains("init: done"), "init script finished; {ctx}");

    // Unclaimed ports: refused (reads give all ones) and counted.
    assert_eq!(field(&app, "port: status"), Some("255"), "{ctx}");
    assert_eq!(log.unclaimed_count(Space::Port, true, 0x1234), 1, "{ctx}");
    assert_eq!(log.unclaimed_count(Space::Port, false, 0x1235), 1, "{ctx}");
    // Unclaimed MMIO: likewise.
    assert_eq!(field(&app, "mmio: read"), Some("0xFFFFFFFF"), "{ctx}");
    assert!(app.contains("mmio: wrote"), "{ctx}");
    assert_eq!(
        log.unclaimed_count(Space::Mmio, false, STRAY_MMIO),
        1,
        "{ctx}"
    );
    assert_eq!(
        log.unclaimed_count(Space::Mmio, true, STRAY_MMIO + 0x10),
        1,
        "{ctx}"
    );
    assert!(log
        .unclaimed_line()
        .is_some_and(|l| l.contains("port write 0x1234")));

    // virtio-blk driven by hand: the window answers as a virtio-blk device ("virt", id 2).
    assert_eq!(
        field(&app, "virtio: magic"),
        Some("0x74726976 id 0x00000002"),
        "{ctx}"
    );
    // Rings outside memory: DRIVER_OK refused with DEVICE_NEEDS_RESET (0x40).
    assert_eq!(
        field(&app, "virtio: rings outside, status"),
        Some("0x0000004F"),
        "{ctx}"
    );
    // A buffer outside memory: the chain is used untouched, the device stays live (0xf).
    assert_eq!(
        field(&app, "virtio: buffer outside, status"),
        Some("0x0000000F used 1 len 0x00000000"),
        "{ctx}"
    );
    let device = format!("virtio-blk at {base:#x}");
    let refused = log
        .devices
        .iter()
        .find(|d| d.device == device)
        .unwrap_or_else(|| panic!("{device} counted; {ctx}"));
    assert_eq!(refused.count, 2, "{ctx}");
    assert!(
        refused.first.contains("rings outside guest memory"),
        "{ctx}"
    );

    // The flood: the host kept at most its bound, ending with the flood's last line, and
    // counted the rest as dropped.
    assert!(
        console.len() <= OUTPUT_LIMIT,
        "{} bytes kept",
        console.len()
    );
    let tail = String::from_utf8_lossy(&console);
    assert!(tail.contains(FLOOD_END), "the newest bytes are kept");
    let dropped = log
        .dropped
        .iter()
        .find(|d| d.device == "COM1")
        .unwrap_or_else(|| panic!("COM1 dropped bytes; {ctx}"));
    assert!(dropped.bytes >= (FLOOD - OUTPUT_LIMIT) as u64, "{ctx}");
    assert_eq!(dropped.limit, OUTPUT_LIMIT);
    assert!(log.has_device_faults());
    let lines = log.device_lines().join("\n");
    assert!(lines.contains(&format!("{device} refused")), "{lines}");
    assert!(lines.contains("COM1 output flooded"), "{lines}");
}
