//! ktstr's own KVM VMM's guest memory as a memory source of the host monitor
//! (beside QEMU's RAM files and guest memory dumps).

use ktstr_btf_monitor::{GuestMemory, MemError};
use ktstr_vmm::kvm::GuestMemory as KvmMemory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend as _};

/// The KVM VMM's guest memory (`GuestIo::memory`), readable by the monitor's sampler.
#[derive(Debug, Clone)]
pub struct KvmGuestMemory(pub KvmMemory);

impl GuestMemory for KvmGuestMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.0
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| MemError::Unmapped {
                gpa,
                len: buf.len(),
            })
    }
}

impl crate::watchdog::GuestWriter for KvmGuestMemory {
    fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemError> {
        self.0
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|_| MemError::Unmapped {
                gpa,
                len: bytes.len(),
            })
    }
}

impl KvmGuestMemory {
    /// One past the highest guest-physical address backed by RAM.
    pub fn phys_end(&self) -> u64 {
        self.0.last_addr().0.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_btf_monitor::Translator;

    #[test]
    fn the_monitor_reads_kvm_guest_memory() {
        let mem =
            KvmMemory::from_ranges(&[(GuestAddress(0), 0x4000), (GuestAddress(0x10_0000), 0x1000)])
                .unwrap();
        mem.write_slice(&0xdead_beef_u64.to_le_bytes(), GuestAddress(0x10_0008))
            .unwrap();
        let m = KvmGuestMemory(mem);
        assert_eq!(m.read_u64(0x10_0008).unwrap(), 0xdead_beef);
        assert_eq!(m.phys_end(), 0x10_1000);
        crate::watchdog::GuestWriter::write_u64(&m, 0x10, 7).unwrap();
        assert_eq!(m.read_u64(0x10).unwrap(), 7);
        assert!(crate::watchdog::GuestWriter::write_u64(&m, 0x3ffc, 7).is_err());
        assert!(matches!(
            m.read_u64(0x8000),
            Err(MemError::Unmapped { gpa: 0x8000, .. })
        ));
        // A 4-level walk through tables the test writes: PML4 at 0x1000 -> PDPT at 0x2000 ->
        // a 1 GiB page at 0, so virtual 0x10_0008 reads the same word.
        let w = |gpa: u64, v: u64| {
            m.0.write_slice(&v.to_le_bytes(), GuestAddress(gpa))
                .unwrap()
        };
        w(0x1000, 0x2000 | 0x3);
        w(0x2000, 0x83);
        let t = Translator::new(0x1000, false);
        assert_eq!(t.read_virt_u64(&m, 0x10_0008).unwrap(), 0xdead_beef);
    }
}
