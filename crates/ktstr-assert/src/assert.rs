//! [`Assert`]: which built-in checks run and their limits. Every check is off until asked.
//!
//! Build one with const builders (`Assert::NO_OVERRIDES.check_not_stuck().max_gap_ms(500)`),
//! layer overrides with [`Assert::merge`], then judge a cgroup's worker reports with
//! [`Assert::assert_named_cgroup`] or weighted cgroups with [`Assert::assert_weights`].

use std::collections::BTreeSet;

use ktstr_workload::WorkerReport;
use serde::{Deserialize, Serialize};

use crate::claim::Verdict;
use crate::result::AssertResult;

mod checks;
#[cfg(test)]
mod tests;

/// Off-CPU spread (percentage points) allowed within a cgroup when `not_stuck` is on: 15, or
/// 35 in debug builds (unoptimised workers and test binaries are noisier), as the existing
/// ktstr does.
pub const DEFAULT_MAX_SPREAD_PCT: f64 = if cfg!(debug_assertions) { 35.0 } else { 15.0 };
/// Longest progress gap (ms) allowed for a worker when `not_stuck` is on: 2000, or 3000 in
/// debug builds.
pub const DEFAULT_MAX_GAP_MS: u64 = if cfg!(debug_assertions) { 3000 } else { 2000 };

/// Which checks run and their limits; `None` (or `false`) means the check is off.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Assert {
    /// Progress checks: no worker idle, bounded off-CPU spread, bounded progress gaps,
    /// every worker completed. `Some(false)` turns the whole family off.
    pub not_stuck: Option<bool>,
    /// Every worker stayed on its cgroup's cpuset.
    pub isolation: Option<bool>,
    /// Longest progress gap allowed, ms (turns the gap check on by itself).
    pub max_gap_ms: Option<u64>,
    /// Off-CPU spread allowed within a cgroup, percentage points (turns that check on).
    pub max_spread_pct: Option<f64>,
    /// Largest coefficient of variation of work rate across a cgroup's workers.
    pub max_throughput_cv: Option<f64>,
    /// Smallest work rate (units per CPU-second) any worker may have.
    pub min_work_rate: Option<f64>,
    /// Largest p99 of a cgroup's pooled wake-latency samples, ns.
    pub max_p99_wake_latency_ns: Option<u64>,
    /// Largest coefficient of variation of a cgroup's pooled wake-latency samples.
    pub max_wake_latency_cv: Option<f64>,
    /// Smallest iteration rate (checkpoints per wall second) any worker may have.
    pub min_iteration_rate: Option<f64>,
    /// Largest migrations per iteration, summed over a cgroup.
    pub max_migration_ratio: Option<f64>,
    /// Largest run-queue imbalance ratio (judged by the monitor, carried here).
    pub max_imbalance_ratio: Option<f64>,
    /// Largest local DSQ depth (judged by the monitor, carried here).
    pub max_local_dsq_depth: Option<u32>,
    /// Fail when a CPU's rq clock stops advancing (judged by the monitor, carried here).
    pub fail_on_rq_clock_stuck: Option<bool>,
    /// Consecutive monitor samples a violation must last (judged by the monitor).
    pub sustained_samples: Option<u32>,
    /// Longest a CPU may run one task while others wait on it, ms, as the host monitor
    /// sees it (judged by the monitor, always enforced when set: [`Assert::no_stall_over`]).
    pub max_wait_ms: Option<u64>,
    /// Largest sched_ext `select_cpu_fallback` events per vCPU-second (judged by the monitor).
    pub max_fallback_rate: Option<f64>,
    /// Largest sched_ext `dispatch_keep_last` events per vCPU-second (judged by the monitor).
    pub max_keep_last_rate: Option<f64>,
    /// Largest error of a cgroup's CPU-time share against its weight share, percent of the
    /// expected share (see [`Assert::assert_weights`]).
    pub max_weight_error_pct: Option<f64>,
    /// Every worker stayed within its own allowed CPUs, and its affinity and policy applied.
    pub affinity: Option<bool>,
    /// Monitor thresholds fail the test (rather than only being reported).
    pub enforce_monitor_thresholds: bool,
}

/// Generates one const builder per `Option` field, named after the field.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub const fn $field(mut self, v: $ty) -> Self {
            self.$field = Some(v);
            self
        }
    )*};
}

/// `other.field` when it is `Some`, else `this.field` (usable in const fns).
macro_rules! pick {
    ($this:ident, $other:ident, $field:ident) => {
        match $other.$field {
            Some(v) => Some(v),
            None => $this.$field,
        }
    };
}

/// `this.field` when it is `Some`, else `Some(default)`.
macro_rules! or_default {
    ($this:ident, $field:ident, $default:expr) => {
        match $this.$field {
            Some(v) => Some(v),
            None => Some($default),
        }
    };
}

impl Assert {
    /// Every check off, no limits: the identity for [`Assert::merge`].
    pub const NO_OVERRIDES: Assert = Assert {
        not_stuck: None,
        isolation: None,
        max_gap_ms: None,
        max_spread_pct: None,
        max_throughput_cv: None,
        min_work_rate: None,
        max_p99_wake_latency_ns: None,
        max_wake_latency_cv: None,
        min_iteration_rate: None,
        max_migration_ratio: None,
        max_imbalance_ratio: None,
        max_local_dsq_depth: None,
        fail_on_rq_clock_stuck: None,
        sustained_samples: None,
        max_wait_ms: None,
        max_fallback_rate: None,
        max_keep_last_rate: None,
        max_weight_error_pct: None,
        affinity: None,
        enforce_monitor_thresholds: false,
    };

    /// The default set of checks, which is none: equal to [`Assert::NO_OVERRIDES`].
    pub const fn default_checks() -> Assert {
        Self::NO_OVERRIDES
    }

    /// Turns on the progress checks (`not_stuck`).
    #[must_use]
    pub const fn check_not_stuck(self) -> Self {
        self.not_stuck(true)
    }

    /// Turns on the cpuset isolation check.
    #[must_use]
    pub const fn check_isolation(self) -> Self {
        self.isolation(true)
    }

    /// Turns on the per-worker affinity check.
    #[must_use]
    pub const fn check_affinity(self) -> Self {
        self.affinity(true)
    }

    setters! {
        /// Sets `not_stuck` (`false` turns the progress checks off even with limits set).
        not_stuck: bool;
        /// Sets `isolation`.
        isolation: bool;
        /// Sets `max_gap_ms`, turning the gap check on.
        max_gap_ms: u64;
        /// Sets `max_spread_pct`, turning the off-CPU spread check on.
        max_spread_pct: f64;
        /// Sets `max_throughput_cv`.
        max_throughput_cv: f64;
        /// Sets `min_work_rate`.
        min_work_rate: f64;
        /// Sets `max_p99_wake_latency_ns`.
        max_p99_wake_latency_ns: u64;
        /// Sets `max_wake_latency_cv`.
        max_wake_latency_cv: f64;
        /// Sets `min_iteration_rate`.
        min_iteration_rate: f64;
        /// Sets `max_migration_ratio`.
        max_migration_ratio: f64;
        /// Sets `max_imbalance_ratio` (monitor).
        max_imbalance_ratio: f64;
        /// Sets `max_local_dsq_depth` (monitor).
        max_local_dsq_depth: u32;
        /// Sets `fail_on_rq_clock_stuck` (monitor).
        fail_on_rq_clock_stuck: bool;
        /// Sets `sustained_samples` (monitor).
        sustained_samples: u32;
        /// Sets `max_wait_ms` (monitor; enforced).
        max_wait_ms: u64;
        /// Sets `max_fallback_rate` (monitor).
        max_fallback_rate: f64;
        /// Sets `max_keep_last_rate` (monitor).
        max_keep_last_rate: f64;
        /// Sets `max_weight_error_pct`, turning the weight check on.
        max_weight_error_pct: f64;
        /// Sets `affinity`.
        affinity: bool;
    }

    /// Fails the test when the host monitor sees runnable tasks wait behind another task
    /// on a CPU for longer than `ms` (stall detection independent of the kernel watchdog).
    #[must_use]
    pub const fn no_stall_over(self, ms: u64) -> Self {
        self.max_wait_ms(ms)
    }

    /// True when any monitor check is asked for, so a run must sample.
    pub const fn wants_monitor(&self) -> bool {
        self.max_imbalance_ratio.is_some()
            || self.max_local_dsq_depth.is_some()
            || self.fail_on_rq_clock_stuck.is_some()
            || self.sustained_samples.is_some()
            || self.max_wait_ms.is_some()
            || self.max_fallback_rate.is_some()
            || self.max_keep_last_rate.is_some()
            || self.enforce_monitor_thresholds
    }

    /// Sets `enforce_monitor_thresholds`.
    #[must_use]
    pub const fn enforce_monitor_thresholds(mut self, enforce: bool) -> Self {
        self.enforce_monitor_thresholds = enforce;
        self
    }

    /// Fills unset monitor limits with the defaults (imbalance 4.0, DSQ depth 50, rq clock
    /// stuck fails, 5 sustained samples, 200 fallbacks and 100 keep-lasts per vCPU-second)
    /// and enforces them. Limits already set are kept.
    #[must_use]
    pub const fn with_monitor_defaults(mut self) -> Self {
        self.max_imbalance_ratio = or_default!(self, max_imbalance_ratio, 4.0);
        self.max_local_dsq_depth = or_default!(self, max_local_dsq_depth, 50);
        self.fail_on_rq_clock_stuck = or_default!(self, fail_on_rq_clock_stuck, true);
        self.sustained_samples = or_default!(self, sustained_samples, 5);
        self.max_fallback_rate = or_default!(self, max_fallback_rate, 200.0);
        self.max_keep_last_rate = or_default!(self, max_keep_last_rate, 100.0);
        self.enforce_monitor_thresholds = true;
        self
    }

    /// `self` overridden by `other`: each field `other` sets wins; enforcement is either's.
    pub const fn merge(&self, other: &Assert) -> Assert {
        Assert {
            not_stuck: pick!(self, other, not_stuck),
            isolation: pick!(self, other, isolation),
            max_gap_ms: pick!(self, other, max_gap_ms),
            max_spread_pct: pick!(self, other, max_spread_pct),
            max_throughput_cv: pick!(self, other, max_throughput_cv),
            min_work_rate: pick!(self, other, min_work_rate),
            max_p99_wake_latency_ns: pick!(self, other, max_p99_wake_latency_ns),
            max_wake_latency_cv: pick!(self, other, max_wake_latency_cv),
            min_iteration_rate: pick!(self, other, min_iteration_rate),
            max_migration_ratio: pick!(self, other, max_migration_ratio),
            max_imbalance_ratio: pick!(self, other, max_imbalance_ratio),
            max_local_dsq_depth: pick!(self, other, max_local_dsq_depth),
            fail_on_rq_clock_stuck: pick!(self, other, fail_on_rq_clock_stuck),
            sustained_samples: pick!(self, other, sustained_samples),
            max_wait_ms: pick!(self, other, max_wait_ms),
            max_fallback_rate: pick!(self, other, max_fallback_rate),
            max_keep_last_rate: pick!(self, other, max_keep_last_rate),
            max_weight_error_pct: pick!(self, other, max_weight_error_pct),
            affinity: pick!(self, other, affinity),
            enforce_monitor_thresholds: self.enforce_monitor_thresholds
                || other.enforce_monitor_thresholds,
        }
    }

    /// An empty [`Verdict`] whose [`Verdict::check_cgroup`] runs these checks.
    pub fn verdict(&self) -> Verdict {
        Verdict::with_checks(*self)
    }

    /// Runs the enabled checks on one cgroup's workers (stats keyed `"cgroup"`).
    ///
    /// `cpuset` is the cgroup's allowed CPUs, for the isolation check.
    pub fn assert_cgroup(
        &self,
        reports: &[WorkerReport],
        cpuset: Option<&BTreeSet<usize>>,
    ) -> AssertResult {
        checks::cgroup(self, None, reports, cpuset)
    }

    /// Like [`Assert::assert_cgroup`], with failures and stats naming `cgroup`.
    pub fn assert_named_cgroup(
        &self,
        cgroup: &str,
        reports: &[WorkerReport],
        cpuset: Option<&BTreeSet<usize>>,
    ) -> AssertResult {
        checks::cgroup(self, Some(cgroup), reports, cpuset)
    }

    /// When `max_weight_error_pct` is set, checks each cgroup's share of the CPU time used
    /// by all `groups` against its share of their weights.
    ///
    /// Each group is `(name, cpu.weight, workers)`. The error is
    /// `|got% - expected%| / expected% * 100`; a group whose error exceeds the limit fails.
    /// Meaningful only when the groups compete for saturated CPUs.
    pub fn assert_weights(&self, groups: &[(&str, u32, &[WorkerReport])]) -> AssertResult {
        match self.max_weight_error_pct {
            Some(limit) => checks::weights(limit, groups),
            None => AssertResult::pass(),
        }
    }

    /// The gap limit in force, if the gap check is on.
    pub(crate) const fn gap_limit(&self) -> Option<u64> {
        match (self.not_stuck, self.max_gap_ms) {
            (Some(false), _) => None,
            (Some(true), None) => Some(DEFAULT_MAX_GAP_MS),
            (_, limit) => limit,
        }
    }

    /// The off-CPU spread limit in force, if the spread check is on.
    pub(crate) const fn spread_limit(&self) -> Option<f64> {
        match (self.not_stuck, self.max_spread_pct) {
            (Some(false), _) => None,
            (Some(true), None) => Some(DEFAULT_MAX_SPREAD_PCT),
            (_, limit) => limit,
        }
    }

    /// True when any check judged on worker reports is on.
    pub(crate) const fn judges_workers(&self) -> bool {
        matches!(self.not_stuck, Some(true))
            || matches!(self.isolation, Some(true))
            || matches!(self.affinity, Some(true))
            || self.gap_limit().is_some()
            || self.spread_limit().is_some()
            || self.max_throughput_cv.is_some()
            || self.min_work_rate.is_some()
            || self.max_p99_wake_latency_ns.is_some()
            || self.max_wake_latency_cv.is_some()
            || self.min_iteration_rate.is_some()
            || self.max_migration_ratio.is_some()
    }
}
