//! Judge worker telemetry: built-in scheduler checks, per-cgroup stats, and a claim DSL.
//!
//! - [`assert`](mod@assert): [`Assert`], which built-in checks run and their limits.
//! - [`result`]: what a judgement concluded ([`AssertResult`], [`Outcome`], [`AssertDetail`]).
//! - [`stats`]: per-cgroup aggregates of worker reports ([`CgroupStats`], [`percentile`]).
//! - [`claim`](mod@claim): custom checks as named comparisons ([`Verdict`], [`claim!`],
//!   [`claim_present!`] for `Option`s); `CgroupStats::claim_<field>` starts one per field.
//! - [`claim_set`](mod@claim_set): claims on sets ([`claim_set!`], [`ClaimSet`]): membership,
//!   size, `subset_of`, `disjoint_from`.
//! - [`claim_seq`](mod@claim_seq): claims on sequences ([`claim_seq!`]): membership and size.
//! - [`claim_collection`]: what set and sequence claims share ([`ClaimCollection`]): `empty`,
//!   `nonempty`, `contains`, `len_eq`, `len_at_most`, `len_at_least`.
//! - [`temporal`]: patterns over samples in a [`claim_seq!`]: `nondecreasing`,
//!   `strictly_increasing`, `rate_within`, `steady_within`, `converges_to`, `ratio_within`,
//!   `always_true`.
//! - [`claim_better`](mod@claim_better): a metric against its baseline ([`claim_better!`],
//!   [`Polarity`]): `better_than`, `by_at_least`.
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
//!
//! Collections, samples over time, and baselines:
//!
//! ```
//! use std::collections::BTreeSet;
//!
//! use ktstr_assert::{claim_better, claim_present, claim_seq, claim_set, Polarity, Verdict};
//!
//! let cpus_used: BTreeSet<u32> = [0, 1, 5].into_iter().collect();
//! let iterations = vec![100_u64, 180, 260, 260];
//! let p99_us: Option<f64> = None;
//!
//! let mut v = Verdict::new();
//! claim_set!(v, cpus_used).subset_of(&[0, 1, 2, 3]);
//! claim_seq!(v, iterations).len_at_least(4);
//! claim_seq!(v, iterations).nondecreasing();
//! claim_seq!(v, iterations).rate_within(50, 100);
//! claim_present!(v, p99_us).at_most(500.0);
//! claim_better!(v, iterations.len(), Polarity::HigherBetter).better_than(&3);
//!
//! let messages: Vec<String> = v.into_result().details.into_iter().map(|d| d.message).collect();
//! assert_eq!(
//!     messages,
//!     vec![
//!         "claim failed: cpus_used (= {0, 1, 5}) is a subset of {0, 1, 2, 3}; not in it: {5}",
//!         "claim failed: iterations (= [100, 180, 260, 260]) has every step in [50, 100]; \
//!          fails at [3]: 260 -> 260 (step 0)",
//!         "claim failed: p99_us is absent",
//!     ]
//! );
//! ```

pub mod assert;
pub mod claim;
pub mod claim_better;
pub mod claim_collection;
pub mod claim_seq;
pub mod claim_set;
pub mod result;
pub mod stats;
pub mod temporal;

pub use assert::{Assert, DEFAULT_MAX_GAP_MS, DEFAULT_MAX_SPREAD_PCT};
pub use claim::{ClaimBuilder, ClaimValue, Present, Verdict};
pub use claim_better::{Better, BetterClaim, Polarity};
pub use claim_collection::ClaimCollection;
pub use claim_seq::{AsSeq, SeqClaim};
pub use claim_set::{AsSet, ClaimSet, SetClaim};
pub use result::{AssertDetail, AssertFailed, AssertResult, DetailKind, Outcome};
pub use stats::{coefficient_of_variation, percentile, CgroupStats};
