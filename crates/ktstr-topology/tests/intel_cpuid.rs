//! `patch_cpuid` on CPUID dumps of real Intel CPUs, decoded the way Linux decodes an Intel CPU.
//!
//! Nested VMX cannot be run on the machines ktstr is tested on, so the Intel-only paths of
//! `patch_cpuid` are checked here, host-free. Every fixture under `tests/fixtures/cpuid/` is
//! an excerpt of one logical CPU of a real dump, values unmodified, all from the GitHub
//! repository InstLatx64/InstLatx64 (snapshot at commit
//! 087af2c7d72c9a6af85a3a079e8fdb878db23ba1), AIDA64-format `..._CPUID.txt` files:
//!
//! | fixture | source file (`GenuineIntel/...`), block | CPU |
//! | --- | --- | --- |
//! | `intel_core_i7_8700k.txt` | `GenuineIntel00906EA_Coffeelake_CPUID.txt`, Logical CPU #0 | Intel(R) Core(TM) i7-8700K (Coffee Lake-S, 6C/12T, max basic leaf 0x16: no leaf 0x1F) |
//! | `intel_xeon_gold_5520p.txt` | `GenuineIntel00C06F2_EmeraldRapids_01_CPUID.txt`, Logical CPU #0 | INTEL(R) XEON(R) GOLD 5520+ (Emerald Rapids, 2 sockets x 28C x 2T, leaf 0x1F) |
//! | `intel_core_i9_12900k_pcore.txt` | `GenuineIntel0090672_AlderLake_01_LC_BC_CPUID.txt`, Logical CPU #0 | 12th Gen Intel(R) Core(TM) i9-12900K (Alder Lake-S hybrid), a Golden Cove P-core |
//! | `intel_core_i9_12900k_ecore.txt` | same file, Logical CPU #16 | the same i9-12900K, a Gracemont E-core |
//!
//! For each dump and topology, every vCPU's patched entries are decoded as Linux does on
//! Intel (arch/x86/kernel/cpu/topology_common.c, topology_ext.c, cacheinfo.c):
//!
//! * vendor from leaf 0's string;
//! * x2APIC ID and the SMT/core/die shifts from leaf 0x1F when the maximum basic leaf reaches
//!   it, else from leaf 0xB (a level's shift propagates to the levels above it); package ID is
//!   the APIC ID shifted by the last level's shift;
//! * LLC ID is the APIC ID shifted by ceil(log2(leaf 4 L3 (else L2) `EAX[25:14]` + 1));
//! * the legacy path (leaf 1 `EBX[23:16]` with HTT, leaf 4 `EAX[31:26]`) must agree with it.
//!
//! The packages, dies, LLCs, cores and SMT siblings that decoding yields must be the
//! topology's, every APIC ID unique and equal to `ApicLayout::apic_id`, and every entry that
//! is not a topology leaf (AMD's extended leaves above all) must pass through unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ktstr_topology::cpuid::{
    CpuVendor, CPUID_FLAG_SIGNIFICANT_INDEX, LEVEL_CORE, LEVEL_DIE, LEVEL_INVALID, LEVEL_SMT,
};
use ktstr_topology::{format_cpu_list, patch_cpuid, ApicLayout, CpuidEntry, Topology};

/// (NUMA nodes, LLCs per node, cores per LLC, threads per core) checked on every dump.
const TOPOLOGIES: [(u32, u32, u32, u32); 5] = [
    (1, 1, 2, 1),
    (2, 2, 2, 2),
    (1, 2, 4, 2),
    (1, 1, 3, 1),
    (2, 1, 1, 2),
];

/// What a fixture's own (unpatched) values say, as the decoder reads them: a check of both
/// the fixture and the decoder against the machine the dump names.
struct HostFacts {
    /// Fixture file name.
    file: &'static str,
    /// Text the brand string (leaves 0x80000002..4) contains.
    brand: &'static str,
    /// Leaf 0 EAX.
    max_basic: u32,
    /// x2APIC ID of the dumped logical CPU.
    x2apic: u32,
    /// Right shift of the x2APIC ID to the core ID.
    smt_shift: u32,
    /// Right shift of the x2APIC ID to the package ID.
    package_shift: u32,
    /// Right shift of the x2APIC ID to the L2 ID.
    l2_shift: u32,
    /// Right shift of the x2APIC ID to the L3 ID.
    l3_shift: u32,
}

const COFFEE_LAKE: HostFacts = HostFacts {
    file: "intel_core_i7_8700k.txt",
    brand: "Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz",
    max_basic: 0x16,
    x2apic: 0,
    smt_shift: 1,
    package_shift: 4,
    l2_shift: 1,
    l3_shift: 4,
};

const EMERALD_RAPIDS: HostFacts = HostFacts {
    file: "intel_xeon_gold_5520p.txt",
    brand: "INTEL(R) XEON(R) GOLD 5520+",
    max_basic: 0x20,
    x2apic: 0,
    smt_shift: 1,
    package_shift: 7,
    l2_shift: 1,
    l3_shift: 7,
};

const ALDER_LAKE_P: HostFacts = HostFacts {
    file: "intel_core_i9_12900k_pcore.txt",
    brand: "12th Gen Intel(R) Core(TM) i9-12900K",
    max_basic: 0x20,
    x2apic: 0,
    smt_shift: 1,
    package_shift: 7,
    l2_shift: 3,
    l3_shift: 7,
};

const ALDER_LAKE_E: HostFacts = HostFacts {
    file: "intel_core_i9_12900k_ecore.txt",
    brand: "12th Gen Intel(R) Core(TM) i9-12900K",
    max_basic: 0x20,
    x2apic: 0x40,
    smt_shift: 1,
    package_shift: 7,
    l2_shift: 3,
    l3_shift: 7,
};

/// Leaves that `patch_cpuid` may rewrite on Intel; every other entry must pass through.
const INTEL_TOPOLOGY_LEAVES: [u32; 4] = [0x1, 0x4, 0xb, 0x1f];

/// Leaf 0x4 / 0x8000001D `EAX[25:14]`.
const CACHE_SHARING_MASK: u32 = 0xfff << 14;
/// Leaf 0x4 `EAX[31:26]`.
const CACHE_CORES_MASK: u32 = 0x3f << 26;
/// Leaf 0x1 EDX HTT.
const HTT: u32 = 1 << 28;

/// Parses a fixture: `leaf subleaf eax ebx ecx edx` in hex, `#` comments. Leaves 0x4, 0xB and
/// 0x1F carry KVM's significant-index flag, as KVM_GET_SUPPORTED_CPUID reports them.
fn load(file: &str) -> Vec<CpuidEntry> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/cpuid", file]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: Vec<u32> = line
            .split_whitespace()
            .map(|w| u32::from_str_radix(w, 16))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{file}:{}: {e}: {line}", n + 1));
        let [function, index, eax, ebx, ecx, edx] = v[..] else {
            panic!("{file}:{}: want 6 hex words: {line}", n + 1);
        };
        let flags = if [0x4, 0xb, 0x1f].contains(&function) {
            CPUID_FLAG_SIGNIFICANT_INDEX
        } else {
            0
        };
        entries.push(CpuidEntry {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            edx,
        });
    }
    assert!(!entries.is_empty(), "{file}: no entries");
    entries
}

/// CPUID as the guest sees it: the entry for exactly `leaf`/`sub`, else all zeros (what KVM
/// answers for a subleaf it has no entry for).
fn cpuid(entries: &[CpuidEntry], leaf: u32, sub: u32) -> [u32; 4] {
    entries
        .iter()
        .find(|e| e.function == leaf && e.index == sub)
        .map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
}

/// Linux's `get_count_order`: ceil(log2(n)), 0 for n <= 1.
fn count_order(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - (n - 1).leading_zeros()
    }
}

/// Linux's topology domains (`enum x86_topology_domains`).
const SMT: usize = 0;
const CORE: usize = 1;
const TILE: usize = 3;
const DIE: usize = 4;
const DIEGRP: usize = 5;
const DOMAINS: usize = 7;

/// One CPU's topology as Linux on Intel derives it from CPUID.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decoded {
    /// Leaf 0's vendor string.
    vendor: String,
    /// Leaf 0 EAX.
    max_basic: u32,
    /// Leaf the topology came from: 0x1F or 0xB.
    leaf: u32,
    /// x2APIC ID (subleaf 0 EDX of that leaf).
    x2apic: u32,
    /// Leaf 1 `EBX[31:24]`.
    initial_apic: u32,
    /// `dom_shifts[]`: a domain's shift yields the ID of the domain above it.
    shifts: [u32; DOMAINS],
    /// `dom_ncpus[]`.
    ncpus: [u32; DOMAINS],
    /// Shift to the SMT-sibling group from the legacy leaf 1 / leaf 4 path.
    legacy_smt_shift: u32,
    /// Shift to the package from the legacy path.
    legacy_package_shift: u32,
    /// `ceil(log2)` of the L2's sharing count.
    l2_shift: u32,
    /// `ceil(log2)` of the LLC's (L3, else L2) sharing count.
    llc_shift: u32,
}

impl Decoded {
    fn package(&self) -> u32 {
        self.x2apic >> self.shifts[DIEGRP]
    }

    /// Global die ID (package and die within it).
    fn die(&self) -> u32 {
        self.x2apic >> self.shifts[TILE]
    }

    /// Global core ID.
    fn core(&self) -> u32 {
        self.x2apic >> self.shifts[SMT]
    }

    fn llc(&self) -> u32 {
        self.x2apic >> self.llc_shift
    }

    fn l2(&self) -> u32 {
        self.x2apic >> self.l2_shift
    }
}

/// Linux's `topology_set_dom`: set a domain and propagate it to the domains above.
fn set_dom(shifts: &mut [u32; DOMAINS], ncpus: &mut [u32; DOMAINS], dom: usize, s: u32, n: u32) {
    for d in dom..DOMAINS {
        shifts[d] = s;
        ncpus[d] = n;
    }
}

/// Linux's `parse_topology_leaf` for leaf 0xB or 0x1F; `None` if subleaf 0 is unusable.
/// Panics on what Linux would report as a firmware bug.
fn parse_ext_leaf(
    e: &[CpuidEntry],
    leaf: u32,
    shifts: &mut [u32; DOMAINS],
    ncpus: &mut [u32; DOMAINS],
) -> Option<u32> {
    // Types 1..=2 are known in 0xB, 1..=6 in 0x1F; they map to SMT, CORE, MODULE, TILE, DIE, DIEGRP.
    let max_type = if leaf == 0xb { 3 } else { 7 };
    let mut x2apic = None;
    let mut sub = 0;
    loop {
        let [eax, ebx, ecx, edx] = cpuid(e, leaf, sub);
        let (shift, count, level, kind) = (eax & 0x1f, ebx & 0xffff, ecx & 0xff, (ecx >> 8) & 0xff);
        if count == 0 || kind == LEVEL_INVALID {
            break;
        }
        assert!(
            kind < max_type,
            "leaf {leaf:#x}:{sub}: unknown domain type {kind}"
        );
        assert_eq!(
            level, sub,
            "leaf {leaf:#x}:{sub}: ECX[7:0] is not the subleaf"
        );
        match x2apic {
            None => x2apic = Some(edx),
            Some(id) => assert_eq!(id, edx, "leaf {leaf:#x}:{sub}: APIC ID mismatch"),
        }
        set_dom(shifts, ncpus, kind as usize - 1, shift, count);
        sub += 1;
    }
    let x2apic = x2apic?;
    assert!(
        shifts[SMT] != 0 || ncpus[SMT] <= 1,
        "leaf {leaf:#x}: FW_BUG: SMT shift 0 but {} CPUs",
        ncpus[SMT]
    );
    Some(x2apic)
}

/// Decodes one CPU's CPUID entries as Linux does on an Intel CPU.
fn decode(e: &[CpuidEntry]) -> Decoded {
    let [max_basic, b, c, d] = cpuid(e, 0, 0);
    let mut v = Vec::new();
    for w in [b, d, c] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    let vendor = String::from_utf8_lossy(&v).into_owned();
    let [_, ebx1, _, edx1] = cpuid(e, 1, 0);
    let initial_apic = ebx1 >> 24;

    // Legacy: leaf 1 EBX[23:16] (valid with HTT) over leaf 4 subleaf 0 EAX[31:26] + 1 cores.
    let leaf4_0 = cpuid(e, 4, 0)[0];
    let cores = if max_basic >= 4 && leaf4_0 & 0x1f != 0 {
        (leaf4_0 >> 26) + 1
    } else {
        1
    };
    let nproc_shift = count_order((ebx1 >> 16) & 0xff);
    let mut legacy_core_shift = count_order(cores);
    let mut legacy_smt_shift = 0;
    if edx1 & HTT != 0 {
        assert!(
            nproc_shift >= legacy_core_shift,
            "leaf 1 EBX[23:16] {} < leaf 4 cores {cores}",
            (ebx1 >> 16) & 0xff
        );
        legacy_smt_shift = nproc_shift - legacy_core_shift;
        legacy_core_shift += legacy_smt_shift;
    }

    // fake_topology() presets SMT and CORE, then leaf 0x1F, else 0xB, else legacy.
    let (mut shifts, mut ncpus) = ([0; DOMAINS], [1; DOMAINS]);
    let mut parsed = None;
    for leaf in [0x1f, 0xb] {
        if max_basic >= leaf {
            let (mut s, mut n) = (shifts, ncpus);
            if let Some(id) = parse_ext_leaf(e, leaf, &mut s, &mut n) {
                (shifts, ncpus) = (s, n);
                parsed = Some((leaf, id));
                break;
            }
        }
    }
    let (leaf, x2apic) = parsed.unwrap_or_else(|| {
        set_dom(
            &mut shifts,
            &mut ncpus,
            SMT,
            legacy_smt_shift,
            1 << legacy_smt_shift,
        );
        set_dom(
            &mut shifts,
            &mut ncpus,
            CORE,
            legacy_core_shift,
            cores << legacy_smt_shift,
        );
        (0, initial_apic)
    });

    // cacheinfo: leaf 4 subleaves up to the null one; the L3, else the L2, is the LLC.
    let (mut l2_shift, mut l3_shift) = (None, None);
    for sub in 0.. {
        let eax = cpuid(e, 4, sub)[0];
        if eax & 0x1f == 0 {
            break;
        }
        let sharing = count_order(((eax & CACHE_SHARING_MASK) >> 14) + 1);
        match (eax >> 5) & 0x7 {
            2 => l2_shift = Some(sharing),
            3 => l3_shift = Some(sharing),
            _ => {}
        }
    }
    let l2_shift = l2_shift.expect("no L2 in leaf 4");
    Decoded {
        vendor,
        max_basic,
        leaf,
        x2apic,
        initial_apic,
        shifts,
        ncpus,
        legacy_smt_shift,
        legacy_package_shift: legacy_core_shift,
        l2_shift,
        llc_shift: l3_shift.unwrap_or(l2_shift),
    }
}

fn brand(e: &[CpuidEntry]) -> String {
    let mut b = Vec::new();
    for leaf in 0x8000_0002..=0x8000_0004 {
        for w in cpuid(e, leaf, 0) {
            b.extend_from_slice(&w.to_le_bytes());
        }
    }
    String::from_utf8_lossy(&b)
        .trim_matches(char::from(0))
        .trim()
        .to_string()
}

/// The fixture is the machine it names, and the decoder reads the real values as that
/// machine's Linux would.
fn check_host(f: &HostFacts, host: &[CpuidEntry]) {
    let d = decode(host);
    let what = f.file;
    assert!(
        brand(host).contains(f.brand),
        "{what}: brand {:?}",
        brand(host)
    );
    assert_eq!(d.vendor, "GenuineIntel", "{what}");
    assert_eq!(CpuVendor::from_leaf0(&host[0]), CpuVendor::Intel, "{what}");
    assert_eq!(d.max_basic, f.max_basic, "{what}");
    assert_eq!(
        d.leaf,
        if f.max_basic >= 0x1f { 0x1f } else { 0xb },
        "{what}"
    );
    assert_eq!(d.x2apic, f.x2apic, "{what}: x2APIC ID");
    assert_eq!(d.initial_apic, f.x2apic & 0xff, "{what}: leaf 1 APIC ID");
    assert_eq!(d.shifts[SMT], f.smt_shift, "{what}: SMT shift");
    assert_eq!(d.shifts[DIEGRP], f.package_shift, "{what}: package shift");
    assert_eq!(
        (d.l2_shift, d.llc_shift),
        (f.l2_shift, f.l3_shift),
        "{what}: caches"
    );
    assert!(
        host.iter().all(|e| e.function < 0x8000_001d),
        "{what}: an Intel dump has no AMD topology leaves"
    );
}

/// `cpus` grouped by `key`: for each CPU, the list of the CPUs with its key.
fn groups(keys: &[u32]) -> Vec<String> {
    let mut by_key: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (cpu, k) in keys.iter().enumerate() {
        by_key.entry(*k).or_default().push(cpu as u32);
    }
    keys.iter().map(|k| format_cpu_list(&by_key[k])).collect()
}

fn distinct(keys: &[u32]) -> usize {
    let mut k = keys.to_vec();
    k.sort_unstable();
    k.dedup();
    k.len()
}

/// The subleaves of `leaf` in `out`, in order: (index, eax, ebx, ecx, edx, flags).
fn subleaves(out: &[CpuidEntry], leaf: u32) -> Vec<(u32, u32, u32, u32, u32, u32)> {
    out.iter()
        .filter(|e| e.function == leaf)
        .map(|e| (e.index, e.eax, e.ebx, e.ecx, e.edx, e.flags))
        .collect()
}

/// Patches `host` for every vCPU of `t` and checks what Linux would decode.
fn check_topology(file: &str, host: &[CpuidEntry], t: Topology) {
    let layout = ApicLayout::new(&t).unwrap();
    let max_basic = host[0].eax;
    let ext_leaf = if max_basic >= 0x1f { 0x1f } else { 0xb };
    let exp = t.expected();
    let n = t.total_cpus();
    let mut decoded = Vec::new();
    for cpu in 0..n {
        let what = format!("{file}, topology {t}, vCPU {cpu}");
        let out = patch_cpuid(&t, cpu, host).unwrap_or_else(|e| panic!("{what}: {e}"));
        let apic = layout.apic_id(cpu).unwrap();

        // Everything but leaves 1, 4, 0xB and 0x1F passes through unchanged and in order:
        // on Intel that includes every 0x8000_00xx leaf, so no AMD leaf is added or rewritten.
        let others = |v: &[CpuidEntry]| -> Vec<CpuidEntry> {
            v.iter()
                .filter(|e| !INTEL_TOPOLOGY_LEAVES.contains(&e.function))
                .copied()
                .collect()
        };
        assert_eq!(others(&out), others(host), "{what}: pass-through entries");
        assert!(out.iter().all(|e| e.function < 0x8000_001d), "{what}");

        // Leaf 1: only the APIC ID, the addressable-ID count and HTT change.
        let (h1, o1) = (cpuid(host, 1, 0), cpuid(&out, 1, 0));
        assert_eq!(
            (o1[0], o1[1] & 0xffff, o1[2]),
            (h1[0], h1[1] & 0xffff, h1[2]),
            "{what}"
        );
        assert_eq!(o1[3] & !HTT, h1[3] & !HTT, "{what}: leaf 1 EDX");
        assert_eq!(o1[1] >> 24, apic & 0xff, "{what}: leaf 1 initial APIC ID");
        let nproc = (o1[1] >> 16) & 0xff;
        assert_eq!(
            nproc,
            1 << layout.package_shift(),
            "{what}: leaf 1 EBX[23:16]"
        );
        assert!(nproc >= t.cpus_per_node(), "{what}");
        assert_eq!(o1[3] & HTT != 0, t.cpus_per_node() > 1, "{what}: HTT");

        // Leaf 4: only EAX[25:14] and EAX[31:26] change, on every subleaf the host has.
        let (h4, o4) = (subleaves(host, 4), subleaves(&out, 4));
        assert_eq!(h4.len(), o4.len(), "{what}: leaf 4 subleaves");
        let cores_field = (1 << (layout.package_shift() - layout.smt_bits())) - 1;
        for (h, o) in h4.iter().zip(&o4) {
            let keep = !(CACHE_SHARING_MASK | CACHE_CORES_MASK);
            assert_eq!(
                (o.0, o.1 & keep, o.2, o.3, o.4),
                (h.0, h.1 & keep, h.2, h.3, h.4)
            );
            assert_eq!(o.1 >> 26, cores_field, "{what}: leaf 4.{} EAX[31:26]", o.0);
            assert!((o.1 >> 26) + 1 >= t.llcs * t.cores, "{what}");
        }

        // Leaf 0xB: SMT, core (the whole package), then the invalid level; EDX the x2APIC ID.
        let sig = CPUID_FLAG_SIGNIFICANT_INDEX;
        let (smt, pkg) = (layout.smt_bits(), layout.package_shift());
        assert_eq!(
            subleaves(&out, 0xb),
            vec![
                (0, smt, t.threads, LEVEL_SMT << 8, apic, sig),
                (1, pkg, t.cpus_per_node(), LEVEL_CORE << 8 | 1, apic, sig),
                (2, 0, 0, LEVEL_INVALID << 8 | 2, apic, sig),
            ],
            "{what}: leaf 0xB"
        );
        // Leaf 0x1F, where the maximum basic leaf reaches it: SMT, core (the LLC), die (one
        // per LLC, up to the package), then the invalid level.
        let llc = layout.llc_shift();
        let leaf_1f = subleaves(&out, 0x1f);
        if max_basic >= 0x1f {
            assert_eq!(
                leaf_1f,
                vec![
                    (0, smt, t.threads, LEVEL_SMT << 8, apic, sig),
                    (1, llc, t.cpus_per_llc(), LEVEL_CORE << 8 | 1, apic, sig),
                    (2, pkg, t.cpus_per_node(), LEVEL_DIE << 8 | 2, apic, sig),
                    (3, 0, 0, LEVEL_INVALID << 8 | 3, apic, sig),
                ],
                "{what}: leaf 0x1F"
            );
        } else {
            assert!(
                leaf_1f.is_empty(),
                "{what}: leaf 0x1F beyond the max basic leaf"
            );
        }

        let d = decode(&out);
        assert_eq!(d.vendor, "GenuineIntel", "{what}");
        assert_eq!(CpuVendor::from_leaf0(&out[0]), CpuVendor::Intel, "{what}");
        assert_eq!(d.leaf, ext_leaf, "{what}: topology leaf used");
        assert_eq!(d.x2apic, apic, "{what}: x2APIC ID");
        assert_eq!(d.initial_apic, apic & 0xff, "{what}");
        assert_eq!(d.shifts[SMT], smt, "{what}: SMT shift");
        assert_eq!(d.shifts[DIEGRP], pkg, "{what}: package shift");
        assert_eq!(
            (d.ncpus[SMT], d.ncpus[DIEGRP]),
            (t.threads, t.cpus_per_node()),
            "{what}: CPUs per core and per package"
        );
        if d.leaf == 0x1f {
            assert_eq!(d.shifts[CORE], llc, "{what}: core-level shift is the LLC's");
            assert_eq!(d.shifts[DIE], pkg, "{what}: die-level shift");
        }
        assert_eq!(
            (d.legacy_smt_shift, d.legacy_package_shift),
            (smt, pkg),
            "{what}: legacy leaf 1 / leaf 4 decoding disagrees"
        );
        assert_eq!(d.llc_shift, llc, "{what}: LLC sharing");
        assert_eq!(d.l2_shift, smt, "{what}: L2 shared by a core's threads");
        decoded.push(d);
    }

    let what = format!("{file}, topology {t}");
    // Linux requires every CPU to report the boot CPU's shifts.
    for d in &decoded {
        assert_eq!(
            (d.shifts, d.llc_shift),
            (decoded[0].shifts, decoded[0].llc_shift),
            "{what}"
        );
    }
    let apics: Vec<u32> = decoded.iter().map(|d| d.x2apic).collect();
    assert_eq!(
        distinct(&apics),
        n as usize,
        "{what}: APIC IDs not unique: {apics:?}"
    );
    let expected_ids: Vec<u32> = layout.apic_ids().map(|(_, id)| id).collect();
    assert_eq!(apics, expected_ids, "{what}: APIC IDs");

    let key = |f: fn(&Decoded) -> u32| -> Vec<u32> { decoded.iter().map(f).collect() };
    let (packages, dies, llcs) = (key(Decoded::package), key(Decoded::die), key(Decoded::llc));
    let (cores, l2s) = (key(Decoded::core), key(Decoded::l2));
    assert_eq!(
        distinct(&packages),
        t.numa_nodes as usize,
        "{what}: packages"
    );
    assert_eq!(distinct(&llcs), t.total_llcs() as usize, "{what}: LLCs");
    assert_eq!(distinct(&cores), t.total_cores() as usize, "{what}: cores");
    let node_lists: Vec<String> = (0..n)
        .map(|c| exp.node_cpulists[t.place(c).unwrap().node as usize].clone())
        .collect();
    assert_eq!(groups(&packages), node_lists, "{what}: package siblings");
    assert_eq!(
        groups(&llcs),
        exp.llc_shared_cpu_lists,
        "{what}: LLC siblings"
    );
    assert_eq!(
        groups(&cores),
        exp.thread_siblings_lists,
        "{what}: SMT siblings"
    );
    assert_eq!(
        groups(&l2s),
        exp.thread_siblings_lists,
        "{what}: L2 siblings"
    );
    if ext_leaf == 0x1f {
        // Leaf 0x1F has a die level: one die per LLC.
        assert_eq!(distinct(&dies), t.total_llcs() as usize, "{what}: dies");
        assert_eq!(
            groups(&dies),
            exp.llc_shared_cpu_lists,
            "{what}: die siblings"
        );
    } else {
        // Leaf 0xB has none: one die per package.
        assert_eq!(groups(&dies), node_lists, "{what}: die siblings");
    }
}

fn check_dump(f: &HostFacts) {
    let host = load(f.file);
    check_host(f, &host);
    for (numa, llcs, cores, threads) in TOPOLOGIES {
        check_topology(
            f.file,
            &host,
            Topology::new(numa, llcs, cores, threads).unwrap(),
        );
    }
}

#[test]
fn coffee_lake_client_leaf_b_only() {
    check_dump(&COFFEE_LAKE);
}

#[test]
fn emerald_rapids_xeon_smt_leaf_1f() {
    check_dump(&EMERALD_RAPIDS);
}

#[test]
fn alder_lake_hybrid_p_core() {
    check_dump(&ALDER_LAKE_P);
    // Leaf 0x1A (hybrid core type) passes through: Golden Cove ("Core", 0x40).
    assert_eq!(cpuid(&load(ALDER_LAKE_P.file), 0x1a, 0)[0] >> 24, 0x40);
}

#[test]
fn alder_lake_hybrid_e_core() {
    check_dump(&ALDER_LAKE_E);
    // An E-core: Gracemont ("Atom", 0x20), no SMT, its L2 shared by a 4-core module.
    let host = load(ALDER_LAKE_E.file);
    assert_eq!(cpuid(&host, 0x1a, 0)[0] >> 24, 0x20);
    assert_eq!(
        cpuid(&host, 0xb, 0)[1] & 0xffff,
        1,
        "one thread at the SMT level"
    );
}

/// AMD's topology leaves, which an Intel KVM never reports, are left alone on an Intel host
/// even when present; the same entries on the same dump relabelled AuthenticAMD are
/// rewritten, so the check can fail. The appended entries are synthetic (they are not part
/// of any dump).
#[test]
fn amd_leaves_pass_through_on_intel() {
    let t = Topology::new(2, 2, 2, 2).unwrap();
    let mut host = load(EMERALD_RAPIDS.file);
    let amd_leaves = [
        CpuidEntry {
            function: 0x8000_001d,
            index: 3,
            flags: CPUID_FLAG_SIGNIFICANT_INDEX,
            eax: 0x0003_c163,
            ebx: 0x03c0_003f,
            ecx: 0x7fff,
            edx: 1,
        },
        CpuidEntry {
            function: 0x8000_001e,
            eax: 7,
            ebx: 0x0103,
            ecx: 0x0300,
            ..CpuidEntry::default()
        },
    ];
    host.extend(amd_leaves);
    let amd_only = |v: &[CpuidEntry]| -> Vec<CpuidEntry> {
        v.iter()
            .filter(|e| e.function >= 0x8000_0000)
            .copied()
            .collect()
    };
    for cpu in 0..t.total_cpus() {
        let out = patch_cpuid(&t, cpu, &host).unwrap();
        assert_eq!(amd_only(&out), amd_only(&host), "vCPU {cpu}");
    }
    let mut amd = host.clone();
    amd[0].ebx = u32::from_le_bytes(*b"Auth");
    amd[0].edx = u32::from_le_bytes(*b"enti");
    amd[0].ecx = u32::from_le_bytes(*b"cAMD");
    assert_eq!(CpuVendor::from_leaf0(&amd[0]), CpuVendor::Amd);
    let out = patch_cpuid(&t, 5, &amd).unwrap();
    assert_ne!(
        amd_only(&out),
        amd_only(&amd),
        "AMD control: leaves are rewritten"
    );
}
