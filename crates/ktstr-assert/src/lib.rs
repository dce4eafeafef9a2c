//! Judge worker telemetry: built-in scheduler checks, per-cgroup stats, and a claim DSL.
//!
//! - [`assert`](mod@assert): [`Assert`], which built-in checks run and their limits.
//! - [`result`]: what a judgement concluded ([`AssertResult`], [`Outcome`], [`AssertDetail`]).
//! - [`stats`]: per-cgroup aggregates of worker reports ([`CgroupStats`], [`percentile`]).
//! - [`claim`](mod@claim): custom checks as named comparisons ([`Verdict`], [`claim!`]).
//!
//! ```
//! use ktstr_assert::{claim, Assert, CgroupStats, DetailKind, Verdict};
//! use ktstr_workload::WorkerReport;
//!
//! let reports = vec![WorkerReport {
//!     tid: 412,
//!     work_units: 10,
//!     iterations: 12,
//!     completed: true,
//!     ..WorkerReport::default()
//! }];
//! let stats = CgroupStats::from_reports(&reports);
//!
//! let mut v = Verdict::new();
//! v.merge(Assert::NO_OVERRIDES.check_not_stuck().assert_named_cgroup("cg_0", &reports, None));
//! claim!(v, stats.num_workers).eq(1);
//! claim!(v, stats.total_iterations)
//!     .kind(DetailKind::Benchmark)
//!     .at_least(100);
//!
//! assert!(v.is_fail());
//! let result = v.into_result();
//! assert_eq!(
//!     result.details[0].message,
//!     "claim failed: stats.total_iterations (= 12) >= 100"
//! );
//! assert!(result.stats.contains_key("cg_0"));
//! ```

pub mod assert;
pub mod claim;
pub mod result;
pub mod stats;

pub use assert::{Assert, DEFAULT_MAX_GAP_MS, DEFAULT_MAX_SPREAD_PCT};
pub use claim::{ClaimBuilder, ClaimValue, Verdict};
pub use result::{AssertDetail, AssertFailed, AssertResult, DetailKind, Outcome};
pub use stats::{coefficient_of_variation, percentile, CgroupStats};
