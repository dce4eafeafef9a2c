//! Sampler tests on a synthetic guest (hand-built BTF and page tables) and on the real
//! 7.3 BTF.

use super::*;
use crate::btf::testutil::BtfBuilder;
use crate::memory::BufferMemory;

const PS: u64 = 1 << 7;
const PHYS_BASE: u64 = 0x20_0000;
const POB: u64 = 0xffff_8880_0000_0000;
const MEM: usize = 0x40_0000;
/// Image offsets of the kernel variables (phys = PHYS_BASE + off).
const TOP: u64 = 0x1000;
const V_PHYS_BASE: u64 = 0x5000;
const V_POB: u64 = 0x5008;
const V_PCPU: u64 = 0x5100;
const V_SCX_STATE: u64 = 0x5200;
const V_SCX_ROOT: u64 = 0x5208;
const V_NR_NODES: u64 = 0x5210;
const V_RUNQUEUES: u64 = 0x8000;
/// Physical homes of the per-CPU runqueues, tasks and the scx_sched.
const RQ_PHYS: u64 = 0x30_0000;
const SCH_PHYS: u64 = 0x31_0000;
const TASK_PHYS: u64 = 0x32_0000;
/// Per-CPU `scx_sched_pcpu` copies (CPU n at `PCPU_PHYS + n * 0x1000`), the `pnode`
/// pointer array and node 0's `scx_sched_pnode`.
const PCPU_PHYS: u64 = 0x33_0000;
const PNODES_PHYS: u64 = 0x34_0000;
const PNODE0_PHYS: u64 = 0x34_1000;
/// `scx_sched.dsq_hash`'s bucket table and the user DSQs chained in it.
const BUCKETS_PHYS: u64 = 0x35_0000;
const USER_DSQ_PHYS: u64 = 0x35_1000;
const SCX_DSQ_GLOBAL: u64 = 1 << 63 | 1;
const SCX_DSQ_BYPASS: u64 = 1 << 63 | 3;

/// `struct rq` of the synthetic kernel: nr_running@0 cpu@4 curr@8 idle@16
/// nr_switches@24 cfs@32 (h_nr_queued@36) scx@64 (local_dsq.nr@72, nr_running@88) clock@128;
/// `scx_dispatch_q`: id@0 nr@8 hash_node@16; `scx_sched`: ops.name@0 exit_kind@40 pcpu@48
/// pnode@56 dsq_hash@64 (tbl@64); `scx_sched_pcpu`: event_stats@8 (two `s64` counters and an
/// `int` that is not one) bypass_dsq@32 (id@32 nr@40); `scx_sched_pnode`: global_dsq@8;
/// `bucket_table`: size@0 nest@4 buckets@64.
fn btf() -> Btf {
    let mut b = BtfBuilder::new(false);
    let int = b.int("int", 4, 32, 1);
    let u32t = b.int("unsigned int", 4, 32, 0);
    let u64t = b.int("long long unsigned int", 8, 64, 0);
    let ch = b.int("char", 1, 8, 2);
    let comm = b.array(ch, int, 16);
    let name = b.array(ch, int, 32);
    let task = b.composite(
        "task_struct",
        false,
        64,
        &[("pid", int, 16 * 8, 0), ("comm", comm, 32 * 8, 0)],
    );
    let tp = b.ptr(task);
    let cfs = b.composite("cfs_rq", false, 16, &[("h_nr_queued", u32t, 32, 0)]);
    let rhash_head = b.composite("rhash_head", false, 8, &[("next", u64t, 0, 0)]);
    let dsq = b.composite(
        "scx_dispatch_q",
        false,
        24,
        &[
            ("id", u64t, 0, 0),
            ("nr", u32t, 64, 0),
            ("hash_node", rhash_head, 128, 0),
        ],
    );
    let buckets = b.array(u64t, int, 0);
    let bucket_table = b.composite(
        "bucket_table",
        false,
        64,
        &[
            ("size", u32t, 0, 0),
            ("nest", u32t, 32, 0),
            ("buckets", buckets, 64 * 8, 0),
        ],
    );
    let bucket_table_p = b.ptr(bucket_table);
    let rhashtable = b.composite("rhashtable", false, 16, &[("tbl", bucket_table_p, 0, 0)]);
    let scx = b.composite(
        "scx_rq",
        false,
        32,
        &[("local_dsq", dsq, 0, 0), ("nr_running", u32t, 24 * 8, 0)],
    );
    b.composite(
        "rq",
        false,
        256,
        &[
            ("nr_running", u32t, 0, 0),
            ("cpu", int, 32, 0),
            ("curr", tp, 64, 0),
            ("idle", tp, 128, 0),
            ("nr_switches", u64t, 192, 0),
            ("cfs", cfs, 256, 0),
            ("scx", scx, 512, 0),
            ("clock", u64t, 1024, 0),
        ],
    );
    b.enum32(
        "scx_enable_state",
        false,
        &[
            ("SCX_ENABLING", 0),
            ("SCX_ENABLED", 1),
            ("SCX_DISABLING", 2),
            ("SCX_DISABLED", 3),
        ],
    );
    b.enum32(
        "scx_exit_kind",
        false,
        &[("SCX_EXIT_NONE", 0), ("SCX_EXIT_ERROR_STALL", 1026)],
    );
    let atomic = b.composite("", false, 4, &[("counter", int, 0, 0)]);
    let atomic_t = b.refer(Kind::Typedef, "atomic_t", atomic);
    let ops = b.composite("sched_ext_ops", false, 32, &[("name", name, 0, 0)]);
    let s64 = b.int("long long int", 8, 64, 1);
    let s64t = b.refer(Kind::Typedef, "s64", s64);
    let stats = b.composite(
        "scx_event_stats",
        false,
        24,
        &[
            ("SCX_EV_SELECT_CPU_FALLBACK", s64t, 0, 0),
            ("SCX_EV_BYPASS_DURATION", s64t, 64, 0),
            ("not_an_event", int, 128, 0),
        ],
    );
    let pcpu = b.composite(
        "scx_sched_pcpu",
        false,
        56,
        &[
            ("flags", u64t, 0, 0),
            ("event_stats", stats, 64, 0),
            ("bypass_dsq", dsq, 256, 0),
        ],
    );
    let pnode = b.composite("scx_sched_pnode", false, 32, &[("global_dsq", dsq, 64, 0)]);
    let pcpu_p = b.ptr(pcpu);
    let pnode_p = b.ptr(pnode);
    let pnode_pp = b.ptr(pnode_p);
    b.composite(
        "scx_sched",
        false,
        80,
        &[
            ("ops", ops, 0, 0),
            ("exit_kind", atomic_t, 40 * 8, 0),
            ("pcpu", pcpu_p, 48 * 8, 0),
            ("pnode", pnode_pp, 56 * 8, 0),
            ("dsq_hash", rhashtable, 64 * 8, 0),
        ],
    );
    Btf::parse(&b.finish()).expect("synthetic BTF parses")
}

struct Guest {
    mem: Vec<u8>,
}

impl Guest {
    fn put(&mut self, gpa: u64, bytes: &[u8]) {
        self.mem[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
    }
    fn u64(&mut self, gpa: u64, v: u64) {
        self.put(gpa, &v.to_le_bytes());
    }
    fn u32(&mut self, gpa: u64, v: u32) {
        self.put(gpa, &v.to_le_bytes());
    }
    fn img(off: u64) -> u64 {
        PHYS_BASE + off
    }

    /// Two CPUs: CPU 0 runs `spin` (pid 77) with 2 runnable, CPU 1 is idle.
    fn new() -> Guest {
        let mut g = Guest { mem: vec![0; MEM] };
        // init_top_pgt: kernel image (PML4 511 -> PDPT 510 -> PD 0, a 2 MiB page at
        // PHYS_BASE) and the direct map (PML4 273 -> PDPT 0, a 1 GiB page at 0).
        let (top, pdpt_k, pd_k, pdpt_d) = (
            Self::img(TOP),
            Self::img(0x2000),
            Self::img(0x3000),
            Self::img(0x4000),
        );
        for pgd in [top, 0x10_0000] {
            g.u64(pgd + 511 * 8, pdpt_k | 3);
            g.u64(pgd + 273 * 8, pdpt_d | 3);
        }
        g.u64(pdpt_k + 510 * 8, pd_k | 3);
        g.u64(pd_k, PHYS_BASE | PS | 3);
        g.u64(pdpt_d, PS | 3);
        g.u64(Self::img(V_PHYS_BASE), PHYS_BASE);
        g.u64(Self::img(V_POB), POB);
        for cpu in 0..2u64 {
            let off = (POB + RQ_PHYS + cpu * 0x1000).wrapping_sub(va(V_RUNQUEUES));
            g.u64(Self::img(V_PCPU) + cpu * 8, off);
        }
        g.u32(Self::img(V_SCX_STATE), 1);
        g.u64(Self::img(V_SCX_ROOT), POB + SCH_PHYS);
        g.put(SCH_PHYS, b"test_ops\0");
        g.u32(SCH_PHYS + 40, 0);
        // scx_sched.pcpu: the __percpu pointer whose CPU-n copy is at PCPU_PHYS + n * 0x1000.
        let off0 = (POB + RQ_PHYS).wrapping_sub(va(V_RUNQUEUES));
        g.u64(SCH_PHYS + 48, (POB + PCPU_PHYS).wrapping_sub(off0));
        for (cpu, fallback, bypass_ns, bypass_nr) in [(0u64, 3i64, 100i64, 0u32), (1, 4, -1, 2)] {
            let p = PCPU_PHYS + cpu * 0x1000;
            g.u64(p + 8, fallback as u64);
            g.u64(p + 16, bypass_ns as u64);
            g.u32(p + 24, 0xdead);
            g.u64(p + 32, SCX_DSQ_BYPASS);
            g.u32(p + 40, bypass_nr);
        }
        // Two node ids; node 1 was never possible (null).
        g.u32(Self::img(V_NR_NODES), 2);
        g.u64(SCH_PHYS + 56, POB + PNODES_PHYS);
        g.u64(PNODES_PHYS, POB + PNODE0_PHYS);
        g.u64(PNODES_PHYS + 8, 0);
        g.u64(PNODE0_PHYS + 8, SCX_DSQ_GLOBAL);
        g.u32(PNODE0_PHYS + 16, 5);
        // dsq_hash: 4 buckets. Bucket 0 (locked: bit 0) chains DSQ 7 then DSQ 2, bucket 2
        // holds DSQ 1 << 40, bucket 3 is empty and locked; chains end at a nulls marker.
        g.u64(SCH_PHYS + 64, POB + BUCKETS_PHYS);
        g.u32(BUCKETS_PHYS, 4);
        let node = |i: u64| POB + USER_DSQ_PHYS + i * 0x100 + 16;
        for (i, id, nr, next) in [
            (0u64, 7u64, 3u32, node(1)),
            (1, 2, 0, 1 | 5 << 1),
            (2, 1 << 40, 9, 1),
        ] {
            let d = USER_DSQ_PHYS + i * 0x100;
            g.u64(d, id);
            g.u32(d + 8, nr);
            g.u64(d + 16, next);
        }
        g.u64(BUCKETS_PHYS + 64, node(0) | 1);
        g.u64(BUCKETS_PHYS + 64 + 16, node(2));
        g.u64(BUCKETS_PHYS + 64 + 24, 1);
        let task = |g: &mut Guest, i: u64, pid: u32, comm: &[u8]| {
            g.u32(TASK_PHYS + i * 0x1000 + 16, pid);
            g.put(TASK_PHYS + i * 0x1000 + 32, comm);
            POB + TASK_PHYS + i * 0x1000
        };
        let idle0 = task(&mut g, 0, 0, b"swapper/0\0");
        let spin = task(&mut g, 1, 77, b"spin\0");
        let idle1 = task(&mut g, 2, 0, b"swapper/1\0");
        for (cpu, curr, idle, nr, switches) in
            [(0u64, spin, idle0, 2u32, 1000u64), (1, idle1, idle1, 0, 5)]
        {
            let rq = RQ_PHYS + cpu * 0x1000;
            g.u32(rq, nr);
            g.u32(rq + 4, cpu as u32);
            g.u64(rq + 8, curr);
            g.u64(rq + 16, idle);
            g.u64(rq + 24, switches);
            g.u32(rq + 36, nr);
            g.u32(rq + 72, 0);
            g.u32(rq + 88, 0);
            g.u64(rq + 128, 5_000_000_000 + cpu);
        }
        g
    }

    fn memory(self) -> BufferMemory<Vec<u8>> {
        BufferMemory::new(0, self.mem)
    }
}

fn va(off: u64) -> u64 {
    START_KERNEL_MAP + off
}

fn addrs() -> KernelAddrs {
    KernelAddrs {
        runqueues: va(V_RUNQUEUES),
        per_cpu_offset: va(V_PCPU),
        page_offset_base: va(V_POB),
        phys_base: va(V_PHYS_BASE),
        init_top_pgt: va(TOP),
        scx_enable_state: Some(va(V_SCX_STATE)),
        scx_root: Some(va(V_SCX_ROOT)),
        nr_node_ids: Some(va(V_NR_NODES)),
        init_task: None,
        sched_classes: [None; 6],
    }
}

fn regs() -> Vec<CpuRegs> {
    let off0 = (POB + RQ_PHYS).wrapping_sub(va(V_RUNQUEUES));
    vec![
        // CPU 0 is in the kernel on a process's tables; CPU 1 was caught in real mode.
        CpuRegs {
            cpu: 0,
            cr3: 0x10_0000,
            la57: false,
            long_mode: true,
            gs_base: off0,
        },
        CpuRegs {
            cpu: 1,
            cr3: 0,
            la57: false,
            long_mode: false,
            gs_base: 0,
        },
    ]
}

#[test]
fn samples_a_synthetic_guest() {
    let mut s = Sampler::new(
        Guest::new().memory(),
        &btf(),
        &regs(),
        addrs(),
        2,
        MEM as u64,
    )
    .expect("setup");
    let info = s.info().clone();
    assert_eq!(info.page_table_root, PHYS_BASE + TOP);
    assert_eq!((info.phys_base, info.page_offset_base), (PHYS_BASE, POB));
    assert_eq!(info.rq_addrs, [POB + RQ_PHYS, POB + RQ_PHYS + 0x1000]);
    assert!(
        info.notes
            .iter()
            .any(|n| n.contains("CPU 0: GS base") && n.contains(" = ")),
        "{:?}",
        info.notes
    );
    let sample = s.sample();
    let json = serde_json::to_string(&sample).expect("json");
    assert_eq!(
        json,
        r#"{"cpus":[{"cpu":0,"nr_running":2,"fair_nr_running":2,"scx_nr_running":0,"scx_local_dsq_nr":0,"curr_pid":77,"curr_comm":"spin","curr_is_idle":false,"rq_clock_ns":5000000000,"nr_switches":1000},{"cpu":1,"nr_running":0,"fair_nr_running":0,"scx_nr_running":0,"scx_local_dsq_nr":0,"curr_pid":0,"curr_comm":"swapper/1","curr_is_idle":true,"rq_clock_ns":5000000001,"nr_switches":5}],"scx":{"state":"enabled","ops":"test_ops","exit_kind":"none","events":{"bypass_duration":99,"select_cpu_fallback":7},"dsqs":[{"id":9223372036854775809,"kind":"global","node":0,"nr":5},{"id":9223372036854775811,"kind":"bypass","cpu":0,"nr":0},{"id":9223372036854775811,"kind":"bypass","cpu":1,"nr":2},{"id":2,"kind":"user","nr":0},{"id":7,"kind":"user","nr":3},{"id":1099511627776,"kind":"user","nr":9}]}}"#
    );
}

#[test]
fn a_bad_task_pointer_fails_only_its_cpu() {
    let mut g = Guest::new();
    g.u64(RQ_PHYS + 8, POB + 0x7fff_0000); // CPU 0's curr points past RAM
    g.u32(SCH_PHYS + 40, 1026);
    let mut s = Sampler::new(g.memory(), &btf(), &regs(), addrs(), 2, MEM as u64).expect("setup");
    let sample = s.sample();
    assert!(sample.cpus[0].rq.is_none());
    assert!(
        sample.cpus[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("0xffff88807fff0010")),
        "{:?}",
        sample.cpus[0]
    );
    assert_eq!(
        sample.cpus[1].rq.as_ref().map(|r| r.curr_comm.as_str()),
        Some("swapper/1")
    );
    assert_eq!(
        sample.scx.and_then(|s| s.exit_kind).as_deref(),
        Some("error_stall")
    );
}

#[test]
fn user_dsq_tables_that_cannot_be_walked_say_why() {
    let user = |g: Guest| {
        let mut s =
            Sampler::new(g.memory(), &btf(), &regs(), addrs(), 2, MEM as u64).expect("setup");
        let scx = s.sample().scx.expect("scx");
        let n = scx.dsqs.iter().filter(|d| d.kind == DsqKind::User).count();
        (n, scx.error, scx.dsqs.len())
    };
    // A nested table is not read; the built-in DSQs still are.
    let mut g = Guest::new();
    g.u32(BUCKETS_PHYS + 4, 1);
    let (n, err, all) = user(g);
    assert_eq!((n, all), (0, 3));
    assert!(err.is_some_and(|e| e.contains("nested")));
    // A chain that loops (torn by an update) stops at the bound.
    let mut g = Guest::new();
    g.u64(USER_DSQ_PHYS + 0x200 + 16, POB + USER_DSQ_PHYS + 0x200 + 16);
    let (_, err, _) = user(g);
    assert!(err.is_some_and(|e| e.contains("more than 4096")));
    // No table yet: no user DSQs and no error.
    let mut g = Guest::new();
    g.u64(SCH_PHYS + 64, 0);
    assert_eq!(user(g), (0, None, 3));
}

#[test]
fn a_bad_node_count_skips_only_the_global_dsqs() {
    let mut g = Guest::new();
    g.u32(Guest::img(V_NR_NODES), 0);
    let mut s = Sampler::new(g.memory(), &btf(), &regs(), addrs(), 2, MEM as u64).expect("setup");
    assert!(
        s.info()
            .notes
            .iter()
            .any(|n| n == "nr_node_ids is 0: global DSQs not read"),
        "{:?}",
        s.info().notes
    );
    let scx = s.sample().scx.expect("scx");
    let kinds: Vec<DsqKind> = scx.dsqs.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            DsqKind::Bypass,
            DsqKind::Bypass,
            DsqKind::User,
            DsqKind::User,
            DsqKind::User
        ]
    );
    assert_eq!(scx.error, None);
}

#[test]
fn a_failed_per_cpu_read_drops_the_partial_bypass_list() {
    let mut g = Guest::new();
    // CPU 1's copy of the per-CPU struct is unreadable: its offset points past RAM.
    let off0 = (POB + RQ_PHYS).wrapping_sub(va(V_RUNQUEUES));
    g.u64(SCH_PHYS + 48, (POB + 0x3f_f000).wrapping_sub(off0));
    let mut s = Sampler::new(g.memory(), &btf(), &regs(), addrs(), 2, MEM as u64).expect("setup");
    let scx = s.sample().scx.expect("scx");
    assert!(scx.error.is_some() && scx.events.is_empty(), "{scx:?}");
    assert!(
        scx.dsqs.iter().all(|d| d.kind != DsqKind::Bypass),
        "{scx:?}"
    );
    assert_eq!(scx.dsqs[0].kind, DsqKind::Global);
}

#[test]
fn setup_refuses_what_does_not_hold() {
    // rq.cpu of CPU 1 says 7: the per-CPU offsets or the layout are wrong.
    let mut g = Guest::new();
    g.u32(RQ_PHYS + 0x1000 + 4, 7);
    let err = Sampler::new(g.memory(), &btf(), &regs(), addrs(), 2, MEM as u64)
        .expect_err("inconsistent");
    assert!(matches!(err, SamplerError::Inconsistent { .. }), "{err}");
    // No vCPU in long mode.
    let mut r = regs();
    r[0].long_mode = false;
    let err = Sampler::new(Guest::new().memory(), &btf(), &r, addrs(), 2, MEM as u64)
        .expect_err("no root");
    assert!(
        matches!(err, SamplerError::NoKernelPageTable { tried: 0, .. }),
        "{err}"
    );
    // A CR3 that does not map the kernel.
    r[0] = CpuRegs {
        long_mode: true,
        cr3: 0x8000,
        ..r[0]
    };
    let err = Sampler::new(Guest::new().memory(), &btf(), &r, addrs(), 2, MEM as u64)
        .expect_err("no root");
    assert!(
        matches!(err, SamplerError::NoKernelPageTable { tried: 1, .. }),
        "{err}"
    );
    // A user-half PTI CR3 (bit 12 set) is retried without the bit.
    r[0].cr3 = 0x10_1000;
    assert!(Sampler::new(Guest::new().memory(), &btf(), &r, addrs(), 2, MEM as u64).is_ok());
}

#[test]
fn symbols_come_from_kallsyms_text() {
    let text = "ffffffff83cf65c0 D runqueues\n\
                ffffffff829340e0 D __per_cpu_offset\n\
                ffffffff829236a8 D page_offset_base\n\
                ffffffff83032010 T phys_base\n\
                ffffffff8302a000 T init_top_pgt\n\
                ffffffff8307d330 t scx_enable_state_var\n\
                ffffffffc0001000 t runqueues\t[fake_mod]\n";
    let syms = SymbolTable::from_text(text).expect("parses");
    let a = KernelAddrs::from_symbols(&syms).expect("found");
    assert_eq!(a.runqueues, 0xffff_ffff_83cf_65c0);
    assert_eq!(a.scx_enable_state, Some(0xffff_ffff_8307_d330));
    assert_eq!(a.scx_root, None);
    let short = SymbolTable::from_text("ffffffff83cf65c0 D runqueues\n").expect("parses");
    assert!(matches!(
        KernelAddrs::from_symbols(&short),
        Err(SamplerError::MissingSymbol {
            name: "__per_cpu_offset"
        })
    ));
}

#[test]
fn layout_of_the_real_7_3_kernel() {
    let path = crate::btf::kernel_tests::vmlinux_7_3();
    if !path.exists() {
        crate::btf::kernel_tests::skip(&format!("{} is absent", path.display()));
        return;
    }
    let btf = Btf::from_file(&path).expect("BTF");
    let l = RqLayout::from_btf(&btf).expect("layout");
    // Offsets checked with `pahole -C rq` (see btf/kernel_tests.rs).
    assert_eq!(l.nr_running.offset_bytes, 0);
    assert_eq!(l.curr.offset_bytes, 24);
    assert_eq!(l.nr_switches.offset_bytes, 64);
    assert_eq!(l.clock.offset_bytes, 3984);
    assert_eq!(
        l.fair.map(|(f, n)| (f.offset_bytes, n)),
        Some((276, "cfs.h_nr_queued"))
    );
    assert_eq!(l.scx_nr_running.map(|f| f.offset_bytes), Some(3000));
    let scx = l.scx.expect("7.3 has sched_ext");
    assert!(scx.states.contains(&(1, "enabled".to_string())));
    assert!(scx.exit_kinds.contains(&(1026, "error_stall".to_string())));
    assert!(scx.exit_kind.is_some() && scx.ops_name.is_some());
    // scx_sched.pcpu -> scx_sched_pcpu { .., event_stats @112, deferred_reenq_local,
    // bypass_dsq }: 21 s64 counters in declaration order (bpftool btf dump).
    let p = scx.pcpu.as_ref().expect("7.3 has per-CPU sched_ext state");
    assert_eq!(p.ptr.offset_bytes, 744);
    let names: Vec<&str> = p.events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 21, "{names:?}");
    for n in [
        "select_cpu_fallback",
        "dispatch_local_dsq_offline",
        "dispatch_keep_last",
        "enq_skip_exiting",
        "enq_skip_migration_disabled",
        "refill_slice_dfl",
        "bypass_duration",
        "bypass_dispatch",
        "bypass_activate",
        "insert_not_owned",
        "sub_rescue",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(p.events[0], ("select_cpu_fallback".to_string(), 112));
    for (i, (_, off)) in p.events.iter().enumerate() {
        assert_eq!(*off, 112 + 8 * i as u32);
    }
    let by = p.bypass_dsq.expect("7.3 has per-CPU bypass DSQs");
    assert_eq!(by.id.offset_bytes, by.nr.offset_bytes + 8, "nr, seq, id");
    assert!(
        p.span.0 == 112 && p.span.1 == by.id.offset_bytes + 8,
        "{:?}",
        p.span
    );
    let g = scx.global_dsqs.expect("7.3 has per-node global DSQs");
    assert_eq!(
        (g.ptr.size, g.dsq.id.offset_bytes - g.dsq.nr.offset_bytes),
        (8, 8)
    );
    let u = scx
        .user_dsqs
        .expect("7.3 keeps user DSQs in scx_sched.dsq_hash");
    // rhashtable.tbl first, bucket_table { size, nest, ... buckets[] cacheline-aligned },
    // rhash_head.next first (include/linux/rhashtable{,-types}.h).
    assert_eq!(
        (u.tbl.size, u.size.offset_bytes, u.nest.offset_bytes),
        (8, 0, 4)
    );
    assert_eq!((u.buckets, u.next), (64, 0));
    assert!(u.hash_node > u.dsq.id.offset_bytes, "{u:?}");
    let (start, end) = span(&{
        let mut v = vec![l.cpu, l.nr_running, l.curr, l.idle, l.nr_switches, l.clock];
        v.extend(l.scx_nr_running);
        v
    });
    // One read of about a page per CPU (rq.idle sits just past 4 KiB).
    assert!(start == 0 && end <= 8192, "{start}..{end}");
}

#[test]
fn c_strings_and_spans() {
    assert_eq!(c_string(b"abc\0def", 0, 7), "abc");
    assert_eq!(c_string(b"abcdef", 2, 3), "cde");
    assert_eq!(c_string(b"ab", 5, 3), "");
    assert_eq!(c_string(b"\xff\xfe\0", 0, 3), "\u{fffd}\u{fffd}");
    assert_eq!(span(&[]), (0, 0));
}
