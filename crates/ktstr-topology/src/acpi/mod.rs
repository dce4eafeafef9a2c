//! ACPI tables for a ktstr guest, generated from a [`Topology`] and an [`AcpiLayout`].
//!
//! [`build_tables`] lays the tables out from [`AcpiLayout::rsdp_gpa`] upwards in this order:
//! RSDP, XSDT, FADT, DSDT, MADT, SRAT, SLIT, each 8-byte aligned, and fills every
//! cross-pointer and checksum. The VMM copies each [`AcpiBlob`] into guest memory and
//! points the kernel at [`AcpiTables::rsdp_gpa`] (boot_params `acpi_rsdp_addr`, or a
//! location in 0xE0000..0xFFFFF where Linux scans for it).
//!
//! APIC IDs come from [`crate::cpuid::ApicLayout`], the same numbering the CPUID leaves use.

mod aml;
mod dsdt;
mod fadt;
mod madt;
mod rsdp;
mod sdt;
mod slit;
mod srat;
mod xsdt;

pub use aml::eisa_id;
pub use sdt::checksum;

use crate::cpuid::ApicLayout;
use crate::{Topology, TopologyError};

/// Default guest-physical address of the IOAPIC.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Default guest-physical address of the local APICs.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Alignment of each table after the RSDP.
const TABLE_ALIGN: u64 = 8;

/// Why the ACPI tables could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    /// The topology is invalid.
    #[error("invalid topology for ACPI tables")]
    Topology {
        /// What is wrong with it.
        #[source]
        source: TopologyError,
    },
    /// The RSDP must sit on a 16-byte boundary.
    #[error("RSDP address {gpa:#x} is not 16-byte aligned")]
    MisalignedRsdp {
        /// The address given.
        gpa: u64,
    },
    /// Placing a table ran past the end of the address space.
    #[error("placing the {table} table after {gpa:#x} overflows the guest address space")]
    AddressOverflow {
        /// Table signature.
        table: &'static str,
        /// Where the previous table ended.
        gpa: u64,
    },
    /// A table is longer than its 32-bit length field allows.
    #[error("{table} table would be {len} bytes, more than a u32 length field holds")]
    TableTooLarge {
        /// Table signature.
        table: &'static str,
        /// Its length.
        len: usize,
    },
    /// A NUMA node of the topology has no memory range.
    #[error("NUMA node {node} has no memory range in the ACPI layout")]
    NodeWithoutMemory {
        /// The node.
        node: u32,
    },
    /// A memory range names a node beyond the topology.
    #[error("memory range at {base:#x} is on node {node} but the topology has {nodes} nodes")]
    MemoryNodeOutOfRange {
        /// Base of the range.
        base: u64,
        /// The node it names.
        node: u32,
        /// Nodes in the topology.
        nodes: u32,
    },
    /// A memory range is empty or wraps past the end of the address space.
    #[error("memory range at {base:#x} of {size:#x} bytes is empty or wraps")]
    BadMemoryRange {
        /// Base of the range.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// A virtio-MMIO window does not fit the 32-bit Memory32Fixed descriptor.
    #[error("virtio-MMIO device at {base:#x} of {size:#x} bytes is empty or not below 4 GiB")]
    BadMmioWindow {
        /// Base of the window.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// More devices of one kind than the DSDT naming scheme allows.
    #[error("{count} {kind} devices given; at most {max} are supported")]
    TooManyDevices {
        /// Device kind.
        kind: &'static str,
        /// How many were given.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A UART's IRQ is not an ISA IRQ (0-15).
    #[error("UART at port {port:#x} has IRQ {irq}; ISA IRQs are 0-15")]
    BadUartIrq {
        /// The UART's base port.
        port: u16,
        /// The IRQ given.
        irq: u8,
    },
    /// An AML object is longer than a PkgLength can say.
    #[error("AML object with {len} payload bytes is too long to encode")]
    AmlTooLong {
        /// Payload length.
        len: usize,
    },
    /// A name is not a valid AML NameSeg path.
    #[error("`{name}` is not a valid AML name")]
    BadAmlName {
        /// The name given.
        name: String,
    },
    /// An AML string contains a NUL or non-ASCII byte.
    #[error("`{s}` is not a valid AML string")]
    BadAmlString {
        /// The string given.
        s: String,
    },
    /// An EISA ID is not three capitals and four hex digits.
    #[error("`{id}` is not a valid EISA ID such as PNP0501")]
    BadEisaId {
        /// The ID given.
        id: String,
    },
}

/// One contiguous range of guest RAM on one NUMA node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMemory {
    /// NUMA node (proximity domain).
    pub node: u32,
    /// Guest-physical base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A virtio-MMIO device window and its interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// Guest-physical base of the register window (below 4 GiB).
    pub base: u64,
    /// Size of the window in bytes.
    pub size: u64,
    /// Global system interrupt (IOAPIC pin).
    pub gsi: u32,
}

/// A 16550 UART on the I/O port bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uart {
    /// Base I/O port; the UART takes 8 ports.
    pub port: u16,
    /// ISA IRQ.
    pub irq: u8,
}

impl Uart {
    /// COM1: port 0x3F8, IRQ 4.
    pub const COM1: Uart = Uart {
        port: 0x3f8,
        irq: 4,
    };
    /// COM2: port 0x2F8, IRQ 3.
    pub const COM2: Uart = Uart {
        port: 0x2f8,
        irq: 3,
    };
}

/// A MADT Interrupt Source Override: ISA IRQ `source` arrives on `gsi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqOverride {
    /// ISA IRQ.
    pub source: u8,
    /// Global system interrupt it is wired to.
    pub gsi: u32,
    /// MPS INTI flags (polarity bits 1-0, trigger mode bits 3-2; 0 = bus default).
    pub flags: u16,
}

impl IrqOverride {
    /// The PC convention: the PIT's IRQ 0 is wired to IOAPIC pin 2, with bus-default flags.
    pub const PC_TIMER: IrqOverride = IrqOverride {
        source: 0,
        gsi: 2,
        flags: 0,
    };
}

/// I/O ports of the hardware-reduced sleep and reset registers the VMM emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerPorts {
    /// Port of the sleep control and status register; writing SLP_TYP 5 with SLP_EN powers off.
    pub sleep_port: u16,
    /// Port of the reset register.
    pub reset_port: u16,
    /// Value the guest writes to `reset_port` to reboot.
    pub reset_value: u8,
}

/// Where the tables go and what the guest's platform looks like besides its CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiLayout {
    /// Guest-physical address of the RSDP (16-byte aligned); the other tables follow it.
    pub rsdp_gpa: u64,
    /// Guest RAM ranges with their NUMA node; every node needs at least one.
    pub memory: Vec<NodeMemory>,
    /// IOAPIC address.
    pub ioapic_addr: u32,
    /// Local APIC address.
    pub lapic_addr: u32,
    /// Whether dual 8259 PICs are present (MADT PCAT_COMPAT flag).
    pub pcat_compat: bool,
    /// virtio-MMIO devices described in the DSDT.
    pub virtio_mmio: Vec<VirtioMmioDevice>,
    /// UARTs described in the DSDT.
    pub uarts: Vec<Uart>,
    /// Interrupt source overrides for the MADT.
    pub irq_overrides: Vec<IrqOverride>,
    /// Sleep/reset registers; when set the FADT names them and the DSDT gets `\_S5`.
    pub power: Option<PowerPorts>,
}

impl AcpiLayout {
    /// A layout with the RSDP at `rsdp_gpa`, the given RAM, default APIC addresses, COM1 and COM2.
    pub fn new(rsdp_gpa: u64, memory: Vec<NodeMemory>) -> Self {
        AcpiLayout {
            rsdp_gpa,
            memory,
            ioapic_addr: IOAPIC_ADDR,
            lapic_addr: LAPIC_ADDR,
            pcat_compat: true,
            virtio_mmio: Vec::new(),
            uarts: vec![Uart::COM1, Uart::COM2],
            irq_overrides: Vec::new(),
            power: None,
        }
    }
}

/// One table's bytes and where they go in guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiBlob {
    /// Signature (`RSD PTR ` for the RSDP, otherwise four characters such as `MADT`'s `APIC`).
    pub signature: &'static str,
    /// Guest-physical address.
    pub gpa: u64,
    /// The table's bytes, checksummed.
    pub bytes: Vec<u8>,
}

/// The complete set of ACPI tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// Guest-physical address of the RSDP.
    pub rsdp_gpa: u64,
    /// Every table, RSDP first, in ascending address order.
    pub blobs: Vec<AcpiBlob>,
}

impl AcpiTables {
    /// The table with `signature` (`RSD PTR `, `XSDT`, `FACP`, `DSDT`, `APIC`, `SRAT`, `SLIT`).
    pub fn table(&self, signature: &str) -> Option<&AcpiBlob> {
        self.blobs.iter().find(|b| b.signature == signature)
    }

    /// One past the last byte of the last table.
    pub fn end_gpa(&self) -> u64 {
        self.blobs
            .iter()
            .map(|b| b.gpa.saturating_add(b.bytes.len() as u64))
            .max()
            .unwrap_or(self.rsdp_gpa)
    }
}

/// The typed structures after a MADT's or SRAT's fixed fields, as `(type, bytes)`; empty for other tables.
pub fn subtables(table: &[u8]) -> Vec<(u8, &[u8])> {
    let start = match table.get(0..4) {
        Some(b"APIC") => 44,
        Some(b"SRAT") => 48,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut rest = table.get(start..).unwrap_or_default();
    while let [kind, len, ..] = *rest {
        let len = usize::from(len);
        if len < 2 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[..len]));
        rest = &rest[len..];
    }
    out
}

/// Builds every table for `topology` placed as `layout` says.
pub fn build_tables(topology: &Topology, layout: &AcpiLayout) -> Result<AcpiTables, AcpiError> {
    let apic = ApicLayout::new(topology).map_err(|source| AcpiError::Topology { source })?;
    if layout.rsdp_gpa % 16 != 0 {
        return Err(AcpiError::MisalignedRsdp {
            gpa: layout.rsdp_gpa,
        });
    }
    let dsdt = dsdt::build(layout)?;
    let madt = madt::build(&apic, layout)?;
    let srat = srat::build(&apic, layout)?;
    let slit = slit::build(topology)?;

    let mut next = layout.rsdp_gpa;
    let mut place = |table: &'static str, len: usize| -> Result<u64, AcpiError> {
        let overflow = AcpiError::AddressOverflow { table, gpa: next };
        let gpa = next
            .checked_next_multiple_of(TABLE_ALIGN)
            .ok_or(overflow.clone())?;
        next = gpa.checked_add(len as u64).ok_or(overflow)?;
        Ok(gpa)
    };
    let rsdp_gpa = place("RSD PTR ", rsdp::LEN)?;
    let xsdt_gpa = place("XSDT", xsdt::len(4))?;
    let fadt_gpa = place("FACP", fadt::LEN)?;
    let dsdt_gpa = place("DSDT", dsdt.len())?;
    let madt_gpa = place("APIC", madt.len())?;
    let srat_gpa = place("SRAT", srat.len())?;
    let slit_gpa = place("SLIT", slit.len())?;

    let fadt = fadt::build(dsdt_gpa, layout.power)?;
    let xsdt = xsdt::build(&[fadt_gpa, madt_gpa, srat_gpa, slit_gpa])?;
    let rsdp = rsdp::build(xsdt_gpa);

    let blob = |signature, gpa, bytes| AcpiBlob {
        signature,
        gpa,
        bytes,
    };
    Ok(AcpiTables {
        rsdp_gpa,
        blobs: vec![
            blob("RSD PTR ", rsdp_gpa, rsdp),
            blob("XSDT", xsdt_gpa, xsdt),
            blob("FACP", fadt_gpa, fadt),
            blob("DSDT", dsdt_gpa, dsdt),
            blob("APIC", madt_gpa, madt),
            blob("SRAT", srat_gpa, srat),
            blob("SLIT", slit_gpa, slit),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(t: &Topology) -> AcpiLayout {
        let gib = 1u64 << 30;
        let memory = (0..t.numa_nodes)
            .map(|n| NodeMemory {
                node: n,
                base: u64::from(n) * gib,
                size: gib,
            })
            .collect();
        AcpiLayout::new(0xe_0000, memory)
    }

    fn u32_at(v: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(v[off..off + 4].try_into().unwrap())
    }

    fn u64_at(v: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(v[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn layout_and_cross_pointers() {
        let t = Topology::new(2, 2, 2, 2).unwrap();
        let tables = build_tables(&t, &layout(&t)).unwrap();
        assert_eq!(tables.rsdp_gpa, 0xe_0000);
        let sigs: Vec<_> = tables.blobs.iter().map(|b| b.signature).collect();
        assert_eq!(
            sigs,
            ["RSD PTR ", "XSDT", "FACP", "DSDT", "APIC", "SRAT", "SLIT"]
        );
        for w in tables.blobs.windows(2) {
            assert!(w[0].gpa + w[0].bytes.len() as u64 <= w[1].gpa);
            assert_eq!(w[1].gpa % 8, 0);
        }
        let rsdp = &tables.table("RSD PTR ").unwrap().bytes;
        let xsdt = tables.table("XSDT").unwrap();
        assert_eq!(u64_at(rsdp, 24), xsdt.gpa);
        let ptrs: Vec<u64> = (0..4).map(|i| u64_at(&xsdt.bytes, 36 + 8 * i)).collect();
        let want: Vec<u64> = ["FACP", "APIC", "SRAT", "SLIT"]
            .iter()
            .map(|s| tables.table(s).unwrap().gpa)
            .collect();
        assert_eq!(ptrs, want);
        let fadt = &tables.table("FACP").unwrap().bytes;
        assert_eq!(u64_at(fadt, 140), tables.table("DSDT").unwrap().gpa);
        for b in &tables.blobs {
            if b.signature != "RSD PTR " {
                assert_eq!(
                    u32_at(&b.bytes, 4) as usize,
                    b.bytes.len(),
                    "{}",
                    b.signature
                );
                assert_eq!(&b.bytes[0..4], b.signature.as_bytes());
            }
            assert_eq!(
                b.bytes.iter().fold(0u8, |s, x| s.wrapping_add(*x)),
                0,
                "{} checksum",
                b.signature
            );
        }
        assert_eq!(
            tables.end_gpa(),
            tables.table("SLIT").unwrap().gpa + tables.table("SLIT").unwrap().bytes.len() as u64
        );
    }

    #[test]
    fn refuses_bad_layouts() {
        let t = Topology::new(2, 1, 1, 1).unwrap();
        let mut l = layout(&t);
        l.rsdp_gpa = 0xe_0008;
        assert_eq!(
            build_tables(&t, &l),
            Err(AcpiError::MisalignedRsdp { gpa: 0xe_0008 })
        );
        let mut l = layout(&t);
        l.memory.pop();
        assert_eq!(
            build_tables(&t, &l),
            Err(AcpiError::NodeWithoutMemory { node: 1 })
        );
        let mut l = layout(&t);
        l.rsdp_gpa = u64::MAX - 15;
        assert!(matches!(
            build_tables(&t, &l),
            Err(AcpiError::AddressOverflow { .. })
        ));
        let bad = Topology { numa_nodes: 0, ..t };
        assert!(matches!(
            build_tables(&bad, &layout(&t)),
            Err(AcpiError::Topology { .. })
        ));
    }
}
