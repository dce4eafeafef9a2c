//! CPU-bound loops: spinning, yielding, bursts, fork/exit, nice and affinity churn, custom.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Worker;
use crate::sys::{self, NS_PER_MS};

/// Spin iterations in one spin work unit.
const SPIN_UNIT: u64 = 1024;
/// Spin iterations before each yield in `YieldHeavy`.
const YIELD_SPIN: u64 = 64;
/// Spin units per batch in `Mixed` before it yields.
const MIXED_BATCH: u64 = 8;
/// Spin iterations per nice step in `NiceSweep`.
const NICE_SPIN: u64 = 4 * SPIN_UNIT;

/// One spin work unit (`SPIN_UNIT` iterations); never inlined, so every caller runs the same code.
#[inline(never)]
pub fn spin_unit() {
    sys::spin(SPIN_UNIT);
}

/// `SpinWait`: 1024-iteration spins.
pub(super) fn spin_wait(w: &mut Worker<'_>, until: Option<u64>) {
    while w.running(until) {
        spin_unit();
        w.done(1);
    }
}

/// `YieldHeavy`: a short spin then `sched_yield`, one unit each.
pub(super) fn yield_heavy(w: &mut Worker<'_>, until: Option<u64>) {
    while w.running(until) {
        sys::spin(YIELD_SPIN);
        sys::yield_now();
        w.done(1);
    }
}

/// `Mixed`: a batch of spin units, then `sched_yield`.
pub(super) fn mixed(w: &mut Worker<'_>, until: Option<u64>) {
    while w.running(until) {
        for _ in 0..MIXED_BATCH {
            spin_unit();
            w.done(1);
        }
        sys::yield_now();
    }
}

/// `Bursty`: spin units for `burst`, then sleep `sleep`.
pub(super) fn bursty(w: &mut Worker<'_>, burst: Duration, sleep: Duration, until: Option<u64>) {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (burst_ns, sleep_ns) = (ns(burst), ns(sleep));
    while w.running(until) {
        let burst_end = sys::now_ns().saturating_add(burst_ns);
        while w.running(Some(until.map_or(burst_end, |u| u.min(burst_end)))) {
            spin_unit();
            w.done(1);
        }
        w.sleep(sleep_ns, until);
    }
}

/// `ForkExit`: fork a child that `_exit`s at once and reap it.
pub(super) fn fork_exit(w: &mut Worker<'_>, until: Option<u64>) {
    while w.running(until) {
        // SAFETY: the worker is single-threaded; the child only calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            sys::exit_now(0);
        }
        if pid < 0 {
            // Out of processes for now: back off instead of spinning on fork.
            w.sleep(NS_PER_MS, until);
            continue;
        }
        let mut status = 0;
        // SAFETY: `pid` is our own child and `status` a valid int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        w.done(1);
    }
}

/// `NiceSweep`: step through nice values (from -20 if allowed, else 0) while spinning.
pub(super) fn nice_sweep(w: &mut Worker<'_>, until: Option<u64>) {
    let lowest = if sys::set_nice(-20).is_ok() { -20 } else { 0 };
    let mut nice = lowest;
    while w.running(until) {
        // Failures (e.g. lowering without permission) just leave the value where it is.
        let _ = sys::set_nice(nice);
        sys::spin(NICE_SPIN);
        w.done(1);
        nice = if nice >= 19 { lowest } else { nice + 1 };
    }
}

/// `AffinityChurn`: re-pin to a random allowed CPU, spin, repeat; restores affinity after.
pub(super) fn affinity_churn(w: &mut Worker<'_>, spin_iters: u64, until: Option<u64>) {
    let allowed: Vec<usize> = sys::get_affinity(0)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c as usize)
        .collect();
    while w.running(until) {
        if !allowed.is_empty() {
            let pick = w.rng.below(allowed.len() as u64) as usize;
            if let Some(&cpu) = allowed.get(pick) {
                // A CPU going away mid-run just means this unit stays where it was.
                let _ = sys::set_affinity(0, &BTreeSet::from([cpu]));
            }
        }
        sys::spin(spin_iters);
        w.done(1);
    }
    if !allowed.is_empty() {
        let _ = sys::set_affinity(0, &allowed.into_iter().collect());
    }
}

/// `Custom`: call `run` repeatedly, counting the units it returns.
pub(super) fn custom(w: &mut Worker<'_>, run: fn() -> u64, until: Option<u64>) {
    while w.running(until) {
        let units = run();
        w.done(units);
    }
}

/// Policies `PolicyChurn` cycles through: (policy, real-time priority, name).
const CHURN_POLICIES: [(i32, i32, &str); 5] = [
    (libc::SCHED_OTHER, 0, "SCHED_OTHER"),
    (libc::SCHED_BATCH, 0, "SCHED_BATCH"),
    (libc::SCHED_IDLE, 0, "SCHED_IDLE"),
    (libc::SCHED_FIFO, 1, "SCHED_FIFO"),
    (libc::SCHED_RR, 1, "SCHED_RR"),
];

/// `PolicyChurn`: spin, move to the next policy (skipping those refused), yield.
pub(super) fn policy_churn(w: &mut Worker<'_>, spin_iters: u64, until: Option<u64>) {
    let mut next = 1;
    while w.running(until) {
        sys::spin(spin_iters);
        // A refused policy (real-time without CAP_SYS_NICE) is skipped.
        for _ in 0..CHURN_POLICIES.len() {
            let (policy, prio, _) = CHURN_POLICIES[next % CHURN_POLICIES.len()];
            next += 1;
            if sys::set_scheduler(policy, prio).is_ok() {
                break;
            }
        }
        sys::yield_now();
        w.done(1);
    }
    // Leave as a normal task, so stopping is not starved by a real-time class.
    let _ = sys::set_scheduler(libc::SCHED_OTHER, 0);
}

/// `IdleChurn`: spin units for `burst`, sleep `sleep` and record how late the wake-up was.
pub(super) fn idle_churn(
    w: &mut Worker<'_>,
    burst: Duration,
    sleep: Duration,
    precise: bool,
    until: Option<u64>,
) {
    if precise {
        sys::set_timer_slack(1);
    }
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (burst_ns, sleep_ns) = (ns(burst), ns(sleep));
    while w.running(until) {
        let burst_end = sys::now_ns().saturating_add(burst_ns);
        while w.running(Some(until.map_or(burst_end, |u| u.min(burst_end)))) {
            spin_unit();
            w.done(1);
        }
        let due = sys::now_ns().saturating_add(sleep_ns);
        w.sleep(sleep_ns, until);
        if !w.stopping() && until.is_none_or(|u| sys::now_ns() < u) {
            w.sample_wake(due, sys::now_ns());
        }
    }
}

/// `PreemptStorm`: the group's first worker runs SCHED_FIFO 1 (where permitted) in short
/// bursts with sleeps between; the rest spin as normal tasks.
pub(super) fn preempt_storm(
    w: &mut Worker<'_>,
    cfs_workers: usize,
    rt_burst_iters: u64,
    rt_sleep_us: u64,
    until: Option<u64>,
) {
    let group = cfs_workers.saturating_add(1);
    if w.index % group != 0 {
        spin_wait(w, until);
        return;
    }
    // Without CAP_SYS_NICE the bursts still run, as a normal task.
    let rt = sys::set_scheduler(libc::SCHED_FIFO, 1).is_ok();
    let sleep_ns = rt_sleep_us.saturating_mul(1000);
    while w.running(until) {
        sys::spin(rt_burst_iters);
        w.done(1);
        w.sleep(sleep_ns, until);
    }
    if rt {
        let _ = sys::set_scheduler(libc::SCHED_OTHER, 0);
    }
}

/// `NumaMigrationChurn`: spin units, re-pinning to the next NUMA node's CPUs (within the
/// worker's own) every `period_ms`; restores the affinity after.
pub(super) fn numa_migration_churn(w: &mut Worker<'_>, period_ms: u64, until: Option<u64>) {
    let allowed: BTreeSet<usize> = sys::get_affinity(0)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c as usize)
        .collect();
    let nodes: Vec<BTreeSet<usize>> = numa_nodes()
        .into_iter()
        .map(|n| n.intersection(&allowed).copied().collect::<BTreeSet<_>>())
        .filter(|n| !n.is_empty())
        .collect();
    let period_ns = period_ms.saturating_mul(NS_PER_MS);
    let mut next = w.index;
    while w.running(until) {
        if let Some(node) = nodes.get(next % nodes.len().max(1)) {
            // A CPU going away mid-run just leaves this period where it was.
            let _ = sys::set_affinity(0, node);
        }
        next += 1;
        let end = sys::now_ns().saturating_add(period_ns);
        while w.running(Some(until.map_or(end, |u| u.min(end)))) {
            spin_unit();
            w.done(1);
        }
    }
    if !allowed.is_empty() {
        let _ = sys::set_affinity(0, &allowed);
    }
}

/// Each online NUMA node's CPUs, from sysfs (one node of every CPU when there is none).
fn numa_nodes() -> Vec<BTreeSet<usize>> {
    let root = std::path::Path::new("/sys/devices/system/node");
    let online = std::fs::read_to_string(root.join("online")).unwrap_or_default();
    let ids = ktstr_topology::parse_cpu_list(online.trim()).unwrap_or_default();
    ids.into_iter()
        .filter_map(|n| {
            let list = std::fs::read_to_string(root.join(format!("node{n}/cpulist"))).ok()?;
            let cpus = ktstr_topology::parse_cpu_list(list.trim()).ok()?;
            Some(cpus.into_iter().map(|c| c as usize).collect())
        })
        .collect()
}

/// `CrossAffinityChurn`: rewrite the affinity of every other process that was in the
/// workload's cgroup when this worker started, toggling between the worker's own CPUs and
/// those CPUs less the last one; spin `spin_iters` and yield between rounds. Without a
/// dedicated cgroup, or with fewer than two CPUs, it only spins.
pub(super) fn cross_affinity_churn(w: &mut Worker<'_>, spin_iters: u64, until: Option<u64>) {
    let me = sys::getpid();
    let siblings: Vec<i32> = w
        .cgroup
        .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .filter(|&p| p != me)
                .collect()
        })
        .unwrap_or_default();
    let all: BTreeSet<usize> = sys::get_affinity(0)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c as usize)
        .collect();
    let mut less = all.clone();
    less.pop_last();
    let masks = [all, less];
    let churn = !siblings.is_empty() && !masks[1].is_empty();
    let mut which = 1;
    while w.running(until) {
        sys::spin(spin_iters);
        if churn {
            for &pid in &siblings {
                // A sibling that exited, or whose cpuset excludes the mask, is skipped.
                let _ = sys::set_affinity(pid, &masks[which]);
            }
            which ^= 1;
        }
        sys::yield_now();
        w.done(1);
    }
}

/// `CgroupChurn`: move this process round `groups` sibling cgroups of the workload's cgroup
/// (made if missing) every `cycle_ms`, spinning in between; back home at the end. Without a
/// dedicated cgroup it only spins.
pub(super) fn cgroup_churn(w: &mut Worker<'_>, groups: usize, cycle_ms: u64, until: Option<u64>) {
    let home = w.cgroup.map(std::path::Path::to_path_buf);
    let siblings: Vec<std::path::PathBuf> = home
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(|parent| {
            (0..groups)
                .map(|i| parent.join(format!("wt-cgroup-churn-{i}")))
                .filter(|dir| std::fs::create_dir(dir).is_ok() || dir.is_dir())
                .collect()
        })
        .unwrap_or_default();
    let pid = sys::getpid().to_string();
    let cycle_ns = cycle_ms.saturating_mul(NS_PER_MS);
    let mut next = w.index;
    while w.running(until) {
        if let Some(dir) = siblings.get(next % siblings.len().max(1)) {
            // A refused move (the cgroup went away) leaves this cycle where it is.
            let _ = std::fs::write(dir.join("cgroup.procs"), &pid);
        }
        next += 1;
        let end = sys::now_ns().saturating_add(cycle_ns);
        while w.running(Some(until.map_or(end, |u| u.min(end)))) {
            spin_unit();
            w.done(1);
        }
    }
    if let (Some(home), false) = (home, siblings.is_empty()) {
        let _ = std::fs::write(home.join("cgroup.procs"), &pid);
    }
}

/// `RtStarvation`: the group's first `rt_workers` switch to SCHED_FIFO `rt_priority` (where
/// permitted) and spin without yielding; the others spin as normal tasks.
pub(super) fn rt_starvation(
    w: &mut Worker<'_>,
    (rt_workers, cfs_workers): (usize, usize),
    rt_priority: i32,
    burst_iters: u64,
    until: Option<u64>,
) {
    let group = rt_workers.saturating_add(cfs_workers).max(1);
    let rt = w.index % group < rt_workers
        && sys::set_scheduler(libc::SCHED_FIFO, rt_priority.clamp(1, 99)).is_ok();
    while w.running(until) {
        sys::spin(burst_iters);
        w.done(1);
    }
    if rt {
        let _ = sys::set_scheduler(libc::SCHED_OTHER, 0);
    }
}

/// `CgroupAttachStorm`: fork a child that exits at once and write its pid to `dest`'s
/// `cgroup.procs` (beside the workload's cgroup); one unit per accepted move.
pub(super) fn cgroup_attach_storm(
    w: &mut Worker<'_>,
    dest: &str,
    reap: crate::ReapMode,
    until: Option<u64>,
) {
    let target = w
        .cgroup
        .and_then(std::path::Path::parent)
        .map(|parent| parent.join(dest).join("cgroup.procs"));
    let Some(target) = target.filter(|t| t.is_file()) else {
        // No dedicated cgroup or no `dest`: nothing to storm (no units say so).
        while w.running(until) {
            w.sleep(10 * NS_PER_MS, until);
        }
        return;
    };
    if reap == crate::ReapMode::SigIgn {
        sys::ignore_children();
    }
    while w.running(until) {
        // SAFETY: the worker is single-threaded; the child only calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            sys::exit_now(0);
        }
        if pid < 0 {
            w.sleep(NS_PER_MS, until);
            continue;
        }
        let moved = std::fs::write(&target, pid.to_string()).is_ok();
        if reap == crate::ReapMode::Waitpid {
            let mut status = 0;
            // SAFETY: `pid` is our own child and `status` a valid int.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        if moved {
            w.done(1);
        }
    }
}
