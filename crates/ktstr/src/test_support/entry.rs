//! A registered test: what `#[ktstr_test]` writes down about each test function.

use ktstr_assert::{Assert, AssertResult};
use ktstr_topology::{Topology, TopologyError};

use super::gauntlet::TopologyConstraints;
use super::payload::Payload;
use super::scheduler::Scheduler;
use super::VmResult;
use crate::scenario::Ctx;

/// Every `#[ktstr_test]` of the binary, gathered at link time.
#[linkme::distributed_slice]
pub static KTSTR_TESTS: [KtstrTestEntry];

/// The body of a test, run in the guest.
pub type TestFn = fn(&Ctx) -> anyhow::Result<AssertResult>;

/// A check the host runs on the result after the VM ended.
pub type PostVmFn = fn(&VmResult) -> anyhow::Result<()>;

/// One test: its body and everything its attribute said.
#[derive(Debug, Clone, Copy)]
pub struct KtstrTestEntry {
    /// The function's name.
    pub name: &'static str,
    /// The module it is declared in (`module_path!()`).
    pub module_path: &'static str,
    /// The body.
    pub func: TestFn,
    /// NUMA nodes (`None`: the scheduler's topology, else 1).
    pub numa_nodes: Option<u32>,
    /// LLCs in all (`None`: the scheduler's topology, else 1).
    pub llcs: Option<u32>,
    /// Cores per LLC (`None`: the scheduler's topology, else 2).
    pub cores: Option<u32>,
    /// Threads per core (`None`: the scheduler's topology, else 1).
    pub threads: Option<u32>,
    /// Guest memory (`None`: max(64 MiB per vCPU, 256 MiB)).
    pub memory_mib: Option<u64>,
    /// How long the workload runs, seconds (`None`: [`DEFAULT_DURATION_S`]).
    pub duration_s: Option<u64>,
    /// sched_ext watchdog timeout for the test, written into the guest by the host
    /// (see [`crate::watchdog`]); `None` leaves the scheduler's own.
    pub watchdog_timeout_s: Option<u64>,
    /// Snapshots taken over 10-90 % of the run, the guest frozen for each (0: none); they
    /// reach `post_vm` as [`VmResult::snapshots`].
    pub num_snapshots: u32,
    /// Globals the host writes into the scheduler's BPF maps once they exist; the body
    /// starts after they are written (`bpf_map_write = ..`).
    pub bpf_map_writes: &'static [BpfMapWrite],
    /// BPF map fields the host reads every monitor tick and folds into run metrics
    /// (`watch_bpf_maps = [..]`, [`VmResult::run_metric`]).
    pub watch_bpf_maps: &'static [crate::bpf_watch::WatchBpfMap],
    /// The body names an op the host serves (`Op::capture_snapshot`, kernel memory ops):
    /// the host monitor runs for it. Set by `#[ktstr_test]` from the body's tokens.
    pub host_ops: bool,
    /// The scheduler under test ([`Scheduler::EEVDF`] for the kernel's own).
    pub scheduler: &'static Scheduler,
    /// Other schedulers packed into the guest for scheduler ops (`Op::attach_scheduler`).
    pub staged_schedulers: &'static [&'static Scheduler],
    /// A payload started beside the workers of every scenario the test runs.
    pub payload: Option<&'static Payload>,
    /// More payloads packed into the guest for `Op::run_payload`.
    pub workloads: &'static [&'static Payload],
    /// Arguments appended to the scheduler's own.
    pub extra_sched_args: &'static [&'static str],
    /// Host files or directories copied to `/include-files` in the guest.
    pub extra_include_files: &'static [&'static str],
    /// Parent cgroup of the workload cgroups (`None`: `/ktstr`).
    pub workload_root_cgroup: Option<&'static str>,
    /// Checks run on the host after the VM.
    pub post_vm: Option<PostVmFn>,
    /// Checks the test asked for (merged over the scheduler's).
    pub assert: Assert,
    /// The test must fail.
    pub expect_err: bool,
    /// With `expect_err`: the scheduler's error must contain this text.
    pub expect_scx_bpf_error_contains: Option<&'static str>,
    /// The topologies the test accepts: the gauntlet runs it on the presets these admit
    /// (`requires_smt` also skips its own run on a topology without SMT). `#[ktstr_test]`
    /// takes the scheduler's and sets the keys the test gives.
    pub constraints: TopologyConstraints,
    /// Run on the host, without a VM.
    pub host_only: bool,
    /// `#[ignore]`d: its gauntlet runs are listed among the ignored tests too.
    pub ignore: bool,
    /// A check of the result that runs whatever became of the guest (even after a failure,
    /// unlike `post_vm`); its failure fails the test.
    pub post_vm_unconditional: Option<PostVmFn>,
    /// Kernel address space randomization on (the kernel's default); off adds `nokaslr`.
    pub kaslr: bool,
}

/// A global of a BPF program the host sets while its scheduler runs: the variable `field` of
/// the map whose name ends with `map_suffix` (`.bss`, `.data`; a `.rodata` map is frozen at
/// load and refused), to `value` (zero-extended to the variable's size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfMapWrite {
    /// How the map's name ends.
    pub map_suffix: &'static str,
    /// The global variable.
    pub field: &'static str,
    /// Its new value.
    pub value: u32,
}

impl BpfMapWrite {
    /// Sets `field` in the map whose name ends with `map_suffix` to `value`.
    pub const fn new(map_suffix: &'static str, field: &'static str, value: u32) -> Self {
        BpfMapWrite {
            map_suffix,
            field,
            value,
        }
    }
}

/// Default workload duration, seconds.
pub const DEFAULT_DURATION_S: u64 = 12;

fn unset(_: &Ctx) -> anyhow::Result<AssertResult> {
    anyhow::bail!("KtstrTestEntry::DEFAULT has no test body")
}

impl KtstrTestEntry {
    /// The defaults every attribute starts from.
    pub const DEFAULT: KtstrTestEntry = KtstrTestEntry {
        name: "",
        module_path: "",
        func: unset,
        numa_nodes: None,
        llcs: None,
        cores: None,
        threads: None,
        memory_mib: None,
        duration_s: None,
        watchdog_timeout_s: None,
        num_snapshots: 0,
        host_ops: false,
        bpf_map_writes: &[],
        watch_bpf_maps: &[],
        scheduler: &Scheduler::EEVDF,
        staged_schedulers: &[],
        payload: None,
        workloads: &[],
        extra_sched_args: &[],
        extra_include_files: &[],
        workload_root_cgroup: None,
        post_vm: None,
        assert: Assert::NO_OVERRIDES,
        expect_err: false,
        expect_scx_bpf_error_contains: None,
        constraints: TopologyConstraints::DEFAULT,
        host_only: false,
        ignore: false,
        post_vm_unconditional: None,
        kaslr: true,
    };

    /// The topology the guest gets: the test's keys, else the scheduler's, else 1/1/2/1.
    /// `llcs` counts LLCs across all nodes and must divide evenly over them.
    pub fn topology(&self) -> Result<Topology, TopologyError> {
        let (n, l, c, t) = self.shape();
        Topology::with_total_llcs(n, l, c, t)
    }

    /// (NUMA nodes, LLCs in all, cores per LLC, threads per core) the test asks for.
    const fn shape(&self) -> (u32, u32, u32, u32) {
        const fn pick(v: Option<u32>, d: u32) -> u32 {
            match v {
                Some(v) => v,
                None => d,
            }
        }
        let (n, l, c, t) = self.scheduler.topology;
        (
            pick(self.numa_nodes, n),
            pick(self.llcs, l),
            pick(self.cores, c),
            pick(self.threads, t),
        )
    }

    /// `Err(why)` when the test's constraints are inconsistent or its own topology is
    /// outside them. `#[ktstr_test]` evaluates it in a `const`, so such a test does not compile.
    pub const fn check_constraints(&self) -> Result<(), &'static str> {
        if let Err(why) = self.constraints.consistent() {
            return Err(why);
        }
        let (n, l, c, t) = self.shape();
        // `llcs` counts LLCs across all nodes: the CPUs are LLCs x cores x threads.
        let cpus = l.saturating_mul(c).saturating_mul(t);
        // `requires_smt` on a topology without SMT skips the test's own run (it says so at
        // run time) and keeps the gauntlet's SMT presets: not an error here.
        let smt_ok = if t < 2 { 2 } else { t };
        self.constraints.check_shape(n, l, cpus, smt_ok)
    }

    /// Workload duration.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.duration_s.unwrap_or(DEFAULT_DURATION_S))
    }

    /// The checks in force: the scheduler's, then the test's on top.
    pub fn effective_assert(&self) -> Assert {
        self.scheduler.assert.merge(&self.assert)
    }

    /// Finds a registered test by name.
    pub fn find(name: &str) -> Option<&'static KtstrTestEntry> {
        KTSTR_TESTS.iter().find(|e| e.name == name)
    }
}
