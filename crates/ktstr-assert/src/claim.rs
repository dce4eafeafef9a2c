//! The claim DSL: a [`Verdict`] collects named comparisons for custom checks.
//!
//! `claim!(v, stats.total_iterations).at_least(100)` records
//! `claim failed: stats.total_iterations (= 12) >= 100` when it does not hold;
//! `claim_present!(v, maybe_p99)` does the same for an `Option`, failing with
//! `claim failed: maybe_p99 is absent` when it is `None`.

use std::collections::BTreeSet;
use std::fmt::{self, Debug, Display, Write as _};

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

/// Records a claim about an optional value; `None` fails whatever comparison follows.
///
/// `claim_present!(v, expr)` is `v.claim_present(stringify!(expr), expr)`; a present value
/// compares as with [`claim!`], an absent one records `claim failed: expr is absent`.
#[macro_export]
macro_rules! claim_present {
    ($v:expr, $e:expr) => {
        $v.claim_present(stringify!($e), $e)
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

impl<T: ClaimValue> ClaimValue for &T {
    fn to_f64(self) -> f64 {
        (*self).to_f64()
    }
}

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
            rec: Recorder {
                verdict: self,
                expr,
                kind: None,
                because: None,
                cgroup: None,
                worker: None,
            },
            value,
        }
    }

    /// Starts a claim on an optional value: `None` fails, `Some` compares as [`Verdict::claim`].
    pub fn claim_present<'a, T>(
        &'a mut self,
        expr: &'a str,
        value: Option<T>,
    ) -> ClaimBuilder<'a, Present<T>> {
        self.claim(expr, Present(value))
    }

    /// Adds a note for the reader without changing the outcome.
    pub fn note(&mut self, note: impl Into<String>) {
        self.result.add_note(note);
    }

    /// Adds the note `name = value` (a measurement worth reading) without changing the outcome.
    pub fn note_value(&mut self, name: impl Display, value: impl Display) {
        self.result.add_note(format!("{name} = {value}"));
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

    /// Marks the verdict inconclusive with `reason` when `cond` holds; returns `cond`.
    pub fn inconclusive_if(&mut self, cond: bool, reason: impl Into<String>) -> bool {
        if cond {
            self.inconclusive(reason);
        }
        cond
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
    /// notes to stderr. As the existing ktstr's, it ends a `post_vm` function
    /// (`fn(&VmResult) -> Result<()>`); a test body returns [`Verdict::into_result`].
    pub fn into_anyhow_or_log(self) -> anyhow::Result<()> {
        if self.result.is_fail() {
            return Err(AssertFailed {
                details: self.result.details,
            }
            .into());
        }
        for note in &self.result.notes {
            eprintln!("note: {note}");
        }
        Ok(())
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
    pub(crate) rec: Recorder<'a>,
    pub(crate) value: T,
}

impl<T> ClaimBuilder<'_, T> {
    /// Sets the kind of the failure this claim records (default [`DetailKind::Other`];
    /// temporal patterns default to [`DetailKind::Temporal`]).
    pub fn kind(mut self, kind: DetailKind) -> Self {
        self.rec.kind = Some(kind);
        self
    }

    /// Adds why the claim matters to its failure message.
    pub fn because(mut self, reason: &str) -> Self {
        self.rec.because = Some(reason.to_string());
        self
    }

    /// Tags the failure with the cgroup it is about.
    pub fn cgroup(mut self, cgroup: &str) -> Self {
        self.rec.cgroup = Some(cgroup.to_string());
        self
    }

    /// Tags the failure with the worker tid it is about.
    pub fn worker(mut self, tid: i32) -> Self {
        self.rec.worker = Some(tid);
        self
    }
}

/// Where every kind of claim records its outcome, and how its failure is labelled.
pub(crate) struct Recorder<'a> {
    verdict: &'a mut Verdict,
    expr: &'a str,
    kind: Option<DetailKind>,
    because: Option<String>,
    cgroup: Option<String>,
    worker: Option<i32>,
}

impl Recorder<'_> {
    /// The claimed expression's source text.
    pub(crate) fn expr(&self) -> &str {
        self.expr
    }

    /// Uses `kind` for the failure unless the claim chose one with [`ClaimBuilder::kind`].
    pub(crate) fn default_kind(mut self, kind: DetailKind) -> Self {
        self.kind.get_or_insert(kind);
        self
    }

    /// Records `expr (= shown) relation`, the shape of every comparison. Returns `holds`.
    pub(crate) fn compare(
        self,
        holds: bool,
        shown: &dyn Display,
        relation: &dyn Display,
        measured: Option<f64>,
        bound: Option<f64>,
    ) -> bool {
        let claim = format!("{} (= {shown}) {relation}", self.expr);
        self.record(holds, claim, measured, bound)
    }

    /// Records `claim`: a failure (or a pass note when logging passes). Returns `holds`.
    pub(crate) fn record(
        self,
        holds: bool,
        claim: String,
        measured: Option<f64>,
        bound: Option<f64>,
    ) -> bool {
        if holds {
            if self.verdict.log_passes {
                self.verdict.note(format!("claim held: {claim}"));
            }
            return true;
        }
        let message = self.with_because(format!("claim failed: {claim}"));
        self.verdict.fail(AssertDetail {
            kind: self.kind.unwrap_or(DetailKind::Other),
            message,
            cgroup: self.cgroup,
            worker: self.worker,
            measured,
            bound,
        });
        false
    }

    /// Marks the verdict inconclusive because the data cannot decide `claim`. Returns false.
    pub(crate) fn inconclusive(self, claim: String) -> bool {
        let reason = self.with_because(format!("claim inconclusive: {claim}"));
        self.verdict.inconclusive(reason);
        false
    }

    fn with_because(&self, mut message: String) -> String {
        if let Some(why) = &self.because {
            let _ = write!(message, " (because {why})");
        }
        message
    }
}

/// How many elements a collection shows in a message before `... (+N more)`.
const SHOWN_ITEMS: usize = 10;

/// `items` joined with `, ` between `open` and `close`, at most [`SHOWN_ITEMS`] of them.
pub(crate) fn show_items<I>(items: I, open: char, close: char) -> String
where
    I: IntoIterator,
    I::Item: Display,
{
    let mut out = String::from(open);
    let mut count = 0_usize;
    for item in items {
        if count < SHOWN_ITEMS {
            if count > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{item}");
        }
        count += 1;
    }
    if count > SHOWN_ITEMS {
        let _ = write!(out, ", ... (+{} more)", count - SHOWN_ITEMS);
    }
    out.push(close);
    out
}

/// Shows a value with `Debug` where a `Display` is wanted.
pub(crate) struct Dbg<T>(pub(crate) T);

impl<T: Debug> Display for Dbg<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Debug::fmt(&self.0, f)
    }
}

/// A derived number (mean, bound, ratio) for a message: as is when short, else ~6 digits.
pub(crate) fn short(x: f64) -> String {
    let plain = x.to_string();
    if plain.len() <= 8 || !x.is_finite() {
        return plain;
    }
    let decimals = (5 - x.abs().log10().floor() as i64).clamp(0, 17) as usize;
    let rounded = format!("{x:.decimals$}");
    if rounded.contains('.') {
        rounded
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        rounded
    }
}

impl<T: PartialEq + Debug> ClaimBuilder<'_, T> {
    /// Claims `value == expected`.
    pub fn eq(self, expected: T) -> bool {
        let holds = self.value == expected;
        let shown = Dbg(&self.value).to_string();
        self.rec
            .compare(holds, &shown, &format!("== {expected:?}"), None, None)
    }

    /// Claims `value != unexpected`.
    pub fn ne(self, unexpected: T) -> bool {
        let holds = self.value != unexpected;
        let shown = Dbg(&self.value).to_string();
        self.rec
            .compare(holds, &shown, &format!("!= {unexpected:?}"), None, None)
    }
}

impl<T: ClaimValue> ClaimBuilder<'_, T> {
    fn compare(self, holds: bool, op: &str, bound: T) -> bool {
        let v = self.value;
        self.rec.compare(
            holds,
            &v,
            &format!("{op} {bound}"),
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
        self.rec.compare(
            holds,
            &v,
            &format!("in [{lo}, {hi}]"),
            Some(v.to_f64()),
            Some(broken.to_f64()),
        )
    }
}

impl ClaimBuilder<'_, f64> {
    /// Claims the value is neither NaN nor infinite.
    pub fn is_finite(self) -> bool {
        let v = self.value;
        self.rec
            .compare(v.is_finite(), &v, &"is finite", Some(v), None)
    }

    /// Claims `|value - target| <= tol`.
    pub fn near(self, target: f64, tol: f64) -> bool {
        let v = self.value;
        let holds = (v - target).abs() <= tol;
        self.rec.compare(
            holds,
            &v,
            &format!("== {target} +/- {tol}"),
            Some(v),
            Some(target),
        )
    }
}

/// An optional value under claim ([`Verdict::claim_present`]): absent fails any comparison.
#[derive(Debug, Clone, Copy)]
pub struct Present<T>(Option<T>);

impl<'a, T> ClaimBuilder<'a, Present<T>> {
    /// The claim on the value when present; when absent, records `expr is absent` as failed.
    fn present(self) -> Option<ClaimBuilder<'a, T>> {
        let ClaimBuilder {
            rec,
            value: Present(value),
        } = self;
        match value {
            Some(value) => Some(ClaimBuilder { rec, value }),
            None => {
                let claim = format!("{} is absent", rec.expr());
                rec.record(false, claim, None, None);
                None
            }
        }
    }
}

impl<T: PartialEq + Debug> ClaimBuilder<'_, Present<T>> {
    /// Claims the value is present and `== expected`.
    pub fn eq(self, expected: T) -> bool {
        self.present().is_some_and(|c| c.eq(expected))
    }

    /// Claims the value is present and `!= unexpected`.
    pub fn ne(self, unexpected: T) -> bool {
        self.present().is_some_and(|c| c.ne(unexpected))
    }
}

impl<T: ClaimValue> ClaimBuilder<'_, Present<T>> {
    /// Claims the value is present and `>= bound`.
    pub fn at_least(self, bound: T) -> bool {
        self.present().is_some_and(|c| c.at_least(bound))
    }

    /// Claims the value is present and `<= bound`.
    pub fn at_most(self, bound: T) -> bool {
        self.present().is_some_and(|c| c.at_most(bound))
    }

    /// Claims the value is present and `< bound`.
    pub fn lt(self, bound: T) -> bool {
        self.present().is_some_and(|c| c.lt(bound))
    }

    /// Claims the value is present and `> bound`.
    pub fn gt(self, bound: T) -> bool {
        self.present().is_some_and(|c| c.gt(bound))
    }

    /// Claims the value is present and `lo <= value <= hi`.
    pub fn between(self, lo: T, hi: T) -> bool {
        self.present().is_some_and(|c| c.between(lo, hi))
    }
}

impl ClaimBuilder<'_, Present<f64>> {
    /// Claims the value is present and neither NaN nor infinite.
    pub fn is_finite(self) -> bool {
        self.present().is_some_and(|c| c.is_finite())
    }

    /// Claims the value is present and `|value - target| <= tol`.
    pub fn near(self, target: f64, tol: f64) -> bool {
        self.present().is_some_and(|c| c.near(target, tol))
    }
}

/// The failure messages of `v`, in order (for tests).
#[cfg(test)]
pub(crate) fn failure_messages(v: &Verdict) -> Vec<&str> {
    v.result()
        .details
        .iter()
        .map(|d| d.message.as_str())
        .collect()
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
        let messages = crate::claim::failure_messages(&v);
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
    fn claim_present_compares_some_and_fails_none() {
        let p99: Option<f64> = Some(450.0);
        let iters: Option<u64> = Some(12);
        let name: Option<&str> = Some("spin");
        let mut v = Verdict::new();
        assert!(claim_present!(v, p99).at_most(500.0));
        assert!(claim_present!(v, p99).lt(451.0));
        assert!(claim_present!(v, p99).is_finite());
        assert!(claim_present!(v, p99).near(445.0, 5.0));
        assert!(claim_present!(v, iters).at_least(12));
        assert!(claim_present!(v, iters).gt(11));
        assert!(claim_present!(v, iters).between(10, 20));
        assert!(claim_present!(v, iters).ne(13));
        assert!(claim_present!(v, name).eq("spin"));
        assert!(v.is_pass(), "{v}");

        assert!(!claim_present!(v, iters).at_least(100));
        assert!(!claim_present!(v, name).eq("yield"));
        assert_eq!(v.result().details.len(), 2);
        assert_eq!(
            v.result().details[0].message,
            "claim failed: iters (= 12) >= 100"
        );
        assert_eq!(
            v.result().details[1].message,
            "claim failed: name (= \"spin\") == \"yield\""
        );
    }

    #[test]
    fn claim_present_on_none_fails_whatever_follows() {
        let p99: Option<f64> = None;
        let iters: Option<u64> = None;
        let mut v = Verdict::new().with_log_passes(true);
        assert!(!claim_present!(v, p99).at_most(500.0));
        assert!(!claim_present!(v, p99).is_finite());
        assert!(!claim_present!(v, p99).near(0.0, 1.0));
        assert!(!claim_present!(v, iters).at_least(0));
        assert!(!claim_present!(v, iters).lt(1));
        assert!(!claim_present!(v, iters).gt(1));
        assert!(!claim_present!(v, iters).between(0, u64::MAX));
        assert!(!claim_present!(v, iters).eq(0));
        assert!(!claim_present!(v, iters).ne(0));
        assert!(!claim_present!(v, None::<i32>)
            .kind(DetailKind::Benchmark)
            .because("the bench must report it")
            .cgroup("cg_2")
            .at_most(5));
        assert!(v.result().notes.is_empty());
        let d = &v.result().details;
        assert_eq!(d.len(), 10);
        assert_eq!(d[0].message, "claim failed: p99 is absent");
        assert!(d[1..9]
            .iter()
            .all(|d| d.message.ends_with(" is absent") && d.kind == DetailKind::Other));
        assert_eq!((d[3].measured, d[3].bound), (None, None));
        assert_eq!(
            d[9].message,
            "claim failed: None::<i32> is absent (because the bench must report it)"
        );
        assert_eq!(d[9].kind, DetailKind::Benchmark);
        assert_eq!(d[9].cgroup.as_deref(), Some("cg_2"));
    }

    #[test]
    fn references_are_claim_values() {
        let samples = [3_u64, 9];
        let mut v = Verdict::new();
        let biggest = samples.iter().max();
        assert!(claim_present!(v, biggest).at_most(&9));
        assert!(!claim!(v, &samples[0]).at_least(&4));
        assert_eq!(only_message(&v), "claim failed: &samples[0] (= 3) >= 4");
    }

    #[test]
    fn note_value_and_inconclusive_if() {
        let mut v = Verdict::new();
        v.note_value("max_wchar", 12345);
        v.note_value(String::from("ratio"), 0.5);
        assert!(!v.inconclusive_if(false, "never"));
        assert!(v.is_pass());
        assert!(v.inconclusive_if(true, "only 1 sample"));
        assert!(v.is_inconclusive());
        assert_eq!(
            v.result().notes,
            vec!["max_wchar = 12345", "ratio = 0.5", "only 1 sample"]
        );
        claim!(v, 1_u64).at_least(2);
        assert!(v.inconclusive_if(true, "still noted"));
        assert!(v.is_fail());
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(110.0), "110");
        assert_eq!(short(0.1 + 0.2), "0.3");
        assert_eq!(short(57.333333333333336), "57.3333");
        assert_eq!(short(-1234567.891), "-1234568");
        assert_eq!(short(0.000001234567), "0.00000123457");
        assert_eq!(short(f64::NAN), "NaN");
        assert_eq!(short(f64::NEG_INFINITY), "-inf");
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
        v.into_anyhow_or_log().expect("passing verdict");
    }
}
