//! System Resource Affinity Table (ACPI 6.x section 5.2.16): CPUs and RAM per NUMA node.
//!
//! Proximity domain N is NUMA node N. CPUs with APIC IDs up to 254 get a Processor Local
//! APIC Affinity structure, the others a Processor Local x2APIC Affinity structure,
//! matching the MADT.

use super::madt::MAX_XAPIC_ID;
use super::sdt::Sdt;
use super::{AcpiError, AcpiLayout};
use crate::cpuid::ApicLayout;

/// SRAT revision of ACPI 6.x.
const REVISION: u8 = 3;
/// Affinity flag: the entry is enabled.
const ENABLED: u32 = 1;

/// Structure type: Processor Local APIC Affinity.
pub const TYPE_LAPIC_AFFINITY: u8 = 0;
/// Structure type: Memory Affinity.
pub const TYPE_MEMORY_AFFINITY: u8 = 1;
/// Structure type: Processor Local x2APIC Affinity.
pub const TYPE_X2APIC_AFFINITY: u8 = 2;

/// The SRAT: each CPU on its node, each memory range on its node; every node must have memory.
pub fn build(apic: &ApicLayout, layout: &AcpiLayout) -> Result<Vec<u8>, AcpiError> {
    let topology = apic.topology();
    let nodes = topology.numa_nodes;
    for m in &layout.memory {
        if m.node >= nodes {
            return Err(AcpiError::MemoryNodeOutOfRange {
                base: m.base,
                node: m.node,
                nodes,
            });
        }
        if m.size == 0 || m.base.checked_add(m.size).is_none() {
            return Err(AcpiError::BadMemoryRange {
                base: m.base,
                size: m.size,
            });
        }
    }
    if let Some(node) = (0..nodes).find(|n| !layout.memory.iter().any(|m| m.node == *n)) {
        return Err(AcpiError::NodeWithoutMemory { node });
    }

    let mut t = Sdt::new("SRAT", REVISION);
    let b = t.body();
    // Reserved (1 for backward compatibility), reserved.
    b.u32(1).u64(0);
    for (cpu, id) in apic.apic_ids() {
        let node = topology.place(cpu).map_or(0, |p| p.node);
        let [d0, d1, d2, d3] = node.to_le_bytes();
        match u8::try_from(id) {
            Ok(id8) if id <= MAX_XAPIC_ID => {
                b.u8(TYPE_LAPIC_AFFINITY).u8(16).u8(d0).u8(id8).u32(ENABLED);
                // Local SAPIC EID, proximity domain bits 31:8, clock domain.
                b.u8(0).bytes(&[d1, d2, d3]).u32(0);
            }
            _ => {
                b.u8(TYPE_X2APIC_AFFINITY).u8(24).u16(0).u32(node).u32(id);
                b.u32(ENABLED).u32(0).u32(0);
            }
        }
    }
    for m in &layout.memory {
        b.u8(TYPE_MEMORY_AFFINITY).u8(40).u32(m.node).u16(0);
        b.u64(m.base).u64(m.size).u32(0).u32(ENABLED).u64(0);
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::subtables;
    use crate::acpi::NodeMemory;
    use crate::Topology;

    fn srat(t: Topology) -> Vec<u8> {
        let memory = (0..t.numa_nodes)
            .map(|n| NodeMemory {
                node: n,
                base: u64::from(n) << 32,
                size: 1 << 30,
            })
            .collect();
        let l = AcpiLayout::new(0xe_0000, memory);
        build(&ApicLayout::new(&t).unwrap(), &l).unwrap()
    }

    #[test]
    fn golden_two_nodes() {
        let v = srat(Topology::new(2, 1, 1, 1).unwrap());
        assert_eq!(&v[36..48], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0, 16, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,    // CPU APIC 0 on node 0
            0, 16, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,    // CPU APIC 1 on node 1
            1, 40, 0, 0, 0, 0, 0, 0,                            // node 0 RAM
            0, 0, 0, 0, 0, 0, 0, 0,                             //   base 0
            0, 0, 0, 0x40, 0, 0, 0, 0,                          //   1 GiB
            0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     //   enabled
            1, 40, 1, 0, 0, 0, 0, 0,                            // node 1 RAM
            0, 0, 0, 0, 1, 0, 0, 0,                             //   base 4 GiB
            0, 0, 0, 0x40, 0, 0, 0, 0,
            0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&v[48..], want);
        assert_eq!(v.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn entry_counts_and_nodes() {
        for (t, x2) in [
            ((1, 1, 2, 1), 0),
            ((2, 2, 2, 2), 0),
            ((2, 2, 16, 2), 0),
            ((2, 3, 20, 2), 120),
        ] {
            let topo = Topology::new(t.0, t.1, t.2, t.3).unwrap();
            let v = srat(topo);
            let s = subtables(&v);
            let of = |k| s.iter().filter(|(kind, _)| *kind == k).count() as u32;
            assert_eq!(
                of(TYPE_LAPIC_AFFINITY) + of(TYPE_X2APIC_AFFINITY),
                topo.total_cpus()
            );
            assert_eq!(of(TYPE_X2APIC_AFFINITY), x2, "{t:?}");
            assert_eq!(of(TYPE_MEMORY_AFFINITY), topo.numa_nodes);
            // Every CPU's domain is its node, in CPU order.
            let domains: Vec<u32> = s
                .iter()
                .filter_map(|(k, e)| match *k {
                    TYPE_LAPIC_AFFINITY => Some(u32::from(e[2])),
                    TYPE_X2APIC_AFFINITY => Some(u32::from_le_bytes(e[4..8].try_into().unwrap())),
                    _ => None,
                })
                .collect();
            let want: Vec<u32> = topo.places().map(|p| p.node).collect();
            assert_eq!(domains, want, "{t:?}");
        }
    }

    #[test]
    fn refuses_bad_memory() {
        let t = Topology::new(2, 1, 1, 1).unwrap();
        let apic = ApicLayout::new(&t).unwrap();
        let range = |node, base, size| NodeMemory { node, base, size };
        let l = AcpiLayout::new(0, vec![range(0, 0, 1), range(2, 0, 1)]);
        assert!(matches!(
            build(&apic, &l),
            Err(AcpiError::MemoryNodeOutOfRange { node: 2, .. })
        ));
        let l = AcpiLayout::new(0, vec![range(0, 0, 1), range(1, u64::MAX, 2)]);
        assert!(matches!(
            build(&apic, &l),
            Err(AcpiError::BadMemoryRange { .. })
        ));
        let l = AcpiLayout::new(0, vec![range(0, 0, 1), range(1, 0, 0)]);
        assert!(matches!(
            build(&apic, &l),
            Err(AcpiError::BadMemoryRange { .. })
        ));
    }
}
