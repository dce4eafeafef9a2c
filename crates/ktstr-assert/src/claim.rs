//! The claim DSL: a [`Verdict`] collects named comparisons for custom checks.
//!
//! `claim!(v, stats.total_iterations).at_least(100)` records
//! `claim failed: stats.total_iterations (= 12) >= 100` when it does not hold.

use std::collections::BTreeSet;
use std::fmt::{self, Debug, Display};

use ktstr_workload::WorkerReport;

use crate::assert::Assert;
use crate::result::{AssertDetail, AssertFailed, AssertResult, DetailKind, Outcome};

/// Records a claim about an expression, using the expression's source text as its name.
///
/// `claim!(v, expr)` is `v.claim(stringify!(expr), expr)`; finish it with a comparison.
#[macro_export]
macro_rules! claim {
    ($v:expr, $e:expr) => {
        $v.claim(stringify!($e), $e)
    };
}

/// A number a claim can order and bound: shown with `Display`, stored in details as `f64`.
pub trait ClaimValue: Copy + PartialOrd + Display {
    /// The value as `f64`, for [`AssertDetail::measured`] and [`AssertDetail::bound`].
    fn to_f64(self) -> f64;
}

macro_rules! claim_value {
    ($($t:ty),*) => {$(
        impl ClaimValue for $t {
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
claim_value!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64);

/// A running judgement: failures, notes and an outcome, built from claims and results.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    result: AssertResult,
    log_passes: bool,
    checks: Assert,
}

impl Verdict {
    /// An empty, passing verdict with no built-in checks configured.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty verdict whose [`Verdict::check_cgroup`] runs `checks`.
    pub fn with_checks(checks: Assert) -> Self {
        Self {
            checks,
            ..Self::default()
        }
    }

    /// Records passing claims as notes too when `log` is true (default false).
    #[must_use]
    pub fn with_log_passes(mut self, log: bool) -> Self {
        self.log_passes = log;
        self
    }

    /// Starts a claim that `value` (named `expr` in messages) satisfies a comparison.
    pub fn claim<'a, T>(&'a mut self, expr: &'a str, value: T) -> ClaimBuilder<'a, T> {
        ClaimBuilder {
            verdict: self,
            expr,
            value,
            kind: DetailKind::Other,
            because: None,
            cgroup: None,
            worker: None,
        }
    }

    /// Adds a note for the reader without changing the outcome.
    pub fn note(&mut self, note: impl Into<String>) {
        self.result.add_note(note);
    }

    /// Records a failure directly.
    pub fn fail(&mut self, detail: AssertDetail) {
        self.result.add_failure(detail);
    }

    /// Marks the verdict skipped (unless something already failed or was inconclusive).
    pub fn skip(&mut self, reason: impl Into<String>) {
        if self.result.is_pass() {
            self.result.outcome = Outcome::Skip;
        }
        self.result.add_note(reason);
    }

    /// Skips with `reason` when `cond` holds; returns `cond` so callers can return early.
    pub fn skip_if(&mut self, cond: bool, reason: impl Into<String>) -> bool {
        if cond {
            self.skip(reason);
        }
        cond
    }

    /// Marks the verdict inconclusive (a failure still wins), noting `reason`.
    pub fn inconclusive(&mut self, reason: impl Into<String>) {
        self.result.merge(AssertResult::inconclusive(reason));
    }

    /// Folds in another verdict or an [`AssertResult`] (worst outcome wins, Skip yields).
    pub fn merge(&mut self, other: impl Into<AssertResult>) {
        self.result.merge(other.into());
    }

    /// Runs the configured checks ([`Verdict::with_checks`]) on one cgroup and folds them in.
    pub fn check_cgroup(
        &mut self,
        cgroup: &str,
        reports: &[WorkerReport],
        cpuset: Option<&BTreeSet<usize>>,
    ) -> &mut Self {
        let r = self.checks.assert_named_cgroup(cgroup, reports, cpuset);
        self.result.merge(r);
        self
    }

    /// True when the outcome is exactly `Pass`.
    pub fn is_pass(&self) -> bool {
        self.result.is_pass()
    }

    /// True when something failed.
    pub fn is_fail(&self) -> bool {
        self.result.is_fail()
    }

    /// True when the verdict was skipped.
    pub fn is_skip(&self) -> bool {
        self.result.is_skip()
    }

    /// True when the verdict is inconclusive.
    pub fn is_inconclusive(&self) -> bool {
        self.result.is_inconclusive()
    }

    /// The result so far.
    pub fn result(&self) -> &AssertResult {
        &self.result
    }

    /// The result, consuming the verdict.
    pub fn into_result(self) -> AssertResult {
        self.result
    }

    /// A copy of the result so far.
    pub fn to_result(&self) -> AssertResult {
        self.result.clone()
    }

    /// `Err` ([`AssertFailed`], every failure) when something failed; otherwise prints the
    /// notes to stderr and returns the result.
    pub fn into_anyhow_or_log(self) -> anyhow::Result<AssertResult> {
        if self.result.is_fail() {
            return Err(AssertFailed {
                details: self.result.details,
            }
            .into());
        }
        for note in &self.result.notes {
            eprintln!("note: {note}");
        }
        Ok(self.result)
    }
}

impl From<Verdict> for AssertResult {
    fn from(v: Verdict) -> Self {
        v.result
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.result, f)
    }
}

/// A claim waiting for its comparison; nothing is recorded until one is called.
#[must_use = "a claim records nothing until a comparison such as .at_least(..) is called"]
pub struct ClaimBuilder<'a, T> {
    verdict: &'a mut Verdict,
    expr: &'a str,
    value: T,
    kind: DetailKind,
    because: Option<String>,
    cgroup: Option<String>,
    worker: Option<i32>,
}

impl<T> ClaimBuilder<'_, T> {
    /// Sets the kind of the failure this claim records (default [`DetailKind::Other`]).
    pub fn kind(mut self, kind: DetailKind) -> Self {
        self.kind = kind;
        self
    }

    /// Adds why the claim matters to its failure message.
    pub fn because(mut self, reason: &str) -> Self {
        self.because = Some(reason.to_string());
        self
    }

    /// Tags the failure with the cgroup it is about.
    pub fn cgroup(mut self, cgroup: &str) -> Self {
        self.cgroup = Some(cgroup.to_string());
        self
    }

    /// Tags the failure with the worker tid it is about.
    pub fn worker(mut self, tid: i32) -> Self {
        self.worker = Some(tid);
        self
    }

    /// Records the claim: a failure (or a pass note when logging passes). Returns `holds`.
    fn record(
        self,
        holds: bool,
        shown: &dyn Display,
        relation: String,
        measured: Option<f64>,
        bound: Option<f64>,
    ) -> bool {
        let claim = format!("{} (= {shown}) {relation}", self.expr);
        if holds {
            if self.verdict.log_passes {
                self.verdict.note(format!("claim held: {claim}"));
            }
            return true;
        }
        let mut message = format!("claim failed: {claim}");
        if let Some(why) = &self.because {
            message.push_str(&format!(" (because {why})"));
        }
        self.verdict.fail(AssertDetail {
            kind: self.kind,
            message,
            cgroup: self.cgroup,
            worker: self.worker,
            measured,
            bound,
        });
        false
    }
}

impl<T: PartialEq + Debug> ClaimBuilder<'_, T> {
    /// Claims `value == expected`.
    pub fn eq(self, expected: T) -> bool {
        let holds = self.value == expected;
        let shown = format!("{:?}", self.value);
        self.record(holds, &shown, format!("== {expected:?}"), None, None)
    }

    /// Claims `value != unexpected`.
    pub fn ne(self, unexpected: T) -> bool {
        let holds = self.value != unexpected;
        let shown = format!("{:?}", self.value);
        self.record(holds, &shown, format!("!= {unexpected:?}"), None, None)
    }
}

impl<T: ClaimValue> ClaimBuilder<'_, T> {
    fn compare(self, holds: bool, op: &str, bound: T) -> bool {
        let v = self.value;
        self.record(
            holds,
            &v,
            format!("{op} {bound}"),
            Some(v.to_f64()),
            Some(bound.to_f64()),
        )
    }

    /// Claims `value >= bound`.
    pub fn at_least(self, bound: T) -> bool {
        let holds = self.value >= bound;
        self.compare(holds, ">=", bound)
    }

    /// Claims `value <= bound`.
    pub fn at_most(self, bound: T) -> bool {
        let holds = self.value <= bound;
        self.compare(holds, "<=", bound)
    }

    /// Claims `value < bound`.
    pub fn lt(self, bound: T) -> bool {
        let holds = self.value < bound;
        self.compare(holds, "<", bound)
    }

    /// Claims `value > bound`.
    pub fn gt(self, bound: T) -> bool {
        let holds = self.value > bound;
        self.compare(holds, ">", bound)
    }

    /// Claims `lo <= value <= hi`.
    pub fn between(self, lo: T, hi: T) -> bool {
        let v = self.value;
        let holds = lo <= v && v <= hi;
        let broken = if v < lo { lo } else { hi };
        self.record(
            holds,
            &v,
            format!("in [{lo}, {hi}]"),
            Some(v.to_f64()),
            Some(broken.to_f64()),
        )
    }
}

impl ClaimBuilder<'_, f64> {
    /// Claims the value is neither NaN nor infinite.
    pub fn is_finite(self) -> bool {
        let v = self.value;
        self.record(v.is_finite(), &v, "is finite".to_string(), Some(v), None)
    }

    /// Claims `|value - target| <= tol`.
    pub fn near(self, target: f64, tol: f64) -> bool {
        let v = self.value;
        let holds = (v - target).abs() <= tol;
        self.record(
            holds,
            &v,
            format!("== {target} +/- {tol}"),
            Some(v),
            Some(target),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Stats {
        total_iterations: u64,
        ratio: f64,
        name: &'static str,
    }

    fn stats() -> Stats {
        Stats {
            total_iterations: 12,
            ratio: 0.5,
            name: "spin",
        }
    }

    fn only_message(v: &Verdict) -> &str {
        assert_eq!(v.result().details.len(), 1, "{v}");
        v.result().details[0].message.as_str()
    }

    #[test]
    fn failed_claim_names_expression_value_and_bound() {
        let stats = stats();
        let mut v = Verdict::new();
        assert!(!claim!(v, stats.total_iterations).at_least(100));
        assert!(v.is_fail());
        assert_eq!(
            only_message(&v),
            "claim failed: stats.total_iterations (= 12) >= 100"
        );
        let d = &v.result().details[0];
        assert_eq!((d.measured, d.bound), (Some(12.0), Some(100.0)));
        assert_eq!(d.kind, DetailKind::Other);
    }

    #[test]
    fn passing_claims_record_nothing_unless_logged() {
        let stats = stats();
        let mut v = Verdict::new();
        assert!(claim!(v, stats.total_iterations).at_most(12));
        assert!(v.is_pass());
        assert!(v.result().notes.is_empty());

        let mut v = Verdict::new().with_log_passes(true);
        assert!(claim!(v, stats.total_iterations).gt(3));
        assert_eq!(
            v.result().notes,
            vec!["claim held: stats.total_iterations (= 12) > 3"]
        );
    }

    #[test]
    fn every_comparison() {
        let s = stats();
        let mut v = Verdict::new();
        assert!(claim!(v, s.total_iterations).eq(12));
        assert!(claim!(v, s.total_iterations).ne(13));
        assert!(claim!(v, s.total_iterations).lt(13));
        assert!(claim!(v, s.total_iterations).between(12, 12));
        assert!(claim!(v, s.ratio).near(0.45, 0.05));
        assert!(claim!(v, s.ratio).is_finite());
        assert!(claim!(v, s.name).eq("spin"));
        assert!(v.is_pass(), "{v}");

        assert!(!claim!(v, s.total_iterations).lt(12));
        assert!(!claim!(v, s.total_iterations).gt(12));
        assert!(!claim!(v, s.total_iterations).ne(12));
        assert!(!claim!(v, s.name).eq("yield"));
        assert!(!claim!(v, s.ratio).between(0.6, 0.9));
        assert!(!claim!(v, s.ratio).near(1.0, 0.1));
        assert!(!claim!(v, f64::NAN).is_finite());
        let messages: Vec<&str> = v
            .result()
            .details
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(
            messages,
            vec![
                "claim failed: s.total_iterations (= 12) < 12",
                "claim failed: s.total_iterations (= 12) > 12",
                "claim failed: s.total_iterations (= 12) != 12",
                "claim failed: s.name (= \"spin\") == \"yield\"",
                "claim failed: s.ratio (= 0.5) in [0.6, 0.9]",
                "claim failed: s.ratio (= 0.5) == 1 +/- 0.1",
                "claim failed: f64::NAN (= NaN) is finite",
            ]
        );
        assert_eq!(v.result().details[4].bound, Some(0.6));
    }

    #[test]
    fn kind_because_and_location_are_recorded() {
        let mut v = Verdict::new();
        let p99 = 1500_u64;
        claim!(v, p99)
            .kind(DetailKind::Benchmark)
            .because("wakeups must stay fast")
            .cgroup("cg_1")
            .worker(77)
            .at_most(1000);
        let d = &v.result().details[0];
        assert_eq!(d.kind, DetailKind::Benchmark);
        assert_eq!(d.cgroup.as_deref(), Some("cg_1"));
        assert_eq!(d.worker, Some(77));
        assert_eq!(
            d.message,
            "claim failed: p99 (= 1500) <= 1000 (because wakeups must stay fast)"
        );
    }

    #[test]
    fn numeric_types() {
        let mut v = Verdict::new();
        assert!(claim!(v, 5_usize).at_least(5));
        assert!(claim!(v, -3_i64).lt(0));
        assert!(claim!(v, 7_u32).between(1, 10));
        assert!(claim!(v, 2.5_f32).gt(2.0));
        assert!(v.is_pass());
    }

    #[test]
    fn skip_inconclusive_and_merge() {
        let mut v = Verdict::new();
        assert!(!v.skip_if(false, "never"));
        assert!(v.skip_if(true, "needs 8 CPUs"));
        assert!(v.is_skip());
        v.inconclusive("no samples");
        assert!(v.is_inconclusive());
        let mut other = Verdict::new();
        claim!(other, 1_u64).at_least(2);
        v.merge(other);
        assert!(v.is_fail());
        v.skip("late skip does not hide a failure");
        assert!(v.is_fail());
        assert_eq!(v.result().notes.len(), 3);
    }

    #[test]
    fn anyhow_joins_failures() {
        let mut v = Verdict::new();
        claim!(v, 1_u64).at_least(2);
        claim!(v, 3_u64).at_most(2);
        let err = v.into_anyhow_or_log().expect_err("failed verdict");
        let text = err.to_string();
        assert!(text.contains("claim failed: 1_u64 (= 1) >= 2"), "{text}");
        assert!(text.contains("claim failed: 3_u64 (= 3) <= 2"), "{text}");
        assert_eq!(
            err.downcast_ref::<AssertFailed>().map(|e| e.details.len()),
            Some(2)
        );

        let mut v = Verdict::new();
        v.note("just context");
        let ok = v.into_anyhow_or_log().expect("passing verdict");
        assert!(ok.is_pass());
    }
}
