//! The scenario engine: applies ops, runs each step's cgroups, watches workers while a
//! step holds, measures each phase, and judges the reports at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use ktstr_assert::{Assert, AssertDetail, AssertResult, DetailKind};
use ktstr_workload::{AffinityMode, WorkerReport, WorkloadConfig, WorkloadHandle};

use super::def::{AffinityIntent, CgroupDef, CpusetSpec, WorkSpec};
use super::payload_run::{PayloadResult, RunningPayload};
use super::phase::{Phase, PhaseCgroupStats, PhaseWorker};
use super::step::{Backdrop, HoldSpec, Op, SpawnPlacement, Step};
use super::Ctx;
use crate::test_support::Payload;

/// How often workers are looked at while a step holds.
const POLL: Duration = Duration::from_millis(20);
/// How long after a cpuset change a worker may still be seen on a CPU outside it.
const CPUSET_GRACE: Duration = Duration::from_millis(500);

/// How long a cgroup lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Until the scenario ends (backdrop and op-created cgroups).
    Scenario,
    /// Until its step ends.
    Step,
}

/// Counters of one worker at a point in time.
#[derive(Debug, Clone, Copy, Default)]
struct Snap {
    units: u64,
    cpu_ns: u64,
    delay_ns: u64,
    count: u64,
    at: Option<Instant>,
}

/// A running workload of one cgroup, with the poller's view of each worker.
struct Running {
    handle: WorkloadHandle,
    pids: Vec<i32>,
    last_units: Vec<u64>,
    last_change: Vec<Instant>,
    phase_gap: Vec<Duration>,
    phase_start: Vec<Snap>,
}

/// A cgroup the engine created.
struct LiveCgroup {
    scope: Scope,
    running: Vec<Running>,
    reports: Vec<WorkerReport>,
    cpuset: Option<BTreeSet<usize>>,
    cpuset_since: Instant,
    /// The cpuset changed after workers started, or tasks moved in: the final reports
    /// cannot be judged against one cpuset, only the poller's samples can.
    cpuset_varied: bool,
    weight: Option<u32>,
    frozen: bool,
}

impl LiveCgroup {
    fn new(scope: Scope, cpuset: Option<BTreeSet<usize>>, weight: Option<u32>) -> Self {
        LiveCgroup {
            scope,
            running: Vec::new(),
            reports: Vec::new(),
            cpuset,
            cpuset_since: Instant::now(),
            cpuset_varied: false,
            weight,
            frozen: false,
        }
    }
}

/// Reads utime+stime-free schedstat: (cpu ns, run delay ns, timeslices).
fn schedstat(pid: i32) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// The CPU a task last ran on (`/proc/<pid>/stat` field 39).
fn last_cpu(pid: i32) -> Option<usize> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the comm; the processor is field 39.
    after.split_whitespace().nth(36)?.parse().ok()
}

/// The engine's state for one scenario.
pub(super) struct Engine<'c> {
    ctx: &'c Ctx,
    live: BTreeMap<String, LiveCgroup>,
    finished: BTreeMap<String, LiveCgroup>,
    violations: Vec<AssertDetail>,
    flagged: BTreeSet<i32>,
    phases: Vec<PhaseCgroupStats>,
    notes: Vec<String>,
    seed: u64,
    /// Running payloads and the cgroup each runs in.
    payloads: Vec<(String, RunningPayload)>,
    payload_results: Vec<PayloadResult>,
}

/// The cgroup payloads run in unless an op names another.
const PAYLOAD_CGROUP: &str = "payload";
/// The name workers started in the runner's own cgroup go by ([`SpawnPlacement::RunnerCgroup`]).
pub(super) const RUNNER_CGROUP: &str = "<runner>";

impl<'c> Engine<'c> {
    pub(super) fn new(ctx: &'c Ctx) -> Self {
        Engine {
            ctx,
            live: BTreeMap::new(),
            finished: BTreeMap::new(),
            violations: Vec::new(),
            flagged: BTreeSet::new(),
            phases: Vec::new(),
            notes: Vec::new(),
            seed: 1,
            payloads: Vec::new(),
            payload_results: Vec::new(),
        }
    }

    fn live_mut(&mut self, name: &str) -> anyhow::Result<&mut LiveCgroup> {
        self.live
            .get_mut(name)
            .ok_or_else(|| anyhow!("no cgroup `{name}` in this scenario"))
    }

    fn resolve_cpuset(&self, spec: &CpusetSpec, cgroup: &str) -> anyhow::Result<BTreeSet<usize>> {
        spec.resolve(&self.ctx.topo)
            .map_err(|e| anyhow!("cgroup `{cgroup}`: cpuset {e}"))
    }

    /// Creates a cgroup (if new) with its limits and starts its workers and payload.
    fn add(&mut self, def: &CgroupDef, scope: Scope) -> anyhow::Result<()> {
        if self.live.contains_key(&def.name) || def.name == RUNNER_CGROUP {
            bail!("cgroup `{}` already exists", def.name);
        }
        def.validate()
            .map_err(|e| anyhow!("cgroup `{}`: {e}", def.name))?;
        let cpuset = match &def.cpuset {
            Some(spec) => Some(self.resolve_cpuset(spec, &def.name)?),
            None => None,
        };
        {
            let mut group = self.ctx.lock_cgroups();
            group.create(&def.name)?;
            if let Some(mems) = &def.cpuset_mems {
                group.set_cpuset_mems(&def.name, mems)?;
            }
            if let Some(set) = &cpuset {
                group.set_cpuset(&def.name, set)?;
            }
            if let Some(w) = def.cpu_weight {
                group.set_cpu_weight(&def.name, w)?;
            }
            if let Some((quota, period)) = def.cpu_max {
                let quota = quota.map_or_else(|| "max".to_string(), |q| q.to_string());
                group.set_knob(&def.name, "cpu.max", &format!("{quota} {period}"))?;
            }
            for (file, value) in &def.knobs {
                group.set_knob(&def.name, file, value)?;
            }
        }
        self.live.insert(
            def.name.clone(),
            LiveCgroup::new(scope, cpuset.clone(), def.cpu_weight),
        );
        let cpus = cpuset.map_or(self.ctx.topo.cpus.len(), |c| c.len());
        for work in def.works_with_override(self.ctx.work_type_override.as_ref()) {
            let workers = work
                .resolve_workers(cpus, self.ctx.workers_per_cgroup)
                .map_err(|e| anyhow!("cgroup `{}`: {e}", def.name))?;
            if workers > 0 {
                self.spawn(&def.name, &work, workers)?;
            }
        }
        if let Some(p) = def.payload {
            self.start_payload(p, &[], &def.name)?;
        }
        Ok(())
    }

    /// Starts `workers` workers of `work` in an existing cgroup (or the runner's own).
    fn spawn(&mut self, name: &str, work: &WorkSpec, workers: usize) -> anyhow::Result<()> {
        let topo = &self.ctx.topo;
        let mut allowed = self.live_mut(name)?.cpuset.clone();
        let allowed = allowed.get_or_insert_with(|| topo.cpus.clone()).clone();
        let allowed = match work.numa_node {
            None => allowed,
            Some(n) => {
                let node = topo.nodes.get(n as usize).ok_or_else(|| {
                    anyhow!(
                        "cgroup `{name}`: NUMA node {n} does not exist ({} nodes)",
                        topo.nodes.len()
                    )
                })?;
                let on_node: BTreeSet<usize> = allowed.intersection(node).copied().collect();
                if on_node.is_empty() {
                    bail!("cgroup `{name}`: none of its CPUs is on NUMA node {n}");
                }
                on_node
            }
        };
        self.seed += 1;
        let affinity = match work
            .affinity
            .resolve(topo, &allowed, workers, self.seed)
            .map_err(|e| anyhow!("cgroup `{name}`: affinity {e}"))?
        {
            None if work.numa_node.is_some() => AffinityMode::Fixed(allowed),
            None => AffinityMode::Inherit,
            Some(per) if work.numa_node.is_some() => AffinityMode::PerWorker(
                per.into_iter()
                    .map(|s| {
                        let on: BTreeSet<usize> = s.intersection(&allowed).copied().collect();
                        if on.is_empty() {
                            allowed.clone()
                        } else {
                            on
                        }
                    })
                    .collect(),
            ),
            Some(per) => AffinityMode::PerWorker(per),
        };
        let mut cfg = WorkloadConfig::new(workers, work.work_type.clone())
            .affinity(affinity)
            .sched_policy(work.sched_policy)
            .mem_policy(work.mem_policy.clone(), work.mpol_flags);
        if name != RUNNER_CGROUP {
            cfg = cfg.cgroup(self.ctx.lock_cgroups().path(name));
        }
        if let Some(n) = work.nice {
            cfg = cfg.nice(n);
        }
        if let Some(c) = &work.comm {
            cfg = cfg.comm(c.clone());
        }
        if let Some(uid) = work.uid {
            cfg = cfg.uid(uid);
        }
        if let Some(gid) = work.gid {
            cfg = cfg.gid(gid);
        }
        let mut handle = WorkloadHandle::spawn(&cfg)
            .with_context(|| format!("starting {workers} workers in cgroup `{name}`"))?;
        handle.start();
        let now = Instant::now();
        let pids = handle.pids();
        let n = pids.len();
        let running = Running {
            handle,
            last_units: vec![0; n],
            last_change: vec![now; n],
            phase_gap: vec![Duration::ZERO; n],
            phase_start: pids.iter().map(|&p| snap(p, 0)).collect(),
            pids,
        };
        self.live_mut(name)?.running.push(running);
        Ok(())
    }

    /// Starts `payload` with its default arguments then `args` in scenario cgroup `cg`.
    fn start_payload(
        &mut self,
        payload: &Payload,
        args: &[String],
        cg: &str,
    ) -> anyhow::Result<()> {
        let dir = self.ctx.lock_cgroups().path(cg);
        let running = RunningPayload::start(payload, args, &dir)?;
        self.payloads.push((cg.to_string(), running));
        Ok(())
    }

    /// Stops a cgroup's workers and keeps their reports.
    fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let frozen = self.live_mut(name)?.frozen;
        if frozen {
            self.ctx.lock_cgroups().unfreeze(name)?;
            self.live_mut(name)?.frozen = false;
        }
        let live = self.live_mut(name)?;
        for r in std::mem::take(&mut live.running) {
            live.reports.extend(r.handle.stop_and_collect());
        }
        Ok(())
    }

    /// Stops a cgroup's workers and payloads, and removes it.
    fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        self.stop(name)?;
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.payloads)
            .into_iter()
            .partition(|(cg, _)| cg == name);
        self.payloads = others;
        for (_, p) in mine {
            self.payload_results.push(p.stop());
        }
        if name != RUNNER_CGROUP {
            self.ctx.lock_cgroups().remove(name)?;
        }
        if let Some(live) = self.live.remove(name) {
            // A later cgroup of the same name is judged on its own.
            let key = if self.finished.contains_key(name) {
                format!("{name}#{}", self.finished.len())
            } else {
                name.to_string()
            };
            self.finished.insert(key, live);
        }
        Ok(())
    }

    fn set_cpuset(&mut self, name: &str, set: Option<BTreeSet<usize>>) -> anyhow::Result<()> {
        {
            let group = self.ctx.lock_cgroups();
            match &set {
                Some(s) => group.set_cpuset(name, s)?,
                None => group.clear_cpuset(name)?,
            }
        }
        let live = self.live_mut(name)?;
        live.cpuset_varied |= !live.running.is_empty() || !live.reports.is_empty();
        live.cpuset = set;
        live.cpuset_since = Instant::now();
        Ok(())
    }

    /// Applies one op.
    fn apply(&mut self, op: &Op) -> anyhow::Result<()> {
        match op {
            Op::AddCgroup { name } => {
                self.add(&CgroupDef::named(name.clone()).workers(0), Scope::Scenario)
            }
            Op::AddCgroupDef { def } => self.add(def, Scope::Scenario),
            Op::RemoveCgroup { cgroup } => self.remove(cgroup),
            Op::SetCpuset { cgroup, cpus } => {
                let set = self.resolve_cpuset(cpus, cgroup)?;
                self.set_cpuset(cgroup, Some(set))
            }
            Op::ClearCpuset { cgroup } => self.set_cpuset(cgroup, None),
            Op::SwapCpusets { a, b } => {
                let sa = self.live_mut(a)?.cpuset.clone();
                let sb = self.live_mut(b)?.cpuset.clone();
                self.set_cpuset(a, sb)?;
                self.set_cpuset(b, sa)
            }
            Op::Spawn { placement, work } => {
                let name = match placement {
                    SpawnPlacement::Cgroup(c) => c.as_str(),
                    SpawnPlacement::RunnerCgroup => {
                        if !self.live.contains_key(RUNNER_CGROUP) {
                            self.live.insert(
                                RUNNER_CGROUP.to_string(),
                                LiveCgroup::new(Scope::Scenario, None, None),
                            );
                        }
                        RUNNER_CGROUP
                    }
                };
                let live = self.live_mut(name)?;
                let cpus = live.cpuset.as_ref().map(BTreeSet::len);
                let cpus = cpus.unwrap_or(self.ctx.topo.cpus.len());
                let n = work
                    .resolve_workers(cpus, self.ctx.workers_per_cgroup)
                    .map_err(|e| anyhow!("cgroup `{name}`: {e}"))?;
                self.spawn(name, work, n)
            }
            Op::SteerIrq { irq, cpu } => {
                if !self.ctx.topo.cpus.contains(cpu) {
                    bail!("cannot steer {irq:?} to CPU {cpu}: it is not online");
                }
                let table = std::fs::read_to_string("/proc/interrupts")
                    .context("reading /proc/interrupts")?;
                let irqs = irq.resolve(&table).map_err(|e| anyhow!(e))?;
                for n in &irqs {
                    let path = format!("/proc/irq/{n}/smp_affinity_list");
                    std::fs::write(&path, cpu.to_string())
                        .with_context(|| format!("writing {cpu} to {path}"))?;
                }
                self.notes
                    .push(format!("steered IRQs {irqs:?} to CPU {cpu}"));
                Ok(())
            }
            Op::CaptureCgroupProcs { tag, cgroup } => {
                let procs = self.ctx.lock_cgroups().procs(cgroup)?;
                self.notes.push(format!(
                    "{tag}: cgroup `{cgroup}` held {} processes {procs:?}",
                    procs.len()
                ));
                self.ctx.record_procs(tag, procs);
                Ok(())
            }
            Op::CaptureSnapshot { name } => {
                let said = crate::request::ask_host(crate::request::RequestOp::Snapshot {
                    name: name.clone(),
                })
                .map_err(|e| anyhow!("Op::capture_snapshot({name:?}): {e}"))?;
                self.notes.push(said);
                Ok(())
            }
            Op::WatchSnapshot { symbol } => {
                let said = crate::request::ask_host(crate::request::RequestOp::WatchSymbol {
                    symbol: symbol.clone(),
                })
                .map_err(|e| anyhow!("Op::watch_snapshot({symbol:?}): {e}"))?;
                self.notes.push(said);
                Ok(())
            }
            Op::WriteKernelHot { writes } | Op::WriteKernelCold { writes } => {
                let cold = matches!(op, Op::WriteKernelCold { .. });
                let said = crate::request::ask_host(crate::request::RequestOp::KernelWrite {
                    writes: writes.clone(),
                    cold,
                })
                .map_err(|e| anyhow!("kernel write: {e}"))?;
                self.notes.push(said);
                Ok(())
            }
            Op::ReadKernelHot { tag, target, width }
            | Op::ReadKernelCold { tag, target, width } => {
                let cold = matches!(op, Op::ReadKernelCold { .. });
                let said = crate::request::ask_host(crate::request::RequestOp::KernelRead {
                    target: target.clone(),
                    width: *width,
                    cold,
                })
                .map_err(|e| anyhow!("kernel read {tag}: {e}"))?;
                let value: crate::scenario::KernelValue = serde_json::from_str(&said)
                    .map_err(|e| anyhow!("kernel read {tag}: the host's answer {said:?}: {e}"))?;
                self.notes.push(format!("read {tag}: {value:?}"));
                self.ctx.record_kernel_read(tag, value);
                Ok(())
            }
            Op::PinBpfMap { name } => {
                let path =
                    super::bpf_pin::pin_map(name).map_err(|e| anyhow!("Op::pin_bpf_map: {e}"))?;
                self.notes
                    .push(format!("pinned BPF map {name} at {}", path.display()));
                Ok(())
            }
            Op::StopCgroup { cgroup } => self.stop(cgroup),
            Op::SetAffinity { cgroup, affinity } => self.set_affinity(cgroup, affinity),
            Op::MoveAllTasks { from, to } => {
                if !self.live.contains_key(to) {
                    bail!("no cgroup `{to}` in this scenario");
                }
                let moved = self.ctx.lock_cgroups().move_all_tasks(from, to)?;
                let src = self.live_mut(from)?;
                let running = std::mem::take(&mut src.running);
                let dst = self.live_mut(to)?;
                dst.running.extend(running);
                dst.cpuset_varied = true;
                self.notes
                    .push(format!("moved {moved} tasks from `{from}` to `{to}`"));
                Ok(())
            }
            Op::FreezeCgroup { cgroup } => {
                self.ctx.lock_cgroups().freeze(cgroup)?;
                self.live_mut(cgroup)?.frozen = true;
                Ok(())
            }
            Op::UnfreezeCgroup { cgroup } => {
                self.ctx.lock_cgroups().unfreeze(cgroup)?;
                self.live_mut(cgroup)?.frozen = false;
                Ok(())
            }
            Op::RunPayload {
                payload,
                args,
                cgroup,
            } => {
                let cg = cgroup.as_deref().unwrap_or(PAYLOAD_CGROUP);
                if !self.live.contains_key(cg) {
                    self.add(
                        &CgroupDef::named(cg.to_string()).workers(0),
                        Scope::Scenario,
                    )?;
                }
                self.start_payload(payload, args, cg)
            }
            Op::WaitPayload { name, cgroup } => {
                let i = self.payload_index(name, cgroup.as_deref())?;
                let (_, p) = self.payloads.remove(i);
                self.payload_results.push(p.wait(self.ctx.duration));
                Ok(())
            }
            Op::KillPayload { name, cgroup } => {
                let i = self.payload_index(name, cgroup.as_deref())?;
                let (_, p) = self.payloads.remove(i);
                self.payload_results.push(p.stop());
                Ok(())
            }
            Op::AttachScheduler { scheduler } => {
                let mut ctl = self.ctx.lock_scheduler();
                match scheduler.guest_job() {
                    Some(job) => ctl.attach(job),
                    None if ctl.attached() => ctl.detach(),
                    None => Ok(()),
                }
            }
            Op::DetachScheduler => self.ctx.lock_scheduler().detach(),
            Op::RestartScheduler => self.ctx.lock_scheduler().restart(),
            Op::ReplaceScheduler { scheduler } => {
                let mut ctl = self.ctx.lock_scheduler();
                match scheduler.guest_job() {
                    Some(job) => ctl.replace(job),
                    None if ctl.attached() => ctl.detach(),
                    None => Ok(()),
                }
            }
        }
    }

    /// The running payload called `name` (in `cgroup`, when given); an error when there is
    /// none, or several and no cgroup tells them apart.
    fn payload_index(&self, name: &str, cgroup: Option<&str>) -> anyhow::Result<usize> {
        let found: Vec<usize> = self
            .payloads
            .iter()
            .enumerate()
            .filter(|(_, (cg, p))| p.name() == name && cgroup.is_none_or(|c| c == cg))
            .map(|(i, _)| i)
            .collect();
        match (found.as_slice(), cgroup) {
            ([i], _) => Ok(*i),
            ([], Some(c)) => bail!("no payload `{name}` is running in cgroup `{c}`"),
            ([], None) => bail!("no payload `{name}` is running"),
            (_, _) => bail!(
                "payload `{name}` runs in {} cgroups: name one (`_in_cgroup`)",
                found.len()
            ),
        }
    }

    fn set_affinity(&mut self, name: &str, affinity: &AffinityIntent) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let topo = &ctx.topo;
        self.seed += 1;
        let seed = self.seed;
        let live = self.live_mut(name)?;
        let allowed = live.cpuset.clone().unwrap_or_else(|| topo.cpus.clone());
        for r in &live.running {
            let sets = affinity
                .resolve(topo, &allowed, r.pids.len(), seed)
                .map_err(|e| anyhow!("cgroup `{name}`: affinity {e}"))?;
            match sets {
                None => r.handle.set_affinity(&topo.cpus)?,
                Some(per) => {
                    // One set for all workers when the intent gives them the same set.
                    if per.iter().all(|s| *s == per[0]) {
                        r.handle.set_affinity(&per[0])?;
                    } else {
                        for (pid, set) in r.pids.iter().zip(&per) {
                            ktstr_workload::set_affinity(*pid, set)
                                .with_context(|| format!("pinning worker {pid} of `{name}`"))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Looks at every worker once: progress (for gaps) and CPU (for cpuset isolation).
    fn poll(&mut self) {
        self.ctx.lock_scheduler().poll();
        let now = Instant::now();
        for (name, live) in &mut self.live {
            let judged_set = live
                .cpuset
                .as_ref()
                .filter(|_| now.duration_since(live.cpuset_since) > CPUSET_GRACE && !live.frozen);
            for r in &mut live.running {
                let units = r.handle.progress();
                for (i, &u) in units.iter().enumerate().take(r.pids.len()) {
                    if u != r.last_units[i] {
                        r.last_units[i] = u;
                        r.last_change[i] = now;
                    } else {
                        let gap = now.duration_since(r.last_change[i]);
                        r.phase_gap[i] = r.phase_gap[i].max(gap);
                    }
                }
                let Some(set) = judged_set else { continue };
                for &pid in &r.pids {
                    let Some(cpu) = last_cpu(pid) else { continue };
                    if !set.contains(&cpu) && self.flagged.insert(pid) {
                        self.violations.push(AssertDetail {
                            kind: DetailKind::Isolation,
                            message: format!(
                                "{name}: worker {pid} ran on CPU {cpu}, outside its cpuset {}",
                                fmt_set(set)
                            ),
                            cgroup: Some(name.clone()),
                            worker: Some(pid),
                            measured: Some(cpu as f64),
                            bound: None,
                        });
                    }
                }
            }
        }
    }

    /// Holds for `len`, polling, and re-applying `loop_ops` every `interval` when given.
    fn hold(&mut self, len: Duration, loop_ops: Option<(&[Op], Duration)>) -> anyhow::Result<()> {
        let start = Instant::now();
        let end = start + len;
        let mut next = loop_ops.map(|(_, i)| start + i);
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep(POLL.min(end - now));
            self.poll();
            if let (Some((ops, interval)), Some(at)) = (loop_ops, next) {
                if Instant::now() >= at {
                    for op in ops {
                        self.apply(op)?;
                    }
                    next = Some(at + interval);
                }
            }
        }
        Ok(())
    }

    /// Resets every running worker's phase counters.
    fn begin_phase(&mut self) {
        for live in self.live.values_mut() {
            for r in &mut live.running {
                let units = r.handle.progress();
                for (i, &pid) in r.pids.iter().enumerate() {
                    r.phase_start[i] = snap(pid, units.get(i).copied().unwrap_or(0));
                    r.phase_gap[i] = Duration::ZERO;
                }
            }
        }
    }

    /// Records each live cgroup's phase measurements.
    fn end_phase(&mut self, phase: Phase) {
        self.poll();
        for (name, live) in &self.live {
            let mut workers = Vec::new();
            for r in &live.running {
                let units = r.handle.progress();
                for (i, &pid) in r.pids.iter().enumerate() {
                    let s0 = r.phase_start[i];
                    let s1 = snap(pid, units.get(i).copied().unwrap_or(0));
                    let wall = match (s0.at, s1.at) {
                        (Some(a), Some(b)) => b.duration_since(a).as_nanos() as u64,
                        _ => 0,
                    };
                    workers.push(PhaseWorker {
                        tid: pid,
                        work_units: s1.units.saturating_sub(s0.units),
                        cpu_time_ns: s1.cpu_ns.saturating_sub(s0.cpu_ns),
                        run_delay_ns: s1.delay_ns.saturating_sub(s0.delay_ns),
                        run_count: s1.count.saturating_sub(s0.count),
                        wall_ns: wall,
                        max_gap_ms: r.phase_gap[i].as_millis() as u64,
                    });
                }
            }
            if !workers.is_empty() {
                self.phases
                    .push(PhaseCgroupStats::new(phase, name, workers));
            }
        }
    }

    /// Stops and removes the step's own cgroups.
    fn end_step(&mut self) -> anyhow::Result<()> {
        let step_local: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.scope == Scope::Step)
            .map(|(n, _)| n.clone())
            .collect();
        for name in step_local {
            self.remove(&name)?;
        }
        Ok(())
    }

    /// Stops payloads still running, then removes everything left, deepest cgroups first.
    fn finish(&mut self) -> anyhow::Result<()> {
        for (_, p) in std::mem::take(&mut self.payloads) {
            self.payload_results.push(p.stop());
        }
        let mut names: Vec<String> = self.live.keys().cloned().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.matches('/').count()));
        for name in names {
            self.remove(&name)?;
        }
        Ok(())
    }

    /// Judges every cgroup's reports with `assert`.
    fn judge(&self, assert: &Assert) -> AssertResult {
        let mut result = AssertResult::pass();
        for (name, c) in &self.finished {
            if c.reports.is_empty() {
                continue;
            }
            let cpuset = c.cpuset.as_ref().filter(|_| !c.cpuset_varied);
            result.merge(assert.assert_named_cgroup(name, &c.reports, cpuset));
        }
        if assert.isolation == Some(true) {
            for v in &self.violations {
                result.merge(AssertResult::fail(v.clone()));
            }
        }
        let weighted: Vec<(&str, u32, &[WorkerReport])> = self
            .finished
            .iter()
            .filter_map(|(n, c)| Some((n.as_str(), c.weight?, c.reports.as_slice())))
            .collect();
        if assert.max_weight_error_pct.is_some() && !weighted.is_empty() {
            result.merge(assert.assert_weights(&weighted));
        }
        for p in &self.payload_results {
            match p.failure() {
                Some(f) => result.merge(AssertResult::fail(AssertDetail {
                    kind: DetailKind::Other,
                    message: f,
                    cgroup: None,
                    worker: None,
                    measured: None,
                    bound: None,
                })),
                None => result.notes.push(format!(
                    "payload {} ran {} ms{}",
                    p.name,
                    p.runtime_ms,
                    if p.stopped_at_end {
                        ", stopped at the end"
                    } else {
                        ", exited 0"
                    }
                )),
            }
        }
        result.notes.extend(self.notes.iter().cloned());
        result
    }
}

fn snap(pid: i32, units: u64) -> Snap {
    let (cpu_ns, delay_ns, count) = schedstat(pid).unwrap_or_default();
    Snap {
        units,
        cpu_ns,
        delay_ns,
        count,
        at: Some(Instant::now()),
    }
}

fn fmt_set(set: &BTreeSet<usize>) -> String {
    let v: Vec<u32> = set.iter().map(|&c| c as u32).collect();
    ktstr_topology::format_cpu_list(&v)
}

/// Runs `backdrop` and `steps` on `ctx`, judging with `assert` (or the context's).
pub(super) fn run(
    ctx: &Ctx,
    backdrop: &Backdrop,
    steps: &[Step],
    assert: Option<&Assert>,
) -> anyhow::Result<AssertResult> {
    for (i, s) in steps.iter().enumerate() {
        s.hold.validate().map_err(|e| anyhow!("step {i}: {e}"))?;
    }
    if steps.is_empty() {
        bail!("a scenario needs at least one step");
    }
    let assert = assert.copied().unwrap_or(ctx.assert);
    let mut eng = Engine::new(ctx);
    let outcome = (|| -> anyhow::Result<()> {
        if let Some(p) = ctx.payload {
            eng.apply(&Op::RunPayload {
                payload: p,
                args: Vec::new(),
                cgroup: None,
            })
            .context("the test's payload")?;
        }
        for op in &backdrop.ops {
            eng.apply(op).context("backdrop op")?;
        }
        for def in &backdrop.cgroups {
            eng.add(def, Scope::Scenario).context("backdrop cgroup")?;
        }
        for (i, step) in steps.iter().enumerate() {
            ctx.set_step(i);
            for op in &step.ops {
                eng.apply(op).with_context(|| format!("step {i}: {op:?}"))?;
            }
            for def in &step.setup.resolve(ctx) {
                eng.add(def, Scope::Step)
                    .with_context(|| format!("step {i}: cgroup `{}`", def.name))?;
            }
            eng.begin_phase();
            let loop_ops = match step.hold {
                HoldSpec::Loop { interval } => Some((step.ops.as_slice(), interval)),
                _ => None,
            };
            eng.hold(step.hold.length(ctx.duration), loop_ops)?;
            eng.end_phase(Phase::step(i as u16));
            eng.end_step()?;
        }
        Ok(())
    })();
    let cleanup = eng.finish();
    outcome?;
    cleanup?;
    let result = eng.judge(&assert);
    ctx.record(
        std::mem::take(&mut eng.phases),
        std::mem::take(&mut eng.payload_results),
    );
    Ok(result)
}
