//! What an assertion concluded: an [`Outcome`], the failures behind it, notes, and stats.
//!
//! Results travel as JSON from the guest to the host, so every type here is serde-ready.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stats::CgroupStats;

/// Which kind of check produced an [`AssertDetail`], for filtering without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DetailKind {
    /// A worker did no work at all.
    NoProgress,
    /// A worker went too long between progress checkpoints.
    Stuck,
    /// Workers in one cgroup got too unequal a share of the CPU.
    Unfair,
    /// A worker ran on a CPU outside its cgroup's cpuset.
    Isolation,
    /// A worker ran outside its own allowed CPUs, or its affinity or policy could not be set.
    Affinity,
    /// A throughput, rate or latency bound was missed.
    Benchmark,
    /// Workers migrated between CPUs too often.
    Migration,
    /// A scheduler monitor threshold was crossed (imbalance, DSQ depth, rq clock).
    Monitor,
    /// The scheduler died after reporting an error exit.
    SchedulerCrashed,
    /// The scheduler exited without an error.
    SchedulerExitedCleanly,
    /// The scheduler died and nothing says why.
    SchedulerDiedUnknownReason,
    /// A scheduler event counter crossed its bound.
    SchedulerEvent,
    /// A property over a time series of samples failed.
    Temporal,
    /// A worker did not complete: it died or had to be killed.
    WorkerStuck,
    /// The scenario could not run here.
    Skip,
    /// Anything else, including custom claims without a kind.
    Other,
}

impl fmt::Display for DetailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One failure: which check, where, and the measured value against its bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssertDetail {
    /// Which kind of check failed.
    pub kind: DetailKind,
    /// What went wrong, readable on its own (names the cgroup, worker, value and bound).
    pub message: String,
    /// The cgroup the failure is about, when known.
    pub cgroup: Option<String>,
    /// The worker tid the failure is about, when it is about one worker.
    pub worker: Option<i32>,
    /// The measured value, when the check compares a number.
    pub measured: Option<f64>,
    /// The bound the measured value broke, when the check compares a number.
    pub bound: Option<f64>,
}

impl AssertDetail {
    /// A failure of `kind` with `message` and no location or numbers yet.
    pub fn new(kind: DetailKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            cgroup: None,
            worker: None,
            measured: None,
            bound: None,
        }
    }

    /// Sets the cgroup the failure is about.
    #[must_use]
    pub fn cgroup(mut self, cgroup: impl Into<String>) -> Self {
        self.cgroup = Some(cgroup.into());
        self
    }

    /// Sets the worker tid the failure is about.
    #[must_use]
    pub fn worker(mut self, tid: i32) -> Self {
        self.worker = Some(tid);
        self
    }

    /// Sets the measured value and the bound it broke.
    #[must_use]
    pub fn values(mut self, measured: f64, bound: f64) -> Self {
        self.measured = Some(measured);
        self.bound = Some(bound);
        self
    }
}

impl fmt::Display for AssertDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.kind, self.message)
    }
}

/// The overall conclusion. Severity: `Fail` > `Inconclusive` > `Pass`; `Skip` is neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Outcome {
    /// Every enabled check held.
    #[default]
    Pass,
    /// The data could not decide (too few samples, nothing measured).
    Inconclusive,
    /// At least one check failed.
    Fail,
    /// Nothing was judged: the scenario could not run here.
    Skip,
}

impl Outcome {
    /// Rank for combining: Pass 1, Inconclusive 2, Fail 3; Skip 0 so it never wins.
    pub const fn severity(self) -> u8 {
        match self {
            Outcome::Skip => 0,
            Outcome::Pass => 1,
            Outcome::Inconclusive => 2,
            Outcome::Fail => 3,
        }
    }

    /// The outcome of two results taken together: the more severe one (Skip yields).
    pub const fn combine(self, other: Outcome) -> Outcome {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Inconclusive => "INCONCLUSIVE",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        })
    }
}

/// The result of one or more assertions: outcome, failures, notes, and per-cgroup stats.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AssertResult {
    /// The overall conclusion.
    pub outcome: Outcome,
    /// Every failure, in the order found.
    pub details: Vec<AssertDetail>,
    /// Context for a reader: skip and inconclusive reasons, checks that could not run, passes.
    pub notes: Vec<String>,
    /// Aggregates per cgroup evaluated, keyed by cgroup name.
    pub stats: BTreeMap<String, CgroupStats>,
}

impl AssertResult {
    /// A passing result with nothing in it.
    pub fn pass() -> Self {
        Self::default()
    }

    /// A skipped result, with `reason` as its note.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Skip,
            notes: vec![reason.into()],
            ..Self::default()
        }
    }

    /// An inconclusive result, with `reason` as its note.
    pub fn inconclusive(reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Inconclusive,
            notes: vec![reason.into()],
            ..Self::default()
        }
    }

    /// A failed result holding `detail`.
    pub fn fail(detail: AssertDetail) -> Self {
        Self {
            outcome: Outcome::Fail,
            details: vec![detail],
            ..Self::default()
        }
    }

    /// True when nothing failed and nothing was inconclusive (a skip counts as passed).
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Pass | Outcome::Skip)
    }

    /// True when the outcome is exactly `Pass`.
    pub fn is_pass(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    /// True when the outcome is `Fail`.
    pub fn is_fail(&self) -> bool {
        self.outcome == Outcome::Fail
    }

    /// True when the outcome is `Skip`.
    pub fn is_skip(&self) -> bool {
        self.outcome == Outcome::Skip
    }

    /// True when the outcome is `Inconclusive`.
    pub fn is_inconclusive(&self) -> bool {
        self.outcome == Outcome::Inconclusive
    }

    /// Records a failure, making the outcome `Fail`.
    pub fn add_failure(&mut self, detail: AssertDetail) {
        self.outcome = self.outcome.combine(Outcome::Fail);
        self.details.push(detail);
    }

    /// Records a note without changing the outcome.
    pub fn add_note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Folds `other` in: worst outcome wins (Skip yields), details and notes append,
    /// stats entries are added (`other`'s win on a name clash).
    pub fn merge(&mut self, other: AssertResult) {
        self.outcome = self.outcome.combine(other.outcome);
        self.details.extend(other.details);
        self.notes.extend(other.notes);
        self.stats.extend(other.stats);
    }

    /// The first failure recorded, if any.
    pub fn first_failure(&self) -> Option<&AssertDetail> {
        self.details.first()
    }

    /// One line: the outcome, then the first failure (and how many more) or the notes.
    pub fn summary(&self) -> String {
        match (self.outcome, self.details.as_slice()) {
            (Outcome::Fail, [first, rest @ ..]) if !rest.is_empty() => {
                format!("FAIL: {} (+{} more)", first.message, rest.len())
            }
            (Outcome::Fail, [first]) => format!("FAIL: {}", first.message),
            (Outcome::Pass, _) if !self.stats.is_empty() => {
                format!("PASS ({} cgroup(s) checked)", self.stats.len())
            }
            (outcome, _) if self.notes.is_empty() => outcome.to_string(),
            (Outcome::Pass, _) => "PASS".to_string(),
            (outcome, _) => format!("{outcome}: {}", self.notes.join("; ")),
        }
    }
}

impl From<AssertDetail> for AssertResult {
    fn from(detail: AssertDetail) -> Self {
        Self::fail(detail)
    }
}

impl fmt::Display for AssertResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.details.len() {
            0 => writeln!(f, "{}", self.outcome)?,
            n => writeln!(f, "{} ({n} failure(s))", self.outcome)?,
        }
        for detail in &self.details {
            writeln!(f, "  {detail}")?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        for (name, stats) in &self.stats {
            writeln!(f, "  {name}: {stats}")?;
        }
        Ok(())
    }
}

/// The error a failed result becomes: every failure, one per line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} assertion failure(s):\n{}", details.len(), join_details(details))]
pub struct AssertFailed {
    /// The failures, in the order found.
    pub details: Vec<AssertDetail>,
}

fn join_details(details: &[AssertDetail]) -> String {
    details
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(msg: &str) -> AssertDetail {
        AssertDetail::new(DetailKind::Stuck, msg)
            .cgroup("cg_0")
            .worker(412)
            .values(3012.0, 2000.0)
    }

    #[test]
    fn severity_orders_fail_over_inconclusive_over_pass() {
        use Outcome::*;
        assert_eq!(Pass.combine(Inconclusive), Inconclusive);
        assert_eq!(Inconclusive.combine(Pass), Inconclusive);
        assert_eq!(Inconclusive.combine(Fail), Fail);
        assert_eq!(Fail.combine(Inconclusive), Fail);
        assert_eq!(Fail.combine(Pass), Fail);
        // Skip is neutral: it never overrides, and anything overrides it.
        assert_eq!(Skip.combine(Pass), Pass);
        assert_eq!(Pass.combine(Skip), Pass);
        assert_eq!(Fail.combine(Skip), Fail);
        assert_eq!(Skip.combine(Skip), Skip);
        assert_eq!(Skip.combine(Inconclusive), Inconclusive);
    }

    #[test]
    fn merge_takes_worst_outcome_and_appends() {
        let mut r = AssertResult::skip("no cpuset");
        r.merge(AssertResult::pass());
        assert!(r.is_pass());
        r.merge(AssertResult::inconclusive("too few samples"));
        assert!(r.is_inconclusive());
        assert!(!r.passed());
        r.merge(AssertResult::fail(detail("gap")));
        assert!(r.is_fail());
        r.merge(AssertResult::pass());
        assert!(r.is_fail());
        assert_eq!(r.notes, vec!["no cpuset", "too few samples"]);
        assert_eq!(r.first_failure().map(|d| d.message.as_str()), Some("gap"));
    }

    #[test]
    fn passed_counts_skip_but_not_inconclusive() {
        assert!(AssertResult::pass().passed());
        assert!(AssertResult::skip("x").passed());
        assert!(!AssertResult::inconclusive("x").passed());
        assert!(!AssertResult::fail(detail("x")).passed());
    }

    #[test]
    fn summary_is_one_line() {
        assert_eq!(AssertResult::pass().summary(), "PASS");
        assert_eq!(
            AssertResult::skip("needs 4 CPUs").summary(),
            "SKIP: needs 4 CPUs"
        );
        let mut r = AssertResult::fail(detail("first"));
        r.add_failure(detail("second"));
        assert_eq!(r.summary(), "FAIL: first (+1 more)");
        assert!(!r.summary().contains('\n'));
    }

    #[test]
    fn display_lists_failures_and_notes() {
        let mut r = AssertResult::fail(detail("cg_0: worker 412 stuck"));
        r.add_note("isolation: no cpuset");
        let text = r.to_string();
        assert!(text.starts_with("FAIL (1 failure(s))\n"), "{text}");
        assert!(
            text.contains("  [Stuck] cg_0: worker 412 stuck\n"),
            "{text}"
        );
        assert!(text.contains("  note: isolation: no cpuset\n"), "{text}");
    }

    #[test]
    fn json_round_trip() {
        let mut r = AssertResult::fail(detail("cg_0: worker 412 stuck"));
        r.add_note("a note");
        r.stats.insert(
            "cg_0".into(),
            CgroupStats {
                num_workers: 2,
                spread: 3.5,
                ..CgroupStats::default()
            },
        );
        let text = serde_json::to_string(&r).expect("serialize");
        let back: AssertResult = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, r);
    }

    #[test]
    fn assert_failed_lists_every_failure() {
        let e = AssertFailed {
            details: vec![detail("one"), detail("two")],
        };
        assert_eq!(
            e.to_string(),
            "2 assertion failure(s):\n  [Stuck] one\n  [Stuck] two"
        );
    }
}
