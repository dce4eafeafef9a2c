//! One forked worker process: setup, start gate, the work loop, and its final report.
//!
//! Everything here runs in the child after `fork()` of a possibly multi-threaded parent:
//! no printing, no locks but glibc malloc's, and the process ends with `_exit`.

mod cpu;
mod memory;
mod timer;
mod wake;

pub use cpu::spin_unit;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::SchedPolicy;
use crate::report::{WorkerReport, MAX_LATENCY_SAMPLES};
use crate::rng::Rng;
use crate::shared::{Coop, SharedRegion, Slot};
use crate::sys::{self, NS_PER_MS};
use crate::telemetry::{Checkpoints, Reservoir, Schedstat};
use crate::{WakeMechanism, WorkType, WorkloadConfig};
use wake::Hop;

/// Minimum wall time between two progress checkpoints, ns.
const CHECKPOINT_NS: u64 = NS_PER_MS;
/// Longest a worker blocks in one wait before re-checking stop and deadlines, ns.
pub(crate) const WAIT_SLICE_NS: u64 = 10 * NS_PER_MS;

/// Everything a freshly forked worker needs from its parent.
pub(crate) struct WorkerSetup<'a> {
    /// Worker index within the workload.
    pub(crate) index: usize,
    /// The workload configuration.
    pub(crate) cfg: &'a WorkloadConfig,
    /// Comm to set.
    pub(crate) comm: &'a str,
    /// The shared region.
    pub(crate) shared: &'a SharedRegion,
    /// Pipe inboxes `(read, write)` per `leaf * workers + index`, for PipeIo leaves.
    pub(crate) inboxes: &'a [Option<(RawFd, RawFd)>],
    /// Write end of this worker's report pipe.
    pub(crate) report_fd: RawFd,
    /// The parent's pid (a different parent means it died: the worker quits).
    pub(crate) parent: i32,
}

/// Runs the worker to its end; never returns into the parent's code.
pub(crate) fn run(setup: WorkerSetup<'_>) -> ! {
    let report_fd = setup.report_fd;
    let (index, name) = (setup.index, setup.cfg.work_type.name());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lifecycle(&setup)));
    let (report, code) = match outcome {
        Ok(report) => (report, 0),
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_string());
            let report = WorkerReport {
                tid: sys::getpid(),
                index,
                work_type: name.to_string(),
                completed: false,
                exit_info: Some(format!("worker panicked: {text}")),
                ..Default::default()
            };
            (report, 101)
        }
    };
    if let Ok(mut text) = serde_json::to_vec(&report) {
        text.push(b'\n');
        // If the parent is gone there is no one to tell; exit either way.
        let _ = sys::write_all(report_fd, &text);
    }
    sys::exit_now(code)
}

/// Setup, gate, work, report: the worker's life in order.
fn lifecycle(setup: &WorkerSetup<'_>) -> WorkerReport {
    let shared = setup.shared;
    let slot = shared.slot(setup.index);
    sys::set_comm(setup.comm);
    let mut keep: Vec<RawFd> = vec![setup.report_fd];
    keep.extend(setup.inboxes.iter().flatten().flat_map(|&(r, w)| [r, w]));
    sys::close_fds_except(&keep);

    // The parent first moves us into the cgroup, so affinity and policy apply after it.
    wait_flag(shared, &slot.placed, setup.parent);
    let affinity_error = apply_affinity(setup);
    let sched_policy_error = apply_policy(setup.cfg);
    slot.ready.store(1, Ordering::Release);
    wait_flag(shared, &shared.header().gate, setup.parent);

    let mut worker = Worker::start(setup, slot);
    if !worker.stopping() {
        let work = &setup.cfg.work_type;
        worker.run_work(work, 0, None);
    }
    let mut report = worker.finish();
    report.affinity_error = affinity_error;
    report.sched_policy_error = sched_policy_error;
    report
}

/// Blocks until `word` is non-zero or stop is requested; quits if the parent died.
fn wait_flag(shared: &SharedRegion, word: &AtomicU32, parent: i32) {
    let header = shared.header();
    while word.load(Ordering::Acquire) == 0 && header.stop.load(Ordering::Acquire) == 0 {
        if sys::getppid() != parent {
            sys::exit_now(0);
        }
        sys::futex_wait(word, 0, 5 * WAIT_SLICE_NS);
    }
}

fn apply_affinity(setup: &WorkerSetup<'_>) -> Option<String> {
    let cpus = setup.cfg.affinity.for_worker(setup.index)?;
    sys::set_affinity(0, cpus).err().map(|e| {
        let list: Vec<u32> = cpus.iter().map(|&c| c as u32).collect();
        format!(
            "sched_setaffinity({}): {}",
            ktstr_topology::format_cpu_list(&list),
            crate::error::os_msg(&e)
        )
    })
}

fn apply_policy(cfg: &WorkloadConfig) -> Option<String> {
    let mut errors = Vec::new();
    let rt_prio = |p: u32| i32::try_from(p).unwrap_or(i32::MAX);
    let request = match cfg.sched_policy {
        SchedPolicy::Normal => None,
        SchedPolicy::Batch => Some((libc::SCHED_BATCH, "SCHED_BATCH", 0)),
        SchedPolicy::Idle => Some((libc::SCHED_IDLE, "SCHED_IDLE", 0)),
        SchedPolicy::Fifo(p) => Some((libc::SCHED_FIFO, "SCHED_FIFO", rt_prio(p))),
        SchedPolicy::RoundRobin(p) => Some((libc::SCHED_RR, "SCHED_RR", rt_prio(p))),
    };
    if let Some((policy, name, prio)) = request {
        if let Err(e) = sys::set_scheduler(policy, prio) {
            let msg = crate::error::os_msg(&e);
            errors.push(format!("sched_setscheduler({name}, {prio}): {msg}"));
        }
    }
    if let Some(nice) = cfg.nice {
        if let Err(e) = sys::set_nice(nice) {
            let msg = crate::error::os_msg(&e);
            errors.push(format!("setpriority(nice {nice}): {msg}"));
        }
    }
    if let Some((mode, nodes)) = cfg.mem_policy.mode_and_nodes() {
        if let Err(e) = sys::set_mempolicy(mode, cfg.mpol_flags.bits(), &nodes) {
            let msg = crate::error::os_msg(&e);
            errors.push(format!("set_mempolicy({:?}): {msg}", cfg.mem_policy));
        }
    }
    // Ids last: everything above may need the privileges they drop.
    if let Some(gid) = cfg.gid {
        if let Err(e) = sys::set_gid(gid) {
            let msg = crate::error::os_msg(&e);
            errors.push(format!("setresgid({gid}): {msg}"));
        }
    }
    if let Some(uid) = cfg.uid {
        if let Err(e) = sys::set_uid(uid) {
            let msg = crate::error::os_msg(&e);
            errors.push(format!("setresuid({uid}): {msg}"));
        }
    }
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// A running worker: its telemetry and the helpers every work loop uses.
pub(crate) struct Worker<'a> {
    /// Index within the workload.
    pub(crate) index: usize,
    shared: &'a SharedRegion,
    slot: &'a Slot,
    inboxes: &'a [Option<(RawFd, RawFd)>],
    parent: i32,
    work_name: &'static str,
    checkpoints: Checkpoints,
    cpu_start_ns: u64,
    units: u64,
    stop_seen: bool,
    /// Wake-up latencies, ns.
    pub(crate) wake: Reservoir,
    /// Timer overshoots, ns.
    pub(crate) timer: Reservoir,
    /// Random numbers for work loops.
    pub(crate) rng: Rng,
    /// The dedicated cgroup directory the workload runs in, if it has one.
    pub(crate) cgroup: Option<&'a std::path::Path>,
}

impl<'a> Worker<'a> {
    fn start(setup: &WorkerSetup<'a>, slot: &'a Slot) -> Self {
        let seed = (sys::getpid() as u64) << 32 ^ sys::now_ns();
        let now = sys::now_ns();
        let cpu = sys::current_cpu();
        let worker = Self {
            index: setup.index,
            shared: setup.shared,
            slot,
            inboxes: setup.inboxes,
            parent: setup.parent,
            work_name: setup.cfg.work_type.name(),
            checkpoints: Checkpoints::start(now, cpu),
            cpu_start_ns: sys::thread_cpu_ns(),
            units: 0,
            stop_seen: false,
            wake: Reservoir::new(MAX_LATENCY_SAMPLES, seed ^ 0x5555),
            timer: Reservoir::new(MAX_LATENCY_SAMPLES, seed ^ 0xaaaa),
            rng: Rng::new(seed),
            cgroup: setup.cfg.cgroup.as_deref(),
        };
        slot.start_ns.store(now, Ordering::Relaxed);
        worker.publish(cpu);
        worker
    }

    /// Workers in the workload.
    pub(crate) fn num_workers(&self) -> usize {
        self.shared.workers()
    }

    /// True once the parent asked to stop.
    pub(crate) fn stopping(&mut self) -> bool {
        if !self.stop_seen && self.shared.header().stop.load(Ordering::Acquire) != 0 {
            self.stop_seen = true;
        }
        self.stop_seen
    }

    /// True while not stopping and `until` (CLOCK_MONOTONIC ns) has not passed.
    pub(crate) fn running(&mut self, until: Option<u64>) -> bool {
        !self.stopping() && until.is_none_or(|until| sys::now_ns() < until)
    }

    /// Counts `units` of work; passes a checkpoint when one is due.
    pub(crate) fn done(&mut self, units: u64) {
        self.units = self.units.saturating_add(units);
        self.slot.work_units.store(self.units, Ordering::Relaxed);
        let now = sys::now_ns();
        if now.saturating_sub(self.checkpoints.last_ns) >= CHECKPOINT_NS {
            self.checkpoint(now);
        }
    }

    fn checkpoint(&mut self, now: u64) {
        self.quit_if_orphaned();
        let cpu = sys::current_cpu();
        self.checkpoints.record(now, cpu);
        self.publish(cpu);
    }

    fn publish(&self, cpu: Option<u32>) {
        let cp = &self.checkpoints;
        let slot = self.slot;
        if let Some(count) = cpu.and_then(|c| slot.cpu_counts.get(c as usize)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        slot.iterations.store(cp.iterations, Ordering::Relaxed);
        slot.last_checkpoint_ns.store(cp.last_ns, Ordering::Relaxed);
        slot.max_gap_ns.store(cp.max_gap_ns, Ordering::Relaxed);
        slot.max_gap_at_ns
            .store(cp.max_gap_at_ns, Ordering::Relaxed);
        let gap_cpu = cp.max_gap_cpu.map_or(0, |c| c.saturating_add(1));
        slot.max_gap_cpu_plus1.store(gap_cpu, Ordering::Relaxed);
        slot.migrations.store(cp.migrations, Ordering::Relaxed);
        let cpu_time = sys::thread_cpu_ns().saturating_sub(self.cpu_start_ns);
        slot.cpu_time_ns.store(cpu_time, Ordering::Relaxed);
    }

    /// Records a wake-up whose waker stamped `waker_ts`, seen running at `now`.
    pub(crate) fn sample_wake(&mut self, waker_ts: u64, now: u64) {
        if waker_ts != 0 {
            self.wake.push(now.saturating_sub(waker_ts));
        }
    }

    /// Worker `index`'s cooperation words for `leaf`.
    pub(crate) fn coop(&self, leaf: usize, index: usize) -> &'a Coop {
        self.shared.coop(leaf, index)
    }

    /// Worker `index`'s pipe inbox `(read, write)` for `leaf`, if that leaf has pipes.
    pub(crate) fn inbox(&self, leaf: usize, index: usize) -> Option<(RawFd, RawFd)> {
        let at = leaf.checked_mul(self.num_workers())?.checked_add(index)?;
        self.inboxes.get(at).copied().flatten()
    }

    /// Waits (futex, in slices) until `ready(word)`; false if stopped or `until` passed.
    pub(crate) fn wait_until(
        &mut self,
        word: &AtomicU32,
        ready: impl Fn(u32) -> bool,
        until: Option<u64>,
    ) -> bool {
        loop {
            let value = word.load(Ordering::Acquire);
            if ready(value) {
                return true;
            }
            if !self.running(until) {
                return false;
            }
            sys::futex_wait(word, value, WAIT_SLICE_NS);
            self.quit_if_orphaned();
        }
    }

    /// Sleeps `ns` in slices, returning early on stop or at `until`.
    pub(crate) fn sleep(&mut self, ns: u64, until: Option<u64>) {
        let end = sys::now_ns().saturating_add(ns);
        let end = until.map_or(end, |u| end.min(u));
        while !self.stopping() {
            let now = sys::now_ns();
            if now >= end {
                break;
            }
            sys::sleep_until_ns(end.min(now + WAIT_SLICE_NS));
            self.quit_if_orphaned();
        }
    }

    /// Exits at once if the parent died: nobody will collect a report.
    pub(crate) fn quit_if_orphaned(&self) {
        if sys::getppid() != self.parent {
            sys::exit_now(0);
        }
    }

    /// Runs `work` (leaf numbering from `leaf`) until stop or `until`.
    pub(crate) fn run_work(&mut self, work: &WorkType, leaf: usize, until: Option<u64>) {
        match work {
            WorkType::SpinWait => cpu::spin_wait(self, until),
            WorkType::YieldHeavy => cpu::yield_heavy(self, until),
            WorkType::Mixed => cpu::mixed(self, until),
            WorkType::Bursty {
                burst_duration,
                sleep_duration,
            } => cpu::bursty(self, *burst_duration, *sleep_duration, until),
            WorkType::ForkExit => cpu::fork_exit(self, until),
            WorkType::NiceSweep => cpu::nice_sweep(self, until),
            WorkType::AffinityChurn { spin_iters } => cpu::affinity_churn(self, *spin_iters, until),
            WorkType::Custom { run, .. } => cpu::custom(self, *run, until),
            WorkType::PipeIo { burst_iters } => {
                wake::pipe_io(self, leaf, *burst_iters, None, until)
            }
            WorkType::CachePipe {
                size_kib,
                burst_iters,
            } => wake::pipe_io(self, leaf, *burst_iters, Some(*size_kib), until),
            WorkType::FutexPingPong { spin_iters } => {
                wake::token_ring(self, leaf, 2, Hop::Spin(*spin_iters), until)
            }
            WorkType::WakeChain {
                depth,
                wake: mechanism,
                work_per_hop,
            } => {
                let hop = Hop::For(*work_per_hop);
                match mechanism {
                    WakeMechanism::Futex => wake::token_ring(self, leaf, *depth, hop, until),
                    WakeMechanism::Pipe => wake::pipe_ring(self, leaf, *depth, hop, until),
                }
            }
            WorkType::FutexFanOut {
                fan_out,
                spin_iters,
            } => wake::fan_out(self, leaf, *fan_out, *spin_iters, until),
            WorkType::CachePressure { size_kib, stride } => {
                memory::cache_pressure(self, *size_kib, *stride, false, until)
            }
            WorkType::CacheYield { size_kib, stride } => {
                memory::cache_pressure(self, *size_kib, *stride, true, until)
            }
            WorkType::PolicyChurn { spin_iters } => cpu::policy_churn(self, *spin_iters, until),
            WorkType::IdleChurn {
                burst_duration,
                sleep_duration,
                precise_timing,
            } => cpu::idle_churn(
                self,
                *burst_duration,
                *sleep_duration,
                *precise_timing,
                until,
            ),
            WorkType::IpcVariance {
                hot_iters,
                cold_iters,
                period_iters,
            } => memory::ipc_variance(self, *hot_iters, *cold_iters, *period_iters, until),
            WorkType::MutexContention {
                contenders,
                hold_iters,
                work_iters,
            } => wake::mutex_contention(self, leaf, *contenders, *hold_iters, *work_iters, until),
            WorkType::FanOutCompute {
                fan_out,
                cache_footprint_kib,
                operations,
                sleep_usec,
            } => wake::fan_out_compute(
                self,
                leaf,
                *fan_out,
                *cache_footprint_kib,
                *operations,
                *sleep_usec,
                until,
            ),
            WorkType::CgroupAttachStorm { dest, reap } => {
                cpu::cgroup_attach_storm(self, dest, *reap, until)
            }
            WorkType::CgroupChurn { groups, cycle_ms } => {
                cpu::cgroup_churn(self, *groups, *cycle_ms, until)
            }
            WorkType::CrossAffinityChurn { spin_iters } => {
                cpu::cross_affinity_churn(self, *spin_iters, until)
            }
            WorkType::ProducerConsumerImbalance {
                producers,
                consumers,
                produce_rate_hz,
                consume_iters,
                queue_depth_target,
            } => wake::producer_consumer(
                self,
                leaf,
                (*producers, *consumers),
                *produce_rate_hz,
                *consume_iters,
                *queue_depth_target,
                until,
            ),
            WorkType::RtStarvation {
                rt_workers,
                cfs_workers,
                rt_priority,
                burst_iters,
            } => cpu::rt_starvation(
                self,
                (*rt_workers, *cfs_workers),
                *rt_priority,
                *burst_iters,
                until,
            ),
            WorkType::NumaWorkingSetSweep {
                region_kib,
                sweep_period_ms,
                target_nodes,
            } => memory::numa_working_set_sweep(
                self,
                *region_kib,
                *sweep_period_ms,
                target_nodes,
                until,
            ),
            WorkType::ThunderingHerd {
                waiters,
                batches,
                inter_batch_ms,
            } => wake::thundering_herd(self, leaf, *waiters, *batches, *inter_batch_ms, until),
            WorkType::PreemptStorm {
                cfs_workers,
                rt_burst_iters,
                rt_sleep_us,
            } => cpu::preempt_storm(self, *cfs_workers, *rt_burst_iters, *rt_sleep_us, until),
            WorkType::SignalStorm {
                signals_per_iter,
                work_iters,
            } => wake::signal_storm(self, leaf, *signals_per_iter, *work_iters, until),
            WorkType::NumaMigrationChurn { period_ms } => {
                cpu::numa_migration_churn(self, *period_ms, until)
            }
            WorkType::PageFaultChurn {
                region_kib,
                touches_per_cycle,
                spin_iters,
            } => {
                memory::page_fault_churn(self, *region_kib, *touches_per_cycle, *spin_iters, until)
            }
            WorkType::TimerLatency { interval_us } => {
                timer::timer_latency(self, *interval_us, until)
            }
            WorkType::Sequence { phases } => self.sequence(phases, leaf, until),
        }
    }

    fn sequence(&mut self, phases: &[(WorkType, u64)], first_leaf: usize, until: Option<u64>) {
        while self.running(until) {
            let mut leaf = first_leaf;
            for (phase, duration_ms) in phases {
                if !self.running(until) {
                    return;
                }
                let end = sys::now_ns().saturating_add(duration_ms.saturating_mul(NS_PER_MS));
                let end = until.map_or(end, |u| end.min(u));
                self.run_work(phase, leaf, Some(end));
                leaf += phase.leaf_count();
            }
        }
    }

    /// The stop checkpoint and the full report.
    fn finish(mut self) -> WorkerReport {
        let now = sys::now_ns();
        let cpu = sys::current_cpu();
        self.checkpoints.record(now, cpu);
        self.publish(cpu);
        let cpu_time_ns = sys::thread_cpu_ns().saturating_sub(self.cpu_start_ns);
        let wall_time_ns = now.saturating_sub(self.checkpoints.start_ns);
        let schedstat = Schedstat::read_self();
        let (voluntary, involuntary) = sys::context_switches();
        let cp = self.checkpoints;
        let (wake_latencies_ns, wake_sample_total) = self.wake.into_parts();
        let (timer_latencies_ns, timer_sample_total) = self.timer.into_parts();
        WorkerReport {
            tid: sys::getpid(),
            index: self.index,
            work_type: self.work_name.to_string(),
            work_units: self.units,
            iterations: cp.iterations,
            cpu_time_ns,
            wall_time_ns,
            off_cpu_ns: wall_time_ns.saturating_sub(cpu_time_ns),
            max_gap_ms: cp.max_gap_ms(),
            max_gap_cpu: cp.max_gap_cpu,
            max_gap_at_ms: cp.max_gap_at_ms(),
            migration_count: cp.migrations,
            cpus_used: cp.cpus_used,
            wake_latencies_ns,
            wake_sample_total,
            timer_latencies_ns,
            timer_sample_total,
            schedstat_run_delay_ns: schedstat.run_delay_ns,
            schedstat_run_count: schedstat.run_count,
            schedstat_cpu_time_ns: schedstat.cpu_time_ns,
            voluntary_switches: voluntary,
            involuntary_switches: involuntary,
            allowed_cpus: sys::get_affinity(0).unwrap_or_default(),
            completed: true,
            exit_info: None,
            affinity_error: None,
            sched_policy_error: None,
        }
    }
}

/// What the parent can still tell about worker `index` from shared memory alone.
pub(crate) fn report_from_shared(slot: &Slot, pid: i32, index: usize, name: &str) -> WorkerReport {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let start = load(&slot.start_ns);
    let wall_time_ns = if start == 0 {
        0
    } else {
        load(&slot.last_checkpoint_ns).saturating_sub(start)
    };
    let cpu_time_ns = load(&slot.cpu_time_ns);
    WorkerReport {
        tid: pid,
        index,
        work_type: name.to_string(),
        work_units: load(&slot.work_units),
        iterations: load(&slot.iterations),
        cpu_time_ns,
        wall_time_ns,
        off_cpu_ns: wall_time_ns.saturating_sub(cpu_time_ns),
        cpus_used: slot.cpu_counts().into_iter().collect(),
        migration_count: load(&slot.migrations),
        max_gap_ms: load(&slot.max_gap_ns) / NS_PER_MS,
        max_gap_cpu: slot
            .max_gap_cpu_plus1
            .load(Ordering::Relaxed)
            .checked_sub(1),
        max_gap_at_ms: load(&slot.max_gap_at_ns) / NS_PER_MS,
        completed: false,
        ..Default::default()
    }
}
