//! Per-cgroup aggregates of worker reports, and the small statistics they are built from.

use std::collections::BTreeSet;
use std::fmt;

use ktstr_workload::WorkerReport;
use serde::{Deserialize, Serialize};

use crate::claim::{ClaimBuilder, Verdict};

/// Aggregates over the workers of one cgroup; every field is 0 when there were no workers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CgroupStats {
    /// Workers reported.
    pub num_workers: usize,
    /// Distinct CPUs any worker was seen on.
    pub num_cpus: usize,
    /// Mean of the workers' off-CPU percentages.
    pub avg_off_cpu_pct: f64,
    /// Lowest worker off-CPU percentage.
    pub min_off_cpu_pct: f64,
    /// Highest worker off-CPU percentage.
    pub max_off_cpu_pct: f64,
    /// `max_off_cpu_pct - min_off_cpu_pct`, percentage points.
    pub spread: f64,
    /// Longest progress gap of any worker, ms.
    pub max_gap_ms: u64,
    /// Migrations summed over workers.
    pub total_migrations: u64,
    /// `total_migrations / total_iterations` (0 when there were no iterations).
    pub migration_ratio: f64,
    /// p99 of the pooled wake-latency samples, us.
    pub p99_wake_latency_us: f64,
    /// Median of the pooled wake-latency samples, us.
    pub median_wake_latency_us: f64,
    /// Coefficient of variation of the pooled wake-latency samples.
    pub wake_latency_cv: f64,
    /// p99 of the pooled timer-overshoot samples, us.
    pub timer_p99_us: f64,
    /// Largest timer-overshoot sample, us.
    pub timer_worst_us: f64,
    /// Progress checkpoints summed over workers.
    pub total_iterations: u64,
    /// Work units summed over workers.
    pub total_work_units: u64,
    /// CPU time summed over workers, ns.
    pub total_cpu_time_ns: u64,
    /// Run-queue wait per schedule-in, pooled over workers (total delay / total runs), us.
    pub mean_run_delay_us: f64,
    /// Highest per-worker run-queue wait per schedule-in, us.
    pub worst_run_delay_us: f64,
}

impl CgroupStats {
    /// Aggregates `reports`, the workers of one cgroup.
    pub fn from_reports(reports: &[WorkerReport]) -> Self {
        if reports.is_empty() {
            return Self::default();
        }
        let off: Vec<f64> = reports.iter().map(WorkerReport::off_cpu_pct).collect();
        let min_off = off.iter().copied().fold(f64::INFINITY, f64::min);
        let max_off = off.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let cpus: BTreeSet<u32> = reports
            .iter()
            .flat_map(|r| r.cpus_used.keys().copied())
            .collect();
        let total_iterations = sum(reports, |r| r.iterations);
        let total_migrations = sum(reports, |r| r.migration_count);
        let wake = pooled(reports, |r| &r.wake_latencies_ns);
        let timer = pooled(reports, |r| &r.timer_latencies_ns);
        let wake_f: Vec<f64> = wake.iter().map(|&ns| ns as f64).collect();
        let total_delay = sum(reports, |r| r.schedstat_run_delay_ns);
        let total_runs = sum(reports, |r| r.schedstat_run_count);
        let worst_delay_ns = reports
            .iter()
            .filter(|r| r.schedstat_run_count > 0)
            .map(|r| r.schedstat_run_delay_ns as f64 / r.schedstat_run_count as f64)
            .fold(0.0, f64::max);
        Self {
            num_workers: reports.len(),
            num_cpus: cpus.len(),
            avg_off_cpu_pct: off.iter().sum::<f64>() / off.len() as f64,
            min_off_cpu_pct: min_off,
            max_off_cpu_pct: max_off,
            spread: max_off - min_off,
            max_gap_ms: reports.iter().map(|r| r.max_gap_ms).max().unwrap_or(0),
            total_migrations,
            migration_ratio: ratio(total_migrations, total_iterations),
            p99_wake_latency_us: us(percentile(&wake, 99.0)),
            median_wake_latency_us: us(percentile(&wake, 50.0)),
            wake_latency_cv: coefficient_of_variation(&wake_f).unwrap_or(0.0),
            timer_p99_us: us(percentile(&timer, 99.0)),
            timer_worst_us: us(timer.last().copied().unwrap_or(0)),
            total_iterations,
            total_work_units: sum(reports, |r| r.work_units),
            total_cpu_time_ns: sum(reports, |r| r.cpu_time_ns),
            mean_run_delay_us: ratio(total_delay, total_runs) / 1000.0,
            worst_run_delay_us: worst_delay_ns / 1000.0,
        }
    }
}

/// Generates `CgroupStats::claim_<field>(&self, &mut Verdict)` for each `claim_<field> =>
/// <field>: <type>` listed, a claim named after its field. Stable `macro_rules!` cannot
/// build identifiers, so each method name is listed; compile-time checks ensure it is
/// `claim_` + the field, and that every field of `CgroupStats` is listed.
macro_rules! claim_accessors {
    ($($method:ident => $field:ident: $ty:ty),* $(,)?) => {
        impl CgroupStats {
            $(
                #[doc = concat!(
                    "Starts a claim on [`CgroupStats::", stringify!($field),
                    "`], named `", stringify!($field), "` in messages."
                )]
                pub fn $method<'a>(&self, v: &'a mut Verdict) -> ClaimBuilder<'a, $ty> {
                    v.claim(stringify!($field), self.$field)
                }
            )*
        }

        $(
            const _: () = assert!(
                is_claim_name(stringify!($method), stringify!($field)),
                concat!(stringify!($method), " must be named claim_", stringify!($field)),
            );
        )*

        // Fails to compile when a field of CgroupStats is missing from the list.
        const _: fn(&CgroupStats) = |s| {
            let CgroupStats { $($field: _),* } = s;
        };
    };
}

/// True when `method` is `claim_` followed by `field`.
const fn is_claim_name(method: &str, field: &str) -> bool {
    let (m, f, prefix) = (method.as_bytes(), field.as_bytes(), b"claim_");
    if m.len() != prefix.len() + f.len() {
        return false;
    }
    let mut i = 0;
    while i < m.len() {
        let want = if i < prefix.len() {
            prefix[i]
        } else {
            f[i - prefix.len()]
        };
        if m[i] != want {
            return false;
        }
        i += 1;
    }
    true
}

claim_accessors!(
    claim_num_workers => num_workers: usize,
    claim_num_cpus => num_cpus: usize,
    claim_avg_off_cpu_pct => avg_off_cpu_pct: f64,
    claim_min_off_cpu_pct => min_off_cpu_pct: f64,
    claim_max_off_cpu_pct => max_off_cpu_pct: f64,
    claim_spread => spread: f64,
    claim_max_gap_ms => max_gap_ms: u64,
    claim_total_migrations => total_migrations: u64,
    claim_migration_ratio => migration_ratio: f64,
    claim_p99_wake_latency_us => p99_wake_latency_us: f64,
    claim_median_wake_latency_us => median_wake_latency_us: f64,
    claim_wake_latency_cv => wake_latency_cv: f64,
    claim_timer_p99_us => timer_p99_us: f64,
    claim_timer_worst_us => timer_worst_us: f64,
    claim_total_iterations => total_iterations: u64,
    claim_total_work_units => total_work_units: u64,
    claim_total_cpu_time_ns => total_cpu_time_ns: u64,
    claim_mean_run_delay_us => mean_run_delay_us: f64,
    claim_worst_run_delay_us => worst_run_delay_us: f64,
);

impl fmt::Display for CgroupStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} worker(s) on {} CPU(s), off-CPU {:.1}..{:.1}% (spread {:.1}), max gap {} ms, \
             {} iterations, {} migrations, wake p99 {:.1} us",
            self.num_workers,
            self.num_cpus,
            self.min_off_cpu_pct,
            self.max_off_cpu_pct,
            self.spread,
            self.max_gap_ms,
            self.total_iterations,
            self.total_migrations,
            self.p99_wake_latency_us,
        )
    }
}

/// Nearest-rank percentile of ascending `sorted`: the smallest sample with at least `p`%
/// of samples at or below it. `p` is clamped to 0..=100 (NaN counts as 0, which gives the
/// minimum); an empty slice gives 0.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    // rank is in 1..=n: ceil(p/100 * n), at least 1.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    sorted.get(index).copied().unwrap_or(0)
}

/// Population coefficient of variation (standard deviation / mean) of `values`; `None`
/// when there are no values or the mean is 0.
pub fn coefficient_of_variation(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if mean == 0.0 || !mean.is_finite() {
        return None;
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Some(var.sqrt() / mean.abs())
}

/// All workers' samples of one kind, pooled and sorted ascending.
pub(crate) fn pooled(
    reports: &[WorkerReport],
    samples: impl Fn(&WorkerReport) -> &Vec<u64>,
) -> Vec<u64> {
    let mut all: Vec<u64> = reports
        .iter()
        .flat_map(|r| samples(r).iter().copied())
        .collect();
    all.sort_unstable();
    all
}

fn sum(reports: &[WorkerReport], field: impl Fn(&WorkerReport) -> u64) -> u64 {
    reports.iter().map(field).fold(0, u64::saturating_add)
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_edges() {
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(percentile(&[7], 0.0), 7);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[7], 100.0), 7);
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 100.0), 100);
        assert_eq!(percentile(&s, 99.0), 99);
        assert_eq!(percentile(&s, 50.0), 50);
        assert_eq!(percentile(&s, 0.0), 1);
        assert_eq!(percentile(&s, 150.0), 100);
        assert_eq!(percentile(&s, -5.0), 1);
        assert_eq!(percentile(&s, f64::NAN), 1);
        // Nearest rank on a short list: p99 of 10 samples is the largest.
        assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99.0), 10);
        assert_eq!(percentile(&[10, 20, 30, 40], 50.0), 20);
    }

    #[test]
    fn cv_basics() {
        assert_eq!(coefficient_of_variation(&[]), None);
        assert_eq!(coefficient_of_variation(&[0.0, 0.0]), None);
        assert_eq!(coefficient_of_variation(&[5.0, 5.0, 5.0]), Some(0.0));
        let cv = coefficient_of_variation(&[1.0, 3.0]).expect("defined");
        assert!((cv - 0.5).abs() < 1e-12);
    }

    #[test]
    fn from_reports_aggregates() {
        let a = WorkerReport {
            tid: 1,
            work_units: 10,
            iterations: 100,
            cpu_time_ns: 500,
            wall_time_ns: 1000,
            off_cpu_ns: 500,
            cpus_used: [(0, 50), (1, 50)].into_iter().collect(),
            migration_count: 10,
            max_gap_ms: 30,
            wake_latencies_ns: vec![1000, 3000],
            timer_latencies_ns: vec![2000],
            schedstat_run_delay_ns: 4000,
            schedstat_run_count: 2,
            ..WorkerReport::default()
        };
        let b = WorkerReport {
            tid: 2,
            work_units: 20,
            iterations: 100,
            cpu_time_ns: 900,
            wall_time_ns: 1000,
            off_cpu_ns: 100,
            cpus_used: [(1, 100)].into_iter().collect(),
            migration_count: 30,
            max_gap_ms: 70,
            wake_latencies_ns: vec![2000],
            schedstat_run_delay_ns: 1000,
            schedstat_run_count: 2,
            ..WorkerReport::default()
        };
        let s = CgroupStats::from_reports(&[a, b]);
        assert_eq!(s.num_workers, 2);
        assert_eq!(s.num_cpus, 2);
        assert_eq!(s.min_off_cpu_pct, 10.0);
        assert_eq!(s.max_off_cpu_pct, 50.0);
        assert_eq!(s.avg_off_cpu_pct, 30.0);
        assert_eq!(s.spread, 40.0);
        assert_eq!(s.max_gap_ms, 70);
        assert_eq!(s.total_migrations, 40);
        assert_eq!(s.migration_ratio, 0.2);
        assert_eq!(s.median_wake_latency_us, 2.0);
        assert_eq!(s.p99_wake_latency_us, 3.0);
        assert_eq!(s.timer_worst_us, 2.0);
        assert_eq!(s.total_iterations, 200);
        assert_eq!(s.total_work_units, 30);
        assert_eq!(s.total_cpu_time_ns, 1400);
        assert_eq!(s.mean_run_delay_us, 1.25);
        assert_eq!(s.worst_run_delay_us, 2.0);
    }

    #[test]
    fn claim_accessors_name_their_field() {
        let reports = [
            WorkerReport {
                tid: 1,
                iterations: 40,
                migration_count: 3,
                cpus_used: [(0, 10), (2, 10)].into_iter().collect(),
                ..WorkerReport::default()
            },
            WorkerReport {
                tid: 2,
                iterations: 60,
                ..WorkerReport::default()
            },
        ];
        let stats = CgroupStats::from_reports(&reports);
        let mut v = Verdict::new().with_log_passes(true);
        assert!(stats.claim_num_workers(&mut v).eq(2));
        assert!(stats.claim_num_cpus(&mut v).at_least(2));
        assert!(stats.claim_migration_ratio(&mut v).near(0.03, 1e-9));
        assert!(!stats.claim_total_iterations(&mut v).at_least(1000));
        assert!(!stats
            .claim_total_migrations(&mut v)
            .kind(crate::result::DetailKind::Migration)
            .cgroup("cg_0")
            .at_most(2));
        assert!(!stats.claim_max_gap_ms(&mut v).gt(0));
        assert!(stats.claim_worst_run_delay_us(&mut v).is_finite());
        assert_eq!(
            v.result().notes,
            vec![
                "claim held: num_workers (= 2) == 2",
                "claim held: num_cpus (= 2) >= 2",
                "claim held: migration_ratio (= 0.03) == 0.03 +/- 0.000000001",
                "claim held: worst_run_delay_us (= 0) is finite",
            ]
        );
        let messages = crate::claim::failure_messages(&v);
        assert_eq!(
            messages,
            vec![
                "claim failed: total_iterations (= 100) >= 1000",
                "claim failed: total_migrations (= 3) <= 2",
                "claim failed: max_gap_ms (= 0) > 0",
            ]
        );
        let d = &v.result().details[1];
        assert_eq!(d.kind, crate::result::DetailKind::Migration);
        assert_eq!(d.cgroup.as_deref(), Some("cg_0"));
        assert_eq!((d.measured, d.bound), (Some(3.0), Some(2.0)));
    }

    #[test]
    fn claim_name_check() {
        assert!(is_claim_name("claim_spread", "spread"));
        assert!(!is_claim_name("claim_spred", "spread"));
        assert!(!is_claim_name("spread", "spread"));
        assert!(!is_claim_name("claim_spreads", "spread"));
    }

    #[test]
    fn from_no_reports_is_zero() {
        assert_eq!(CgroupStats::from_reports(&[]), CgroupStats::default());
    }
}
