//! The built-in checks, one function each; every failure names cgroup, worker, value and bound.

use std::collections::BTreeSet;

use ktstr_workload::WorkerReport;

use super::Assert;
use crate::result::{AssertDetail, AssertResult, DetailKind};
use crate::stats::{coefficient_of_variation, percentile, pooled, CgroupStats};

/// Stats key for a cgroup judged without a name.
const UNNAMED: &str = "cgroup";

/// Collects the findings about one cgroup, prefixing messages with its name.
struct Judge<'a> {
    cgroup: Option<&'a str>,
    result: AssertResult,
}

impl Judge<'_> {
    fn prefixed(&self, text: &str) -> String {
        match self.cgroup {
            Some(name) => format!("{name}: {text}"),
            None => text.to_string(),
        }
    }

    /// Records a failure; `values` is `(measured, bound)` when the check compares numbers.
    fn fail(
        &mut self,
        kind: DetailKind,
        worker: Option<i32>,
        values: Option<(f64, f64)>,
        text: &str,
    ) {
        let mut detail = AssertDetail::new(kind, self.prefixed(text));
        detail.cgroup = self.cgroup.map(str::to_string);
        detail.worker = worker;
        if let Some((measured, bound)) = values {
            detail = detail.values(measured, bound);
        }
        self.result.add_failure(detail);
    }

    fn note(&mut self, text: &str) {
        let note = self.prefixed(text);
        self.result.add_note(note);
    }
}

/// Runs every enabled check of `a` on one cgroup's `reports`.
pub(super) fn cgroup(
    a: &Assert,
    name: Option<&str>,
    reports: &[WorkerReport],
    cpuset: Option<&BTreeSet<usize>>,
) -> AssertResult {
    let mut j = Judge {
        cgroup: name,
        result: AssertResult::pass(),
    };
    let stats = CgroupStats::from_reports(reports);
    if reports.is_empty() {
        if a.judges_workers() {
            j.result.merge(AssertResult::inconclusive(
                j.prefixed("no workers reported; nothing to judge"),
            ));
        }
    } else {
        if a.not_stuck == Some(true) {
            completion(&mut j, reports);
            progress(&mut j, reports);
        }
        if let Some(limit) = a.spread_limit() {
            spread(&mut j, reports, limit);
        }
        if let Some(limit) = a.gap_limit() {
            gaps(&mut j, reports, limit);
        }
        if a.isolation == Some(true) {
            isolation(&mut j, reports, cpuset);
        }
        if a.affinity == Some(true) {
            affinity(&mut j, reports);
        }
        if let Some(limit) = a.max_throughput_cv {
            throughput_cv(&mut j, reports, limit);
        }
        if let Some(min) = a.min_work_rate {
            work_rate(&mut j, reports, min);
        }
        if let Some(min) = a.min_iteration_rate {
            iteration_rate(&mut j, reports, min);
        }
        if let Some(limit) = a.max_p99_wake_latency_ns {
            wake_p99(&mut j, reports, limit);
        }
        if let Some(limit) = a.max_wake_latency_cv {
            wake_cv(&mut j, reports, limit);
        }
        if let Some(limit) = a.max_migration_ratio {
            migrations(&mut j, &stats, limit);
        }
    }
    let key = name.unwrap_or(UNNAMED).to_string();
    j.result.stats.insert(key, stats);
    j.result
}

/// Workers that died or had to be killed.
fn completion(j: &mut Judge<'_>, reports: &[WorkerReport]) {
    for r in reports.iter().filter(|r| !r.completed) {
        let how = r.exit_info.as_deref().unwrap_or("no exit information");
        let text = format!("worker {} did not complete: {how}", r.tid);
        j.fail(DetailKind::WorkerStuck, Some(r.tid), None, &text);
    }
}

/// Workers that did no work at all.
fn progress(j: &mut Judge<'_>, reports: &[WorkerReport]) {
    for r in reports.iter().filter(|r| r.work_units == 0) {
        let text = format!(
            "worker {} made no progress: 0 work units (need >= 1) in {} ms",
            r.tid,
            r.wall_time_ns / 1_000_000
        );
        j.fail(DetailKind::NoProgress, Some(r.tid), Some((0.0, 1.0)), &text);
    }
}

/// Off-CPU percentage spread between the most and least starved workers.
fn spread(j: &mut Judge<'_>, reports: &[WorkerReport], limit: f64) {
    if reports.len() < 2 {
        return;
    }
    let by_off = |a: &&WorkerReport, b: &&WorkerReport| a.off_cpu_pct().total_cmp(&b.off_cpu_pct());
    let (Some(lo), Some(hi)) = (reports.iter().min_by(by_off), reports.iter().max_by(by_off))
    else {
        return;
    };
    let spread = hi.off_cpu_pct() - lo.off_cpu_pct();
    if spread > limit {
        let text = format!(
            "off-CPU spread {spread:.1}% > {limit:.1}% (worker {} at {:.1}%, worker {} at {:.1}%)",
            lo.tid,
            lo.off_cpu_pct(),
            hi.tid,
            hi.off_cpu_pct()
        );
        j.fail(DetailKind::Unfair, None, Some((spread, limit)), &text);
    }
}

/// Workers whose longest progress gap is over the limit.
fn gaps(j: &mut Judge<'_>, reports: &[WorkerReport], limit: u64) {
    for r in reports.iter().filter(|r| r.max_gap_ms > limit) {
        let cpu = match r.max_gap_cpu {
            Some(cpu) => format!(", cpu {cpu}"),
            None => String::new(),
        };
        let text = format!(
            "worker {} longest progress gap {} ms > {limit} ms (at {} ms{cpu})",
            r.tid, r.max_gap_ms, r.max_gap_at_ms
        );
        let values = (r.max_gap_ms as f64, limit as f64);
        j.fail(DetailKind::Stuck, Some(r.tid), Some(values), &text);
    }
}

/// Workers seen on CPUs outside the cgroup's cpuset.
fn isolation(j: &mut Judge<'_>, reports: &[WorkerReport], cpuset: Option<&BTreeSet<usize>>) {
    let Some(cpuset) = cpuset else {
        j.note("isolation: no cpuset given; check not applied");
        return;
    };
    for r in reports {
        let stray: Vec<usize> = seen_cpus(r).filter(|c| !cpuset.contains(c)).collect();
        if !stray.is_empty() {
            let text = format!(
                "worker {} ran on CPU(s) {} outside cpuset {}",
                r.tid,
                cpulist(stray.iter().copied()),
                cpulist(cpuset.iter().copied())
            );
            let values = (stray.len() as f64, 0.0);
            j.fail(DetailKind::Isolation, Some(r.tid), Some(values), &text);
        }
    }
}

/// Workers seen outside their own allowed CPUs, or whose affinity or policy failed to apply.
fn affinity(j: &mut Judge<'_>, reports: &[WorkerReport]) {
    for r in reports {
        if let Some(e) = &r.affinity_error {
            let text = format!("worker {} could not apply its affinity: {e}", r.tid);
            j.fail(DetailKind::Affinity, Some(r.tid), None, &text);
        }
        if let Some(e) = &r.sched_policy_error {
            let text = format!(
                "worker {} could not apply its scheduling policy: {e}",
                r.tid
            );
            j.fail(DetailKind::Affinity, Some(r.tid), None, &text);
        }
        if r.allowed_cpus.is_empty() {
            j.note(&format!(
                "worker {}: allowed CPUs unknown; affinity not checked",
                r.tid
            ));
            continue;
        }
        let allowed: BTreeSet<usize> = r.allowed_cpus.iter().map(|&c| c as usize).collect();
        let stray: Vec<usize> = seen_cpus(r).filter(|c| !allowed.contains(c)).collect();
        if !stray.is_empty() {
            let text = format!(
                "worker {} ran on CPU(s) {} outside its allowed CPUs {}",
                r.tid,
                cpulist(stray.iter().copied()),
                cpulist(allowed.iter().copied())
            );
            let values = (stray.len() as f64, 0.0);
            j.fail(DetailKind::Affinity, Some(r.tid), Some(values), &text);
        }
    }
}

/// Coefficient of variation of work rate across the cgroup's workers.
fn throughput_cv(j: &mut Judge<'_>, reports: &[WorkerReport], limit: f64) {
    if reports.len() < 2 {
        j.note("throughput CV: fewer than 2 workers; check not applied");
        return;
    }
    let rates: Vec<f64> = reports.iter().map(WorkerReport::work_rate).collect();
    let Some(cv) = coefficient_of_variation(&rates) else {
        j.note("throughput CV: mean work rate is 0; check not applied");
        return;
    };
    if cv > limit {
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let text = format!(
            "work-rate CV {cv:.3} > {limit:.3} across {} workers \
             (min {lo:.1}, max {hi:.1} units/CPU-s)",
            rates.len()
        );
        j.fail(DetailKind::Benchmark, None, Some((cv, limit)), &text);
    }
}

/// Workers whose work rate (units per CPU-second) is under the minimum.
fn work_rate(j: &mut Judge<'_>, reports: &[WorkerReport], min: f64) {
    for r in reports {
        let rate = r.work_rate();
        if rate < min {
            let text = format!(
                "worker {} work rate {rate:.1} units/CPU-s < {min:.1}",
                r.tid
            );
            j.fail(DetailKind::Benchmark, Some(r.tid), Some((rate, min)), &text);
        }
    }
}

/// Workers whose iteration rate (checkpoints per wall second) is under the minimum.
fn iteration_rate(j: &mut Judge<'_>, reports: &[WorkerReport], min: f64) {
    for r in reports {
        let rate = if r.wall_time_ns == 0 {
            0.0
        } else {
            r.iterations as f64 * 1e9 / r.wall_time_ns as f64
        };
        if rate < min {
            let text = format!(
                "worker {} iteration rate {rate:.1}/s < {min:.1}/s ({} iterations in {} ms)",
                r.tid,
                r.iterations,
                r.wall_time_ns / 1_000_000
            );
            j.fail(DetailKind::Benchmark, Some(r.tid), Some((rate, min)), &text);
        }
    }
}

/// p99 of the cgroup's pooled wake-latency samples.
fn wake_p99(j: &mut Judge<'_>, reports: &[WorkerReport], limit: u64) {
    let samples = pooled(reports, |r| &r.wake_latencies_ns);
    if samples.is_empty() {
        j.note("p99 wake latency: no wake samples; check not applied");
        return;
    }
    let p99 = percentile(&samples, 99.0);
    if p99 > limit {
        let worst = reports
            .iter()
            .filter(|r| !r.wake_latencies_ns.is_empty())
            .max_by_key(|r| worker_wake_p99(r))
            .map(|r| format!(", worst worker {}", r.tid))
            .unwrap_or_default();
        let text = format!(
            "p99 wake latency {p99} ns > {limit} ns ({} samples{worst})",
            samples.len()
        );
        j.fail(
            DetailKind::Benchmark,
            None,
            Some((p99 as f64, limit as f64)),
            &text,
        );
    }
}

/// p99 of one worker's own wake-latency samples.
fn worker_wake_p99(r: &WorkerReport) -> u64 {
    let mut samples = r.wake_latencies_ns.clone();
    samples.sort_unstable();
    percentile(&samples, 99.0)
}

/// Coefficient of variation of the cgroup's pooled wake-latency samples.
fn wake_cv(j: &mut Judge<'_>, reports: &[WorkerReport], limit: f64) {
    let samples: Vec<f64> = pooled(reports, |r| &r.wake_latencies_ns)
        .into_iter()
        .map(|ns| ns as f64)
        .collect();
    if samples.len() < 2 {
        j.note("wake-latency CV: fewer than 2 wake samples; check not applied");
        return;
    }
    let Some(cv) = coefficient_of_variation(&samples) else {
        j.note("wake-latency CV: mean wake latency is 0; check not applied");
        return;
    };
    if cv > limit {
        let text = format!(
            "wake-latency CV {cv:.3} > {limit:.3} ({} samples)",
            samples.len()
        );
        j.fail(DetailKind::Benchmark, None, Some((cv, limit)), &text);
    }
}

/// Migrations per iteration, summed over the cgroup.
fn migrations(j: &mut Judge<'_>, stats: &CgroupStats, limit: f64) {
    if stats.total_iterations == 0 {
        j.note("migration ratio: no iterations; check not applied");
        return;
    }
    let ratio = stats.migration_ratio;
    if ratio > limit {
        let text = format!(
            "migration ratio {ratio:.3} > {limit:.3} ({} migrations / {} iterations)",
            stats.total_migrations, stats.total_iterations
        );
        j.fail(DetailKind::Migration, None, Some((ratio, limit)), &text);
    }
}

/// Each cgroup's share of the CPU time against its share of the weights.
pub(super) fn weights(limit: f64, groups: &[(&str, u32, &[WorkerReport])]) -> AssertResult {
    let mut result = AssertResult::pass();
    let cpu: Vec<u64> = groups
        .iter()
        .map(|(_, _, reports)| {
            reports
                .iter()
                .map(|r| r.cpu_time_ns)
                .fold(0, u64::saturating_add)
        })
        .collect();
    for (name, _, reports) in groups {
        result
            .stats
            .insert((*name).to_string(), CgroupStats::from_reports(reports));
    }
    let total_weight: u64 = groups.iter().map(|&(_, w, _)| u64::from(w)).sum();
    let total_cpu = cpu.iter().copied().fold(0, u64::saturating_add);
    if groups.is_empty() {
        result.add_note("weights: no cgroups given; check not applied");
        return result;
    }
    if total_weight == 0 {
        result.merge(AssertResult::inconclusive("weights: all weights are 0"));
        return result;
    }
    if total_cpu == 0 {
        result.merge(AssertResult::inconclusive(
            "weights: no cgroup used any CPU time",
        ));
        return result;
    }
    for (&(name, weight, _), &used) in groups.iter().zip(&cpu) {
        if weight == 0 {
            result.add_note(format!("{name}: weight 0; weight check not applied"));
            continue;
        }
        let expected = weight as f64 * 100.0 / total_weight as f64;
        let got = used as f64 * 100.0 / total_cpu as f64;
        let error = (got - expected).abs() * 100.0 / expected;
        if error > limit {
            let message = format!(
                "{name}: CPU share {got:.1}% vs expected {expected:.1}% \
                 (weight {weight} of {total_weight}): error {error:.1}% > {limit:.1}%"
            );
            result.add_failure(
                AssertDetail::new(DetailKind::Unfair, message)
                    .cgroup(name)
                    .values(error, limit),
            );
        }
    }
    result
}

/// CPUs a worker was seen on at its checkpoints.
fn seen_cpus(r: &WorkerReport) -> impl Iterator<Item = usize> + '_ {
    r.cpus_used.keys().map(|&c| c as usize)
}

/// CPUs in the kernel's cpulist form, e.g. `0-3,5` (`(none)` when empty).
pub(crate) fn cpulist(cpus: impl IntoIterator<Item = usize>) -> String {
    let cpus: Vec<u32> = cpus.into_iter().map(|c| c as u32).collect();
    if cpus.is_empty() {
        return "(none)".to_string();
    }
    ktstr_topology::format_cpu_list(&cpus)
}
