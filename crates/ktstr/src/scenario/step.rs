//! Scenarios over time: steps that change cgroups, cpusets and workers, and how long each holds.

use std::borrow::Cow;

use std::time::Duration;

use ktstr_workload::WorkType;

use super::def::{AffinityIntent, CgroupDef, CpusetSpec, WorkSpec};
use super::irq::IrqSelector;
use super::kernel_mem::{KernelTarget, KernelValue, KernelValueWidth};
use super::owned;
use super::Ctx;
use crate::test_support::{Payload, Scheduler};

/// How long a step holds before the next begins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HoldSpec {
    /// This fraction of the test's duration.
    Frac(f64),
    /// This long.
    Fixed(Duration),
    /// The whole duration, re-applying the step's ops every `interval`.
    Loop {
        /// Time between rounds of ops.
        interval: Duration,
    },
}

impl HoldSpec {
    /// The test's whole duration.
    pub const FULL: HoldSpec = HoldSpec::Frac(1.0);

    /// This fraction of the test's duration.
    pub const fn frac(f: f64) -> Self {
        HoldSpec::Frac(f)
    }
    /// This long.
    pub const fn fixed(d: Duration) -> Self {
        HoldSpec::Fixed(d)
    }
    /// The whole duration, re-applying the ops every `interval`.
    pub const fn loop_at(interval: Duration) -> Self {
        HoldSpec::Loop { interval }
    }

    /// Checks the spec makes sense.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            HoldSpec::Frac(f) if !(f.is_finite() && *f > 0.0 && *f <= 100.0) => {
                Err(format!("hold fraction {f} is not in (0, 100]"))
            }
            HoldSpec::Fixed(d) if d.is_zero() => Err("a fixed hold of 0 s".into()),
            HoldSpec::Loop { interval } if interval.is_zero() => {
                Err("a loop hold with a 0 s interval".into())
            }
            _ => Ok(()),
        }
    }

    /// The hold's length for a test of `duration`.
    pub fn length(&self, duration: Duration) -> Duration {
        match self {
            HoldSpec::Frac(f) => duration.mul_f64(*f),
            HoldSpec::Fixed(d) => *d,
            HoldSpec::Loop { .. } => duration,
        }
    }
}

/// Where [`Op::Spawn`] starts its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnPlacement {
    /// The cgroup the test runner itself is in, outside the scenario's cgroups.
    RunnerCgroup,
    /// A scenario cgroup, by name.
    Cgroup(String),
}

/// A change made to the running scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create an empty cgroup.
    AddCgroup {
        /// Its name.
        name: String,
    },
    /// Create a cgroup and start its workers.
    AddCgroupDef {
        /// Its definition.
        def: CgroupDef,
    },
    /// Stop a cgroup's workers (their reports are kept) and remove it.
    RemoveCgroup {
        /// Its name.
        cgroup: String,
    },
    /// Set a cgroup's cpuset.
    SetCpuset {
        /// Its name.
        cgroup: String,
        /// The CPUs.
        cpus: CpusetSpec,
    },
    /// Clear a cgroup's cpuset (it inherits its parent's).
    ClearCpuset {
        /// Its name.
        cgroup: String,
    },
    /// Exchange two cgroups' cpusets.
    SwapCpusets {
        /// One cgroup.
        a: String,
        /// The other.
        b: String,
    },
    /// Start more workers: in a scenario cgroup, or in the runner's own cgroup.
    Spawn {
        /// Where they run.
        placement: SpawnPlacement,
        /// What they do, how many, and their attributes.
        work: WorkSpec,
    },
    /// Stop a cgroup's workers (their reports are kept); the cgroup stays.
    StopCgroup {
        /// Its name.
        cgroup: String,
    },
    /// Change the affinity of a cgroup's workers.
    SetAffinity {
        /// Its name.
        cgroup: String,
        /// The new affinity.
        affinity: AffinityIntent,
    },
    /// Move every task of one cgroup into another; the workers count for the destination.
    MoveAllTasks {
        /// Source.
        from: String,
        /// Destination.
        to: String,
    },
    /// Freeze a cgroup (cgroup.freeze).
    FreezeCgroup {
        /// Its name.
        cgroup: String,
    },
    /// Thaw a frozen cgroup.
    UnfreezeCgroup {
        /// Its name.
        cgroup: String,
    },
    /// Start a payload beside the workers.
    RunPayload {
        /// The payload; its binary must be in the guest (`payload` or `workloads`).
        payload: &'static Payload,
        /// Arguments appended to its `default_args`.
        args: Vec<String>,
        /// The cgroup it runs in (`None`: a `payload` cgroup of its own).
        cgroup: Option<String>,
    },
    /// Wait for a running payload to exit (up to the test's duration), then stop it.
    WaitPayload {
        /// Its name.
        name: String,
        /// The cgroup it runs in (`None`: the only running payload of that name).
        cgroup: Option<String>,
    },
    /// Stop a running payload.
    KillPayload {
        /// Its name.
        name: String,
        /// The cgroup it runs in (`None`: the only running payload of that name).
        cgroup: Option<String>,
    },
    /// Route an interrupt to one CPU (`/proc/irq/<n>/smp_affinity_list`); it stays there.
    SteerIrq {
        /// Which interrupt (every IRQ a label matches).
        irq: IrqSelector,
        /// The CPU.
        cpu: usize,
    },
    /// Record the processes of a cgroup (`cgroup.procs`) under `tag`, in the scenario's notes
    /// and in [`Ctx::captured_cgroup_procs`](super::Ctx::captured_cgroup_procs).
    CaptureCgroupProcs {
        /// Name the capture is kept under.
        tag: String,
        /// The cgroup.
        cgroup: String,
    },
    /// Freeze the guest and take a snapshot of the scheduler's state under `name`
    /// ([`VmResult::snapshots`](crate::test_support::VmResult::snapshots)); the scenario goes
    /// on once the host has read it. Needs the host monitor (`num_snapshots`, or
    /// `KTSTR_MONITOR=1`).
    CaptureSnapshot {
        /// The snapshot's name.
        name: String,
    },
    /// From now on, take a snapshot named after `symbol` whenever the 8 bytes at that kernel
    /// symbol change (checked every monitor tick).
    WatchSnapshot {
        /// The kernel symbol.
        symbol: String,
    },
    /// Write kernel memory while the guest runs, in order (see [`KernelTarget`]).
    WriteKernelHot {
        /// Where and what.
        writes: Vec<(KernelTarget, KernelValue)>,
    },
    /// Write kernel memory with every vCPU frozen around the whole batch.
    WriteKernelCold {
        /// Where and what.
        writes: Vec<(KernelTarget, KernelValue)>,
    },
    /// Read kernel memory while the guest runs; kept under `tag`
    /// ([`Ctx::kernel_read`](super::Ctx::kernel_read)) and in the scenario's notes.
    ReadKernelHot {
        /// Name the value is kept under.
        tag: String,
        /// Where.
        target: KernelTarget,
        /// How much.
        width: KernelValueWidth,
    },
    /// Read kernel memory with every vCPU frozen.
    ReadKernelCold {
        /// Name the value is kept under.
        tag: String,
        /// Where.
        target: KernelTarget,
        /// How much.
        width: KernelValueWidth,
    },
    /// Pin the BPF map named `name` (or whose name ends with it) at `/sys/fs/bpf/<name>`, each
    /// `.` made `_` (the BPF filesystem refuses dots).
    PinBpfMap {
        /// The map's name, or how it ends.
        name: String,
    },
    /// Attach a sched_ext scheduler (none may be attached).
    AttachScheduler {
        /// The scheduler; its binary must be in the guest (`scheduler` or `staged_schedulers`).
        scheduler: &'static Scheduler,
    },
    /// Detach the attached scheduler: the guest falls back to EEVDF.
    DetachScheduler,
    /// Stop the attached scheduler and start it again with the same arguments.
    RestartScheduler,
    /// Detach the attached scheduler (if any) and attach another.
    ReplaceScheduler {
        /// The new scheduler.
        scheduler: &'static Scheduler,
    },
}

impl Op {
    /// Creates an empty cgroup.
    pub fn add_cgroup(name: impl Into<Cow<'static, str>>) -> Op {
        Op::AddCgroup { name: owned(name) }
    }
    /// Creates a cgroup and starts its workers.
    pub fn add_cgroup_def(def: CgroupDef) -> Op {
        Op::AddCgroupDef { def }
    }
    /// Stops a cgroup's workers and removes it.
    pub fn remove_cgroup(cgroup: impl Into<Cow<'static, str>>) -> Op {
        Op::RemoveCgroup {
            cgroup: owned(cgroup),
        }
    }
    /// Sets a cgroup's cpuset.
    pub fn set_cpuset(cgroup: impl Into<Cow<'static, str>>, cpus: CpusetSpec) -> Op {
        Op::SetCpuset {
            cgroup: owned(cgroup),
            cpus,
        }
    }
    /// Clears a cgroup's cpuset.
    pub fn clear_cpuset(cgroup: impl Into<Cow<'static, str>>) -> Op {
        Op::ClearCpuset {
            cgroup: owned(cgroup),
        }
    }
    /// Exchanges two cgroups' cpusets.
    pub fn swap_cpusets(a: impl Into<Cow<'static, str>>, b: impl Into<Cow<'static, str>>) -> Op {
        Op::SwapCpusets {
            a: owned(a),
            b: owned(b),
        }
    }
    /// Starts the workers `work` describes where `placement` says.
    pub fn spawn(placement: SpawnPlacement, work: WorkSpec) -> Op {
        Op::Spawn { placement, work }
    }
    /// Starts the workers `work` describes in a scenario cgroup.
    pub fn spawn_workers(cgroup: impl Into<Cow<'static, str>>, work: WorkSpec) -> Op {
        Op::spawn(SpawnPlacement::Cgroup(owned(cgroup)), work)
    }
    /// Starts the context's `workers_per_cgroup` workers of `work` in a scenario cgroup.
    pub fn spawn_in_cgroup(cgroup: impl Into<Cow<'static, str>>, work: WorkType) -> Op {
        Op::spawn_workers(cgroup, WorkSpec::default().work_type(work))
    }
    /// Starts the workers `work` describes in the runner's own cgroup, outside the scenario's.
    pub fn spawn_host(work: WorkSpec) -> Op {
        Op::spawn(SpawnPlacement::RunnerCgroup, work)
    }
    /// Stops a cgroup's workers.
    pub fn stop_cgroup(cgroup: impl Into<Cow<'static, str>>) -> Op {
        Op::StopCgroup {
            cgroup: owned(cgroup),
        }
    }
    /// Changes the affinity of a cgroup's workers.
    pub fn set_affinity(cgroup: impl Into<Cow<'static, str>>, affinity: AffinityIntent) -> Op {
        Op::SetAffinity {
            cgroup: owned(cgroup),
            affinity,
        }
    }
    /// Moves every task of `from` into `to`.
    pub fn move_all_tasks(
        from: impl Into<Cow<'static, str>>,
        to: impl Into<Cow<'static, str>>,
    ) -> Op {
        Op::MoveAllTasks {
            from: owned(from),
            to: owned(to),
        }
    }
    /// Freezes a cgroup.
    pub fn freeze_cgroup(cgroup: impl Into<Cow<'static, str>>) -> Op {
        Op::FreezeCgroup {
            cgroup: owned(cgroup),
        }
    }
    /// Thaws a cgroup.
    pub fn unfreeze_cgroup(cgroup: impl Into<Cow<'static, str>>) -> Op {
        Op::UnfreezeCgroup {
            cgroup: owned(cgroup),
        }
    }
    /// Starts `payload` with its default arguments then `args`, in a cgroup of its own.
    pub fn run_payload(payload: &'static Payload, args: Vec<String>) -> Op {
        Op::RunPayload {
            payload,
            args,
            cgroup: None,
        }
    }
    /// Starts `payload` with its default arguments then `args`, in scenario cgroup `cgroup`.
    pub fn run_payload_in_cgroup(
        payload: &'static Payload,
        args: Vec<String>,
        cgroup: impl Into<Cow<'static, str>>,
    ) -> Op {
        Op::RunPayload {
            payload,
            args,
            cgroup: Some(owned(cgroup)),
        }
    }
    /// Waits for the only running payload called `name` to exit.
    pub fn wait_payload(name: impl Into<Cow<'static, str>>) -> Op {
        Op::WaitPayload {
            name: owned(name),
            cgroup: None,
        }
    }
    /// Waits for the payload called `name` running in `cgroup` to exit.
    pub fn wait_payload_in_cgroup(
        name: impl Into<Cow<'static, str>>,
        cgroup: impl Into<Cow<'static, str>>,
    ) -> Op {
        Op::WaitPayload {
            name: owned(name),
            cgroup: Some(owned(cgroup)),
        }
    }
    /// Stops the only running payload called `name`.
    pub fn kill_payload(name: impl Into<Cow<'static, str>>) -> Op {
        Op::KillPayload {
            name: owned(name),
            cgroup: None,
        }
    }
    /// Stops the payload called `name` running in `cgroup`.
    pub fn kill_payload_in_cgroup(
        name: impl Into<Cow<'static, str>>,
        cgroup: impl Into<Cow<'static, str>>,
    ) -> Op {
        Op::KillPayload {
            name: owned(name),
            cgroup: Some(owned(cgroup)),
        }
    }
    /// Routes interrupt `irq` to CPU `cpu`.
    pub fn steer_irq(irq: IrqSelector, cpu: usize) -> Op {
        Op::SteerIrq { irq, cpu }
    }
    /// Records the processes of `cgroup` under `tag`.
    pub fn capture_cgroup_procs(
        tag: impl Into<Cow<'static, str>>,
        cgroup: impl Into<Cow<'static, str>>,
    ) -> Op {
        Op::CaptureCgroupProcs {
            tag: owned(tag),
            cgroup: owned(cgroup),
        }
    }
    /// Freezes the guest and takes a snapshot named `name`.
    pub fn capture_snapshot(name: impl Into<Cow<'static, str>>) -> Op {
        Op::CaptureSnapshot { name: owned(name) }
    }
    /// Takes a snapshot whenever kernel symbol `symbol`'s value changes.
    pub fn watch_snapshot(symbol: impl Into<Cow<'static, str>>) -> Op {
        Op::WatchSnapshot {
            symbol: owned(symbol),
        }
    }
    /// Writes `value` at `target` while the guest runs.
    pub fn write_kernel_hot(target: KernelTarget, value: KernelValue) -> Op {
        Op::WriteKernelHot {
            writes: vec![(target, value)],
        }
    }
    /// Writes each pair, in order, while the guest runs.
    pub fn write_kernel_hot_batch(
        writes: impl IntoIterator<Item = (KernelTarget, KernelValue)>,
    ) -> Op {
        Op::WriteKernelHot {
            writes: writes.into_iter().collect(),
        }
    }
    /// Writes `value` at `target` with the guest frozen.
    pub fn write_kernel_cold(target: KernelTarget, value: KernelValue) -> Op {
        Op::WriteKernelCold {
            writes: vec![(target, value)],
        }
    }
    /// Writes each pair with the guest frozen once around them all.
    pub fn write_kernel_cold_batch(
        writes: impl IntoIterator<Item = (KernelTarget, KernelValue)>,
    ) -> Op {
        Op::WriteKernelCold {
            writes: writes.into_iter().collect(),
        }
    }
    /// Reads `width` at `target` while the guest runs, kept under `tag`.
    pub fn read_kernel_hot(
        tag: impl Into<Cow<'static, str>>,
        target: KernelTarget,
        width: KernelValueWidth,
    ) -> Op {
        Op::ReadKernelHot {
            tag: owned(tag),
            target,
            width,
        }
    }
    /// Reads `width` at `target` with the guest frozen, kept under `tag`.
    pub fn read_kernel_cold(
        tag: impl Into<Cow<'static, str>>,
        target: KernelTarget,
        width: KernelValueWidth,
    ) -> Op {
        Op::ReadKernelCold {
            tag: owned(tag),
            target,
            width,
        }
    }
    /// Pins the BPF map named `name` at `/sys/fs/bpf/<name>`.
    pub fn pin_bpf_map(name: impl Into<Cow<'static, str>>) -> Op {
        Op::PinBpfMap { name: owned(name) }
    }
    /// Attaches `scheduler`.
    pub const fn attach_scheduler(scheduler: &'static Scheduler) -> Op {
        Op::AttachScheduler { scheduler }
    }
    /// Detaches the attached scheduler (the guest runs EEVDF after).
    pub const fn detach_scheduler() -> Op {
        Op::DetachScheduler
    }
    /// Restarts the attached scheduler.
    pub const fn restart_scheduler() -> Op {
        Op::RestartScheduler
    }
    /// Replaces the attached scheduler with `scheduler`.
    pub const fn replace_scheduler(scheduler: &'static Scheduler) -> Op {
        Op::ReplaceScheduler { scheduler }
    }
}

/// A step's own cgroups: given, or made from the running context when the step begins.
#[derive(Clone)]
pub enum Setup {
    /// These cgroups.
    Defs(Vec<CgroupDef>),
    /// The cgroups this function returns for the context (its topology, its duration...).
    Factory(fn(&Ctx) -> Vec<CgroupDef>),
}

impl Setup {
    /// Cgroups `factory` makes when the step begins.
    pub fn with_factory(factory: fn(&Ctx) -> Vec<CgroupDef>) -> Self {
        Setup::Factory(factory)
    }
    /// The cgroups for `ctx`.
    pub fn resolve(&self, ctx: &Ctx) -> Vec<CgroupDef> {
        match self {
            Setup::Defs(defs) => defs.clone(),
            Setup::Factory(f) => f(ctx),
        }
    }
    /// True for an empty list (a factory may make cgroups, so it is not empty).
    pub fn is_empty(&self) -> bool {
        matches!(self, Setup::Defs(d) if d.is_empty())
    }
}

impl Default for Setup {
    fn default() -> Self {
        Setup::Defs(Vec::new())
    }
}

impl From<Vec<CgroupDef>> for Setup {
    fn from(defs: Vec<CgroupDef>) -> Self {
        Setup::Defs(defs)
    }
}

impl PartialEq for Setup {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Setup::Defs(a), Setup::Defs(b)) => a == b,
            (Setup::Factory(a), Setup::Factory(b)) => std::ptr::fn_addr_eq(*a, *b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setup::Defs(defs) => f.debug_tuple("Defs").field(defs).finish(),
            Setup::Factory(_) => f.write_str("Factory(fn(&Ctx) -> Vec<CgroupDef>)"),
        }
    }
}

/// One step: ops run first, then the step's own cgroups start, then it holds.
/// The step's own cgroups are removed when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Cgroups that live for this step only.
    pub setup: Setup,
    /// Changes made when the step begins.
    pub ops: Vec<Op>,
    /// How long it lasts.
    pub hold: HoldSpec,
}

impl Step {
    /// A step of `ops` holding `hold`.
    pub fn new(ops: Vec<Op>, hold: HoldSpec) -> Self {
        Step {
            setup: Setup::default(),
            ops,
            hold,
        }
    }
    /// A step that only holds.
    pub fn hold(hold: HoldSpec) -> Self {
        Step::new(Vec::new(), hold)
    }
    /// A step of one op.
    pub fn with_op(op: Op, hold: HoldSpec) -> Self {
        Step::new(vec![op], hold)
    }
    /// A step that starts `payload` (default arguments) beside the workers for its length.
    pub fn with_payload(payload: &'static Payload, hold: HoldSpec) -> Self {
        Step::new(vec![Op::run_payload(payload, Vec::new())], hold)
    }
    /// A step running `defs` for its length.
    pub fn with_defs(defs: Vec<CgroupDef>, hold: HoldSpec) -> Self {
        Step {
            setup: Setup::Defs(defs),
            ops: Vec::new(),
            hold,
        }
    }
    /// Replaces its ops.
    pub fn set_ops(mut self, ops: Vec<Op>) -> Self {
        self.ops = ops;
        self
    }
    /// Replaces its hold.
    pub fn set_hold(mut self, hold: HoldSpec) -> Self {
        self.hold = hold;
        self
    }
}

/// Cgroups and ops that persist across every step of a scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backdrop {
    /// Cgroups started before the first step and stopped after the last.
    pub cgroups: Vec<CgroupDef>,
    /// Ops run once before the first step.
    pub ops: Vec<Op>,
}

impl Backdrop {
    /// An empty backdrop.
    pub fn new() -> Self {
        Backdrop::default()
    }
    /// A backdrop of these cgroups.
    pub fn from_cgroups(cgroups: Vec<CgroupDef>) -> Self {
        Backdrop {
            cgroups,
            ops: Vec::new(),
        }
    }
    /// Adds a cgroup.
    pub fn push_cgroup(mut self, def: CgroupDef) -> Self {
        self.cgroups.push(def);
        self
    }
    /// Adds cgroups.
    pub fn extend_cgroups(mut self, defs: impl IntoIterator<Item = CgroupDef>) -> Self {
        self.cgroups.extend(defs);
        self
    }
    /// Adds a payload (default arguments) that runs from the first step to the end.
    pub fn push_payload(self, payload: &'static Payload) -> Self {
        self.push_op(Op::run_payload(payload, Vec::new()))
    }
    /// Adds payloads that run from the first step to the end.
    pub fn extend_payloads(self, payloads: impl IntoIterator<Item = &'static Payload>) -> Self {
        self.extend_ops(payloads.into_iter().map(|p| Op::run_payload(p, Vec::new())))
    }
    /// Adds an op.
    pub fn push_op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
    /// Adds ops.
    pub fn extend_ops(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.ops.extend(ops);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_validate_and_measure() {
        let d = Duration::from_secs(10);
        assert_eq!(HoldSpec::FULL.length(d), d);
        assert_eq!(HoldSpec::frac(0.5).length(d), Duration::from_secs(5));
        assert_eq!(
            HoldSpec::fixed(Duration::from_secs(2)).length(d),
            Duration::from_secs(2)
        );
        assert!(HoldSpec::frac(0.0).validate().is_err());
        assert!(HoldSpec::frac(f64::NAN).validate().is_err());
        assert!(HoldSpec::fixed(Duration::ZERO).validate().is_err());
        assert!(HoldSpec::loop_at(Duration::from_millis(100))
            .validate()
            .is_ok());
    }

    #[test]
    fn steps_and_backdrops_build() {
        let s = Step::with_defs(vec![CgroupDef::named("a")], HoldSpec::frac(0.5))
            .set_ops(vec![Op::set_cpuset("b", CpusetSpec::llc(0))]);
        assert_eq!(s.setup, Setup::Defs(vec![CgroupDef::named("a")]));
        assert!(!s.setup.is_empty());
        let f: fn(&Ctx) -> Vec<CgroupDef> = |_| Vec::new();
        assert_eq!(Setup::with_factory(f), Setup::Factory(f));
        assert!(!Setup::with_factory(f).is_empty());
        assert!(Setup::from(Vec::new()).is_empty());
        assert_eq!(s.ops.len(), 1);
        let b = Backdrop::new()
            .push_cgroup(CgroupDef::named("x"))
            .push_op(Op::add_cgroup("y"));
        assert_eq!((b.cgroups.len(), b.ops.len()), (1, 1));
    }
}
