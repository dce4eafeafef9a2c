//! Canned scenarios, one call each: `scenarios::steady(ctx)`.
//!
//! Each runs on whatever topology the test declared and is judged with the context's checks
//! (`not_stuck`, `isolation`, ... as the test's attribute asked). A scenario that cannot run
//! on the topology (a cpuset split on one CPU) returns a skip that says why.

use std::time::Duration;

use anyhow::Result;
use ktstr_assert::AssertResult;
use ktstr_workload::WorkType;

use crate::scenario::{
    execute_defs, execute_scenario, execute_steps, AffinityIntent, Backdrop, CgroupDef, CpusetSpec,
    Ctx, HoldSpec, Op, Step,
};

fn needs_cpus(ctx: &Ctx, n: usize) -> Option<AssertResult> {
    (ctx.topo.total_cpus() < n).then(|| {
        AssertResult::skip(format!(
            "needs at least {n} CPUs, the guest has {}",
            ctx.topo.total_cpus()
        ))
    })
}

fn spin(name: &str) -> CgroupDef {
    CgroupDef::named(name.to_string())
}

/// Two cgroups of spinning workers for the whole duration.
pub fn steady(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(ctx, vec![spin("cg_0"), spin("cg_1")])
}

/// One cgroup per LLC, each confined to its LLC by a cpuset.
pub fn steady_llc(ctx: &Ctx) -> Result<AssertResult> {
    let defs = (0..ctx.topo.llcs.len())
        .map(|i| spin(&format!("llc_{i}")).cpuset(CpusetSpec::llc(i)))
        .collect();
    execute_defs(ctx, defs)
}

/// Two cgroups with four Mixed (spin and yield) workers per CPU each.
pub fn oversubscribed(ctx: &Ctx) -> Result<AssertResult> {
    let n = ctx.topo.total_cpus() * 4;
    execute_defs(
        ctx,
        vec![
            spin("cg_0").workers(n).work_type(WorkType::Mixed),
            spin("cg_1").workers(n).work_type(WorkType::Mixed),
        ],
    )
}

/// Two cgroups run unconfined, then disjoint cpusets are applied halfway.
pub fn cpuset_apply(ctx: &Ctx) -> Result<AssertResult> {
    if let Some(s) = needs_cpus(ctx, 2) {
        return Ok(s);
    }
    execute_scenario(
        ctx,
        Backdrop::from_cgroups(vec![spin("cg_0"), spin("cg_1")]),
        vec![
            Step::hold(HoldSpec::frac(0.5)),
            Step::new(
                vec![
                    Op::set_cpuset("cg_0", CpusetSpec::disjoint(0, 2)),
                    Op::set_cpuset("cg_1", CpusetSpec::disjoint(1, 2)),
                ],
                HoldSpec::frac(0.5),
            ),
        ],
    )
}

/// Two cgroups start on disjoint cpusets, which are cleared halfway.
pub fn cpuset_clear(ctx: &Ctx) -> Result<AssertResult> {
    if let Some(s) = needs_cpus(ctx, 2) {
        return Ok(s);
    }
    execute_scenario(
        ctx,
        Backdrop::from_cgroups(vec![
            spin("cg_0").cpuset(CpusetSpec::disjoint(0, 2)),
            spin("cg_1").cpuset(CpusetSpec::disjoint(1, 2)),
        ]),
        vec![
            Step::hold(HoldSpec::frac(0.5)),
            Step::new(
                vec![Op::clear_cpuset("cg_0"), Op::clear_cpuset("cg_1")],
                HoldSpec::frac(0.5),
            ),
        ],
    )
}

/// Two cgroups' cpusets resized in three phases: 50/50, 25/75, 75/25.
pub fn cpuset_resize(ctx: &Ctx) -> Result<AssertResult> {
    if let Some(s) = needs_cpus(ctx, 4) {
        return Ok(s);
    }
    let split = |a: f64| {
        vec![
            Op::set_cpuset("cg_0", CpusetSpec::range(0.0, a)),
            Op::set_cpuset("cg_1", CpusetSpec::range(a, 1.0)),
        ]
    };
    execute_scenario(
        ctx,
        Backdrop::from_cgroups(vec![spin("cg_0"), spin("cg_1")]),
        vec![
            Step::new(split(0.5), HoldSpec::frac(1.0 / 3.0)),
            Step::new(split(0.25), HoldSpec::frac(1.0 / 3.0)),
            Step::new(split(0.75), HoldSpec::frac(1.0 / 3.0)),
        ],
    )
}

/// One cgroup runs; a second is added halfway.
pub fn cgroup_add(ctx: &Ctx) -> Result<AssertResult> {
    execute_scenario(
        ctx,
        Backdrop::from_cgroups(vec![spin("cg_0")]),
        vec![
            Step::hold(HoldSpec::frac(0.5)),
            Step::with_op(Op::add_cgroup_def(spin("cg_1")), HoldSpec::frac(0.5)),
        ],
    )
}

/// Four cgroups run; half are removed halfway.
pub fn cgroup_remove(ctx: &Ctx) -> Result<AssertResult> {
    let defs = (0..4).map(|i| spin(&format!("cg_{i}"))).collect();
    execute_scenario(
        ctx,
        Backdrop::from_cgroups(defs),
        vec![
            Step::hold(HoldSpec::frac(0.5)),
            Step::new(
                vec![Op::remove_cgroup("cg_2"), Op::remove_cgroup("cg_3")],
                HoldSpec::frac(0.5),
            ),
        ],
    )
}

/// Workers' affinity changed to a random subset of the CPUs four times.
pub fn affinity_change(ctx: &Ctx) -> Result<AssertResult> {
    if let Some(s) = needs_cpus(ctx, 2) {
        return Ok(s);
    }
    let from = ctx.topo.cpus.clone();
    let count = (from.len() / 2).max(1);
    let step = |_| {
        Step::with_op(
            Op::set_affinity(
                "cg_0",
                AffinityIntent::RandomSubset {
                    from: from.clone(),
                    count,
                },
            ),
            HoldSpec::frac(0.25),
        )
    };
    execute_scenario(
        ctx,
        Backdrop::from_cgroups(vec![spin("cg_0"), spin("cg_1")]),
        (0..4).map(step).collect(),
    )
}

/// Two cgroups whose workers all share one 2-CPU mask.
pub fn affinity_pinned(ctx: &Ctx) -> Result<AssertResult> {
    if let Some(s) = needs_cpus(ctx, 2) {
        return Ok(s);
    }
    let pair: Vec<usize> = ctx.topo.cpus.iter().copied().take(2).collect();
    let pinned = AffinityIntent::exact(pair);
    execute_defs(
        ctx,
        vec![
            spin("cg_0").workers(2).affinity(pinned.clone()),
            spin("cg_1").workers(2).affinity(pinned),
        ],
    )
}

/// A spinning cgroup beside bursty and pipe ping-pong cgroups.
pub fn mixed_workloads(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(
        ctx,
        vec![
            spin("heavy"),
            spin("bursty").work_type(WorkType::bursty(
                Duration::from_millis(10),
                Duration::from_millis(10),
            )),
            spin("pipe").workers(2).work_type(WorkType::pipe_io()),
        ],
    )
}

/// Spinning workers in two cgroups nested under a common parent.
pub fn nested_steady(ctx: &Ctx) -> Result<AssertResult> {
    execute_scenario(
        ctx,
        Backdrop::new().push_op(Op::add_cgroup("nest")),
        vec![Step::with_defs(
            vec![spin("nest/a"), spin("nest/b")],
            HoldSpec::FULL,
        )],
    )
}

/// Nested cgroups; halfway, every task of one moves into the other.
pub fn nested_task_move(ctx: &Ctx) -> Result<AssertResult> {
    execute_scenario(
        ctx,
        Backdrop::new()
            .push_op(Op::add_cgroup("nest"))
            .push_cgroup(spin("nest/a"))
            .push_cgroup(spin("nest/b")),
        vec![
            Step::hold(HoldSpec::frac(0.5)),
            Step::with_op(Op::move_all_tasks("nest/a", "nest/b"), HoldSpec::frac(0.5)),
        ],
    )
}

/// Stress: one single-CPU cgroup per CPU, two workers each.
pub fn cgroup_per_cpu(ctx: &Ctx) -> Result<AssertResult> {
    let defs = ctx
        .topo
        .cpus
        .iter()
        .map(|&c| {
            spin(&format!("cpu_{c}"))
                .workers(2)
                .cpuset(CpusetSpec::exact([c]))
        })
        .collect();
    execute_defs(ctx, defs)
}

/// Stress: a cgroup added and another removed every 250 ms while two cgroups spin.
pub fn cgroup_rapid_churn(ctx: &Ctx) -> Result<AssertResult> {
    let rounds = (ctx.duration.as_millis() / 250).clamp(2, 400) as usize;
    let hold = HoldSpec::fixed(Duration::from_millis(250));
    let steps = (0..rounds)
        .map(|i| {
            let mut ops = vec![Op::add_cgroup_def(spin(&format!("churn_{i}")).workers(1))];
            if i > 0 {
                ops.push(Op::remove_cgroup(format!("churn_{}", i - 1)));
            }
            Step::new(ops, hold)
        })
        .collect();
    execute_scenario(
        ctx,
        Backdrop::from_cgroups(vec![spin("cg_0"), spin("cg_1")]),
        steps,
    )
}

/// Stress: every built-in work type at once, one cgroup each. NiceSweep's nice -20 phase can
/// leave a worker pinned to its CPU (AffinityChurn) with ~1 % of it for seconds: judge progress
/// gaps with a bound that allows that.
pub fn workload_variety(ctx: &Ctx) -> Result<AssertResult> {
    let kinds = WorkType::builtin();
    let defs = kinds
        .into_iter()
        .map(|k| {
            let n = k.group_size();
            spin(&k.name().to_lowercase()).workers(n).work_type(k)
        })
        .collect();
    execute_steps(ctx, vec![Step::with_defs(defs, HoldSpec::FULL)])
}
