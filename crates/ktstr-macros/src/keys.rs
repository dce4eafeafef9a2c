//! The keys each macro accepts, and which of them this ktstr does not act on yet.

/// Whether a key is a flag or takes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `key` or `key = true|false`.
    Bool,
    /// `key = expr`.
    Value,
}

/// One accepted key.
pub struct Key {
    /// Its name.
    pub name: &'static str,
    /// Flag or value.
    pub kind: KeyKind,
    /// `Some(why)` for a key that is valid but not acted on yet: using it is a compile error.
    pub unsupported: Option<&'static str>,
}

const fn b(name: &'static str) -> Key {
    Key {
        name,
        kind: KeyKind::Bool,
        unsupported: None,
    }
}

const fn v(name: &'static str) -> Key {
    Key {
        name,
        kind: KeyKind::Value,
        unsupported: None,
    }
}

const fn later(name: &'static str, kind: KeyKind, why: &'static str) -> Key {
    Key {
        name,
        kind,
        unsupported: Some(why),
    }
}

/// Keys of `#[ktstr_test]`.
pub const TEST_KEYS: &[Key] = &[
    v("llcs"),
    v("cores"),
    v("threads"),
    v("numa_nodes"),
    v("memory_mib"),
    v("duration_s"),
    v("watchdog_timeout_s"),
    v("scheduler"),
    v("staged_schedulers"),
    v("payload"),
    v("workloads"),
    v("workload_root_cgroup"),
    v("extra_sched_args"),
    v("extra_include_files"),
    v("post_vm"),
    v("post_vm_unconditional"),
    v("num_snapshots"),
    v("bpf_map_write"),
    v("watch_bpf_maps"),
    b("auto_repro"),
    b("not_stuck"),
    b("isolation"),
    v("max_gap_ms"),
    v("max_spread_pct"),
    v("max_throughput_cv"),
    v("min_work_rate"),
    v("max_p99_wake_latency_ns"),
    v("max_wake_latency_cv"),
    v("min_iteration_rate"),
    v("max_migration_ratio"),
    v("max_weight_error_pct"),
    v("max_imbalance_ratio"),
    v("max_local_dsq_depth"),
    b("fail_on_rq_clock_stuck"),
    v("sustained_samples"),
    v("max_wait_ms"),
    v("max_fallback_rate"),
    v("max_keep_last_rate"),
    b("expect_err"),
    v("expect_scx_bpf_error_contains"),
    b("requires_smt"),
    v("min_numa_nodes"),
    v("max_numa_nodes"),
    v("min_llcs"),
    v("max_llcs"),
    v("min_cpus"),
    v("max_cpus"),
    b("host_only"),
    b("kaslr"),
    b("ignore"),
];

/// Keys of `declare_scheduler!`.
pub const SCHEDULER_KEYS: &[Key] = &[
    v("name"),
    v("binary"),
    v("binary_path"),
    v("topology"),
    v("sched_args"),
    v("cgroup_parent"),
    v("assert"),
    v("sysctls"),
    v("kargs"),
    v("constraints"),
    v("min_numa_nodes"),
    v("max_numa_nodes"),
    v("min_llcs"),
    v("max_llcs"),
    v("min_cpus"),
    v("max_cpus"),
    b("requires_smt"),
    later(
        "kernels",
        KeyKind::Value,
        "per-scheduler kernel lists are not implemented",
    ),
    later(
        "config_file",
        KeyKind::Value,
        "scheduler config files are not packed yet",
    ),
];

/// A hint for keys the existing ktstr renamed or removed.
pub fn renamed(name: &str) -> Option<&'static str> {
    match name {
        "workers_per_cgroup" => Some("removed: use `CgroupDef::workers(N)`"),
        "memory" | "memory_mb" => Some("the key is `memory_mib`"),
        "duration" => Some("the key is `duration_s`"),
        "numa" => Some("the key is `numa_nodes`"),
        _ => None,
    }
}
