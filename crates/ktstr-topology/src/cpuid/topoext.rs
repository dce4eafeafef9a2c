//! AMD's topology extensions (TOPOEXT) for an AMD CPU that lacks them.
//!
//! Without TOPOEXT, Linux cannot tell an AMD CPU's LLCs apart: it takes the LLC from the
//! die, and the die from the package, so every LLC of a NUMA node shows as one
//! (`cache/index3/shared_cpu_list` lists the whole node). Every Zen CPU has TOPOEXT; the
//! CPUs that lack it are older families and emulated ones (QEMU TCG's `-cpu max`, nested
//! KVM on top of it). [`with_topoext`] adds what TOPOEXT promises: the feature bit, the
//! cache-topology leaf 0x8000001D (built from the legacy cache leaves 0x80000005 and
//! 0x80000006, which every AMD CPU has) and the core/node leaf 0x8000001E, which
//! [`super::patch_cpuid`] then fills in per vCPU like a real CPU's.

use super::CpuidEntry;
use super::CPUID_FLAG_SIGNIFICANT_INDEX;

/// Leaf 0x80000001 ECX bit: topology extensions (leaves 0x8000001D and 0x8000001E).
pub const TOPOEXT: u32 = 1 << 22;
/// The highest extended leaf TOPOEXT needs.
const TOPOEXT_MAX_LEAF: u32 = 0x8000_001e;
/// Cache type in leaf 0x8000001D `EAX[4:0]`.
const DATA: u32 = 1;
/// Instruction cache.
const INSTRUCTION: u32 = 2;
/// Unified cache.
const UNIFIED: u32 = 3;
/// Leaf 0x8000001D `EAX[8]`: the cache initializes itself.
const SELF_INIT: u32 = 1 << 8;
/// Leaf 0x8000001D `EAX[9]`: the cache is fully associative.
const FULLY_ASSOCIATIVE: u32 = 1 << 9;

/// One cache as the legacy leaves describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cache {
    /// 1 data, 2 instruction, 3 unified.
    kind: u32,
    /// 1, 2 or 3.
    level: u32,
    /// Size in bytes.
    size: u64,
    /// Ways; `None` for fully associative.
    ways: Option<u32>,
    /// Line size in bytes.
    line: u32,
}

/// True when leaf 0x80000001 says the CPU has TOPOEXT.
pub fn has_topoext(host: &[CpuidEntry]) -> bool {
    find(host, 0x8000_0001).is_some_and(|e| e.ecx & TOPOEXT != 0)
}

/// `host` with TOPOEXT added, when it lacks it and has the legacy cache leaves to build
/// leaf 0x8000001D from; `None` when there is nothing to add or nothing to build from.
///
/// The extended maximum leaf is raised to 0x8000001E, the host's own 0x8000001D and
/// 0x8000001E entries (whatever an emulator left there) are replaced, and leaf
/// 0x8000001D lists L1d, L1i, L2 and L3 (those the legacy leaves report) followed by a
/// null subleaf. Sharing fields are left for [`super::patch_cpuid`] to set.
pub fn with_topoext(host: &[CpuidEntry]) -> Option<Vec<CpuidEntry>> {
    if has_topoext(host) {
        return None;
    }
    let max_ext = find(host, 0x8000_0000)?.eax;
    if max_ext < 0x8000_0006 {
        return None;
    }
    let l1 = find(host, 0x8000_0005)?;
    let l2l3 = find(host, 0x8000_0006)?;
    let caches = legacy_caches(l1, l2l3);
    if caches.is_empty() {
        return None;
    }
    let mut out: Vec<CpuidEntry> = host
        .iter()
        .filter(|e| !matches!(e.function, 0x8000_001d | 0x8000_001e))
        .map(|e| match e.function {
            0x8000_0000 => CpuidEntry {
                eax: e.eax.max(TOPOEXT_MAX_LEAF),
                ..*e
            },
            0x8000_0001 => CpuidEntry {
                ecx: e.ecx | TOPOEXT,
                ..*e
            },
            _ => *e,
        })
        .collect();
    let subleaves = caches.iter().map(cache_leaf).chain([CpuidEntry::default()]);
    out.extend(subleaves.enumerate().map(|(i, e)| CpuidEntry {
        function: 0x8000_001d,
        index: i as u32,
        flags: CPUID_FLAG_SIGNIFICANT_INDEX,
        ..e
    }));
    out.push(CpuidEntry {
        function: 0x8000_001e,
        ..CpuidEntry::default()
    });
    Some(out)
}

/// The host's entry for `function`, subleaf 0.
fn find(host: &[CpuidEntry], function: u32) -> Option<&CpuidEntry> {
    host.iter().find(|e| e.function == function && e.index == 0)
}

/// The caches leaves 0x80000005 (L1d in ECX, L1i in EDX) and 0x80000006 (L2 in ECX, L3 in
/// EDX) report, in leaf 0x8000001D's order; a cache of size or line size 0 is absent.
fn legacy_caches(l1: &CpuidEntry, l2l3: &CpuidEntry) -> Vec<Cache> {
    let l1_cache = |kind, reg: u32| Cache {
        kind,
        level: 1,
        size: u64::from(reg >> 24) * 1024,
        // 0xff: fully associative; otherwise the number of ways.
        ways: ((reg >> 16) & 0xff != 0xff).then_some((reg >> 16) & 0xff),
        line: reg & 0xff,
    };
    let l2 = Cache {
        kind: UNIFIED,
        level: 2,
        size: u64::from(l2l3.ecx >> 16) * 1024,
        ways: legacy_ways((l2l3.ecx >> 12) & 0xf),
        line: l2l3.ecx & 0xff,
    };
    let l3 = Cache {
        kind: UNIFIED,
        level: 3,
        size: u64::from(l2l3.edx >> 18) * 512 * 1024,
        ways: legacy_ways((l2l3.edx >> 12) & 0xf),
        line: l2l3.edx & 0xff,
    };
    [
        l1_cache(DATA, l1.ecx),
        l1_cache(INSTRUCTION, l1.edx),
        l2,
        l3,
    ]
    .into_iter()
    .filter(|c| c.size > 0 && c.line > 0 && c.ways != Some(0))
    .collect()
}

/// Ways from the 4-bit associativity code of leaf 0x80000006 (AMD's table); `None` is fully
/// associative, `Some(0)` disabled or reserved.
fn legacy_ways(code: u32) -> Option<u32> {
    match code {
        0xf => None,
        0x5 => Some(6),
        0x6 => Some(8),
        0x8 => Some(16),
        0xa => Some(32),
        0xb => Some(48),
        0xc => Some(64),
        0xd => Some(96),
        0xe => Some(128),
        1..=4 => Some(code),
        _ => Some(0),
    }
}

/// A leaf 0x8000001D subleaf for `c`, sharing field 0 (one logical processor). A fully
/// associative cache is one set of as many ways as the 10-bit field holds.
fn cache_leaf(c: &Cache) -> CpuidEntry {
    let line = u64::from(c.line.max(1));
    let lines = (c.size / line).max(1);
    let (ways, sets, fully) = match c.ways {
        Some(w) => (u64::from(w), (lines / u64::from(w)).max(1), 0),
        None => (lines.min(1 << 10), 1, FULLY_ASSOCIATIVE),
    };
    CpuidEntry {
        eax: c.kind | (c.level << 5) | SELF_INIT | fully,
        ebx: (((ways - 1) as u32 & 0x3ff) << 22) | ((line - 1) as u32 & 0xfff),
        ecx: (sets - 1).min(u64::from(u32::MAX)) as u32,
        edx: 0,
        ..CpuidEntry::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, eax: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            eax,
            ecx,
            edx,
            ..CpuidEntry::default()
        }
    }

    /// What QEMU TCG's `-cpu max` reports (its legacy AMD cache model): 64 KiB 2-way L1d
    /// and L1i, 512 KiB 16-way L2, 16 MiB 16-way L3, 64-byte lines, no TOPOEXT.
    fn tcg_max() -> Vec<CpuidEntry> {
        vec![
            entry(0x8000_0000, 0x8000_000a, 0, 0),
            entry(0x8000_0001, 0x0006_0fb1, 0x0000_0005, 0x2fd3_fbff),
            entry(0x8000_0005, 0, 0x4002_0140, 0x4002_0140),
            entry(0x8000_0006, 0, 0x0200_8140, 0x0080_8140),
        ]
    }

    fn leaf(out: &[CpuidEntry], function: u32, index: u32) -> CpuidEntry {
        *out.iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn legacy_leaves_become_leaf_8000001d() {
        let out = with_topoext(&tcg_max()).unwrap();
        assert!(has_topoext(&out));
        assert_eq!(leaf(&out, 0x8000_0000, 0).eax, 0x8000_001e);
        // L1d: 64 KiB, 2 ways, 64-byte lines -> 512 sets.
        let l1d = leaf(&out, 0x8000_001d, 0);
        assert_eq!(l1d.eax, DATA | (1 << 5) | SELF_INIT);
        assert_eq!((l1d.ebx >> 22, l1d.ebx & 0xfff, l1d.ecx), (1, 63, 511));
        assert_eq!(leaf(&out, 0x8000_001d, 1).eax & 0x1f, INSTRUCTION);
        // L2: 512 KiB, code 8 = 16 ways -> 512 sets.
        let l2 = leaf(&out, 0x8000_001d, 2);
        assert_eq!(l2.eax, UNIFIED | (2 << 5) | SELF_INIT);
        assert_eq!((l2.ebx >> 22, l2.ecx), (15, 511));
        // L3: 32 x 512 KiB = 16 MiB, 16 ways -> 16384 sets.
        let l3 = leaf(&out, 0x8000_001d, 3);
        assert_eq!(l3.eax, UNIFIED | (3 << 5) | SELF_INIT);
        assert_eq!((l3.ebx >> 22, l3.ecx), (15, 16383));
        assert_eq!(
            leaf(&out, 0x8000_001d, 4).eax,
            0,
            "null subleaf ends the list"
        );
        assert!(out
            .iter()
            .filter(|e| e.function == 0x8000_001d)
            .all(|e| e.flags == CPUID_FLAG_SIGNIFICANT_INDEX));
        assert_eq!(out.iter().filter(|e| e.function == 0x8000_001e).count(), 1);
    }

    #[test]
    fn nothing_to_add_or_nothing_to_build_from() {
        let mut has = tcg_max();
        has[1].ecx |= TOPOEXT;
        assert_eq!(with_topoext(&has), None, "already has TOPOEXT");
        let mut short = tcg_max();
        short[0].eax = 0x8000_0004;
        assert_eq!(with_topoext(&short), None, "no legacy cache leaves");
        let mut empty = tcg_max();
        empty[2].ecx = 0;
        empty[2].edx = 0;
        empty[3].ecx = 0;
        empty[3].edx = 0;
        assert_eq!(with_topoext(&empty), None, "no caches reported");
    }

    #[test]
    fn absent_and_fully_associative_caches() {
        // No L3 (EDX 0) and a fully associative L2 (code 0xf).
        let mut host = tcg_max();
        host[3].edx = 0;
        host[3].ecx = 0x0200_f140;
        let out = with_topoext(&host).unwrap();
        let l2 = leaf(&out, 0x8000_001d, 2);
        assert_ne!(l2.eax & FULLY_ASSOCIATIVE, 0);
        assert_eq!(
            (l2.ebx >> 22, l2.ecx),
            (1023, 0),
            "one set, ways capped by the field"
        );
        assert_eq!(leaf(&out, 0x8000_001d, 3).eax, 0, "no L3 subleaf");
        assert_eq!(legacy_ways(0x7), Some(0), "reserved code");
        assert_eq!(legacy_ways(0x5), Some(6));
    }
}
