//! The scheduler's callbacks (`struct sched_ext_ops` members) and the kernel functions
//! that call them, read from the 7.3 source.
//!
//! Each [`OpInfo::callers`] entry is one call path, nearest first: the function holding
//! the `SCX_CALL_OP*()` site, then the function that calls it, out to a function the
//! compiler cannot inline (a `sched_class` method or a work function). The planner
//! probes the first function of each path that the kernel's BTF has, and lists the
//! ones before it as left out (inlined). The sites were found with
//! `grep -n 'SCX_CALL_OP\|SCX_CALL_CID_OP\|__SCX_CALL_OP_TASK' kernel/sched/ext/*.[ch]`
//! on Debian's linux-source-7.3 and the enclosing function of each line.

/// One sched_ext callback and the kernel functions that call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpInfo {
    /// The `struct sched_ext_ops` member, e.g. `enqueue`.
    pub name: &'static str,
    /// Call paths, each nearest caller first (see the module documentation).
    pub callers: &'static [&'static [&'static str]],
    /// The `SCX_CALL_OP*()` sites in 7.3 (`file:line`), for the reader.
    pub sites: &'static str,
}

macro_rules! op {
    ($name:literal, [$([$($f:literal),+]),+], $sites:literal) => {
        OpInfo { name: $name, callers: &[$(&[$($f),+]),+], sites: $sites }
    };
}

/// Every callback of 7.3's `struct sched_ext_ops` that the kernel calls through
/// `SCX_CALL_OP*()`, with its callers.
pub const OPS: &[OpInfo] = &[
    op!("select_cpu", [["select_task_rq_scx"]], "ext.c:3657"),
    op!(
        "enqueue",
        [["scx_do_enqueue_task", "enqueue_task_scx"]],
        "ext.c:2093"
    ),
    op!(
        "dequeue",
        [
            ["ops_dequeue", "dequeue_task_scx"],
            ["rq_owned_post_enq"],
            ["scx_dispatch_enqueue"]
        ],
        "ext.c:2309 ext.c:1542 ext.c:1749"
    ),
    op!(
        "dispatch",
        [[
            "scx_dispatch_sched",
            "dispatch_one",
            "dispatch_pick",
            "dispatch_core_pick",
            "do_pick_task_scx"
        ]],
        "inlines.h:101 (scx_dispatch_sched, from dispatch_one ext.c:3022)"
    ),
    op!("tick", [["task_tick_scx"]], "ext.c:3936"),
    op!("runnable", [["enqueue_task_scx"]], "ext.c:2216"),
    op!("running", [["set_next_task_scx"]], "ext.c:3081"),
    op!(
        "stopping",
        [["put_prev_task_scx"], ["dequeue_task_scx"]],
        "ext.c:3200 ext.c:2347"
    ),
    op!("quiescent", [["dequeue_task_scx"]], "ext.c:2351"),
    op!(
        "yield",
        [["yield_task_scx"], ["yield_to_task_scx"]],
        "ext.c:2381 ext.c:2395"
    ),
    op!("core_sched_before", [["scx_prio_less"]], "ext.c:3610"),
    op!(
        "set_weight",
        [["reweight_task_scx"], ["__scx_enable_task"]],
        "ext.c:4409 ext.c:4079"
    ),
    op!(
        "set_cpumask",
        [
            ["scx_call_op_set_cpumask", "set_cpus_allowed_scx"],
            ["scx_call_op_set_cpumask", "switching_to_scx"]
        ],
        "ext.c:489 (from ext.c:3729 ext.c:4075 ext.c:4430)"
    ),
    op!(
        "update_idle",
        [["scx_idle_notify", "__scx_update_idle"]],
        "idle.c:757 idle.c:781"
    ),
    op!(
        "cpu_acquire",
        [[
            "dispatch_one",
            "dispatch_pick",
            "dispatch_core_pick",
            "do_pick_task_scx"
        ]],
        "ext.c:2993"
    ),
    op!(
        "cpu_release",
        [["switch_class", "put_prev_task_scx"]],
        "ext.c:3170"
    ),
    op!("init_task", [["__scx_init_task"]], "ext.c:3989"),
    op!(
        "exit_task",
        [
            ["__scx_disable_and_exit_task"],
            ["scx_sub_init_cancel_task"]
        ],
        "ext.c:4152 ext.c:4168"
    ),
    op!("enable", [["__scx_enable_task"]], "ext.c:4065"),
    op!("disable", [["scx_disable_task"]], "ext.c:4098"),
    op!("dump", [["scx_dump_state"]], "ext.c:7198"),
    op!(
        "dump_cpu",
        [["scx_dump_cpu", "scx_dump_state"]],
        "ext.c:7111"
    ),
    op!(
        "dump_task",
        [["scx_dump_task", "scx_dump_cpu", "scx_dump_state"]],
        "ext.c:7042"
    ),
    op!(
        "cgroup_init",
        [["scx_cgroup_init"], ["scx_tg_online"]],
        "ext.c:5386 ext.c:4945"
    ),
    op!(
        "cgroup_exit",
        [["scx_cgroup_exit"], ["scx_tg_offline"]],
        "ext.c:5357 ext.c:4970"
    ),
    op!(
        "cgroup_prep_move",
        [["scx_cgroup_can_attach"]],
        "ext.c:5019"
    ),
    op!("cgroup_move", [["scx_cgroup_move_task"]], "ext.c:5061"),
    op!(
        "cgroup_cancel_move",
        [["scx_cgroup_can_attach"], ["scx_cgroup_cancel_attach"]],
        "ext.c:5038 ext.c:5080"
    ),
    op!(
        "cgroup_set_weight",
        [["scx_group_set_weight"]],
        "ext.c:5095"
    ),
    op!(
        "cgroup_set_bandwidth",
        [["scx_group_set_bandwidth"]],
        "ext.c:5131"
    ),
    op!("cgroup_set_idle", [["scx_group_set_idle"]], "ext.c:5111"),
    op!("cpu_online", [["handle_hotplug"]], "ext.c:3786"),
    op!("cpu_offline", [["handle_hotplug"]], "ext.c:3788"),
    op!("init", [["scx_root_enable_workfn"]], "ext.c:7836"),
    op!("exit", [["scx_root_disable"]], "ext.c:6728"),
];

/// The callbacks that move tasks through the scheduler: what a stall's plan watches.
pub const SCHEDULING_OPS: &[&str] = &[
    "select_cpu",
    "enqueue",
    "dequeue",
    "dispatch",
    "runnable",
    "running",
    "stopping",
    "quiescent",
];

/// The callback named `name`, if 7.3's `struct sched_ext_ops` has it.
pub fn op(name: &str) -> Option<&'static OpInfo> {
    OPS.iter().find(|o| o.name == name)
}

/// The callback a BPF program implements, from its name (`<scheduler>_<op>` by the
/// `BPF_STRUCT_OPS` convention).
///
/// With `scheduler` (the ops name, e.g. `ktstr`), a `<scheduler>_` prefix is removed and
/// the rest must be an op name. Without it, the longest op name that ends the program name
/// after a `_` wins, so `ktstr_cgroup_set_weight` is `cgroup_set_weight`, not `set_weight`.
pub fn op_of_prog(prog: &str, scheduler: Option<&str>) -> Option<&'static OpInfo> {
    if let Some(rest) = scheduler
        .filter(|s| !s.is_empty())
        .and_then(|s| prog.strip_prefix(s))
        .and_then(|r| r.strip_prefix('_'))
    {
        if let Some(o) = op(rest) {
            return Some(o);
        }
    }
    OPS.iter()
        .filter(|o| {
            prog.strip_suffix(o.name)
                .is_some_and(|head| head.ends_with('_'))
        })
        .max_by_key(|o| o.name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_suffix_wins_and_prefix_is_checked() {
        let name = |p, s| op_of_prog(p, s).map(|o| o.name);
        assert_eq!(
            name("ktstr_cgroup_set_weight", None),
            Some("cgroup_set_weight")
        );
        assert_eq!(name("ktstr_init_task", None), Some("init_task"));
        assert_eq!(name("ktstr_init", None), Some("init"));
        assert_eq!(name("qmap_exit_task", Some("qmap")), Some("exit_task"));
        assert_eq!(name("simple_enqueue", Some("ktstr")), Some("enqueue"));
        assert_eq!(name("enqueue", None), None, "no `_` before the op");
        assert_eq!(name("ktstr_frobnicate", Some("ktstr")), None);
    }

    #[test]
    fn every_op_has_a_caller_path_and_names_are_unique() {
        for o in OPS {
            assert!(!o.callers.is_empty() && o.callers.iter().all(|p| !p.is_empty()));
            assert_eq!(
                OPS.iter().filter(|x| x.name == o.name).count(),
                1,
                "{}",
                o.name
            );
        }
        for s in SCHEDULING_OPS {
            assert!(op(s).is_some(), "{s}");
        }
    }
}
