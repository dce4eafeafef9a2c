//! CPUID leaves that describe a [`Topology`], and the APIC IDs they share with the ACPI tables.
//!
//! APIC IDs are laid out as x86 hardware lays them out, each level taking a power-of-two
//! field, least significant first:
//!
//! ```text
//! | node (package) | LLC within node (die) | core within LLC | SMT thread |
//!                  ^ package_shift         ^ llc_shift       ^ smt_bits
//! ```
//!
//! with `smt_bits = ceil(log2(threads))`, `core_bits = ceil(log2(cores))` and
//! `die_bits = ceil(log2(llcs))`. A topology whose dimensions are not powers of two leaves
//! gaps: (1,2,3,1) has APIC IDs 0,1,2,4,5,6. Each NUMA node is a package and each LLC a die.
//!
//! [`patch_cpuid`] takes the host's CPUID entries (as KVM_GET_SUPPORTED_CPUID reports them)
//! and rewrites the topology fields of leaves 0x1, 0x4, 0xB, 0x1F and, on AMD,
//! 0x80000008, 0x8000001D and 0x8000001E for one vCPU. An AMD host without TOPOEXT gets
//! those two leaves synthesized ([`topoext`]), so Linux sees the LLCs asked for.

pub mod topoext;

use crate::{Topology, TopologyError};

/// `CpuidEntry::flags` bit saying the entry depends on the subleaf (KVM's `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`).
pub const CPUID_FLAG_SIGNIFICANT_INDEX: u32 = 1;
/// Leaf 0x1 EDX bit: the logical processor count in `EBX[23:16]` is valid (HTT).
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0x1 ECX bit: x2APIC supported.
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// Highest APIC ID xAPIC mode can address (255 is broadcast).
const MAX_XAPIC_ID: u32 = 254;
/// Cache-parameter EAX bits 25:14: logical processors sharing the cache, minus one.
const CACHE_SHARING_MASK: u32 = 0xfff << 14;
/// Leaf 0x4 EAX bits 31:26: addressable core IDs in the package, minus one.
const CACHE_CORES_MASK: u32 = 0x3f << 26;

/// Topology level type in leaves 0xB/0x1F `ECX[15:8]`: invalid (end of list).
pub const LEVEL_INVALID: u32 = 0;
/// Topology level type: SMT.
pub const LEVEL_SMT: u32 = 1;
/// Topology level type: core.
pub const LEVEL_CORE: u32 = 2;
/// Topology level type: die.
pub const LEVEL_DIE: u32 = 5;

/// One CPUID entry, shaped like KVM's `kvm_cpuid_entry2` without its padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidEntry {
    /// Leaf (EAX input).
    pub function: u32,
    /// Subleaf (ECX input).
    pub index: u32,
    /// KVM flags such as [`CPUID_FLAG_SIGNIFICANT_INDEX`].
    pub flags: u32,
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
}

/// Why CPUID entries could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuidError {
    /// The topology is invalid.
    #[error("invalid topology for CPUID")]
    Topology {
        /// What is wrong with it.
        #[source]
        source: TopologyError,
    },
    /// The vCPU index is beyond the topology.
    #[error("vCPU {cpu} is beyond the topology's {cpus} CPUs")]
    CpuOutOfRange {
        /// The vCPU asked for.
        cpu: u32,
        /// CPUs in the topology.
        cpus: u32,
    },
    /// A leaf every x86 CPU has is absent from the host entries.
    #[error("host CPUID entries lack leaf {function:#x}")]
    MissingLeaf {
        /// The leaf.
        function: u32,
    },
}

/// CPU vendor, from leaf 0's vendor string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD` or `HygonGenuine` (same topology leaves).
    Amd,
    /// Anything else.
    Other,
}

impl CpuVendor {
    /// The vendor named by leaf 0's EBX, EDX, ECX.
    pub fn from_leaf0(leaf0: &CpuidEntry) -> Self {
        let mut s = [0u8; 12];
        s[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
        s[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
        s[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
        match &s {
            b"GenuineIntel" => CpuVendor::Intel,
            b"AuthenticAMD" | b"HygonGenuine" => CpuVendor::Amd,
            _ => CpuVendor::Other,
        }
    }
}

/// Bits needed to number `n` things: ceil(log2(n)), 0 for n <= 1.
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - (n - 1).leading_zeros()
    }
}

/// `2^bits - 1`, saturating at `u32::MAX`.
fn mask(bits: u32) -> u32 {
    1u32.checked_shl(bits).map_or(u32::MAX, |v| v - 1)
}

/// The APIC ID field widths of a validated topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApicLayout {
    topology: Topology,
    smt_bits: u32,
    core_bits: u32,
    die_bits: u32,
}

impl ApicLayout {
    /// The layout of `topology`, which must validate.
    pub fn new(topology: &Topology) -> Result<Self, TopologyError> {
        topology.validate()?;
        Ok(ApicLayout {
            topology: *topology,
            smt_bits: bits_for(topology.threads),
            core_bits: bits_for(topology.cores),
            die_bits: bits_for(topology.llcs),
        })
    }

    /// The topology this layout numbers.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Bits of the SMT thread field.
    pub fn smt_bits(&self) -> u32 {
        self.smt_bits
    }

    /// Bits of the core-within-LLC field.
    pub fn core_bits(&self) -> u32 {
        self.core_bits
    }

    /// Bits of the LLC-within-node (die) field.
    pub fn die_bits(&self) -> u32 {
        self.die_bits
    }

    /// Right shift of an APIC ID that yields its global LLC (die) ID.
    pub fn llc_shift(&self) -> u32 {
        self.smt_bits + self.core_bits
    }

    /// Right shift of an APIC ID that yields its node (package) ID.
    pub fn package_shift(&self) -> u32 {
        self.llc_shift() + self.die_bits
    }

    /// APIC ID of `cpu`, or `None` beyond the topology.
    pub fn apic_id(&self, cpu: u32) -> Option<u32> {
        let t = &self.topology;
        let p = t.place(cpu)?;
        let llc_in_node = p.llc % t.llcs;
        let core_in_llc = p.core % t.cores;
        let id = p.node.checked_shl(self.package_shift())?
            | llc_in_node.checked_shl(self.llc_shift())?
            | core_in_llc.checked_shl(self.smt_bits)?
            | p.thread;
        Some(id)
    }

    /// `(cpu, APIC ID)` for every CPU, in CPU order.
    pub fn apic_ids(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..self.topology.total_cpus()).filter_map(|c| self.apic_id(c).map(|id| (c, id)))
    }

    /// Highest APIC ID of the topology (the last CPU's).
    pub fn max_apic_id(&self) -> u32 {
        self.topology
            .total_cpus()
            .checked_sub(1)
            .and_then(|c| self.apic_id(c))
            .unwrap_or(0)
    }

    /// Logical-processor sharing width (in APIC ID bits) of a cache at `level`.
    fn cache_sharing_bits(&self, level: u32) -> u32 {
        match level {
            1 | 2 => self.smt_bits,
            3 => self.llc_shift(),
            _ => self.package_shift(),
        }
    }
}

/// APIC ID of `cpu` in `topology`; the ACPI MADT/SRAT and every CPUID leaf use this numbering.
pub fn apic_id(topology: &Topology, cpu: u32) -> Result<u32, CpuidError> {
    let layout = ApicLayout::new(topology).map_err(|source| CpuidError::Topology { source })?;
    layout.apic_id(cpu).ok_or(CpuidError::CpuOutOfRange {
        cpu,
        cpus: topology.total_cpus(),
    })
}

/// Leaf 0x1: initial APIC ID in `EBX[31:24]`, addressable IDs per package in `EBX[23:16]`, HTT, x2APIC.
pub fn leaf_0x1(layout: &ApicLayout, apic_id: u32, host: CpuidEntry) -> CpuidEntry {
    let per_package = 1u32
        .checked_shl(layout.package_shift())
        .unwrap_or(u32::MAX)
        .min(0xff);
    let mut e = host;
    e.ebx = (host.ebx & 0xffff) | (per_package << 16) | ((apic_id & 0xff) << 24);
    if layout.topology().cpus_per_node() > 1 {
        e.edx |= LEAF1_EDX_HTT;
    } else {
        e.edx &= !LEAF1_EDX_HTT;
    }
    if layout.max_apic_id() > MAX_XAPIC_ID {
        e.ecx |= LEAF1_ECX_X2APIC;
    }
    e
}

/// Rewrites the sharing field `EAX[25:14]` of a cache-parameter subleaf (leaf 0x4 or 0x8000001D).
fn with_cache_sharing(layout: &ApicLayout, eax: u32) -> u32 {
    let level = (eax >> 5) & 0x7;
    let sharing = mask(layout.cache_sharing_bits(level)) & 0xfff;
    (eax & !CACHE_SHARING_MASK) | (sharing << 14)
}

/// Leaf 0x4 subleaf: L1/L2 shared by a core's threads, L3 by its LLC; `EAX[31:26]` = cores per package - 1.
pub fn leaf_0x4(layout: &ApicLayout, host: CpuidEntry) -> CpuidEntry {
    if host.eax & 0x1f == 0 {
        return host;
    }
    let core_ids = mask(layout.core_bits() + layout.die_bits()).min(0x3f);
    let mut e = host;
    e.eax = (with_cache_sharing(layout, host.eax) & !CACHE_CORES_MASK) | (core_ids << 26);
    e
}

/// One subleaf of leaf 0xB or 0x1F.
fn level(function: u32, index: u32, kind: u32, shift: u32, count: u32, apic: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        flags: CPUID_FLAG_SIGNIFICANT_INDEX,
        eax: shift & 0x1f,
        ebx: count & 0xffff,
        ecx: (kind << 8) | (index & 0xff),
        edx: apic,
    }
}

/// Leaf 0xB: SMT and core levels, then an invalid level; EDX is the x2APIC ID.
pub fn leaf_0xb(layout: &ApicLayout, apic_id: u32) -> Vec<CpuidEntry> {
    let t = layout.topology();
    vec![
        level(0xb, 0, LEVEL_SMT, layout.smt_bits(), t.threads, apic_id),
        level(
            0xb,
            1,
            LEVEL_CORE,
            layout.package_shift(),
            t.cpus_per_node(),
            apic_id,
        ),
        level(0xb, 2, LEVEL_INVALID, 0, 0, apic_id),
    ]
}

/// Leaf 0x1F: SMT, core and die (one die per LLC) levels, then an invalid level.
pub fn leaf_0x1f(layout: &ApicLayout, apic_id: u32) -> Vec<CpuidEntry> {
    let t = layout.topology();
    vec![
        level(0x1f, 0, LEVEL_SMT, layout.smt_bits(), t.threads, apic_id),
        level(
            0x1f,
            1,
            LEVEL_CORE,
            layout.llc_shift(),
            t.cpus_per_llc(),
            apic_id,
        ),
        level(
            0x1f,
            2,
            LEVEL_DIE,
            layout.package_shift(),
            t.cpus_per_node(),
            apic_id,
        ),
        level(0x1f, 3, LEVEL_INVALID, 0, 0, apic_id),
    ]
}

/// AMD leaf 0x80000008: ECX ApicIdSize (bits 15:12) = package shift, NC (bits 7:0) = CPUs per package - 1.
pub fn leaf_0x8000_0008(layout: &ApicLayout, host: CpuidEntry) -> CpuidEntry {
    let nc = layout.topology().cpus_per_node().saturating_sub(1) & 0xff;
    let mut e = host;
    e.ecx = (host.ecx & !0xf0ff) | ((layout.package_shift() & 0xf) << 12) | nc;
    e
}

/// AMD leaf 0x8000001D subleaf: cache sharing as in leaf 0x4 (no core count field).
pub fn leaf_0x8000_001d(layout: &ApicLayout, host: CpuidEntry) -> CpuidEntry {
    if host.eax & 0x1f == 0 {
        return host;
    }
    let mut e = host;
    e.eax = with_cache_sharing(layout, host.eax);
    e
}

/// AMD leaf 0x8000001E: extended APIC ID, core ID and threads per core, and the AMD node ID
/// (ECX[7:0]) with nodes per package minus one (ECX[10:8]), one AMD node per LLC.
///
/// With TOPOEXT, Linux takes an AMD CPU's die domain from the node ID; ktstr makes each LLC
/// a die (as leaf 0x1F does on Intel), so the node ID numbers LLCs, not NUMA nodes.
pub fn leaf_0x8000_001e(
    layout: &ApicLayout,
    cpu: u32,
    apic_id: u32,
    host: CpuidEntry,
) -> CpuidEntry {
    let t = layout.topology();
    let llc = t.place(cpu).map_or(0, |p| p.llc);
    let core_id = (apic_id >> layout.smt_bits()) & 0xff;
    let threads_minus_one = t.threads.saturating_sub(1) & 0xff;
    let nodes_minus_one = t.llcs.saturating_sub(1) & 0x7;
    CpuidEntry {
        eax: apic_id,
        ebx: (host.ebx & !0xffff) | (threads_minus_one << 8) | core_id,
        ecx: (nodes_minus_one << 8) | (llc & 0xff),
        edx: 0,
        ..host
    }
}

/// The host's entry for `function`/`index`.
fn find(host: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    host.iter()
        .find(|e| e.function == function && e.index == index)
}

/// The host's CPUID entries with every topology field rewritten for vCPU `cpu` of `topology`.
///
/// Leaves 0xB and 0x1F are regenerated whole when the maximum basic leaf (leaf 0 EAX)
/// reaches them; AMD leaves are rewritten only on AMD hosts and only if present, after
/// [`topoext::with_topoext`] has added them to an AMD host that lacks TOPOEXT.
/// Every other entry passes through unchanged, in the host's order.
pub fn patch_cpuid(
    topology: &Topology,
    cpu: u32,
    host: &[CpuidEntry],
) -> Result<Vec<CpuidEntry>, CpuidError> {
    let layout = ApicLayout::new(topology).map_err(|source| CpuidError::Topology { source })?;
    let apic = layout.apic_id(cpu).ok_or(CpuidError::CpuOutOfRange {
        cpu,
        cpus: topology.total_cpus(),
    })?;
    let leaf0 = find(host, 0, 0).ok_or(CpuidError::MissingLeaf { function: 0 })?;
    find(host, 1, 0).ok_or(CpuidError::MissingLeaf { function: 1 })?;
    let max_basic = leaf0.eax;
    let amd = CpuVendor::from_leaf0(leaf0) == CpuVendor::Amd;
    let synthesized = amd.then(|| topoext::with_topoext(host)).flatten();
    let host = synthesized.as_deref().unwrap_or(host);

    let mut out = Vec::with_capacity(host.len() + 7);
    let (mut done_b, mut done_1f) = (false, false);
    for e in host {
        match e.function {
            0x1 => out.push(leaf_0x1(&layout, apic, *e)),
            0x4 => out.push(leaf_0x4(&layout, *e)),
            0xb if !done_b => {
                out.extend(leaf_0xb(&layout, apic));
                done_b = true;
            }
            0x1f if !done_1f => {
                out.extend(leaf_0x1f(&layout, apic));
                done_1f = true;
            }
            0xb | 0x1f => {}
            0x8000_0008 if amd => out.push(leaf_0x8000_0008(&layout, *e)),
            0x8000_001d if amd => out.push(leaf_0x8000_001d(&layout, *e)),
            0x8000_001e if amd => out.push(leaf_0x8000_001e(&layout, cpu, apic, *e)),
            _ => out.push(*e),
        }
    }
    if !done_b && max_basic >= 0xb {
        out.extend(leaf_0xb(&layout, apic));
    }
    if !done_1f && max_basic >= 0x1f {
        out.extend(leaf_0x1f(&layout, apic));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(n: u32, l: u32, c: u32, t: u32) -> Topology {
        Topology::new(n, l, c, t).unwrap()
    }

    fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            flags: 0,
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    fn vendor(function_max: u32, name: &[u8; 12]) -> CpuidEntry {
        let word = |i: usize| u32::from_le_bytes(name[i..i + 4].try_into().unwrap());
        entry(0, 0, function_max, word(0), word(8), word(4))
    }

    /// A host with 0x1, four leaf-4 caches, a (wrong) leaf 0xB, and AMD leaves.
    fn host(name: &[u8; 12], max_basic: u32) -> Vec<CpuidEntry> {
        vec![
            vendor(max_basic, name),
            entry(1, 0, 0x000a_06a4, 0x0010_0800, 0x7ffa_f3bf, 0x0f8b_fbff),
            entry(4, 0, 0xfc00_4121, 0x01c0_003f, 0x3f, 0),
            entry(4, 1, 0xfc00_4122, 0x01c0_003f, 0x3f, 0),
            entry(4, 2, 0xfc00_4143, 0x03c0_003f, 0x7ff, 0),
            entry(4, 3, 0xfc0f_c163, 0x03c0_003f, 0x3fff, 6),
            entry(4, 4, 0, 0, 0, 0),
            entry(0xb, 0, 1, 2, 0x100, 7),
            entry(0xb, 1, 7, 64, 0x201, 7),
            entry(0x8000_0008, 0, 0x3030, 0, 0x0000_700f, 0),
            entry(0x8000_001d, 0, 0x0000_4121, 0x01c0_003f, 0x3f, 0),
            entry(0x8000_001d, 3, 0x0003_c163, 0x03c0_003f, 0x7fff, 1),
            entry(0x8000_001e, 0, 7, 0x0000_0103, 0, 0),
        ]
    }

    #[test]
    fn apic_ids_by_hand() {
        // (2,2,3,2): 1 SMT bit, 2 core bits, 1 die bit; packages start every 16 IDs.
        let t = topo(2, 2, 3, 2);
        let l = ApicLayout::new(&t).unwrap();
        assert_eq!((l.smt_bits(), l.core_bits(), l.die_bits()), (1, 2, 1));
        assert_eq!((l.llc_shift(), l.package_shift()), (3, 4));
        assert_eq!(apic_id(&t, 0), Ok(0));
        assert_eq!(apic_id(&t, 5), Ok(5));
        assert_eq!(apic_id(&t, 6), Ok(8), "second LLC starts at bit 3");
        assert_eq!(apic_id(&t, 7), Ok(9));
        assert_eq!(apic_id(&t, 12), Ok(16), "second node starts at bit 4");
        assert_eq!(apic_id(&t, 19), Ok(25));
        assert_eq!(l.max_apic_id(), 29);
        assert_eq!(
            apic_id(&t, 24),
            Err(CpuidError::CpuOutOfRange { cpu: 24, cpus: 24 })
        );
        let flat = topo(1, 1, 4, 1);
        let ids: Vec<u32> = ApicLayout::new(&flat)
            .unwrap()
            .apic_ids()
            .map(|p| p.1)
            .collect();
        assert_eq!(ids, vec![0, 1, 2, 3]);
        let bad = Topology { cores: 0, ..flat };
        assert!(matches!(apic_id(&bad, 0), Err(CpuidError::Topology { .. })));
    }

    #[test]
    fn apic_ids_beyond_xapic() {
        // (2,3,20,2): 1 + 5 + 2 bits, so node 1 starts at 256 and the last CPU is
        // 256 | 2 << 6 | 19 << 1 | 1 = 423.
        let l = ApicLayout::new(&topo(2, 3, 20, 2)).unwrap();
        assert_eq!(l.apic_id(120), Some(256));
        assert_eq!(l.apic_id(239), Some(423));
        assert_eq!(l.max_apic_id(), 423);
    }

    #[test]
    fn leaf_1_golden() {
        let l = ApicLayout::new(&topo(2, 2, 3, 2)).unwrap();
        let e = leaf_0x1(&l, 25, entry(1, 0, 0xa06a4, 0x0010_0800, 0, 0));
        assert_eq!(
            e.ebx, 0x1910_0800,
            "APIC 25, 16 IDs per package, CLFLUSH kept"
        );
        assert_eq!(e.edx, 1 << 28, "HTT");
        assert_eq!(e.ecx, 0, "no x2APIC needed");
        let single = ApicLayout::new(&topo(2, 1, 1, 1)).unwrap();
        let e = leaf_0x1(&single, 1, entry(1, 0, 0, 0x0010_0800, 0, 1 << 28));
        assert_eq!((e.ebx, e.edx), (0x0101_0800, 0));
        let big = ApicLayout::new(&topo(2, 3, 20, 2)).unwrap();
        let e = leaf_0x1(&big, 423, entry(1, 0, 0, 0, 0, 0));
        assert_eq!(
            e.ebx, 0xa7ff_0000,
            "low 8 bits of 423; 256 IDs saturate at 255"
        );
        assert_eq!(e.ecx, 1 << 21, "x2APIC");
    }

    #[test]
    fn leaf_4_golden_per_subleaf() {
        let l = ApicLayout::new(&topo(2, 2, 3, 2)).unwrap();
        let h = host(b"GenuineIntel", 0x1f);
        let eax: Vec<u32> = h
            .iter()
            .filter(|e| e.function == 4)
            .map(|e| leaf_0x4(&l, *e).eax)
            .collect();
        // Cores per package field: 3 bits -> 7. L1d/L1i/L2: 2 threads -> 1. L3: 3 bits -> 7.
        assert_eq!(
            eax,
            vec![0x1c00_4121, 0x1c00_4122, 0x1c00_4143, 0x1c01_c163, 0]
        );
        let l = ApicLayout::new(&topo(1, 1, 2, 1)).unwrap();
        let l3 = leaf_0x4(&l, h[5]);
        assert_eq!(l3.eax, 0x0400_4163, "2 cores: sharing 1, cores 1");
        assert_eq!((l3.ebx, l3.ecx, l3.edx), (h[5].ebx, h[5].ecx, h[5].edx));
    }

    #[test]
    fn leaf_b_and_1f_golden() {
        let l = ApicLayout::new(&topo(2, 2, 3, 2)).unwrap();
        let b: Vec<_> = leaf_0xb(&l, 25)
            .iter()
            .map(|e| (e.index, e.eax, e.ebx, e.ecx, e.edx, e.flags))
            .collect();
        assert_eq!(
            b,
            vec![
                (0, 1, 2, 0x100, 25, 1),
                (1, 4, 12, 0x201, 25, 1),
                (2, 0, 0, 0x002, 25, 1)
            ]
        );
        let f: Vec<_> = leaf_0x1f(&l, 25)
            .iter()
            .map(|e| (e.index, e.eax, e.ebx, e.ecx, e.edx))
            .collect();
        assert_eq!(
            f,
            vec![
                (0, 1, 2, 0x100, 25),
                (1, 3, 6, 0x201, 25),
                (2, 4, 12, 0x502, 25),
                (3, 0, 0, 0x003, 25)
            ]
        );
        let no_smt = ApicLayout::new(&topo(1, 1, 4, 1)).unwrap();
        let b = leaf_0xb(&no_smt, 3);
        assert_eq!((b[0].eax, b[0].ebx, b[1].eax, b[1].ebx), (0, 1, 2, 4));
    }

    #[test]
    fn amd_leaves_golden() {
        let l = ApicLayout::new(&topo(2, 2, 3, 2)).unwrap();
        let h = host(b"AuthenticAMD", 0x10);
        assert_eq!(leaf_0x8000_0008(&l, h[9]).ecx, 0x400b);
        assert_eq!(leaf_0x8000_001d(&l, h[10]).eax, 0x4121);
        assert_eq!(leaf_0x8000_001d(&l, h[11]).eax, 0x0001_c163);
        let e = leaf_0x8000_001e(&l, 19, 25, h[12]);
        // cpu 19 of 2,2,3,2 sits in LLC 3 of 4 (2 per node).
        assert_eq!((e.eax, e.ebx, e.ecx, e.edx), (25, 0x10c, 0x103, 0));
    }

    #[test]
    fn patch_intel_host() {
        let t = topo(2, 2, 3, 2);
        let out = patch_cpuid(&t, 19, &host(b"GenuineIntel", 0x1f)).unwrap();
        let get = |f, i| {
            out.iter()
                .find(|e| e.function == f && e.index == i)
                .unwrap()
        };
        assert_eq!(get(1, 0).ebx >> 24, 25);
        assert_eq!(get(4, 3).eax, 0x1c01_c163);
        assert_eq!(out.iter().filter(|e| e.function == 0xb).count(), 3);
        assert_eq!(get(0xb, 1).ebx, 12, "host's stale 64 replaced");
        assert_eq!(
            out.iter().filter(|e| e.function == 0x1f).count(),
            4,
            "added"
        );
        // AMD leaves pass through untouched on Intel.
        assert_eq!(get(0x8000_001e, 0).eax, 7);
        assert_eq!(get(0x8000_0008, 0).ecx, 0x700f);
        // Leaf 0xB comes where the host had it.
        let pos = out.iter().position(|e| e.function == 0xb).unwrap();
        assert_eq!(out[pos - 1].function, 4);
    }

    #[test]
    fn patch_amd_host() {
        let t = topo(2, 2, 3, 2);
        let out = patch_cpuid(&t, 19, &host(b"AuthenticAMD", 0x10)).unwrap();
        let get = |f, i| {
            out.iter()
                .find(|e| e.function == f && e.index == i)
                .unwrap()
        };
        assert_eq!(get(0x8000_001e, 0).eax, 25);
        assert_eq!(get(0x8000_001d, 3).eax, 0x0001_c163);
        assert_eq!(get(0x8000_0008, 0).ecx, 0x400b);
        assert!(
            out.iter().all(|e| e.function != 0x1f),
            "max basic leaf 0x10"
        );
        assert_eq!(
            CpuVendor::from_leaf0(&vendor(0, b"HygonGenuine")),
            CpuVendor::Amd
        );
        assert_eq!(
            CpuVendor::from_leaf0(&vendor(0, b"KVMKVMKVM\0\0\0")),
            CpuVendor::Other
        );
    }

    #[test]
    fn amd_host_without_topoext_gets_llc_leaves() {
        // QEMU TCG's -cpu max: AMD, legacy cache leaves only, extended maximum 0x8000000A.
        let mut h = host(b"AuthenticAMD", 0x10);
        h.retain(|e| !matches!(e.function, 0x8000_001d | 0x8000_001e));
        h.push(entry(0x8000_0000, 0, 0x8000_000a, 0, 0, 0));
        h.push(entry(0x8000_0001, 0, 0x0006_0fb1, 0, 5, 0x2fd3_fbff));
        h.push(entry(0x8000_0005, 0, 0, 0, 0x4002_0140, 0x4002_0140));
        h.push(entry(0x8000_0006, 0, 0, 0, 0x0200_8140, 0x0080_8140));
        // (1,2,2,1): cpu 2 is the first CPU of the second LLC.
        let out = patch_cpuid(&topo(1, 2, 2, 1), 2, &h).unwrap();
        let get = |f, i| {
            out.iter()
                .find(|e| e.function == f && e.index == i)
                .unwrap()
        };
        assert_ne!(get(0x8000_0001, 0).ecx & topoext::TOPOEXT, 0);
        assert_eq!(get(0x8000_0000, 0).eax, 0x8000_001e);
        assert_eq!(get(0x8000_001e, 0).ecx, (1 << 8) | 1, "LLC 1 of 2");
        assert_eq!(get(0x8000_001e, 0).eax, 2, "APIC ID");
        // L3 shared by the LLC's two CPUs, L1d by one.
        assert_eq!((get(0x8000_001d, 3).eax >> 14) & 0xfff, 1);
        assert_eq!((get(0x8000_001d, 0).eax >> 14) & 0xfff, 0);
    }

    #[test]
    fn patch_adds_leaf_b_when_absent() {
        let t = topo(1, 1, 2, 2);
        let h = vec![vendor(0xd, b"GenuineIntel"), entry(1, 0, 0, 0, 0, 0)];
        let out = patch_cpuid(&t, 3, &h).unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(out[2].function, 0xb);
        assert_eq!(out[3].edx, 3);
    }

    #[test]
    fn patch_errors() {
        let t = topo(1, 1, 2, 1);
        let h = host(b"GenuineIntel", 0x1f);
        assert_eq!(
            patch_cpuid(&t, 2, &h),
            Err(CpuidError::CpuOutOfRange { cpu: 2, cpus: 2 })
        );
        assert_eq!(
            patch_cpuid(&t, 0, &h[1..]),
            Err(CpuidError::MissingLeaf { function: 0 })
        );
        assert_eq!(
            patch_cpuid(&t, 0, &h[..1]),
            Err(CpuidError::MissingLeaf { function: 1 })
        );
    }
}
