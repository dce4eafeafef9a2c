//! Scenarios: cgroups of workers, steps that change them, and the context a test body gets.
//!
//! - [`def`]: [`CgroupDef`], [`CpusetSpec`], [`AffinityIntent`].
//! - [`step`]: [`Step`], [`HoldSpec`], [`Op`], [`Backdrop`].
//! - [`phase`]: per-step measurements ([`PhaseCgroupStats`]).
//! - [`topo`]: the CPU layout the test sees ([`CpuTopo`]).
//! - [`irq`]: interrupts to steer ([`IrqSelector`]).
//! - `engine`: runs it all; [`execute_defs`], [`execute_steps`], [`execute_scenario`] drive it.

pub mod bpf_pin;
pub mod def;
mod engine;
pub mod irq;
pub mod kernel_mem;
pub mod payload_run;
pub mod phase;
pub mod sched_ctl;
pub mod step;
pub mod topo;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ktstr_assert::{Assert, AssertResult};
use ktstr_workload::CgroupGroup;

pub use def::{AffinityIntent, CgroupDef, CpusetSpec, WorkSpec};
pub use irq::IrqSelector;
pub use kernel_mem::{KernelTarget, KernelValue, KernelValueWidth};
pub use payload_run::PayloadResult;
pub use phase::{Phase, PhaseCgroupStats, PhaseWorker};
pub use sched_ctl::SchedulerCtl;
pub use step::{Backdrop, HoldSpec, Op, Setup, SpawnPlacement, Step};
pub use topo::CpuTopo;

/// A name given as the existing ktstr takes names (`&'static str`, `String` or a `Cow`),
/// owned.
pub(crate) fn owned(name: impl Into<Cow<'static, str>>) -> String {
    name.into().into_owned()
}

/// Where workload cgroups go unless the test says otherwise.
pub const DEFAULT_WORKLOAD_ROOT: &str = "/ktstr";
/// The cgroup2 mount in the guest.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// What a test body gets: the topology, the cgroups, the duration and the checks.
pub struct Ctx {
    /// The workload cgroups (under the workload root).
    pub cgroups: Mutex<CgroupGroup>,
    /// The CPUs the test sees.
    pub topo: CpuTopo,
    /// How long a full-length step holds.
    pub duration: Duration,
    /// Workers a cgroup gets when its definition does not say.
    pub workers_per_cgroup: usize,
    /// Checks in force (the scheduler's, then the test's).
    pub assert: Assert,
    /// The running test's name.
    pub entry_name: String,
    /// The step running now.
    pub current_step: AtomicUsize,
    /// The sched_ext scheduler, for scheduler ops.
    pub scheduler: Mutex<SchedulerCtl>,
    /// A work type that replaces those of swappable cgroups ([`CgroupDef::swappable`]).
    pub work_type_override: Option<ktstr_workload::WorkType>,
    /// The test's payload, started beside the workers of every scenario it runs.
    pub payload: Option<&'static crate::test_support::Payload>,
    phases: Mutex<Vec<PhaseCgroupStats>>,
    payload_results: Mutex<Vec<PayloadResult>>,
    captured_procs: Mutex<BTreeMap<String, Vec<i32>>>,
    kernel_reads: Mutex<BTreeMap<String, KernelValue>>,
}

impl Ctx {
    /// A context with workload cgroups under `workload_root` (a cgroup path such as
    /// `/ktstr`), below the cgroup2 mount ([`CGROUP_MOUNT`] in guests).
    pub fn new(
        entry_name: &str,
        workload_root: &str,
        duration: Duration,
        assert: Assert,
    ) -> anyhow::Result<Ctx> {
        let topo = CpuTopo::from_sysfs()?;
        let mount = ktstr_workload::cgroup2_mount().map_err(|e| anyhow::anyhow!(e))?;
        let root = cgroup_dir(&mount, workload_root)?;
        let cgroups = CgroupGroup::new(root)?;
        Ok(Ctx {
            cgroups: Mutex::new(cgroups),
            workers_per_cgroup: topo.total_cpus().max(1),
            topo,
            duration,
            assert,
            entry_name: entry_name.to_string(),
            current_step: AtomicUsize::new(0),
            scheduler: Mutex::new(SchedulerCtl::default()),
            payload: None,
            work_type_override: None,
            phases: Mutex::new(Vec::new()),
            payload_results: Mutex::new(Vec::new()),
            captured_procs: Mutex::new(BTreeMap::new()),
            kernel_reads: Mutex::new(BTreeMap::new()),
        })
    }

    /// The cgroup group, even if a panicking thread held it.
    pub fn lock_cgroups(&self) -> MutexGuard<'_, CgroupGroup> {
        self.cgroups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scheduler control, even if a panicking thread held it.
    pub fn lock_scheduler(&self) -> MutexGuard<'_, SchedulerCtl> {
        self.scheduler.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_step(&self, i: usize) {
        self.current_step.store(i, Ordering::Relaxed);
    }

    fn record(&self, phases: Vec<PhaseCgroupStats>, payloads: Vec<PayloadResult>) {
        self.phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(phases);
        self.payload_results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(payloads);
    }

    fn record_procs(&self, tag: &str, procs: Vec<i32>) {
        self.captured_procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tag.to_string(), procs);
    }

    /// The processes [`Op::CaptureCgroupProcs`] recorded under `tag` (the latest capture).
    pub fn captured_cgroup_procs(&self, tag: &str) -> Option<Vec<i32>> {
        self.captured_procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tag)
            .cloned()
    }

    fn record_kernel_read(&self, tag: &str, value: KernelValue) {
        self.kernel_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tag.to_string(), value);
    }

    /// The value [`Op::ReadKernelHot`] or [`Op::ReadKernelCold`] read under `tag` (the latest).
    pub fn kernel_read(&self, tag: &str) -> Option<KernelValue> {
        self.kernel_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tag)
            .cloned()
    }

    /// Every payload run so far, in the order they ended.
    pub fn take_payload_results(&self) -> Vec<PayloadResult> {
        std::mem::take(
            &mut *self
                .payload_results
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Every phase measured so far (all scenarios this context ran, in order).
    pub fn take_phases(&self) -> Vec<PhaseCgroupStats> {
        std::mem::take(&mut *self.phases.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// `mount` joined with a cgroup path, refusing `..` and empty paths.
fn cgroup_dir(mount: &Path, cgroup: &str) -> anyhow::Result<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "..") {
        anyhow::bail!("workload cgroup `{cgroup}` is not a path like /ktstr or /test.slice/x");
    }
    Ok(mount.join(rel))
}

/// Runs `defs` together for the whole duration and judges them with the context's checks.
pub fn execute_defs(ctx: &Ctx, defs: Vec<CgroupDef>) -> anyhow::Result<AssertResult> {
    execute_steps(ctx, vec![Step::with_defs(defs, HoldSpec::FULL)])
}

/// Runs `steps` one after another.
pub fn execute_steps(ctx: &Ctx, steps: Vec<Step>) -> anyhow::Result<AssertResult> {
    execute_scenario(ctx, Backdrop::new(), steps)
}

/// Like [`execute_steps`], judging with `assert` instead of the context's checks when given.
pub fn execute_steps_with(
    ctx: &Ctx,
    steps: Vec<Step>,
    assert: Option<&Assert>,
) -> anyhow::Result<AssertResult> {
    execute_scenario_with(ctx, Backdrop::new(), steps, assert)
}

/// Runs `backdrop`'s cgroups for the whole scenario and `steps` one after another.
pub fn execute_scenario(
    ctx: &Ctx,
    backdrop: Backdrop,
    steps: Vec<Step>,
) -> anyhow::Result<AssertResult> {
    execute_scenario_with(ctx, backdrop, steps, None)
}

/// Like [`execute_scenario`], judging with `assert` instead of the context's checks when given.
pub fn execute_scenario_with(
    ctx: &Ctx,
    backdrop: Backdrop,
    steps: Vec<Step>,
    assert: Option<&Assert>,
) -> anyhow::Result<AssertResult> {
    engine::run(ctx, &backdrop, &steps, assert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_roots_are_checked() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(cgroup_dir(m, "/ktstr").unwrap(), m.join("ktstr"));
        assert_eq!(
            cgroup_dir(m, "test.slice/a").unwrap(),
            m.join("test.slice/a")
        );
        assert!(cgroup_dir(m, "/").is_err());
        assert!(cgroup_dir(m, "/a/../b").is_err());
    }
}
