//! What a worker does in its loop: the [`WorkType`] catalogue.

use std::time::Duration;

use crate::WorkloadError;

/// What a worker does in its loop. A work unit is the variant's natural step.
///
/// `Custom` values compare equal when name and function address match (function
/// addresses are only a best-effort identity).
#[allow(unpredictable_function_pointer_comparisons)]
#[derive(Debug, Clone, PartialEq)]
pub enum WorkType {
    /// Busy loop; one unit is a 1024-iteration spin.
    SpinWait,
    /// Short spin then `sched_yield`; one unit each.
    YieldHeavy,
    /// A spin batch then a `sched_yield`; one unit per 1024-iteration spin.
    Mixed,
    /// Spin for `burst_duration` (one unit per 1024-iteration spin), then sleep
    /// `sleep_duration`.
    Bursty {
        /// Length of each spinning burst.
        burst_duration: Duration,
        /// Sleep between bursts.
        sleep_duration: Duration,
    },
    /// Pairs ping-pong a byte over pipes; one unit per wake-up; wake latency measured.
    PipeIo {
        /// Spin iterations done between receiving and sending back.
        burst_iters: u64,
    },
    /// Pairs wake each other with a shared-memory futex; one unit per wake; latency measured.
    FutexPingPong {
        /// Spin iterations done between being woken and waking the partner.
        spin_iters: u64,
    },
    /// Ring of `depth` workers passing one token: each works `work_per_hop`, then wakes the
    /// next by `wake`; one unit per hop; wake latency measured.
    WakeChain {
        /// Workers in the ring (the group size).
        depth: usize,
        /// How a worker wakes the next.
        wake: WakeMechanism,
        /// CPU work (a spin) each worker does holding the token.
        work_per_hop: Duration,
    },
    /// One waker spins `spin_iters`, then wakes `fan_out` waiters (futex); wake latency
    /// measured.
    FutexFanOut {
        /// Waiters per waker (the group is `fan_out + 1`).
        fan_out: usize,
        /// Spin iterations the waker does before each round of wakes.
        spin_iters: u64,
    },
    /// Fork a child that exits at once and wait for it; one unit each.
    ForkExit,
    /// Cycle its own nice value through -20..=19 (0..=19 when not permitted) while spinning.
    NiceSweep,
    /// Re-pin itself to a random allowed CPU every unit, then spin `spin_iters`.
    AffinityChurn {
        /// Spin iterations after each re-pin.
        spin_iters: u64,
    },
    /// Rewrite the affinity of the other processes that were in the workload's cgroup when
    /// the worker started, toggling between its CPUs and those less one; spin `spin_iters`
    /// and yield between rounds; one unit each. Needs a dedicated cgroup (declare the
    /// targets first); without one it only spins.
    CrossAffinityChurn {
        /// Spin iterations between rounds.
        spin_iters: u64,
    },
    /// Move itself round `groups` sibling cgroups `wt-cgroup-churn-<i>` (made beside the
    /// workload's cgroup) every `cycle_ms`, spinning in between (one unit per 1024-iteration
    /// spin); it goes back to its own cgroup at the end. Needs a dedicated cgroup; without
    /// one it only spins.
    CgroupChurn {
        /// Sibling cgroups to rotate through.
        groups: usize,
        /// Time in each, ms.
        cycle_ms: u64,
    },
    /// Touch every page of a `region_kib` region, re-binding it (`mbind`, moving its pages)
    /// to the next of `target_nodes` every `sweep_period_ms`; one unit per pass over the
    /// region. An empty `target_nodes` only touches.
    NumaWorkingSetSweep {
        /// Region size, KiB.
        region_kib: usize,
        /// Time on each node, ms.
        sweep_period_ms: u64,
        /// NUMA nodes to rotate through, in order.
        target_nodes: Vec<usize>,
    },
    /// Fork a child that exits at once and move it into cgroup `dest` (a sibling of the
    /// workload's cgroup, or below its parent) by writing its pid to `dest`'s
    /// `cgroup.procs`, racing its exit; one unit per move the kernel accepted. Needs a
    /// dedicated cgroup and an existing `dest`; without them it does nothing.
    CgroupAttachStorm {
        /// The destination, relative to the parent of the workload's cgroup.
        dest: String,
        /// How the children are reaped.
        reap: ReapMode,
    },
    /// Strided read-modify-write passes over a buffer; one unit per pass.
    CachePressure {
        /// Buffer size, KiB.
        size_kib: usize,
        /// Distance between touched bytes.
        stride: usize,
    },
    /// mmap a region, touch pages, munmap, spin `spin_iters`; one unit per page touch.
    PageFaultChurn {
        /// Region size, KiB.
        region_kib: usize,
        /// Page touches per mmap/munmap cycle.
        touches_per_cycle: usize,
        /// Spin iterations after each cycle.
        spin_iters: u64,
    },
    /// Strided read-modify-write passes over a buffer, `sched_yield` after each; one unit
    /// per pass.
    CacheYield {
        /// Buffer size, KiB.
        size_kib: usize,
        /// Distance between touched bytes.
        stride: usize,
    },
    /// Spin `spin_iters`, switch to the next scheduling policy (normal, batch, idle, then
    /// FIFO and RR at priority 1 where permitted), yield; one unit each.
    PolicyChurn {
        /// Spin iterations before each switch.
        spin_iters: u64,
    },
    /// Spin for `burst_duration`, sleep `sleep_duration`; how late each sleep ends is
    /// measured as wake latency; one unit per spin.
    IdleChurn {
        /// Length of each spinning burst.
        burst_duration: Duration,
        /// Length of each sleep.
        sleep_duration: Duration,
        /// Shrink the timer slack to 1 ns first (`PR_SET_TIMERSLACK`), for exact wake-ups.
        precise_timing: bool,
    },
    /// Alternate `hot_iters` dependent multiplies (high IPC) with `cold_iters` random
    /// cache-line touches over 512 KiB (low IPC), `period_iters` pairs per unit.
    IpcVariance {
        /// Multiplies per hot phase.
        hot_iters: u64,
        /// Cache-line touches per cold phase.
        cold_iters: u64,
        /// Hot/cold pairs per work unit.
        period_iters: u64,
    },
    /// `contenders` workers take turns on one futex mutex: spin `work_iters` unlocked,
    /// then `hold_iters` holding it; one unit per acquisition.
    MutexContention {
        /// Workers sharing the mutex (the group size).
        contenders: usize,
        /// Spin iterations while holding it.
        hold_iters: u64,
        /// Spin iterations between acquisitions.
        work_iters: u64,
    },
    /// One messenger per group wakes `fan_out` workers at once (futex); each records its
    /// wake latency, sleeps `sleep_usec`, then does `operations` matrix multiplications over
    /// about `cache_footprint_kib` of matrices; the messenger waits for all before the next
    /// round. One unit per round (messenger) or per wake-up (workers).
    FanOutCompute {
        /// Workers per messenger (the group is `fan_out + 1`).
        fan_out: usize,
        /// Memory of the three matrices each worker multiplies, KiB.
        cache_footprint_kib: usize,
        /// Matrix multiplications per wake-up.
        operations: usize,
        /// Think time between waking and computing, µs.
        sleep_usec: u64,
    },
    /// Per group, `producers` add items to a shared queue at `produce_rate_hz` each (an item
    /// is dropped when `queue_depth_target` are waiting); `consumers` take them, spinning
    /// `consume_iters` per item. One unit per item produced or consumed; consumers record
    /// how long they waited for an item as wake latency.
    ProducerConsumerImbalance {
        /// Producers per group.
        producers: usize,
        /// Consumers per group (the group is `producers + consumers`).
        consumers: usize,
        /// Items each producer adds per second.
        produce_rate_hz: u64,
        /// Spin iterations per consumed item.
        consume_iters: u64,
        /// Most items waiting at once.
        queue_depth_target: u64,
    },
    /// `PipeIo` whose burst between receiving and sending back is `burst_iters` cache-line
    /// touches over a `size_kib` buffer; one unit per wake-up; wake latency measured.
    CachePipe {
        /// Buffer size, KiB.
        size_kib: usize,
        /// Cache-line touches per burst.
        burst_iters: u64,
    },
    /// One waker wakes all `waiters` at once on a single futex word, `batches` times,
    /// `inter_batch_ms` apart; each waiter's wake latency is measured.
    ThunderingHerd {
        /// Waiters per waker (the group is `waiters + 1`).
        waiters: usize,
        /// Broadcast wakes before the waker stops waking.
        batches: u64,
        /// Sleep between broadcasts, ms.
        inter_batch_ms: u64,
    },
    /// Per group, `rt_workers` run SCHED_FIFO at `rt_priority` and spin `burst_iters` per
    /// unit without ever yielding; `cfs_workers` normal workers spin the same and starve
    /// where they share CPUs (pin them together to see it).
    RtStarvation {
        /// Real-time workers per group.
        rt_workers: usize,
        /// Normal workers per group (the group is `rt_workers + cfs_workers`).
        cfs_workers: usize,
        /// SCHED_FIFO priority, 1..=99.
        rt_priority: i32,
        /// Spin iterations per unit.
        burst_iters: u64,
    },
    /// Per group, one SCHED_FIFO worker spins `rt_burst_iters` then sleeps `rt_sleep_us`,
    /// preempting `cfs_workers` normal spinners each time it wakes.
    PreemptStorm {
        /// Normal spinners per group (the group is `cfs_workers + 1`).
        cfs_workers: usize,
        /// Spin iterations of each real-time burst.
        rt_burst_iters: u64,
        /// Sleep between real-time bursts, µs.
        rt_sleep_us: u64,
    },
    /// Pairs: spin `work_iters`, then send the partner `signals_per_iter` SIGUSR1s; one unit
    /// each round.
    SignalStorm {
        /// Signals per round.
        signals_per_iter: u64,
        /// Spin iterations per round.
        work_iters: u64,
    },
    /// Spin, re-pinning to the CPUs of the next NUMA node every `period_ms`; one unit per
    /// 1024-iteration spin.
    NumaMigrationChurn {
        /// Time on each node, ms.
        period_ms: u64,
    },
    /// Absolute `clock_nanosleep` every `interval_us`; timer overshoot measured; one unit each.
    TimerLatency {
        /// Timer period, µs.
        interval_us: u64,
    },
    /// Run each `(work, duration_ms)` in turn, cycling until stopped.
    Sequence {
        /// The phases and how long each lasts, ms.
        phases: Vec<(WorkType, u64)>,
    },
    /// A user function called repeatedly; it returns the work units it did.
    Custom {
        /// Name reported as the work type.
        name: &'static str,
        /// The function; runs inside the forked worker.
        run: fn() -> u64,
    },
}

impl WorkType {
    /// Every built-in work type whose workers are alike, with default parameters: all but
    /// `Sequence`, `Custom` and `PreemptStorm` (whose real-time worker sleeps by design, so
    /// its group's off-CPU shares always differ).
    pub fn builtin() -> Vec<WorkType> {
        vec![
            WorkType::SpinWait,
            WorkType::YieldHeavy,
            WorkType::Mixed,
            WorkType::bursty(Duration::from_millis(10), Duration::from_millis(10)),
            WorkType::pipe_io(),
            WorkType::futex_ping_pong(),
            WorkType::wake_chain(),
            WorkType::futex_fan_out(),
            WorkType::ForkExit,
            WorkType::NiceSweep,
            WorkType::affinity_churn(),
            WorkType::cache_pressure(),
            WorkType::page_fault_churn(),
            WorkType::timer_latency(),
            WorkType::CacheYield {
                size_kib: 256,
                stride: 64,
            },
            WorkType::PolicyChurn { spin_iters: 16384 },
            WorkType::idle_churn(Duration::from_millis(1), Duration::from_millis(5)),
            WorkType::IpcVariance {
                hot_iters: 4096,
                cold_iters: 1024,
                period_iters: 4,
            },
            WorkType::MutexContention {
                contenders: 2,
                hold_iters: 1024,
                work_iters: 1024,
            },
            WorkType::ThunderingHerd {
                waiters: 3,
                batches: u64::MAX,
                inter_batch_ms: 5,
            },
            WorkType::CachePipe {
                size_kib: 256,
                burst_iters: 1024,
            },
            WorkType::FanOutCompute {
                fan_out: 3,
                cache_footprint_kib: 64,
                operations: 1,
                sleep_usec: 100,
            },
            WorkType::SignalStorm {
                signals_per_iter: 4,
                work_iters: 16384,
            },
            WorkType::NumaMigrationChurn { period_ms: 10 },
        ]
    }

    /// `Bursty` spinning `burst` then sleeping `sleep`.
    pub fn bursty(burst: Duration, sleep: Duration) -> Self {
        Self::Bursty {
            burst_duration: burst,
            sleep_duration: sleep,
        }
    }

    /// `PipeIo` with 1024 spin iterations between messages.
    pub fn pipe_io() -> Self {
        Self::PipeIo { burst_iters: 1024 }
    }

    /// `FutexPingPong` with 1024 spin iterations between wakes.
    pub fn futex_ping_pong() -> Self {
        Self::FutexPingPong { spin_iters: 1024 }
    }

    /// `WakeChain` of 4 workers.
    pub fn wake_chain() -> Self {
        Self::WakeChain {
            depth: 4,
            wake: WakeMechanism::Futex,
            work_per_hop: Duration::from_micros(10),
        }
    }

    /// `FutexFanOut` with one waker spinning 1024 iterations per round and 3 waiters.
    pub fn futex_fan_out() -> Self {
        Self::FutexFanOut {
            fan_out: 3,
            spin_iters: 1024,
        }
    }

    /// `AffinityChurn` spinning 16384 iterations per re-pin.
    pub fn affinity_churn() -> Self {
        Self::AffinityChurn { spin_iters: 16384 }
    }

    /// `CachePressure` over 1 MiB, one touch per 64-byte line.
    pub fn cache_pressure() -> Self {
        Self::CachePressure {
            size_kib: 1024,
            stride: 64,
        }
    }

    /// `PageFaultChurn` over 4 MiB, 256 page touches per cycle, 1024 spins after each.
    pub fn page_fault_churn() -> Self {
        Self::PageFaultChurn {
            region_kib: 4096,
            touches_per_cycle: 256,
            spin_iters: 1024,
        }
    }

    /// `IdleChurn` spinning `burst` and sleeping `sleep`, with the inherited timer slack.
    pub fn idle_churn(burst: Duration, sleep: Duration) -> Self {
        Self::IdleChurn {
            burst_duration: burst,
            sleep_duration: sleep,
            precise_timing: false,
        }
    }

    /// `TimerLatency` with a 1 ms period.
    pub fn timer_latency() -> Self {
        Self::TimerLatency { interval_us: 1000 }
    }

    /// `Sequence` of the given `(work, duration_ms)` phases.
    pub fn sequence(phases: Vec<(WorkType, u64)>) -> Self {
        Self::Sequence { phases }
    }

    /// `Custom` running `run` under `name`.
    pub fn custom(name: &'static str, run: fn() -> u64) -> Self {
        Self::Custom { name, run }
    }

    /// The variant's name (`"SpinWait"`, ...); `Custom` returns its own name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SpinWait => "SpinWait",
            Self::YieldHeavy => "YieldHeavy",
            Self::Mixed => "Mixed",
            Self::Bursty { .. } => "Bursty",
            Self::PipeIo { .. } => "PipeIo",
            Self::FutexPingPong { .. } => "FutexPingPong",
            Self::WakeChain { .. } => "WakeChain",
            Self::FutexFanOut { .. } => "FutexFanOut",
            Self::ForkExit => "ForkExit",
            Self::NiceSweep => "NiceSweep",
            Self::AffinityChurn { .. } => "AffinityChurn",
            Self::CrossAffinityChurn { .. } => "CrossAffinityChurn",
            Self::CgroupChurn { .. } => "CgroupChurn",
            Self::CgroupAttachStorm { .. } => "CgroupAttachStorm",
            Self::NumaWorkingSetSweep { .. } => "NumaWorkingSetSweep",
            Self::CachePressure { .. } => "CachePressure",
            Self::PageFaultChurn { .. } => "PageFaultChurn",
            Self::TimerLatency { .. } => "TimerLatency",
            Self::CacheYield { .. } => "CacheYield",
            Self::PolicyChurn { .. } => "PolicyChurn",
            Self::IdleChurn { .. } => "IdleChurn",
            Self::IpcVariance { .. } => "IpcVariance",
            Self::MutexContention { .. } => "MutexContention",
            Self::ThunderingHerd { .. } => "ThunderingHerd",
            Self::PreemptStorm { .. } => "PreemptStorm",
            Self::CachePipe { .. } => "CachePipe",
            Self::FanOutCompute { .. } => "FanOutCompute",
            Self::RtStarvation { .. } => "RtStarvation",
            Self::ProducerConsumerImbalance { .. } => "ProducerConsumerImbalance",
            Self::SignalStorm { .. } => "SignalStorm",
            Self::NumaMigrationChurn { .. } => "NumaMigrationChurn",
            Self::Sequence { .. } => "Sequence",
            Self::Custom { name, .. } => name,
        }
    }

    /// Workers that cooperate: PipeIo/FutexPingPong 2, WakeChain `depth`, FutexFanOut
    /// `fan_out + 1`, Sequence the least common multiple of its phases', else 1.
    pub fn group_size(&self) -> usize {
        match self {
            Self::PipeIo { .. } | Self::FutexPingPong { .. } | Self::CachePipe { .. } => 2,
            Self::WakeChain { depth, .. } => (*depth).max(1),
            Self::FutexFanOut { fan_out, .. } => fan_out.saturating_add(1),
            Self::MutexContention { contenders, .. } => (*contenders).max(1),
            Self::ThunderingHerd { waiters, .. } => waiters.saturating_add(1),
            Self::PreemptStorm { cfs_workers, .. } => cfs_workers.saturating_add(1),
            Self::SignalStorm { .. } => 2,
            Self::FanOutCompute { fan_out, .. } => fan_out.saturating_add(1),
            Self::RtStarvation {
                rt_workers,
                cfs_workers,
                ..
            } => rt_workers.saturating_add(*cfs_workers).max(1),
            Self::ProducerConsumerImbalance {
                producers,
                consumers,
                ..
            } => producers.saturating_add(*consumers).max(1),
            Self::Sequence { phases } => phases
                .iter()
                .fold(1, |acc, (work, _)| lcm(acc, work.group_size())),
            _ => 1,
        }
    }

    /// Checks the parameters make a runnable loop (non-zero sizes, non-empty sequences).
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let bad = |msg: &str| Err(WorkloadError::Config(format!("{}: {msg}", self.name())));
        match self {
            Self::Bursty { burst_duration, .. } if burst_duration.is_zero() => {
                bad("burst_duration must not be zero")
            }
            Self::WakeChain { depth, .. } if *depth < 2 => bad("depth must be at least 2"),
            Self::FutexFanOut { fan_out: 0, .. } => bad("fan_out must be at least 1"),
            Self::CachePressure { size_kib: 0, .. } => bad("size_kib must be at least 1"),
            Self::CachePressure { stride: 0, .. } => bad("stride must be at least 1"),
            Self::PageFaultChurn { region_kib: 0, .. } => bad("region_kib must be at least 1"),
            Self::PageFaultChurn {
                touches_per_cycle: 0,
                ..
            } => bad("touches_per_cycle must be at least 1"),
            Self::TimerLatency { interval_us: 0 } => bad("interval_us must be at least 1"),
            Self::CacheYield { size_kib: 0, .. } => bad("size_kib must be at least 1"),
            Self::CacheYield { stride: 0, .. } => bad("stride must be at least 1"),
            Self::IdleChurn {
                burst_duration,
                sleep_duration,
                ..
            } if burst_duration.is_zero() || sleep_duration.is_zero() => {
                bad("burst_duration and sleep_duration must not be zero")
            }
            Self::IpcVariance {
                hot_iters,
                cold_iters,
                period_iters,
            } if *hot_iters == 0 || *cold_iters == 0 || *period_iters == 0 => {
                bad("hot_iters, cold_iters and period_iters must be at least 1")
            }
            Self::MutexContention { contenders, .. } if *contenders < 2 => {
                bad("contenders must be at least 2")
            }
            Self::CachePipe { size_kib: 0, .. } => bad("size_kib must be at least 1"),
            Self::FanOutCompute { fan_out: 0, .. } => bad("fan_out must be at least 1"),
            Self::ProducerConsumerImbalance {
                producers,
                consumers,
                produce_rate_hz,
                queue_depth_target,
                ..
            } if *producers == 0
                || *consumers == 0
                || *produce_rate_hz == 0
                || *queue_depth_target == 0 =>
            {
                bad("producers, consumers, produce_rate_hz and queue_depth_target must be at least 1")
            }
            Self::RtStarvation { rt_priority, .. } if !(1..=99).contains(rt_priority) => {
                bad("rt_priority must be within 1..=99")
            }
            Self::RtStarvation { rt_workers: 0, .. } => bad("rt_workers must be at least 1"),
            Self::NumaWorkingSetSweep { region_kib: 0, .. } => {
                bad("region_kib must be at least 1")
            }
            Self::NumaWorkingSetSweep {
                sweep_period_ms: 0,
                ..
            } => bad("sweep_period_ms must be at least 1"),
            Self::NumaWorkingSetSweep { target_nodes, .. } if target_nodes.iter().any(|&n| n > 63) => {
                bad("target_nodes must be at most 63")
            }
            Self::CgroupAttachStorm { dest, .. }
                if dest.is_empty()
                    || dest.starts_with('/')
                    || dest.split('/').any(|c| c.is_empty() || c == "." || c == "..") =>
            {
                bad("dest must be a relative cgroup path without . or ..")
            }
            Self::CgroupChurn { groups: 0, .. } => bad("groups must be at least 1"),
            Self::CgroupChurn { cycle_ms: 0, .. } => bad("cycle_ms must be at least 1"),
            Self::ThunderingHerd { waiters: 0, .. } => bad("waiters must be at least 1"),
            Self::PreemptStorm { rt_sleep_us: 0, .. } => bad("rt_sleep_us must be at least 1"),
            Self::NumaMigrationChurn { period_ms: 0 } => bad("period_ms must be at least 1"),
            Self::Sequence { phases } if phases.is_empty() => bad("needs at least one phase"),
            Self::Sequence { phases } => {
                for (work, duration_ms) in phases {
                    if *duration_ms == 0 {
                        return bad(&format!("phase {} lasts 0 ms", work.name()));
                    }
                    work.validate()?;
                }
                Ok(())
            }
            Self::Custom { name: "", .. } => bad("Custom needs a name"),
            _ => Ok(()),
        }
    }

    /// Default worker comm: `ktstr-` and the lower-cased name, cut to 15 bytes.
    pub fn default_comm(&self) -> String {
        truncate_comm(&format!("ktstr-{}", self.name().to_lowercase()))
    }

    /// Work types this one runs, flattened: itself, or a Sequence's phases depth-first.
    ///
    /// Each leaf gets its own cooperation state in shared memory, so phases never share
    /// futex words or pipes.
    pub(crate) fn leaf_count(&self) -> usize {
        match self {
            Self::Sequence { phases } => phases.iter().map(|(w, _)| w.leaf_count()).sum(),
            _ => 1,
        }
    }

    /// Calls `f(leaf_index, leaf)` for every leaf in [`WorkType::leaf_count`] order.
    pub(crate) fn for_each_leaf(&self, f: &mut impl FnMut(usize, &WorkType)) {
        fn walk(work: &WorkType, next: &mut usize, f: &mut impl FnMut(usize, &WorkType)) {
            match work {
                WorkType::Sequence { phases } => {
                    for (phase, _) in phases {
                        walk(phase, next, f);
                    }
                }
                leaf => {
                    f(*next, leaf);
                    *next += 1;
                }
            }
        }
        let mut next = 0;
        walk(self, &mut next, f);
    }
}

/// How [`WorkType::CgroupAttachStorm`] reaps the children it forks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReapMode {
    /// `SIGCHLD` ignored: children reap themselves as they exit, racing the move.
    #[default]
    SigIgn,
    /// Each child is waited for after its move.
    Waitpid,
}

/// How a [`WorkType::WakeChain`] member wakes the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WakeMechanism {
    /// A byte down a pipe (a sync wake-up, `WF_SYNC`).
    Pipe,
    /// A shared futex word (no `WF_SYNC`).
    #[default]
    Futex,
}

/// Cuts a comm to the kernel's 15 visible bytes, on a character boundary.
pub(crate) fn truncate_comm(comm: &str) -> String {
    let mut end = comm.len().min(15);
    while !comm.is_char_boundary(end) {
        end -= 1;
    }
    comm[..end].to_string()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    if a == 0 || b == 0 {
        return a.max(b);
    }
    (a / gcd(a, b)).saturating_mul(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(depth: usize) -> WorkType {
        WorkType::WakeChain {
            depth,
            wake: WakeMechanism::Futex,
            work_per_hop: Duration::from_micros(1),
        }
    }

    fn seven() -> u64 {
        7
    }

    fn all_defaults() -> Vec<WorkType> {
        let mut all = WorkType::builtin();
        all.push(WorkType::sequence(vec![(WorkType::SpinWait, 10)]));
        all.push(WorkType::custom("mine", seven));
        all
    }

    #[test]
    fn names() {
        let names: Vec<_> = all_defaults().iter().map(WorkType::name).collect();
        assert_eq!(
            names,
            [
                "SpinWait",
                "YieldHeavy",
                "Mixed",
                "Bursty",
                "PipeIo",
                "FutexPingPong",
                "WakeChain",
                "FutexFanOut",
                "ForkExit",
                "NiceSweep",
                "AffinityChurn",
                "CachePressure",
                "PageFaultChurn",
                "TimerLatency",
                "CacheYield",
                "PolicyChurn",
                "IdleChurn",
                "IpcVariance",
                "MutexContention",
                "ThunderingHerd",
                "CachePipe",
                "FanOutCompute",
                "SignalStorm",
                "NumaMigrationChurn",
                "Sequence",
                "mine"
            ]
        );
    }

    #[test]
    fn group_sizes() {
        assert_eq!(WorkType::SpinWait.group_size(), 1);
        assert_eq!(WorkType::pipe_io().group_size(), 2);
        assert_eq!(WorkType::futex_ping_pong().group_size(), 2);
        assert_eq!(chain(5).group_size(), 5);
        let storm = WorkType::PreemptStorm {
            cfs_workers: 3,
            rt_burst_iters: 1,
            rt_sleep_us: 1,
        };
        assert_eq!((storm.name(), storm.group_size()), ("PreemptStorm", 4));
        storm.validate().unwrap();
        let mutex = WorkType::MutexContention {
            contenders: 3,
            hold_iters: 1,
            work_iters: 1,
        };
        assert_eq!(mutex.group_size(), 3);
        let herd = WorkType::ThunderingHerd {
            waiters: 5,
            batches: 1,
            inter_batch_ms: 1,
        };
        assert_eq!(herd.group_size(), 6);
        assert_eq!(
            WorkType::SignalStorm {
                signals_per_iter: 1,
                work_iters: 1
            }
            .group_size(),
            2
        );
        let fan = WorkType::FutexFanOut {
            fan_out: 3,
            spin_iters: 0,
        };
        assert_eq!(fan.group_size(), 4);
        let seq = WorkType::sequence(vec![
            (WorkType::pipe_io(), 10),
            (chain(3), 10),
            (WorkType::SpinWait, 10),
        ]);
        assert_eq!(seq.group_size(), 6);
        assert_eq!(seq.leaf_count(), 3);
    }

    #[test]
    fn defaults_validate_and_bad_parameters_do_not() {
        for work in all_defaults() {
            work.validate().unwrap();
        }
        assert!(chain(1).validate().is_err());
        let no_fan = WorkType::FutexFanOut {
            fan_out: 0,
            spin_iters: 1,
        };
        assert!(no_fan.validate().is_err());
        assert!(WorkType::bursty(Duration::ZERO, Duration::from_millis(1))
            .validate()
            .is_err());
        assert!(
            WorkType::idle_churn(Duration::from_millis(1), Duration::ZERO)
                .validate()
                .is_err()
        );
        let lone = WorkType::MutexContention {
            contenders: 1,
            hold_iters: 1,
            work_iters: 1,
        };
        assert!(lone.validate().is_err());
        let cold_less = WorkType::IpcVariance {
            hot_iters: 1,
            cold_iters: 0,
            period_iters: 1,
        };
        assert!(cold_less.validate().is_err());
        let zero_stride = WorkType::CachePressure {
            size_kib: 4,
            stride: 0,
        };
        assert!(zero_stride.validate().is_err());
        assert!(WorkType::sequence(vec![]).validate().is_err());
        assert!(WorkType::sequence(vec![(WorkType::SpinWait, 0)])
            .validate()
            .is_err());
        assert!(
            WorkType::sequence(vec![(WorkType::TimerLatency { interval_us: 0 }, 5)])
                .validate()
                .is_err()
        );
    }

    #[test]
    fn comm_is_short() {
        assert_eq!(WorkType::SpinWait.default_comm(), "ktstr-spinwait");
        assert_eq!(
            WorkType::futex_ping_pong().default_comm(),
            "ktstr-futexping"
        );
        assert_eq!(truncate_comm("ééééééééééé"), "ééééééé");
    }

    #[test]
    fn leaves_in_order() {
        let seq = WorkType::sequence(vec![
            (WorkType::SpinWait, 1),
            (
                WorkType::sequence(vec![(WorkType::pipe_io(), 1), (WorkType::ForkExit, 1)]),
                1,
            ),
        ]);
        let mut seen = Vec::new();
        seq.for_each_leaf(&mut |i, w| seen.push((i, w.name())));
        assert_eq!(seen, [(0, "SpinWait"), (1, "PipeIo"), (2, "ForkExit")]);
    }
}
