//! Guest RAM and the ring region as vm-memory regions, registered with KVM as memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::error::ioctl;
use super::layout::{MemoryLayout, RING_GPA};
use super::KvmError;

/// Guest memory: one region per RAM range of [`MemoryLayout::ram`] (so one per NUMA node,
/// two for a node that straddles the MMIO hole) plus the ring region at [`RING_GPA`].
pub type GuestMemory = GuestMemoryMmap<()>;

/// Allocates the guest's RAM and ring region (anonymous, zeroed).
pub fn allocate(layout: &MemoryLayout) -> Result<GuestMemory, KvmError> {
    let mut ranges = Vec::with_capacity(layout.ram.len() + 1);
    for r in &layout.ram {
        let size = usize::try_from(r.size).map_err(|_| KvmError::BadConfig {
            reason: format!("RAM range of {:#x} bytes does not fit this host", r.size),
        })?;
        ranges.push((GuestAddress(r.base), size));
    }
    let ring = usize::try_from(layout.ring_size).map_err(|_| KvmError::BadConfig {
        reason: format!(
            "ring of {:#x} bytes does not fit this host",
            layout.ring_size
        ),
    })?;
    ranges.push((GuestAddress(RING_GPA), ring));
    ranges.sort_by_key(|r| r.0);
    GuestMemoryMmap::from_ranges(&ranges).map_err(KvmError::Memory)
}

/// Registers every region of `mem` with `vm`, one slot each.
pub fn register(vm: &VmFd, mem: &GuestMemory) -> Result<(), KvmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|source| KvmError::GuestMemory {
                what: "region base",
                gpa: region.start_addr().0,
                source,
            })?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of a live mapping of `region.len()` bytes owned by `mem`;
        // the caller keeps `mem` alive as long as `vm` (both live in the same `KvmVm`).
        unsafe { vm.set_user_memory_region(r) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_topology::Topology;
    use vm_memory::Bytes;

    #[test]
    fn one_region_per_node_plus_ring() {
        let t = Topology::new(2, 1, 2, 1).unwrap();
        let l = MemoryLayout::new(&t, 16, 4096).unwrap();
        let m = allocate(&l).unwrap();
        assert_eq!(m.num_regions(), 3);
        m.write_obj(0xabcd_u32, GuestAddress(RING_GPA)).unwrap();
        assert_eq!(m.read_obj::<u32>(GuestAddress(RING_GPA)).unwrap(), 0xabcd);
        assert!(m.read_obj::<u32>(GuestAddress(RING_GPA + 4096)).is_err());
        assert!(m.read_obj::<u8>(GuestAddress((16 << 20) - 1)).is_ok());
        assert!(m.read_obj::<u8>(GuestAddress(16 << 20)).is_err());
    }
}
