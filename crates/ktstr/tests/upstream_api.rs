//! Compile-only conformance with the existing ktstr's test-writing surface
//! (`/work/shared/docs/upstream-api.md`): every name listed there that this ktstr has, used the
//! way the existing ktstr's documentation shows, so a test file written for it compiles here
//! with only its dependency line changed. If this file stops compiling, a shared name or
//! signature drifted.
//!
//! The `#[ktstr_test]`s here carry `ignore`: `cargo test` type-checks and registers them but
//! boots no VM (run one with `--ignored` and a filter). The plain functions are type-checked,
//! not run. The `#[test]`s at the end run on the host and check what needs no guest.
//!
//! Names from upstream-api.md still MISSING here (a test using one does not compile yet):
//!
//! - `#[ktstr_test]` keys: `expect_auto_repro`, `performance_mode`, `no_perf_mode`, `pci`,
//!   `survives_storm`, `allow_inconclusive`, `wprof`, `perf_delta_assertions`, `disk`,
//!   `networks`,
//!   `config`, `expect_scx_bpf_error_matches`, `wprof_args`, `cleanup_budget_ms`, `cpu_budget`,
//!   `min_page_locality`, `max_cross_node_migration_ratio`, `max_slow_tier_ratio`;
//!   `auto_repro` (the existing default, true: only `auto_repro = false` is accepted).
//! - `Payload`'s fields (`kind: PayloadKind`, `output`, `default_checks`, `metrics`,
//!   `include_files`, ...): a struct-literal `Payload` does not compile; here a payload is
//!   `Payload::named(..)`/`Payload::binary(..)` with `.default_args(..)`.
//! - `declare_scheduler!` keys: `kernels`, `config_file` (rejected as not implemented),
//!   `config_file_def`, `verifier_exclude_topologies`, `kernel_builtin_enable`,
//!   `kernel_builtin_disable`; `Scheduler` builders `manifest_dir`, `config_file`,
//!   `config_file_def`, `kernels`, `verifier_exclude_topologies`;
//!   `SchedulerSpec::KernelBuiltin`; `CgroupPath`;
//!   `Payload::KERNEL_DEFAULT`; `#[derive(Payload)]`, `PayloadRun`.
//! - `Ctx` fields `topo` as the existing ktstr's `TestTopology`, `sched_pid`, `settle`,
//!   `wait_for_map_write`, `variant_hash`; `spawn_diverse`, `split_half`, `dfl_wl`.
//! - `CgroupDef::pcomm` (workers as threads of one named process).
//! - `WorkType`s (33 are here of the 45 upstream-api.md's table lists; its text says 46):
//!   AluHot, SmtSiblingSpin, IoSyncWrite, IoRandRead, IoConvoy, AsymmetricWaker, EpollStorm,
//!   PriorityInversion, NetTraffic, IrqWake, Schbench, Taobench. Two shared ones still have
//!   other fields here: `Sequence { phases }` (the existing ktstr: `first, rest` of
//!   `WorkPhase`s) and `Custom { name, run }` with `run: fn() -> u64` (`CustomFn` over
//!   `fn(&WorkerCtx) -> WorkerReport`, `cfg`); the `TimerLatency` fields are unconfirmed.
//! - `WorkerReport` fields `migrations`, `max_gap_wall_ms`, `iteration_costs_ns`,
//!   `numa_pages`, `vmstat_numa_pages_migrated`, `phase_slices`, `taobench_whole` and others.
//! - Assertions: `min_page_locality`, `max_cross_node_migration_ratio`, `max_slow_tier_ratio`,
//!   `expect_scx_bpf_error_matches`; the free functions `assert_not_stuck`,
//!   `assert_isolation`, `assert_throughput_parity`, `assert_benchmarks`,
//!   `assert_scx_events_clean`, `assert_thresholds`, `assert_page_locality`,
//!   `assert_cross_node_migration`; `#[derive(Claim)]`; `VmResult::phase_cgroup_metric`,
//!   `phase_buckets`, `run_metric`, `step_throughput`.
//! - The canned-scenario modules `affinity`, `basic`, `cpuset`, `dynamic`, `stress`, `nested`,
//!   `performance`, `interaction`. The gauntlet's `TopoPreset` has the existing ktstr's
//!   names and shapes but not its `topology: Topology` field (numa_nodes, llcs, cores,
//!   threads are fields of their own here), and the aarch64 set is not here.
//!
//! Names are taken as the existing ktstr takes them (`impl Into<Cow<'static, str>>`) but kept
//! as `String` fields: code that builds ops and cgroups compiles unchanged; code that matches
//! on an `Op`'s or a `CgroupDef`'s name field as a `Cow` does not.

use std::collections::BTreeSet;
use std::time::Duration;

use ktstr::prelude::*;

// ---- Schedulers (section 3) ----

declare_scheduler!(pub CONFORMANCE_SCHED, {
    name = "scx_conformance",
    binary = "scx_conformance",
    topology = (1, 2, 2, 1),
    sched_args = ["--slice-us", "5000"],
    cgroup_parent = "/ktstr.slice",
    sysctls = [Sysctl::new("kernel.sched_rt_runtime_us", "950000")],
    kargs = ["ktstr.conformance=1"],
    assert = Assert::NO_OVERRIDES.check_not_stuck().max_gap_ms(3000),
});

/// A scheduler built with the const builders.
static BUILT: Scheduler = Scheduler::named("scx_built")
    .binary(SchedulerSpec::Discover("scx_built"))
    .sched_args(&["--verbose"])
    .topology(1, 1, 2, 1)
    .sysctls(&[Sysctl::new("kernel.sched_child_runs_first", "0")])
    .kargs(&["quiet"])
    .assert(Assert::NO_OVERRIDES.check_isolation())
    .cgroup_parent("/built.slice");

// Topology constraints as the existing ktstr's documentation writes them: a whole set
// (cross-checked against the topology at compile time), and the single keys.
declare_scheduler!(CONSTRAINED_SCHED, {
    name = "scx_constrained",
    binary = "scx_constrained",
    topology = (1, 2, 2, 2),
    constraints = TopologyConstraints {
        min_numa_nodes: 1,
        max_numa_nodes: Some(1),
        min_llcs: 2,
        max_llcs: Some(8),
        requires_smt: true,
        min_cpus: 4,
        max_cpus: Some(64),
    },
});

declare_scheduler!(KEYED_SCHED, {
    name = "scx_keyed",
    binary = "scx_keyed",
    topology = (2, 2, 2, 1),
    constraints = TopologyConstraints {
        max_numa_nodes: Some(2),
        ..TopologyConstraints::DEFAULT
    },
    min_llcs = 2,
    max_llcs = 4,
    min_cpus = 4,
    max_cpus = 32,
    min_numa_nodes = 1,
    max_numa_nodes = 2,
    requires_smt = false,
});

/// The const builders of constraints.
static BOUNDED: Scheduler = Scheduler::named("scx_bounded")
    .constraints(TopologyConstraints::DEFAULT)
    .min_numa_nodes(1)
    .max_numa_nodes(2)
    .min_llcs(1)
    .max_llcs(8)
    .requires_smt(false)
    .min_cpus(1)
    .max_cpus(64);

/// The discover shorthand.
static DISCOVERED: Scheduler = Scheduler::named("scx_discovered").binary_discover("scx_x");

// ---- Payloads ----

/// A payload binary from the host's PATH.
static TRUE_BIN: Payload = Payload::named("true");
/// A payload with a name of its own and default arguments.
static DD: Payload = Payload::binary("dd", "dd").default_args(&["if=/dev/zero", "count=1"]);

// ---- #[ktstr_test] keys (section 2) ----

/// Topology, duration, watchdog and every Assert override this ktstr shares.
#[ktstr_test(
    llcs = 2,
    cores = 2,
    threads = 1,
    numa_nodes = 1,
    memory_mib = 512,
    duration_s = 2,
    watchdog_timeout_s = 5,
    not_stuck,
    isolation,
    fail_on_rq_clock_stuck,
    max_gap_ms = 3000,
    max_spread_pct = 30.0,
    max_throughput_cv = 0.5,
    min_work_rate = 1.0,
    max_p99_wake_latency_ns = 5000000,
    max_wake_latency_cv = 2.0,
    min_iteration_rate = 1.0,
    max_migration_ratio = 10.0,
    max_imbalance_ratio = 4.0,
    max_local_dsq_depth = 50,
    sustained_samples = 5,
    max_fallback_rate = 200.0,
    max_keep_last_rate = 100.0,
    auto_repro = false,
    requires_smt = false,
    kaslr = true,
    ignore
)]
fn conformance_assert_keys(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(
        ctx,
        vec![
            CgroupDef::named("cg_0").workers(2),
            CgroupDef::named("cg_1").workers(2),
        ],
    )
}

/// Scheduler, staged schedulers, payloads, cgroup root, extra args and files, post_vm.
#[ktstr_test(
    scheduler = CONFORMANCE_SCHED,
    staged_schedulers = [BUILT, DISCOVERED],
    payload = DD,
    workloads = [TRUE_BIN],
    workload_root_cgroup = "/test.slice",
    extra_sched_args = ["--extra"],
    extra_include_files = ["/etc/os-release"],
    num_snapshots = 12,
    bpf_map_write = BpfMapWrite::new(".bss", "nr_dispatched", 1),
    watch_bpf_maps = [GAUGE, COUNTER],
    post_vm = check_the_vm,
    post_vm_unconditional = check_the_vm,
    ignore
)]
fn conformance_scheduler_keys(ctx: &Ctx) -> Result<AssertResult> {
    execute_steps(
        ctx,
        vec![
            Step::with_payload(&DD, HoldSpec::frac(0.5)),
            Step::new(
                vec![
                    Op::replace_scheduler(&BUILT),
                    Op::run_payload(&TRUE_BIN, vec![]),
                    Op::capture_snapshot("after_replace"),
                    Op::watch_snapshot("jiffies_64"),
                    Op::write_kernel_hot(
                        KernelTarget::symbol("sysctl_sched_rt_runtime"),
                        KernelValue::u32(950_000),
                    ),
                    Op::write_kernel_hot_batch([(
                        KernelTarget::direct(0xffff_8880_0000_1000),
                        KernelValue::bytes(vec![0u8; 4]),
                    )]),
                    Op::write_kernel_cold(
                        KernelTarget::per_cpu_field("runqueues", "scx.flags", 0),
                        KernelValue::or_u32(1 << 5),
                    ),
                    Op::write_kernel_cold_batch(vec![(
                        KernelTarget::task_field(1, 0, "scx.dsq_vtime"),
                        KernelValue::u64(1),
                    )]),
                    Op::read_kernel_hot(
                        "jiffies",
                        KernelTarget::kva(0xffff_ffff_8200_0000),
                        KernelValueWidth::u64(),
                    ),
                    Op::read_kernel_cold(
                        "comm",
                        KernelTarget::task_field(1, 0, "comm"),
                        KernelValueWidth::bytes(16),
                    ),
                    Op::pin_bpf_map("ktstr.bss"),
                ],
                HoldSpec::frac(0.5),
            ),
        ],
    )
}

/// Watched BPF map fields, as the existing ktstr declares them.
const GAUGE: WatchBpfMap = WatchBpfMap::new(".bss", "vtime_now", BpfMapAgg::Scalar, "vtime");
const COUNTER: WatchBpfMap = WatchBpfMap::new(
    ".bss",
    "nr_dispatched",
    BpfMapAgg::ScalarCounter,
    "dispatched",
);

/// The existing ktstr's post_vm idiom: claims over the VM's result, ending with the verdict.
fn check_the_vm(result: &VmResult) -> Result<()> {
    let mut verdict = Verdict::new();
    claim!(verdict, result.payloads.len()).at_least(1usize);
    claim_present!(verdict, result.run_metric("main_bpf_dispatched")).at_least(1.0);
    if let Some(step0) = result.phase_cgroup(Phase::step(0), "cg_0") {
        claim!(verdict, step0.total_iterations).gt(0u64);
        claim_present!(verdict, step0.run_delay_summary().map(|(mean, _)| mean)).at_least(0.0);
    }
    verdict.into_anyhow_or_log()
}

/// Every constraint key on a test; the gauntlet runs it on the presets these admit.
#[ktstr_test(
    min_numa_nodes = 1,
    max_numa_nodes = 2,
    min_llcs = 1,
    max_llcs = 4,
    min_cpus = 2,
    max_cpus = 16,
    requires_smt = false,
    duration_s = 2,
    ignore
)]
fn conformance_constraint_keys(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// A test inheriting its scheduler's constraints, tightening one.
#[ktstr_test(scheduler = CONSTRAINED_SCHED, max_cpus = 32, ignore)]
fn conformance_inherited_constraints(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// A test that must fail, naming the scheduler error it expects.
#[ktstr_test(
    scheduler = CONFORMANCE_SCHED,
    expect_err,
    expect_scx_bpf_error_contains = "runnable task stall",
    ignore
)]
fn conformance_expect_err(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// Runs on the host, no VM.
#[ktstr_test(host_only, duration_s = 1, ignore)]
fn conformance_host_only(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// A hand-written entry in the existing ktstr's form. Not registered: `#[ktstr_test_entry]`
/// has no `ignore`, and registering it would boot a VM under `cargo test`
/// (`HAND_WRITTEN_ENTRY` in ktstr_tests.rs registers and runs one).
#[allow(dead_code)]
static CONFORMANCE_ENTRY: KtstrTestEntry = KtstrTestEntry {
    name: "conformance_entry",
    module_path: module_path!(),
    func: conformance_body,
    duration_s: Some(2),
    assert: Assert::NO_OVERRIDES.check_not_stuck(),
    ..KtstrTestEntry::DEFAULT
};

fn conformance_body(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::cgroup_add(ctx)
}

// ---- Ops, steps, backdrops (section 4) ----

/// Every op constructor this ktstr shares, in a scenario (type-checked, not run).
#[allow(dead_code)]
fn every_op(ctx: &Ctx) -> Result<AssertResult> {
    let work = WorkSpec::default()
        .workers(2)
        .work_type(WorkType::SpinWait)
        .sched_policy(SchedPolicy::Batch)
        .affinity(AffinityIntent::SingleCpu)
        .nice(5)
        .comm("spinner")
        .mem_policy(MemPolicy::Local)
        .mpol_flags(MpolFlags::NONE)
        .uid(1000)
        .gid(1000)
        .numa_node(0);
    let pct = WorkSpec::default().workers_pct(1.0);
    let backdrop = Backdrop::new()
        .push_cgroup(CgroupDef::named("persistent").workers(1))
        .extend_cgroups(vec![CgroupDef::named("also")])
        .push_payload(&DD)
        .extend_payloads([&TRUE_BIN])
        .push_op(Op::add_cgroup("target"))
        .extend_ops(vec![Op::add_cgroup("b")]);
    let _ = Backdrop::from_cgroups(vec![CgroupDef::named("x")]);
    let steps = vec![
        Step::new(
            vec![
                Op::add_cgroup("a"),
                Op::add_cgroup_def(CgroupDef::named("c").workers(1)),
                Op::set_cpuset("a", CpusetSpec::disjoint(0, 2)),
                Op::set_cpuset("b", CpusetSpec::overlap(1, 2, 0.25)),
                Op::swap_cpusets("a", "b"),
                Op::clear_cpuset("a"),
                Op::spawn(SpawnPlacement::Cgroup("a".into()), work.clone()),
                Op::spawn_workers("b", pct),
                Op::spawn_in_cgroup("a", WorkType::YieldHeavy),
                Op::spawn_host(WorkSpec::default().workers(1)),
                Op::set_affinity("a", AffinityIntent::LlcAligned),
                Op::move_all_tasks("a", "target"),
                Op::capture_cgroup_procs("moved", "target"),
                Op::steer_irq(IrqSelector::by_number(4), 0),
                Op::steer_irq(IrqSelector::by_label("ttyS0"), 1),
                Op::freeze_cgroup("b"),
                Op::unfreeze_cgroup("b"),
                Op::stop_cgroup("b"),
                Op::remove_cgroup("b"),
            ],
            HoldSpec::fixed(Duration::from_millis(500)),
        ),
        Step::with_op(
            Op::run_payload_in_cgroup(&DD, vec!["bs=1".into()], "persistent"),
            HoldSpec::frac(0.2),
        )
        .set_ops(vec![
            Op::run_payload(&DD, vec![]),
            Op::wait_payload("dd"),
            Op::wait_payload_in_cgroup("dd", "persistent"),
            Op::kill_payload("true"),
            Op::kill_payload_in_cgroup("true", "payload"),
        ])
        .set_hold(HoldSpec::frac(0.2)),
        Step::new(
            vec![
                Op::attach_scheduler(&BUILT),
                Op::restart_scheduler(),
                Op::replace_scheduler(&DISCOVERED),
                Op::detach_scheduler(),
            ],
            HoldSpec::loop_at(Duration::from_millis(100)),
        ),
        Step::with_defs(
            vec![CgroupDef::named("last").cpuset(CpusetSpec::range(0.0, 0.5))],
            HoldSpec::FULL,
        ),
        Step::hold(HoldSpec::Fixed(Duration::from_millis(100))),
        Step {
            setup: Setup::with_factory(one_cgroup_per_llc),
            ops: vec![],
            hold: HoldSpec::frac(0.5),
        },
        Step {
            setup: vec![CgroupDef::named("lit")].into(),
            ops: vec![],
            hold: HoldSpec::frac(0.5),
        },
    ];
    HoldSpec::FULL.validate().map_err(anyhow::Error::msg)?;
    let _procs: Option<Vec<i32>> = ctx.captured_cgroup_procs("moved");
    let _override: Option<WorkType> = ctx.work_type_override.clone();
    let custom = Assert::NO_OVERRIDES.check_not_stuck().max_spread_pct(50.0);
    let _ = execute_scenario_with(ctx, backdrop.clone(), steps.clone(), Some(&custom))?;
    let _ = execute_steps_with(ctx, steps.clone(), None)?;
    execute_scenario(ctx, backdrop, steps)
}

/// A setup factory: cgroups made from the context when the step begins.
fn one_cgroup_per_llc(ctx: &Ctx) -> Vec<CgroupDef> {
    (0..ctx.topo.llcs.len())
        .map(|i| CgroupDef::named(format!("llc_{i}")).cpuset(CpusetSpec::llc(i)))
        .collect()
}

// ---- Cgroups (section 5) ----

/// Every CgroupDef builder this ktstr shares (type-checked, not run).
#[allow(dead_code)]
fn every_cgroup_builder(ctx: &Ctx) -> Result<AssertResult> {
    let nodes: BTreeSet<usize> = [0].into();
    let defs = vec![
        CgroupDef::named("core")
            .cpuset(CpusetSpec::llc(0))
            .work(WorkSpec::default().workers(1))
            .work(WorkSpec::default().workers(1).work_type(WorkType::bursty(
                Duration::from_millis(10),
                Duration::from_millis(10),
            )))
            .workers(2)
            .workers_pct(1.0)
            .work_type(WorkType::SpinWait)
            .workload(&DD),
        CgroupDef::named("attrs")
            .sched_policy(SchedPolicy::Fifo(1))
            .affinity(AffinityIntent::exact([0, 1]))
            .mem_policy(MemPolicy::Bind(nodes.clone()))
            .mpol_flags(MpolFlags::STATIC_NODES)
            .nice(-5)
            .comm("worker")
            .uid(0)
            .gid(0)
            .numa_node(0)
            .swappable(true),
        CgroupDef::named("limits")
            .cpuset(CpusetSpec::numa(0))
            .cpuset_mems(nodes)
            .cpu_quota_pct(50)
            .cpu_quota(Duration::from_millis(10), Duration::from_millis(100))
            .cpu_unlimited()
            .cpu_weight(200)
            .memory_max(256 << 20)
            .memory_high(192 << 20)
            .memory_low(16 << 20)
            .memory_unlimited()
            .memory_swap_max(0)
            .memory_swap_unlimited()
            .io_weight(100)
            .pids_max(128)
            .pids_unlimited(),
        CgroupDef::named("affinity").affinity(AffinityIntent::RandomSubset {
            from: [0, 1, 2].into(),
            count: 2,
        }),
    ];
    let _works: Vec<WorkSpec> = defs[0].merged_works();
    let _ = AffinityIntent::CrossCgroup;
    let _ = CpusetSpec::exact([0, 2]);
    execute_defs(ctx, defs)
}

// ---- Host-side checks ----

/// A post_vm check compiles as a `PostVmFn`, and its verdict fails on a broken claim.
#[test]
fn post_vm_checks_end_with_the_verdict() {
    let f: ktstr::test_support::PostVmFn = check_the_vm;
    let empty = VmResult::default();
    let err = f(&empty).expect_err("no payload ran, the claim must fail");
    assert!(
        format!("{err:#}").contains("result.payloads.len()"),
        "{err:#}"
    );
}

/// `#[ktstr_test]` registers every test here, ignored ones too, with its keys applied.
#[test]
fn conformance_tests_are_registered() {
    let keys =
        ktstr::test_support::KtstrTestEntry::find("conformance_assert_keys").expect("registered");
    assert_eq!(
        (keys.llcs, keys.cores, keys.duration_s),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(keys.assert.max_gap_ms, Some(3000));
    let sched = ktstr::test_support::KtstrTestEntry::find("conformance_scheduler_keys")
        .expect("registered");
    assert!(std::ptr::eq(sched.scheduler, &CONFORMANCE_SCHED));
    assert_eq!(sched.staged_schedulers.len(), 2);
    assert!(sched.post_vm.is_some());
    assert_eq!(sched.workload_root_cgroup, Some("/test.slice"));
    assert!(ktstr::test_support::KtstrTestEntry::find("conformance_entry").is_none());
    assert_eq!(CONFORMANCE_ENTRY.duration_s, Some(2));
    assert!(BUILT.has_active_scheduling() && BUILT.has_bpf_scheduler());
    assert!(!Scheduler::EEVDF.has_bpf_scheduler());
}

/// Constraint keys land in the entry over the scheduler's, and the gauntlet's presets are
/// the existing ktstr's.
#[test]
fn constraints_and_presets_are_the_existing_ones() {
    use ktstr::test_support::KtstrTestEntry;
    let own = KtstrTestEntry::find("conformance_constraint_keys").expect("registered");
    assert_eq!(
        own.constraints,
        TopologyConstraints::DEFAULT
            .with_max_numa_nodes(2)
            .with_max_llcs(4)
            .with_min_cpus(2)
            .with_max_cpus(16)
    );
    let inherited = KtstrTestEntry::find("conformance_inherited_constraints").expect("registered");
    assert_eq!(
        inherited.constraints,
        CONSTRAINED_SCHED.constraints.with_max_cpus(32)
    );
    assert!(inherited.constraints.requires_smt && inherited.constraints.min_llcs == 2);
    assert_eq!(
        KEYED_SCHED.constraints,
        TopologyConstraints::DEFAULT
            .with_max_numa_nodes(2)
            .with_min_llcs(2)
            .with_max_llcs(4)
            .with_min_cpus(4)
            .with_max_cpus(32)
    );
    assert_eq!(BOUNDED.constraints.max_llcs, Some(8));
    assert_eq!(
        TopologyConstraints::DEFAULT,
        TopologyConstraints {
            min_numa_nodes: 1,
            max_numa_nodes: Some(1),
            min_llcs: 1,
            max_llcs: Some(12),
            requires_smt: false,
            min_cpus: 1,
            max_cpus: Some(192),
        }
    );
    let names: Vec<&str> = ktstr::gauntlet::gauntlet_presets()
        .iter()
        .map(|p| p.name)
        .collect();
    for n in [
        "4cpu-1llc-nosmt",
        "14cpu-7llc-nosmt",
        "252cpu-14llc-smt",
        "2numa-32cpu-2llc-smt",
        "4numa-192cpu-12llc-smt",
        "192cpu-11llc-smt",
    ] {
        assert!(names.contains(&n), "{n}");
    }
}

/// The shared work types take the existing ktstr's fields, and their defaults validate.
#[test]
fn work_types_have_the_existing_fields() {
    let all = [
        WorkType::SpinWait,
        WorkType::YieldHeavy,
        WorkType::Mixed,
        WorkType::ForkExit,
        WorkType::NiceSweep,
        WorkType::Bursty {
            burst_duration: Duration::from_millis(50),
            sleep_duration: Duration::from_millis(100),
        },
        WorkType::bursty(Duration::from_millis(5), Duration::from_millis(5)),
        WorkType::PipeIo { burst_iters: 1024 },
        WorkType::FutexPingPong { spin_iters: 1024 },
        WorkType::CachePressure {
            size_kib: 32,
            stride: 64,
        },
        WorkType::FutexFanOut {
            fan_out: 4,
            spin_iters: 1024,
        },
        WorkType::AffinityChurn { spin_iters: 1024 },
        WorkType::PageFaultChurn {
            region_kib: 1024,
            touches_per_cycle: 64,
            spin_iters: 1024,
        },
        WorkType::CacheYield {
            size_kib: 32,
            stride: 64,
        },
        WorkType::PolicyChurn { spin_iters: 1024 },
        WorkType::IdleChurn {
            burst_duration: Duration::from_millis(1),
            sleep_duration: Duration::from_millis(5),
            precise_timing: false,
        },
        WorkType::IpcVariance {
            hot_iters: 100_000,
            cold_iters: 1000,
            period_iters: 4,
        },
        WorkType::MutexContention {
            contenders: 4,
            hold_iters: 1000,
            work_iters: 1000,
        },
        WorkType::ThunderingHerd {
            waiters: 5,
            batches: 100,
            inter_batch_ms: 10,
        },
        WorkType::PreemptStorm {
            cfs_workers: 2,
            rt_burst_iters: 10_000,
            rt_sleep_us: 1000,
        },
        WorkType::SignalStorm {
            signals_per_iter: 8,
            work_iters: 1000,
        },
        WorkType::NumaMigrationChurn { period_ms: 50 },
        WorkType::CachePipe {
            size_kib: 64,
            burst_iters: 1024,
        },
        WorkType::CrossAffinityChurn { spin_iters: 1024 },
        WorkType::CgroupAttachStorm {
            dest: "dest".into(),
            reap: ReapMode::SigIgn,
        },
        WorkType::NumaWorkingSetSweep {
            region_kib: 4096,
            sweep_period_ms: 100,
            target_nodes: vec![0, 1],
        },
        WorkType::RtStarvation {
            rt_workers: 1,
            cfs_workers: 2,
            rt_priority: 50,
            burst_iters: 10_000,
        },
        WorkType::ProducerConsumerImbalance {
            producers: 4,
            consumers: 1,
            produce_rate_hz: 1000,
            consume_iters: 100_000,
            queue_depth_target: 64,
        },
        WorkType::CgroupChurn {
            groups: 4,
            cycle_ms: 10,
        },
        WorkType::FanOutCompute {
            fan_out: 4,
            cache_footprint_kib: 256,
            operations: 2,
            sleep_usec: 100,
        },
        WorkType::WakeChain {
            depth: 4,
            wake: ktstr::workload::WakeMechanism::Pipe,
            work_per_hop: Duration::from_micros(50),
        },
    ];
    for w in &all {
        w.validate().unwrap_or_else(|e| panic!("{w:?}: {e}"));
    }
    assert!(WorkType::bursty(Duration::ZERO, Duration::from_millis(1))
        .validate()
        .is_err());
}

/// Names go in as `&'static str`, `String` or `Cow`, as in the existing ktstr.
#[test]
fn names_are_taken_as_cows() {
    use std::borrow::Cow;
    let cow: Cow<'static, str> = Cow::Borrowed("a");
    let owned: Cow<'static, str> = Cow::Owned(format!("b{}", 1));
    assert_eq!(Op::add_cgroup(cow.clone()), Op::add_cgroup("a"));
    assert_eq!(Op::swap_cpusets(cow, owned), Op::swap_cpusets("a", "b1"));
    assert_eq!(CgroupDef::named(Cow::Borrowed("x")).name, "x");
    assert_eq!(
        CgroupDef::named(String::from("y"))
            .comm(Cow::Borrowed("w"))
            .works[0]
            .comm,
        Some("w".to_string())
    );
}

/// The spawn forms place their work where the existing ktstr's do.
#[test]
fn spawn_forms_place_work() {
    let w = WorkSpec::default().workers(3);
    assert_eq!(
        Op::spawn_workers("a", w.clone()),
        Op::spawn(SpawnPlacement::Cgroup("a".into()), w.clone())
    );
    assert_eq!(
        Op::spawn_host(w.clone()),
        Op::Spawn {
            placement: SpawnPlacement::RunnerCgroup,
            work: w
        }
    );
    match Op::spawn_in_cgroup("b", WorkType::YieldHeavy) {
        Op::Spawn {
            placement: SpawnPlacement::Cgroup(c),
            work,
        } => {
            assert_eq!(c, "b");
            assert_eq!(work.work_type, WorkType::YieldHeavy);
            assert_eq!(work.num_workers, None);
        }
        other => panic!("{other:?}"),
    }
}
