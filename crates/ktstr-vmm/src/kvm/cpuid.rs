//! CPUID for each vCPU: the host's supported leaves with the topology fields of
//! [`ktstr_topology::patch_cpuid`] applied.

use ktstr_topology::{patch_cpuid, CpuidEntry, Topology};
use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

use super::error::ioctl;
use super::KvmError;

/// KVM's supported CPUID entries in ktstr-topology's shape.
pub fn supported(kvm: &Kvm) -> Result<Vec<CpuidEntry>, KvmError> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    Ok(cpuid.as_slice().iter().map(from_kvm).collect())
}

/// One entry in ktstr-topology's shape.
pub fn from_kvm(e: &kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

/// One entry in KVM's shape.
pub fn to_kvm(e: &CpuidEntry) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        ..Default::default()
    }
}

/// The CPUID of vCPU `cpu` of `topology`, from the host's supported entries.
pub fn for_vcpu(topology: &Topology, cpu: u32, host: &[CpuidEntry]) -> Result<CpuId, KvmError> {
    let patched =
        patch_cpuid(topology, cpu, host).map_err(|source| KvmError::Cpuid { cpu, source })?;
    let entries: Vec<kvm_cpuid_entry2> = patched.iter().map(to_kvm).collect();
    CpuId::from_entries(&entries).map_err(|_| KvmError::BadConfig {
        reason: format!("{} CPUID entries are more than KVM takes", entries.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_patch() {
        let leaf0 = CpuidEntry {
            function: 0,
            eax: 0xb,
            ebx: u32::from_le_bytes(*b"Genu"),
            edx: u32::from_le_bytes(*b"ineI"),
            ecx: u32::from_le_bytes(*b"ntel"),
            ..Default::default()
        };
        let leaf1 = CpuidEntry {
            function: 1,
            ..Default::default()
        };
        assert_eq!(from_kvm(&to_kvm(&leaf0)), leaf0);
        let t = Topology::new(1, 1, 2, 2).unwrap();
        let c = for_vcpu(&t, 3, &[leaf0, leaf1]).unwrap();
        let e = c.as_slice();
        assert_eq!(e[1].ebx >> 24, 3, "APIC ID of vCPU 3");
        assert!(e
            .iter()
            .any(|e| e.function == 0xb && e.index == 1 && e.ebx == 4));
        assert!(for_vcpu(&t, 4, &[leaf0, leaf1]).is_err());
    }
}
