//! What a worker measures as it runs: checkpoints and gaps, latency reservoirs, schedstat.

use std::collections::BTreeMap;

use crate::rng::Rng;
use crate::sys::NS_PER_MS;

/// Progress checkpoints: where the worker ran and the longest wall-clock gap between two.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Checkpoints {
    /// CLOCK_MONOTONIC at the start checkpoint, ns.
    pub(crate) start_ns: u64,
    /// CLOCK_MONOTONIC at the latest checkpoint, ns.
    pub(crate) last_ns: u64,
    /// CPU at the latest checkpoint.
    pub(crate) last_cpu: Option<u32>,
    /// Checkpoints passed, the start included.
    pub(crate) iterations: u64,
    /// Longest gap between consecutive checkpoints, ns.
    pub(crate) max_gap_ns: u64,
    /// CPU when the longest gap ended.
    pub(crate) max_gap_cpu: Option<u32>,
    /// When the longest gap ended, ns after the start.
    pub(crate) max_gap_at_ns: u64,
    /// Checkpoints that saw a CPU other than the previous one.
    pub(crate) migrations: u64,
    /// Checkpoints per CPU.
    pub(crate) cpus_used: BTreeMap<u32, u64>,
}

impl Checkpoints {
    /// Starts counting: the start is the first checkpoint.
    pub(crate) fn start(now_ns: u64, cpu: Option<u32>) -> Self {
        let mut cp = Self {
            start_ns: now_ns,
            last_ns: now_ns,
            ..Self::default()
        };
        cp.count_cpu(cpu);
        cp.iterations = 1;
        cp
    }

    /// Records a checkpoint at `now_ns` on `cpu`; returns the gap since the previous one, ns.
    pub(crate) fn record(&mut self, now_ns: u64, cpu: Option<u32>) -> u64 {
        let gap = now_ns.saturating_sub(self.last_ns);
        // The first gap always counts, even a zero one, so the gap CPU is known.
        if gap > self.max_gap_ns || self.iterations == 1 {
            self.max_gap_ns = gap;
            self.max_gap_cpu = cpu;
            self.max_gap_at_ns = now_ns.saturating_sub(self.start_ns);
        }
        if cpu.is_some() && self.last_cpu.is_some() && cpu != self.last_cpu {
            self.migrations += 1;
        }
        self.count_cpu(cpu);
        self.last_ns = now_ns.max(self.last_ns);
        self.iterations += 1;
        gap
    }

    fn count_cpu(&mut self, cpu: Option<u32>) {
        if let Some(cpu) = cpu {
            *self.cpus_used.entry(cpu).or_insert(0) += 1;
            self.last_cpu = Some(cpu);
        }
    }

    /// Longest gap, whole ms.
    pub(crate) fn max_gap_ms(&self) -> u64 {
        self.max_gap_ns / NS_PER_MS
    }

    /// When the longest gap ended, whole ms after the start.
    pub(crate) fn max_gap_at_ms(&self) -> u64 {
        self.max_gap_at_ns / NS_PER_MS
    }
}

/// Latency samples: keeps at most `cap` by reservoir sampling, counts every one.
#[derive(Debug, Clone)]
pub(crate) struct Reservoir {
    cap: usize,
    samples: Vec<u64>,
    total: u64,
    rng: Rng,
}

impl Reservoir {
    /// An empty reservoir holding at most `cap` samples.
    pub(crate) fn new(cap: usize, seed: u64) -> Self {
        Self {
            cap,
            samples: Vec::new(),
            total: 0,
            rng: Rng::new(seed),
        }
    }

    /// Offers one sample (algorithm R: each of the `total` seen is kept with equal chance).
    pub(crate) fn push(&mut self, value: u64) {
        self.total += 1;
        if self.samples.len() < self.cap {
            self.samples.push(value);
        } else {
            let slot = self.rng.below(self.total);
            if let Some(kept) = self.samples.get_mut(slot as usize) {
                *kept = value;
            }
        }
    }

    /// The kept samples and the total seen.
    pub(crate) fn into_parts(self) -> (Vec<u64>, u64) {
        (self.samples, self.total)
    }
}

/// `/proc/<pid>/schedstat`: on-CPU ns, run-delay ns, times scheduled in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Schedstat {
    /// Time on a CPU, ns.
    pub(crate) cpu_time_ns: u64,
    /// Time runnable but waiting, ns.
    pub(crate) run_delay_ns: u64,
    /// Times scheduled in.
    pub(crate) run_count: u64,
}

impl Schedstat {
    /// Parses the three space-separated fields; `None` if they are not there.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some(Self {
            cpu_time_ns: fields.next()??,
            run_delay_ns: fields.next()??,
            run_count: fields.next()??,
        })
    }

    /// The caller's own schedstat; zeros when the kernel lacks it.
    pub(crate) fn read_self() -> Self {
        std::fs::read_to_string("/proc/self/schedstat")
            .ok()
            .and_then(|text| Self::parse(&text))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_from_synthetic_timestamps() {
        let ms = NS_PER_MS;
        let mut cp = Checkpoints::start(1_000 * ms, Some(0));
        assert_eq!(cp.iterations, 1);
        cp.record(1_001 * ms, Some(0));
        cp.record(1_002 * ms, Some(1));
        // A 700 ms stall (e.g. SIGSTOP) ending on CPU 1.
        cp.record(1_702 * ms, Some(1));
        cp.record(1_703 * ms, Some(0));
        assert_eq!(cp.iterations, 5);
        assert_eq!(cp.max_gap_ms(), 700);
        assert_eq!(cp.max_gap_cpu, Some(1));
        assert_eq!(cp.max_gap_at_ms(), 702);
        assert_eq!(cp.migrations, 2);
        assert_eq!(cp.cpus_used, BTreeMap::from([(0, 3), (1, 2)]));
    }

    #[test]
    fn first_gap_sets_cpu_even_when_zero() {
        let mut cp = Checkpoints::start(50, Some(3));
        cp.record(50, Some(2));
        assert_eq!(cp.max_gap_ns, 0);
        assert_eq!(cp.max_gap_cpu, Some(2));
        // Clock going backwards never underflows.
        cp.record(10, None);
        assert_eq!(cp.max_gap_ns, 0);
        assert_eq!(cp.last_ns, 50);
    }

    #[test]
    fn stop_as_last_checkpoint_reports_long_gap() {
        let mut cp = Checkpoints::start(0, Some(0));
        cp.record(3_100 * NS_PER_MS, Some(0));
        assert!(cp.max_gap_ms() >= 3000);
    }

    #[test]
    fn reservoir_keeps_cap_counts_all() {
        let mut r = Reservoir::new(100, 42);
        for v in 0..10_000u64 {
            r.push(v);
        }
        let (samples, total) = r.into_parts();
        assert_eq!(total, 10_000);
        assert_eq!(samples.len(), 100);
        // Uniform sampling: most kept values come from beyond the first 100.
        assert!(samples.iter().filter(|&&v| v >= 100).count() > 80);
        let mean = samples.iter().sum::<u64>() / 100;
        assert!((2_500..7_500).contains(&mean), "mean {mean}");
    }

    #[test]
    fn reservoir_below_cap_keeps_everything() {
        let mut r = Reservoir::new(8, 1);
        for v in [5, 6, 7] {
            r.push(v);
        }
        assert_eq!(r.into_parts(), (vec![5, 6, 7], 3));
    }

    #[test]
    fn schedstat_parses_or_not() {
        assert_eq!(
            Schedstat::parse("123 456 7\n"),
            Some(Schedstat {
                cpu_time_ns: 123,
                run_delay_ns: 456,
                run_count: 7
            })
        );
        assert_eq!(Schedstat::parse("1 2"), None);
        assert_eq!(Schedstat::parse("x y z"), None);
    }
}
