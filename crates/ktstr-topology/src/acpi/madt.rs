//! Multiple APIC Description Table (ACPI 6.x section 5.2.12).
//!
//! One Processor Local APIC structure per CPU whose APIC ID is below 255, a Processor
//! Local x2APIC structure for the others (255 is the xAPIC broadcast ID), one IOAPIC,
//! the layout's interrupt source overrides, and LINT1 as NMI on every processor.

use super::sdt::Sdt;
use super::{AcpiError, AcpiLayout};
use crate::cpuid::ApicLayout;

/// MADT revision of ACPI 6.3.
const REVISION: u8 = 5;
/// Highest APIC ID a Processor Local APIC structure may carry.
pub const MAX_XAPIC_ID: u32 = 254;
/// MADT flag: dual 8259 PICs are present.
const PCAT_COMPAT: u32 = 1;
/// Local APIC flag: the processor is enabled.
const ENABLED: u32 = 1;
/// IOAPIC ID (the value KVM's IOAPIC ID register resets to).
const IOAPIC_ID: u8 = 0;
/// Processor UID meaning "all processors" in a Local APIC NMI structure.
const ALL_PROCESSORS: u8 = 0xff;
/// Processor UID meaning "all processors" in a Local x2APIC NMI structure.
const ALL_X2_PROCESSORS: u32 = u32::MAX;
/// NMI flags: active high, edge triggered.
const NMI_FLAGS: u16 = 0b0101;
/// Local APIC input wired to NMI.
const NMI_LINT: u8 = 1;

/// Structure type: Processor Local APIC.
pub const TYPE_LAPIC: u8 = 0;
/// Structure type: I/O APIC.
pub const TYPE_IOAPIC: u8 = 1;
/// Structure type: Interrupt Source Override.
pub const TYPE_ISO: u8 = 2;
/// Structure type: Local APIC NMI.
pub const TYPE_LAPIC_NMI: u8 = 4;
/// Structure type: Processor Local x2APIC.
pub const TYPE_X2APIC: u8 = 9;
/// Structure type: Local x2APIC NMI.
pub const TYPE_X2APIC_NMI: u8 = 0x0a;

/// The MADT for every CPU of `apic`'s topology; each CPU's ACPI processor UID is its CPU number.
pub fn build(apic: &ApicLayout, layout: &AcpiLayout) -> Result<Vec<u8>, AcpiError> {
    let mut t = Sdt::new("APIC", REVISION);
    let b = t.body();
    let flags = if layout.pcat_compat { PCAT_COMPAT } else { 0 };
    b.u32(layout.lapic_addr).u32(flags);
    let mut any_x2apic = false;
    for (cpu, id) in apic.apic_ids() {
        match (u8::try_from(cpu), u8::try_from(id)) {
            (Ok(uid), Ok(id8)) if id <= MAX_XAPIC_ID => {
                b.u8(TYPE_LAPIC).u8(8).u8(uid).u8(id8).u32(ENABLED);
            }
            _ => {
                any_x2apic = true;
                b.u8(TYPE_X2APIC)
                    .u8(16)
                    .u16(0)
                    .u32(id)
                    .u32(ENABLED)
                    .u32(cpu);
            }
        }
    }
    b.u8(TYPE_IOAPIC)
        .u8(12)
        .u8(IOAPIC_ID)
        .u8(0)
        .u32(layout.ioapic_addr)
        .u32(0);
    for o in &layout.irq_overrides {
        // Bus 0 is ISA.
        b.u8(TYPE_ISO)
            .u8(10)
            .u8(0)
            .u8(o.source)
            .u32(o.gsi)
            .u16(o.flags);
    }
    b.u8(TYPE_LAPIC_NMI)
        .u8(6)
        .u8(ALL_PROCESSORS)
        .u16(NMI_FLAGS)
        .u8(NMI_LINT);
    if any_x2apic {
        b.u8(TYPE_X2APIC_NMI)
            .u8(12)
            .u16(NMI_FLAGS)
            .u32(ALL_X2_PROCESSORS)
            .u8(NMI_LINT)
            .zeros(3);
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::subtables;
    use crate::acpi::{IrqOverride, NodeMemory};
    use crate::Topology;

    fn madt(t: Topology, overrides: Vec<IrqOverride>) -> Vec<u8> {
        let mem = NodeMemory {
            node: 0,
            base: 0,
            size: 1 << 30,
        };
        let mut l = AcpiLayout::new(0xe_0000, vec![mem]);
        l.irq_overrides = overrides;
        build(&ApicLayout::new(&t).unwrap(), &l).unwrap()
    }

    fn count(v: &[u8], kind: u8) -> usize {
        subtables(v).iter().filter(|(k, _)| *k == kind).count()
    }

    #[test]
    fn golden_two_cpus() {
        let v = madt(
            Topology::new(1, 1, 2, 1).unwrap(),
            vec![IrqOverride::PC_TIMER],
        );
        assert_eq!(&v[36..44], &[0, 0, 0xe0, 0xfe, 1, 0, 0, 0]);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0, 8, 0, 0, 1, 0, 0, 0,                        // LAPIC uid 0 id 0
            0, 8, 1, 1, 1, 0, 0, 0,                        // LAPIC uid 1 id 1
            1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0,     // IOAPIC at 0xfec00000, GSI base 0
            2, 10, 0, 0, 2, 0, 0, 0, 0, 0,                 // ISO IRQ0 -> GSI2
            4, 6, 0xff, 5, 0, 1,                           // LINT1 NMI, all CPUs
        ];
        assert_eq!(&v[44..], want);
        assert_eq!(v.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn apic_ids_follow_topology_gaps() {
        // 3 cores per LLC take 2 bits, so the second LLC starts at APIC ID 4.
        let v = madt(Topology::new(1, 2, 3, 1).unwrap(), vec![]);
        let ids: Vec<u8> = subtables(&v)
            .iter()
            .filter(|(k, _)| *k == TYPE_LAPIC)
            .map(|(_, s)| s[3])
            .collect();
        assert_eq!(ids, vec![0, 1, 2, 4, 5, 6]);
    }

    #[test]
    fn entry_counts() {
        for (t, lapic, x2) in [
            ((1, 1, 2, 1), 2, 0),
            ((2, 2, 2, 2), 16, 0),
            ((2, 2, 16, 2), 128, 0),
            // 248 CPUs whose highest APIC ID is 3 << 6 | 30 << 1 | 1 = 253: still all xAPIC.
            ((4, 1, 31, 2), 248, 0),
            // 2 x 3 x 20 x 2 = 240 CPUs; node 1 starts at APIC ID 256.
            ((2, 3, 20, 2), 120, 120),
        ] {
            let v = madt(Topology::new(t.0, t.1, t.2, t.3).unwrap(), vec![]);
            assert_eq!(count(&v, TYPE_LAPIC), lapic, "{t:?}");
            assert_eq!(count(&v, TYPE_X2APIC), x2, "{t:?}");
            assert_eq!(count(&v, TYPE_IOAPIC), 1);
            assert_eq!(count(&v, TYPE_X2APIC_NMI), usize::from(x2 > 0));
        }
    }

    #[test]
    fn x2apic_entry_layout() {
        let v = madt(Topology::new(2, 3, 20, 2).unwrap(), vec![]);
        let s = subtables(&v);
        let (_, first_x2) = s.iter().find(|(k, _)| *k == TYPE_X2APIC).unwrap();
        // CPU 120 is node 1's first: APIC ID 1 << 8.
        assert_eq!(
            *first_x2,
            &[9, 16, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 120, 0, 0, 0][..]
        );
    }
}
