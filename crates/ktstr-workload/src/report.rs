//! What one worker measured about itself: the telemetry every assertion reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most latency samples a worker keeps (reservoir-sampled beyond this); totals count them all.
pub const MAX_LATENCY_SAMPLES: usize = 4096;

/// One worker's report, collected when it stops.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Worker process id (each worker is a forked, single-threaded process, so also its tid).
    pub tid: i32,
    /// Index of the worker within its workload (0-based).
    pub index: usize,
    /// Name of the work type it ran (`WorkType::name`).
    pub work_type: String,
    /// Units of work done (spin batches, round trips, wakes, faults, ...).
    pub work_units: u64,
    /// Progress checkpoints passed (one per unit batch; the gap clock ticks between them).
    pub iterations: u64,
    /// CPU time consumed, ns (CLOCK_THREAD_CPUTIME_ID).
    pub cpu_time_ns: u64,
    /// Wall time from start gate to stop, ns.
    pub wall_time_ns: u64,
    /// Wall time not on a CPU, ns (`wall_time_ns - cpu_time_ns`, floored at 0).
    pub off_cpu_ns: u64,
    /// CPUs the worker was seen on at checkpoints, with how many checkpoints on each.
    pub cpus_used: BTreeMap<u32, u64>,
    /// Times consecutive checkpoints saw a different CPU.
    pub migration_count: u64,
    /// Longest wall-clock gap between consecutive progress checkpoints (start and stop count
    /// as checkpoints), ms.
    pub max_gap_ms: u64,
    /// CPU the worker was on when the longest gap ended.
    pub max_gap_cpu: Option<u32>,
    /// When the longest gap ended, ms after the worker started.
    pub max_gap_at_ms: u64,
    /// Wake-up latency samples, ns (waker's timestamp to wakee running), for waking work types.
    pub wake_latencies_ns: Vec<u64>,
    /// Wake-ups measured in all (samples beyond [`MAX_LATENCY_SAMPLES`] are reservoir-sampled).
    pub wake_sample_total: u64,
    /// Timer overshoot samples, ns (expiry to running), for timer work types.
    pub timer_latencies_ns: Vec<u64>,
    /// Timer expiries measured in all.
    pub timer_sample_total: u64,
    /// Time spent runnable but waiting for a CPU, ns (`/proc/<pid>/schedstat` field 2).
    pub schedstat_run_delay_ns: u64,
    /// Times scheduled in (`/proc/<pid>/schedstat` field 3).
    pub schedstat_run_count: u64,
    /// CPU time according to schedstat, ns (field 1).
    pub schedstat_cpu_time_ns: u64,
    /// Voluntary context switches (getrusage).
    pub voluntary_switches: u64,
    /// Involuntary context switches (getrusage).
    pub involuntary_switches: u64,
    /// CPUs the worker was allowed on when it stopped (sched_getaffinity).
    pub allowed_cpus: Vec<u32>,
    /// True when the worker ran to its stop request and reported; false when it died or
    /// had to be killed (then most counters are those last published in shared memory).
    pub completed: bool,
    /// How the worker ended when it did not complete (signal, exit status, panic text).
    pub exit_info: Option<String>,
    /// Why the requested affinity could not be applied, if it could not.
    pub affinity_error: Option<String>,
    /// Why the requested scheduling policy or nice value could not be applied, if it could not.
    pub sched_policy_error: Option<String>,
}

impl WorkerReport {
    /// Share of wall time spent off-CPU, percent (0 when no wall time elapsed).
    pub fn off_cpu_pct(&self) -> f64 {
        if self.wall_time_ns == 0 {
            return 0.0;
        }
        self.off_cpu_ns as f64 * 100.0 / self.wall_time_ns as f64
    }

    /// Work units per CPU-second (0 when no CPU time was used).
    pub fn work_rate(&self) -> f64 {
        if self.cpu_time_ns == 0 {
            return 0.0;
        }
        self.work_units as f64 * 1e9 / self.cpu_time_ns as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_rates() {
        let r = WorkerReport {
            work_units: 500,
            cpu_time_ns: 250_000_000,
            wall_time_ns: 1_000_000_000,
            off_cpu_ns: 750_000_000,
            ..Default::default()
        };
        assert_eq!(r.off_cpu_pct(), 75.0);
        assert_eq!(r.work_rate(), 2000.0);
        assert_eq!(WorkerReport::default().off_cpu_pct(), 0.0);
        assert_eq!(WorkerReport::default().work_rate(), 0.0);
    }

    #[test]
    fn json_round_trip() {
        let mut r = WorkerReport {
            tid: 42,
            work_type: "SpinWait".into(),
            ..Default::default()
        };
        r.cpus_used.insert(3, 7);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<WorkerReport>(&text).unwrap(), r);
    }
}
