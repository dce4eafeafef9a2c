//! System Locality Information Table (ACPI 6.x section 5.2.17): 10 to itself, 20 to other nodes.

use super::sdt::Sdt;
use super::AcpiError;
use crate::Topology;

/// Distance from a node to itself.
pub const LOCAL_DISTANCE: u8 = 10;
/// Distance between two different nodes.
pub const REMOTE_DISTANCE: u8 = 20;

/// The SLIT for the topology's NUMA nodes.
pub fn build(topology: &Topology) -> Result<Vec<u8>, AcpiError> {
    let n = topology.numa_nodes;
    let mut t = Sdt::new("SLIT", 1);
    let b = t.body();
    b.u64(u64::from(n));
    for i in 0..n {
        for j in 0..n {
            b.u8(if i == j {
                LOCAL_DISTANCE
            } else {
                REMOTE_DISTANCE
            });
        }
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_three_nodes() {
        let v = build(&Topology::new(3, 1, 1, 1).unwrap()).unwrap();
        assert_eq!(v.len(), 36 + 8 + 9);
        assert_eq!(&v[36..44], &3u64.to_le_bytes());
        assert_eq!(&v[44..], &[10, 20, 20, 20, 10, 20, 20, 20, 10]);
        assert_eq!(v.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn single_node() {
        let v = build(&Topology::new(1, 2, 2, 2).unwrap()).unwrap();
        assert_eq!(&v[36..], &[1, 0, 0, 0, 0, 0, 0, 0, 10]);
    }
}
