//! Per-step measurements of each cgroup, taken by the scenario engine at step boundaries.

use serde::{Deserialize, Serialize};

/// A phase of a run: before the first step, or one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Phase(pub u16);

impl Phase {
    /// Before the first step (nothing is measured there yet).
    pub const BASELINE: Phase = Phase(0);

    /// Step `i` (0-based).
    pub const fn step(i: u16) -> Phase {
        Phase(i + 1)
    }

    /// The step index, `None` for the baseline.
    pub fn step_index(&self) -> Option<u16> {
        self.0.checked_sub(1)
    }
}

/// One worker over one phase, from its shared counters and `/proc/<pid>/schedstat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseWorker {
    /// Worker pid.
    pub tid: i32,
    /// Work units done in the phase.
    pub work_units: u64,
    /// CPU time in the phase, ns.
    pub cpu_time_ns: u64,
    /// Time runnable but not running in the phase, ns.
    pub run_delay_ns: u64,
    /// Times scheduled in during the phase.
    pub run_count: u64,
    /// Wall time the worker was measured in the phase, ns.
    pub wall_ns: u64,
    /// Longest time its work counter stood still in the phase, ms (seen by the engine's poller).
    pub max_gap_ms: u64,
}

impl PhaseWorker {
    /// Share of the phase spent off-CPU, percent.
    pub fn off_cpu_pct(&self) -> f64 {
        if self.wall_ns == 0 {
            return 0.0;
        }
        (self.wall_ns.saturating_sub(self.cpu_time_ns)) as f64 * 100.0 / self.wall_ns as f64
    }
}

/// One cgroup over one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseCgroupStats {
    /// The phase.
    pub phase: Phase,
    /// The cgroup.
    pub cgroup: String,
    /// Each worker that ran in the phase.
    pub workers: Vec<PhaseWorker>,
    /// Work units in all.
    pub total_iterations: u64,
    /// CPU time in all, ns.
    pub total_cpu_time_ns: u64,
    /// Longest progress gap of any worker, ms.
    pub max_gap_ms: u64,
}

impl PhaseCgroupStats {
    /// Sums the workers.
    pub fn new(phase: Phase, cgroup: &str, workers: Vec<PhaseWorker>) -> Self {
        PhaseCgroupStats {
            phase,
            cgroup: cgroup.to_string(),
            total_iterations: workers.iter().map(|w| w.work_units).sum(),
            total_cpu_time_ns: workers.iter().map(|w| w.cpu_time_ns).sum(),
            max_gap_ms: workers.iter().map(|w| w.max_gap_ms).max().unwrap_or(0),
            workers,
        }
    }

    /// Mean and worst run delay of its workers, microseconds (`None` without workers).
    pub fn run_delay_summary(&self) -> Option<(f64, f64)> {
        if self.workers.is_empty() {
            return None;
        }
        let delays: Vec<f64> = self
            .workers
            .iter()
            .map(|w| w.run_delay_ns as f64 / 1000.0)
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let worst = delays.iter().copied().fold(0.0, f64::max);
        Some((mean, worst))
    }

    /// Off-CPU percentages of its workers.
    pub fn off_cpu_pcts(&self) -> Vec<f64> {
        self.workers.iter().map(PhaseWorker::off_cpu_pct).collect()
    }

    /// Spread of off-CPU percentage across its workers (max - min), percentage points.
    pub fn spread(&self) -> f64 {
        let p = self.off_cpu_pcts();
        let max = p.iter().copied().fold(f64::MIN, f64::max);
        let min = p.iter().copied().fold(f64::MAX, f64::min);
        if p.is_empty() {
            0.0
        } else {
            max - min
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_number_steps_from_one() {
        assert_eq!(Phase::step(0), Phase(1));
        assert_eq!(Phase::step(2).step_index(), Some(2));
        assert_eq!(Phase::BASELINE.step_index(), None);
    }

    #[test]
    fn stats_sum_and_summarise() {
        let w = |units, cpu, delay, gap| PhaseWorker {
            tid: 1,
            work_units: units,
            cpu_time_ns: cpu,
            run_delay_ns: delay,
            run_count: 1,
            wall_ns: 1_000_000_000,
            max_gap_ms: gap,
        };
        let s = PhaseCgroupStats::new(
            Phase::step(0),
            "cg",
            vec![w(10, 500_000_000, 2000, 5), w(30, 900_000_000, 4000, 50)],
        );
        assert_eq!(s.total_iterations, 40);
        assert_eq!(s.max_gap_ms, 50);
        assert_eq!(s.run_delay_summary(), Some((3.0, 4.0)));
        assert!((s.spread() - 40.0).abs() < 1e-9);
        assert_eq!(
            PhaseCgroupStats::new(Phase(1), "e", vec![]).run_delay_summary(),
            None
        );
    }
}
