//! Every built-in check, passing and failing, on hand-built worker reports.

use std::collections::BTreeSet;

use ktstr_workload::WorkerReport;

use super::checks::cpulist;
use super::*;
use crate::result::{AssertDetail, DetailKind, Outcome};

/// A healthy worker: 1 s wall, half on CPU, steady progress on CPU 0.
fn worker(tid: i32) -> WorkerReport {
    WorkerReport {
        tid,
        work_type: "SpinWait".into(),
        work_units: 1000,
        iterations: 1000,
        cpu_time_ns: 500_000_000,
        wall_time_ns: 1_000_000_000,
        off_cpu_ns: 500_000_000,
        cpus_used: [(0, 1000)].into_iter().collect(),
        max_gap_ms: 20,
        max_gap_cpu: Some(0),
        max_gap_at_ms: 300,
        allowed_cpus: vec![0, 1],
        completed: true,
        ..WorkerReport::default()
    }
}

fn cpus(list: &[usize]) -> BTreeSet<usize> {
    list.iter().copied().collect()
}

fn run(a: Assert, reports: &[WorkerReport]) -> AssertResult {
    a.assert_named_cgroup("cg_0", reports, None)
}

/// The single failure of `r`, checking it has the expected kind.
fn only_failure(r: &AssertResult, kind: DetailKind) -> &AssertDetail {
    assert!(r.is_fail(), "expected a failure: {r}");
    assert_eq!(r.details.len(), 1, "{r}");
    let d = &r.details[0];
    assert_eq!(d.kind, kind, "{r}");
    assert_eq!(d.cgroup.as_deref(), Some("cg_0"));
    d
}

fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
}

#[test]
fn everything_is_off_by_default() {
    assert_eq!(Assert::default(), Assert::NO_OVERRIDES);
    assert_eq!(Assert::default_checks(), Assert::NO_OVERRIDES);
    let mut bad = worker(1);
    bad.work_units = 0;
    bad.max_gap_ms = 99_999;
    bad.completed = false;
    bad.cpus_used.insert(9, 1);
    let r = Assert::NO_OVERRIDES.assert_cgroup(&[bad], Some(&cpus(&[0])));
    assert!(r.is_pass(), "{r}");
    assert!(r.stats.contains_key("cgroup"));
}

#[test]
fn healthy_workers_pass_every_check() {
    let a = Assert::NO_OVERRIDES
        .check_not_stuck()
        .check_isolation()
        .check_affinity()
        .max_throughput_cv(0.1)
        .min_work_rate(100.0)
        .min_iteration_rate(100.0)
        .max_p99_wake_latency_ns(1_000_000)
        .max_wake_latency_cv(2.0)
        .max_migration_ratio(0.5);
    let reports = [worker(1), worker(2)];
    let r = a.assert_named_cgroup("cg_0", &reports, Some(&cpus(&[0, 1])));
    assert!(r.is_pass(), "{r}");
    assert_eq!(r.stats["cg_0"].num_workers, 2);
}

#[test]
fn no_progress_fails_naming_worker() {
    let mut idle = worker(412);
    idle.work_units = 0;
    let r = run(Assert::NO_OVERRIDES.check_not_stuck(), &[worker(1), idle]);
    let d = only_failure(&r, DetailKind::NoProgress);
    assert_eq!(d.worker, Some(412));
    assert_mentions(
        &d.message,
        &["cg_0: worker 412 made no progress", "0 work units"],
    );
}

#[test]
fn incomplete_worker_fails_with_exit_info() {
    let mut dead = worker(413);
    dead.completed = false;
    dead.exit_info = Some("killed by signal 9".into());
    let r = run(Assert::NO_OVERRIDES.check_not_stuck(), &[dead]);
    let d = only_failure(&r, DetailKind::WorkerStuck);
    assert_eq!(d.worker, Some(413));
    assert_eq!(
        d.message,
        "cg_0: worker 413 did not complete: killed by signal 9"
    );
}

#[test]
fn gap_over_default_limit_fails() {
    let mut slow = worker(412);
    let gap = DEFAULT_MAX_GAP_MS + 12;
    slow.max_gap_ms = gap;
    slow.max_gap_at_ms = 1500;
    slow.max_gap_cpu = Some(1);
    let r = run(Assert::NO_OVERRIDES.check_not_stuck(), &[worker(1), slow]);
    let d = only_failure(&r, DetailKind::Stuck);
    assert_eq!(
        d.message,
        format!(
            "cg_0: worker 412 longest progress gap {gap} ms > {DEFAULT_MAX_GAP_MS} ms (at 1500 ms, cpu 1)"
        )
    );
    assert_eq!(
        (d.worker, d.measured, d.bound),
        (Some(412), Some(gap as f64), Some(DEFAULT_MAX_GAP_MS as f64))
    );

    // Just under the limit passes.
    let mut ok = worker(412);
    ok.max_gap_ms = DEFAULT_MAX_GAP_MS;
    assert!(run(Assert::NO_OVERRIDES.check_not_stuck(), &[ok]).is_pass());
}

#[test]
fn gap_limit_alone_turns_on_only_the_gap_check() {
    let mut w = worker(7);
    w.max_gap_ms = 600;
    w.max_gap_cpu = None;
    w.work_units = 0; // no-progress check stays off without not_stuck
    let r = run(Assert::NO_OVERRIDES.max_gap_ms(500), &[w.clone()]);
    let d = only_failure(&r, DetailKind::Stuck);
    assert_eq!(
        d.message,
        "cg_0: worker 7 longest progress gap 600 ms > 500 ms (at 300 ms)"
    );
    assert!(run(Assert::NO_OVERRIDES.max_gap_ms(600), &[w.clone()]).is_pass());
    // An explicit not_stuck(false) switches the family off, limits included.
    assert!(run(Assert::NO_OVERRIDES.max_gap_ms(500).not_stuck(false), &[w]).is_pass());
}

#[test]
fn off_cpu_spread_fails_naming_both_workers() {
    let mut starved = worker(412);
    starved.off_cpu_ns = 800_000_000; // 80%
    let mut fed = worker(410);
    fed.off_cpu_ns = 100_000_000; // 10%
    let r = run(
        Assert::NO_OVERRIDES.check_not_stuck(),
        &[fed.clone(), starved.clone()],
    );
    let d = only_failure(&r, DetailKind::Unfair);
    assert_eq!(
        d.message,
        format!(
            "cg_0: off-CPU spread 70.0% > {DEFAULT_MAX_SPREAD_PCT:.1}% (worker 410 at 10.0%, worker 412 at 80.0%)"
        )
    );
    assert_eq!(
        (d.measured, d.bound),
        (Some(70.0), Some(DEFAULT_MAX_SPREAD_PCT))
    );

    // A custom limit alone turns the spread check on, and can pass it.
    assert!(run(
        Assert::NO_OVERRIDES.max_spread_pct(70.0),
        &[fed.clone(), starved.clone()]
    )
    .is_pass());
    assert!(run(
        Assert::NO_OVERRIDES.max_spread_pct(60.0),
        &[fed, starved.clone()]
    )
    .is_fail());
    // One worker has no spread.
    assert!(run(Assert::NO_OVERRIDES.max_spread_pct(0.0), &[starved]).is_pass());
}

#[test]
fn isolation_fails_naming_stray_cpus_and_cpuset() {
    let mut stray = worker(412);
    stray.cpus_used.insert(5, 3);
    stray.cpus_used.insert(7, 1);
    let a = Assert::NO_OVERRIDES.check_isolation();
    let cpuset = cpus(&[0, 1, 2, 3]);
    let r = a.assert_named_cgroup("cg_0", &[worker(1), stray], Some(&cpuset));
    let d = only_failure(&r, DetailKind::Isolation);
    assert_eq!(
        d.message,
        "cg_0: worker 412 ran on CPU(s) 5,7 outside cpuset 0-3"
    );
    assert_eq!(
        (d.worker, d.measured, d.bound),
        (Some(412), Some(2.0), Some(0.0))
    );

    let ok = a.assert_named_cgroup("cg_0", &[worker(1)], Some(&cpuset));
    assert!(ok.is_pass(), "{ok}");
}

#[test]
fn isolation_without_cpuset_passes_with_note() {
    let r = run(Assert::NO_OVERRIDES.check_isolation(), &[worker(1)]);
    assert!(r.is_pass());
    assert_eq!(
        r.notes,
        vec!["cg_0: isolation: no cpuset given; check not applied"]
    );
}

#[test]
fn affinity_fails_outside_allowed_cpus_and_on_errors() {
    let a = Assert::NO_OVERRIDES.check_affinity();
    let mut stray = worker(412);
    stray.cpus_used.insert(3, 1);
    let r = run(a, &[worker(1), stray]);
    let d = only_failure(&r, DetailKind::Affinity);
    assert_eq!(
        d.message,
        "cg_0: worker 412 ran on CPU(s) 3 outside its allowed CPUs 0-1"
    );

    let mut broken = worker(9);
    broken.affinity_error = Some("EINVAL".into());
    broken.sched_policy_error = Some("EPERM setting SCHED_FIFO".into());
    let r = run(a, &[broken]);
    let messages: Vec<&str> = r.details.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "cg_0: worker 9 could not apply its affinity: EINVAL",
            "cg_0: worker 9 could not apply its scheduling policy: EPERM setting SCHED_FIFO",
        ]
    );

    let mut unknown = worker(10);
    unknown.allowed_cpus.clear();
    let r = run(a, &[unknown]);
    assert!(r.is_pass());
    assert_eq!(r.notes.len(), 1);
    assert!(run(a, &[worker(1)]).is_pass());
}

#[test]
fn throughput_cv() {
    let mut fast = worker(2);
    fast.work_units = 3000; // 6000/s vs 2000/s: CV 0.5
    let a = Assert::NO_OVERRIDES.max_throughput_cv(0.25);
    let r = run(a, &[worker(1), fast.clone()]);
    let d = only_failure(&r, DetailKind::Benchmark);
    assert_eq!(
        d.message,
        "cg_0: work-rate CV 0.500 > 0.250 across 2 workers (min 2000.0, max 6000.0 units/CPU-s)"
    );
    assert!(run(
        Assert::NO_OVERRIDES.max_throughput_cv(0.5),
        &[worker(1), fast]
    )
    .is_pass());
    let single = run(a, &[worker(1)]);
    assert!(single.is_pass() && single.notes.len() == 1, "{single}");
}

#[test]
fn min_work_rate() {
    let mut slow = worker(412);
    slow.work_units = 425; // 850 units per CPU-second
    let r = run(
        Assert::NO_OVERRIDES.min_work_rate(1000.0),
        &[worker(1), slow],
    );
    let d = only_failure(&r, DetailKind::Benchmark);
    assert_eq!(
        d.message,
        "cg_0: worker 412 work rate 850.0 units/CPU-s < 1000.0"
    );
    assert_eq!(
        (d.worker, d.measured, d.bound),
        (Some(412), Some(850.0), Some(1000.0))
    );
    assert!(run(Assert::NO_OVERRIDES.min_work_rate(2000.0), &[worker(1)]).is_pass());
}

#[test]
fn min_iteration_rate() {
    let mut slow = worker(412);
    slow.iterations = 12;
    let r = run(
        Assert::NO_OVERRIDES.min_iteration_rate(100.0),
        &[worker(1), slow],
    );
    let d = only_failure(&r, DetailKind::Benchmark);
    assert_eq!(
        d.message,
        "cg_0: worker 412 iteration rate 12.0/s < 100.0/s (12 iterations in 1000 ms)"
    );
    assert!(run(
        Assert::NO_OVERRIDES.min_iteration_rate(1000.0),
        &[worker(1)]
    )
    .is_pass());
}

#[test]
fn p99_wake_latency() {
    let mut a = worker(1);
    a.wake_latencies_ns = (1..=99).map(|i| i * 1000).collect();
    let mut b = worker(412);
    b.wake_latencies_ns = vec![5_000_000];
    let check = Assert::NO_OVERRIDES.max_p99_wake_latency_ns(1_000_000);
    // 100 pooled samples: p99 is the 99th smallest, 99 us.
    assert!(run(check, &[a.clone(), b.clone()]).is_pass());
    b.wake_latencies_ns.push(6_000_000);
    let r = run(check, &[a, b]);
    let d = only_failure(&r, DetailKind::Benchmark);
    assert_eq!(
        d.message,
        "cg_0: p99 wake latency 5000000 ns > 1000000 ns (101 samples, worst worker 412)"
    );
    let empty = run(check, &[worker(1)]);
    assert!(empty.is_pass() && empty.notes.len() == 1, "{empty}");
}

#[test]
fn wake_latency_cv() {
    let mut w = worker(1);
    w.wake_latencies_ns = vec![1000, 3000];
    let r = run(Assert::NO_OVERRIDES.max_wake_latency_cv(0.4), &[w.clone()]);
    let d = only_failure(&r, DetailKind::Benchmark);
    assert_eq!(d.message, "cg_0: wake-latency CV 0.500 > 0.400 (2 samples)");
    assert!(run(Assert::NO_OVERRIDES.max_wake_latency_cv(0.5), &[w]).is_pass());
}

#[test]
fn migration_ratio() {
    let mut w = worker(1);
    w.iterations = 200;
    w.migration_count = 90;
    let r = run(Assert::NO_OVERRIDES.max_migration_ratio(0.2), &[w.clone()]);
    let d = only_failure(&r, DetailKind::Migration);
    assert_eq!(
        d.message,
        "cg_0: migration ratio 0.450 > 0.200 (90 migrations / 200 iterations)"
    );
    assert!(run(Assert::NO_OVERRIDES.max_migration_ratio(0.5), &[w.clone()]).is_pass());
    w.iterations = 0;
    let none = run(Assert::NO_OVERRIDES.max_migration_ratio(0.2), &[w]);
    assert!(none.is_pass() && none.notes.len() == 1, "{none}");
}

#[test]
fn no_workers_is_inconclusive_when_checks_are_on() {
    let r = run(Assert::NO_OVERRIDES.check_not_stuck(), &[]);
    assert_eq!(r.outcome, Outcome::Inconclusive);
    assert_eq!(r.notes, vec!["cg_0: no workers reported; nothing to judge"]);
    assert!(run(Assert::NO_OVERRIDES, &[]).is_pass());
}

#[test]
fn unnamed_cgroup_messages_have_no_prefix() {
    let mut idle = worker(5);
    idle.work_units = 0;
    let r = Assert::NO_OVERRIDES
        .check_not_stuck()
        .assert_cgroup(&[idle], None);
    assert!(r.details[0]
        .message
        .starts_with("worker 5 made no progress"));
    assert_eq!(r.details[0].cgroup, None);
}

#[test]
fn weights() {
    let mut lo = worker(1);
    lo.cpu_time_ns = 300;
    let mut hi = worker(2);
    hi.cpu_time_ns = 700;
    let lo = [lo];
    let hi = [hi];
    let groups: [(&str, u32, &[WorkerReport]); 2] = [("cg_lo", 100, &lo), ("cg_hi", 300, &hi)];
    // Expected 25% / 75%; got 30% / 70%: errors 20% and 6.7%.
    assert!(Assert::NO_OVERRIDES.assert_weights(&groups).is_pass());
    let r = Assert::NO_OVERRIDES
        .max_weight_error_pct(10.0)
        .assert_weights(&groups);
    assert!(r.is_fail(), "{r}");
    assert_eq!(r.details.len(), 1, "{r}");
    let d = &r.details[0];
    assert_eq!(d.cgroup.as_deref(), Some("cg_lo"));
    assert_eq!(
        d.message,
        "cg_lo: CPU share 30.0% vs expected 25.0% (weight 100 of 400): error 20.0% > 10.0%"
    );
    assert_eq!(r.stats.len(), 2);
    assert!(Assert::NO_OVERRIDES
        .max_weight_error_pct(25.0)
        .assert_weights(&groups)
        .is_pass());

    let idle: [WorkerReport; 0] = [];
    let none: [(&str, u32, &[WorkerReport]); 1] = [("cg", 100, &idle)];
    assert!(Assert::NO_OVERRIDES
        .max_weight_error_pct(10.0)
        .assert_weights(&none)
        .is_inconclusive());
}

#[test]
fn merge_lets_other_win_and_ors_enforcement() {
    let base = Assert::NO_OVERRIDES
        .check_not_stuck()
        .max_gap_ms(1000)
        .max_spread_pct(20.0)
        .enforce_monitor_thresholds(true);
    let over = Assert::NO_OVERRIDES.max_gap_ms(5000).not_stuck(false);
    let m = base.merge(&over);
    assert_eq!(m.max_gap_ms, Some(5000));
    assert_eq!(m.not_stuck, Some(false));
    assert_eq!(m.max_spread_pct, Some(20.0));
    assert!(m.enforce_monitor_thresholds);
    assert_eq!(base.merge(&Assert::NO_OVERRIDES), base);
    assert_eq!(Assert::NO_OVERRIDES.merge(&base), base);
    const MERGED: Assert = Assert::NO_OVERRIDES.merge(&Assert::NO_OVERRIDES.check_isolation());
    assert_eq!(MERGED.isolation, Some(true));
}

#[test]
fn monitor_defaults_fill_only_unset_limits() {
    let a = Assert::NO_OVERRIDES
        .max_imbalance_ratio(2.0)
        .with_monitor_defaults();
    assert_eq!(a.max_imbalance_ratio, Some(2.0));
    assert_eq!(a.max_local_dsq_depth, Some(50));
    assert_eq!(a.fail_on_rq_clock_stuck, Some(true));
    assert_eq!(a.sustained_samples, Some(5));
    assert!(a.enforce_monitor_thresholds);
    assert_eq!(
        Assert::NO_OVERRIDES
            .with_monitor_defaults()
            .max_imbalance_ratio,
        Some(4.0)
    );
    // Monitor limits are carried, not judged here.
    assert!(run(a, &[worker(1)]).is_pass());
}

#[test]
fn assert_json_round_trip_and_partial_input() {
    let a = Assert::NO_OVERRIDES.check_not_stuck().max_spread_pct(12.5);
    let text = serde_json::to_string(&a).expect("serialize");
    assert_eq!(
        serde_json::from_str::<Assert>(&text).expect("deserialize"),
        a
    );
    let partial: Assert = serde_json::from_str(r#"{"max_gap_ms": 250}"#).expect("partial");
    assert_eq!(partial, Assert::NO_OVERRIDES.max_gap_ms(250));
}

#[test]
fn verdict_runs_configured_checks() {
    let mut idle = worker(3);
    idle.work_units = 0;
    let mut v = Assert::NO_OVERRIDES.check_not_stuck().verdict();
    v.check_cgroup("cg_0", &[worker(1)], None);
    assert!(v.is_pass());
    v.check_cgroup("cg_1", &[idle], None);
    assert!(v.is_fail());
    assert_eq!(v.result().stats.len(), 2);
}

#[test]
fn cpulists() {
    assert_eq!(cpulist([]), "(none)");
    assert_eq!(cpulist([4]), "4");
    assert_eq!(cpulist([0, 1, 2, 3, 5, 7, 8]), "0-3,5,7-8");
}
