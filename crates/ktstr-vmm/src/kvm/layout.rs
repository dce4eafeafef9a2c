//! The guest-physical memory map: where RAM, boot structures, ACPI tables and the ring go.
//!
//! ```text
//! 0x0000_0500  GDT (null, null, __BOOT_CS 0x10, __BOOT_DS 0x18, TSS 0x20)
//! 0x0000_7000  boot_params (zero page)
//! 0x0000_8ff0  top of the boot stack
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four PDs: identity map of 0..4 GiB, 2 MiB pages
//! 0x0002_0000  kernel command line (NUL-terminated, at most CMDLINE_MAX bytes)
//! 0x0009_fc00  EBDA (e820 reserved up to 0xa0000)
//! 0x000e_0000  ACPI: RSDP, then XSDT, FACP, DSDT, APIC, SRAT, SLIT (e820 reserved to 1 MiB)
//! 0x000f_fff0  reset vector (F000:FFF0): a stub that writes the reset register
//! 0x0010_0000  high memory: bzImage protected-mode code / test programs
//! 0x0020_0000  test programs: per-vCPU stacks, PROGRAM_STACK bytes each
//! 0x0100_0000  ELF vmlinux physical load address (from the ELF headers)
//! ...          RAM, node by node, up to MMIO_HOLE_START
//! 0xc000_0000  MMIO hole (no RAM); virtio-MMIO windows, 4 KiB each, GSI 5 upwards
//! 0xd000_0000  shared-memory ring (own memory slot, e820 reserved), RING_SIZE bytes
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 local APICs
//! 0x1_0000_0000 RAM above 4 GiB, continuing the node order
//! ```
//!
//! RAM is split over the NUMA nodes as [`ktstr_topology::Topology::split_memory_mib`] says,
//! node 0 first; a node that straddles the hole becomes two ranges.

use ktstr_topology::acpi::{NodeMemory, VirtioMmioDevice};
use ktstr_topology::Topology;

use super::KvmError;

/// GDT.
pub const GDT_GPA: u64 = 0x500;
/// boot_params (the "zero page").
pub const ZERO_PAGE_GPA: u64 = 0x7000;
/// Initial RSP of the boot vCPU when booting Linux.
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
/// Page map level 4.
pub const PML4_GPA: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPT_GPA: u64 = 0xa000;
/// First of four page directories (one per GiB).
pub const PD_GPA: u64 = 0xb000;
/// Bytes of guest memory the identity map covers.
pub const IDENTITY_MAPPED: u64 = 4 << 30;
/// Kernel command line.
pub const CMDLINE_GPA: u64 = 0x2_0000;
/// Longest command line, NUL included.
pub const CMDLINE_MAX: usize = 4096;
/// Start of the EBDA, where e820 RAM below 1 MiB ends.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of the BIOS area (reserved up to 1 MiB); the RSDP sits here so Linux's scan finds it.
pub const BIOS_START: u64 = 0xe_0000;
/// The RSDP, which [`ktstr_topology::build_tables`] follows with the other tables.
pub const RSDP_GPA: u64 = BIOS_START;
/// The real-mode reset vector F000:FFF0, where a BIOS reboot jumps ([`super::reset_vector`]).
pub const RESET_VECTOR_GPA: u64 = 0xf_fff0;
/// Start of high memory (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Where a test program is loaded and entered.
pub const PROGRAM_GPA: u64 = HIMEM_START;
/// Largest test program.
pub const PROGRAM_MAX: u64 = 0x10_0000;
/// Base of the per-vCPU stacks of test programs.
pub const PROGRAM_STACKS_GPA: u64 = 0x20_0000;
/// Bytes of stack each vCPU of a test program gets.
pub const PROGRAM_STACK: u64 = 0x1000;
/// Start of the 32-bit MMIO hole: no RAM from here to 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the MMIO hole.
pub const MMIO_HOLE_END: u64 = 1 << 32;
/// Base of the first virtio-MMIO window (the DSDT's `V000`); the next ones follow it.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_HOLE_START;
/// Bytes of each virtio-MMIO window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC pin of the first virtio-MMIO device (below it: PIT on 2, COM2 on 3, COM1 on 4).
pub const VIRTIO_MMIO_FIRST_GSI: u32 = 5;
/// Most virtio-MMIO devices: one per IOAPIC pin from [`VIRTIO_MMIO_FIRST_GSI`] to 23.
pub const VIRTIO_MMIO_MAX: usize = 24 - VIRTIO_MMIO_FIRST_GSI as usize;
/// Guest-physical base of the shared-memory ring (see [`super::ring`]).
pub const RING_GPA: u64 = 0xd000_0000;
/// Default size of the ring region.
pub const RING_SIZE: u64 = 1 << 20;
/// Largest ring region (it must stay below the IOAPIC).
pub const RING_MAX: u64 = 0x0100_0000;
/// Least RAM the VMM boots with, per NUMA node (MiB).
pub const MIN_NODE_MIB: u64 = 4;

/// Window and interrupt of virtio-MMIO device `index`, if there is room for it.
pub fn virtio_mmio_slot(index: usize) -> Option<VirtioMmioDevice> {
    (index < VIRTIO_MMIO_MAX).then(|| VirtioMmioDevice {
        base: VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE,
        size: VIRTIO_MMIO_SIZE,
        gsi: VIRTIO_MMIO_FIRST_GSI + index as u32,
    })
}

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Base address.
    pub addr: u64,
    /// Bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Where guest RAM goes, node by node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    /// RAM ranges in address order, each on one node.
    pub ram: Vec<NodeMemory>,
    /// Size of the ring region at [`RING_GPA`].
    pub ring_size: u64,
}

impl MemoryLayout {
    /// Lays out `memory_mib` over `topology`'s nodes with a ring of `ring_size` bytes.
    pub fn new(topology: &Topology, memory_mib: u64, ring_size: u64) -> Result<Self, KvmError> {
        let bad = |reason: String| KvmError::BadConfig { reason };
        if ring_size == 0 || ring_size % 4096 != 0 || ring_size > RING_MAX {
            return Err(bad(format!(
                "ring size {ring_size:#x} must be a non-zero multiple of 4 KiB up to {RING_MAX:#x}"
            )));
        }
        let mut ram = Vec::new();
        let mut next = 0u64;
        for (node, mib) in topology
            .split_memory_mib(memory_mib)
            .into_iter()
            .enumerate()
        {
            if mib < MIN_NODE_MIB {
                return Err(bad(format!(
                    "{memory_mib} MiB over {} NUMA nodes leaves node {node} {mib} MiB; \
                     each needs at least {MIN_NODE_MIB}",
                    topology.numa_nodes
                )));
            }
            let mut left = mib
                .checked_mul(1 << 20)
                .ok_or_else(|| bad(format!("{memory_mib} MiB overflows")))?;
            while left > 0 {
                if next == MMIO_HOLE_START {
                    next = MMIO_HOLE_END;
                }
                let limit = if next < MMIO_HOLE_START {
                    MMIO_HOLE_START - next
                } else {
                    u64::MAX - next
                };
                let size = left.min(limit);
                if size == 0 {
                    return Err(bad(format!("{memory_mib} MiB overflows the address space")));
                }
                ram.push(NodeMemory {
                    node: node as u32,
                    base: next,
                    size,
                });
                next += size;
                left -= size;
            }
        }
        Ok(MemoryLayout { ram, ring_size })
    }

    /// End of the RAM below the MMIO hole (node 0 always starts at 0).
    pub fn low_ram_end(&self) -> u64 {
        self.ram
            .iter()
            .filter(|r| r.base < MMIO_HOLE_START)
            .map(|r| r.base + r.size)
            .max()
            .unwrap_or(0)
    }

    /// Total RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().map(|r| r.size).sum()
    }

    /// The e820 map: RAM with the EBDA, BIOS area and ring reserved, in address order.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut out = Vec::new();
        for r in &self.ram {
            let end = r.base + r.size;
            if r.base == 0 {
                out.push(E820Entry {
                    addr: 0,
                    size: EBDA_START.min(end),
                    kind: E820_RAM,
                });
                if end > EBDA_START {
                    out.push(E820Entry {
                        addr: EBDA_START,
                        size: HIMEM_START.min(end) - EBDA_START,
                        kind: E820_RESERVED,
                    });
                }
                if end > HIMEM_START {
                    out.push(E820Entry {
                        addr: HIMEM_START,
                        size: end - HIMEM_START,
                        kind: E820_RAM,
                    });
                }
            } else {
                out.push(E820Entry {
                    addr: r.base,
                    size: r.size,
                    kind: E820_RAM,
                });
            }
        }
        out.push(E820Entry {
            addr: RING_GPA,
            size: self.ring_size,
            kind: E820_RESERVED,
        });
        out.sort_by_key(|e| e.addr);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_map() {
        let t = Topology::new(2, 1, 1, 1).unwrap();
        let l = MemoryLayout::new(&t, 64, RING_SIZE).unwrap();
        let mib = 1u64 << 20;
        assert_eq!(
            l.ram,
            vec![
                NodeMemory {
                    node: 0,
                    base: 0,
                    size: 32 * mib
                },
                NodeMemory {
                    node: 1,
                    base: 32 * mib,
                    size: 32 * mib
                },
            ]
        );
        let e = l.e820();
        let want = [
            (0, EBDA_START, E820_RAM),
            (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
            (HIMEM_START, 32 * mib - HIMEM_START, E820_RAM),
            (32 * mib, 32 * mib, E820_RAM),
            (RING_GPA, RING_SIZE, E820_RESERVED),
        ];
        let got: Vec<_> = e.iter().map(|e| (e.addr, e.size, e.kind)).collect();
        assert_eq!(got, want);
        assert_eq!(l.low_ram_end(), 64 * mib);
        assert_eq!(l.ram_bytes(), 64 * mib);
    }

    #[test]
    fn node_straddling_the_hole_is_split() {
        let t = Topology::new(2, 1, 1, 1).unwrap();
        let l = MemoryLayout::new(&t, 4096, RING_SIZE).unwrap();
        let gib = 1u64 << 30;
        assert_eq!(l.ram.len(), 3);
        assert_eq!(
            l.ram[1],
            NodeMemory {
                node: 1,
                base: 2 * gib,
                size: gib
            }
        );
        assert_eq!(
            l.ram[2],
            NodeMemory {
                node: 1,
                base: 4 * gib,
                size: gib
            }
        );
        assert_eq!(l.low_ram_end(), MMIO_HOLE_START);
        assert!(l.e820().iter().all(|e| e.addr + e.size <= MMIO_HOLE_START
            || e.addr >= MMIO_HOLE_END
            || e.addr == RING_GPA));
    }

    #[test]
    fn virtio_slots_sit_in_the_hole_below_the_ring() {
        let first = virtio_mmio_slot(0).unwrap();
        assert_eq!(
            (first.base, first.size, first.gsi),
            (0xc000_0000, 0x1000, 5)
        );
        let last = virtio_mmio_slot(VIRTIO_MMIO_MAX - 1).unwrap();
        assert_eq!(last.gsi, 23);
        assert!(last.base + last.size <= RING_GPA);
        assert!(virtio_mmio_slot(VIRTIO_MMIO_MAX).is_none());
    }

    #[test]
    fn refuses_tiny_nodes_and_bad_rings() {
        let t = Topology::new(4, 1, 1, 1).unwrap();
        assert!(MemoryLayout::new(&t, 8, RING_SIZE).is_err());
        let t = Topology::default();
        assert!(MemoryLayout::new(&t, 64, 100).is_err());
        assert!(MemoryLayout::new(&t, 64, 0).is_err());
        assert!(MemoryLayout::new(&t, 64, RING_MAX * 2).is_err());
    }
}
