//! Patterns over samples in time, claimed on a numeric [`claim_seq!`](crate::claim_seq!).
//!
//! Each pattern judges the whole sequence `x[0..n]` and names the first sample that breaks
//! it, e.g. `claim failed: iters (= [10, 30, 25]) is nondecreasing; fails at [2]: 30 -> 25`,
//! with that sample as the detail's `measured` value and the bound it broke as `bound`.
//! Rules shared by every pattern:
//!
//! - A NaN sample anywhere fails the claim (`fails at [i]: NaN`), whatever the length.
//! - Too few samples to judge makes the verdict inconclusive (a note
//!   `claim inconclusive: ...; needs at least 2 samples, got 1`), not a pass, and the
//!   pattern returns false. Step patterns (`nondecreasing`, `strictly_increasing`,
//!   `rate_within`) need 2 samples; the others need 1.
//! - Failures default to [`DetailKind::Temporal`] (set another with `.kind(..)`).
//! - Arithmetic (steps, means, ratios) is done in `f64`; orderings compare the values.
//!
//! The patterns:
//!
//! - `nondecreasing()`: `x[i-1] <= x[i]` for every step (equal neighbours are fine).
//! - `strictly_increasing()`: `x[i-1] < x[i]` for every step (equal neighbours fail).
//! - `rate_within(lo, hi)`: every step `x[i] - x[i-1]` lies in `[lo, hi]`.
//! - `steady_within(pct)`: every value lies within `pct`% of the mean `m`:
//!   `|x[i] - m| <= |m| * pct / 100` (so a zero mean needs every value to be 0).
//! - `converges_to(target, tol)`: some sample gets within `tol` of `target`
//!   (`|x[i] - target| <= tol`), and from the first such sample `k` on, every sample stays
//!   within `tol` (so the last one is within it too). Samples before `k` are not judged;
//!   the error may wobble inside the band, but never grows past `tol` again.
//! - `ratio_within(&other, lo, hi)`: the sequences have equal lengths and every
//!   `x[i] / other[i]` lies in `[lo, hi]` (a zero divisor gives an infinite or NaN ratio,
//!   which fails unless the bound is infinite).
//! - `always_true()` (on `bool` sequences): every sample is `true`.

use std::fmt::Display;

use crate::claim::{short, show_items, ClaimBuilder, ClaimValue, Recorder};
use crate::claim_seq::AsSeq;
use crate::result::DetailKind;

/// Where a pattern broke: the message's tail, and the numbers for the detail.
struct Broken {
    at: String,
    measured: Option<f64>,
    bound: Option<f64>,
}

impl Broken {
    fn new(at: String, measured: f64, bound: f64) -> Self {
        Self {
            at,
            measured: (!measured.is_nan()).then_some(measured),
            bound: (!bound.is_nan()).then_some(bound),
        }
    }
}

/// Judges `what` about `seq`: `early` (NaN, mismatched lengths) fails first, fewer than
/// `min_len` samples is inconclusive, otherwise `check` decides.
fn judge<T: Display>(
    rec: Recorder<'_>,
    seq: &[T],
    what: &str,
    min_len: usize,
    early: Option<String>,
    check: impl FnOnce() -> Result<(), Broken>,
) -> bool {
    let rec = rec.default_kind(DetailKind::Temporal);
    let claim = format!("{} (= {}) {what}", rec.expr(), show_items(seq, '[', ']'));
    if let Some(why) = early {
        return rec.record(false, format!("{claim}; {why}"), None, None);
    }
    if seq.len() < min_len {
        let needs = if min_len == 1 { "sample" } else { "samples" };
        let reason = format!(
            "{claim}; needs at least {min_len} {needs}, got {}",
            seq.len()
        );
        return rec.inconclusive(reason);
    }
    match check() {
        Ok(()) => rec.record(true, claim, None, None),
        Err(b) => rec.record(false, format!("{claim}; {}", b.at), b.measured, b.bound),
    }
}

/// `fails at [i]: NaN` for the first NaN sample, if any.
fn nan_at<T: ClaimValue>(seq: &[T]) -> Option<String> {
    let i = seq.iter().position(|x| x.to_f64().is_nan())?;
    Some(format!("fails at [{i}]: NaN"))
}

/// Every step `(i, x[i-1], x[i])`, for `i` in `1..n`.
fn steps<T: Copy>(seq: &[T]) -> impl Iterator<Item = (usize, T, T)> + '_ {
    seq.iter()
        .zip(seq.iter().skip(1))
        .enumerate()
        .map(|(i, (&a, &b))| (i + 1, a, b))
}

impl<'a, T: ClaimValue> ClaimBuilder<'a, AsSeq<'a, T>> {
    /// Claims `x[i-1] <= x[i]` for every step (needs 2 samples).
    pub fn nondecreasing(self) -> bool {
        self.monotonic("is nondecreasing", |a, b| a <= b)
    }

    /// Claims `x[i-1] < x[i]` for every step: equal neighbours fail (needs 2 samples).
    pub fn strictly_increasing(self) -> bool {
        self.monotonic("is strictly increasing", |a, b| a < b)
    }

    fn monotonic(self, what: &str, ordered: fn(T, T) -> bool) -> bool {
        let seq = self.value.0;
        judge(self.rec, seq, what, 2, nan_at(seq), || {
            match steps(seq).find(|&(_, a, b)| !ordered(a, b)) {
                Some((i, a, b)) => Err(Broken::new(
                    format!("fails at [{i}]: {a} -> {b}"),
                    b.to_f64(),
                    a.to_f64(),
                )),
                None => Ok(()),
            }
        })
    }

    /// Claims every step `x[i] - x[i-1]` lies in `[lo, hi]` (needs 2 samples).
    pub fn rate_within(self, lo: impl ClaimValue, hi: impl ClaimValue) -> bool {
        let seq = self.value.0;
        let what = format!("has every step in [{lo}, {hi}]");
        let (lo, hi) = (lo.to_f64(), hi.to_f64());
        judge(self.rec, seq, &what, 2, nan_at(seq), || {
            for (i, a, b) in steps(seq) {
                let step = b.to_f64() - a.to_f64();
                if !(lo <= step && step <= hi) {
                    let bound = if step < lo { lo } else { hi };
                    let at = format!("fails at [{i}]: {a} -> {b} (step {})", short(step));
                    return Err(Broken::new(at, step, bound));
                }
            }
            Ok(())
        })
    }

    /// Claims every value lies within `pct`% of the mean `m`: `|x - m| <= |m| * pct / 100`.
    pub fn steady_within(self, pct: impl ClaimValue) -> bool {
        let seq = self.value.0;
        let what = format!("stays within {pct}% of its mean");
        let pct = pct.to_f64();
        judge(self.rec, seq, &what, 1, nan_at(seq), || {
            let mean = seq.iter().map(|x| x.to_f64()).sum::<f64>() / seq.len() as f64;
            let band = mean.abs() * pct / 100.0;
            for (i, x) in seq.iter().enumerate() {
                let v = x.to_f64();
                // Written so a NaN distance (an infinite sample) is outside too.
                let inside = (v - mean).abs() <= band;
                if !inside {
                    let bound = if v < mean { mean - band } else { mean + band };
                    let at = format!(
                        "fails at [{i}]: {x} outside [{}, {}] (mean {})",
                        short(mean - band),
                        short(mean + band),
                        short(mean)
                    );
                    return Err(Broken::new(at, v, bound));
                }
            }
            Ok(())
        })
    }

    /// Claims the samples get within `tol` of `target` and, from the first that does,
    /// all stay within it (see the [module docs](crate::temporal)).
    pub fn converges_to(self, target: impl ClaimValue, tol: impl ClaimValue) -> bool {
        let seq = self.value.0;
        let what = format!("converges to {target} +/- {tol}");
        let (target, tol) = (target.to_f64(), tol.to_f64());
        let within = move |x: f64| (x - target).abs() <= tol;
        let edge = move |x: f64| {
            if x > target {
                target + tol
            } else {
                target - tol
            }
        };
        judge(self.rec, seq, &what, 1, nan_at(seq), || {
            let Some(first) = seq.iter().position(|x| within(x.to_f64())) else {
                // `judge` asks for at least one sample before calling this.
                let last = seq.len() - 1;
                let x = &seq[last];
                return Err(Broken::new(
                    format!("never within it, last [{last}]: {x}"),
                    x.to_f64(),
                    edge(x.to_f64()),
                ));
            };
            let left = seq
                .iter()
                .enumerate()
                .skip(first + 1)
                .find(|(_, x)| !within(x.to_f64()));
            match left {
                Some((i, x)) => Err(Broken::new(
                    format!("within it from [{first}] but left at [{i}]: {x}"),
                    x.to_f64(),
                    edge(x.to_f64()),
                )),
                None => Ok(()),
            }
        })
    }

    /// Claims `other` has the same length and every `x[i] / other[i]` lies in `[lo, hi]`.
    pub fn ratio_within<U: ClaimValue>(
        self,
        other: &[U],
        lo: impl ClaimValue,
        hi: impl ClaimValue,
    ) -> bool {
        let seq = self.value.0;
        let what = format!("/ {} stays in [{lo}, {hi}]", show_items(other, '[', ']'));
        let (lo, hi) = (lo.to_f64(), hi.to_f64());
        let early = nan_at(seq).or_else(|| {
            (seq.len() != other.len())
                .then(|| format!("lengths differ: {} vs {}", seq.len(), other.len()))
        });
        judge(self.rec, seq, &what, 1, early, || {
            for (i, (a, b)) in seq.iter().zip(other).enumerate() {
                let ratio = a.to_f64() / b.to_f64();
                if !(lo <= ratio && ratio <= hi) {
                    let bound = if ratio < lo { lo } else { hi };
                    let at = format!("fails at [{i}]: {a} / {b} = {}", short(ratio));
                    return Err(Broken::new(at, ratio, bound));
                }
            }
            Ok(())
        })
    }
}

impl<'a> ClaimBuilder<'a, AsSeq<'a, bool>> {
    /// Claims every sample is `true` (needs 1 sample); a failure counts the false ones.
    pub fn always_true(self) -> bool {
        let seq = self.value.0;
        judge(self.rec, seq, "is always true", 1, None, || {
            let falses = seq.iter().filter(|&&b| !b).count();
            match seq.iter().position(|&b| !b) {
                Some(i) => Err(Broken::new(
                    format!("false at [{i}] ({falses} of {} false)", seq.len()),
                    falses as f64,
                    0.0,
                )),
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::claim::Verdict;
    use crate::claim_seq;
    use crate::result::{DetailKind, Outcome};

    use crate::claim::failure_messages as messages;

    fn only_message(v: &Verdict) -> &str {
        assert_eq!(v.result().details.len(), 1, "{v}");
        v.result().details[0].message.as_str()
    }

    #[test]
    fn monotonic_patterns_pass_and_fail() {
        let iters: Vec<u64> = vec![10, 30, 30, 45];
        let mut v = Verdict::new();
        assert!(claim_seq!(v, iters).nondecreasing());
        assert!(claim_seq!(v, [1.5, 2.0, 2.5]).strictly_increasing());
        assert!(claim_seq!(v, [-3, -1]).strictly_increasing());
        assert!(v.is_pass(), "{v}");

        // Equal neighbours: fine for nondecreasing, not for strictly_increasing.
        assert!(!claim_seq!(v, iters).strictly_increasing());
        assert!(!claim_seq!(v, [10, 30, 25]).nondecreasing());
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: iters (= [10, 30, 30, 45]) is strictly increasing; \
                 fails at [2]: 30 -> 30",
                "claim failed: [10, 30, 25] (= [10, 30, 25]) is nondecreasing; \
                 fails at [2]: 30 -> 25",
            ]
        );
        let d = &v.result().details[1];
        assert_eq!((d.measured, d.bound), (Some(25.0), Some(30.0)));
        assert_eq!(d.kind, DetailKind::Temporal);
    }

    #[test]
    fn too_few_samples_is_inconclusive() {
        let empty: Vec<f64> = Vec::new();
        let one = [5_u64];
        let mut v = Verdict::new();
        assert!(!claim_seq!(v, empty).nondecreasing());
        assert!(!claim_seq!(v, one).strictly_increasing());
        assert!(!claim_seq!(v, one).rate_within(0, 1));
        assert!(!claim_seq!(v, empty).steady_within(10));
        assert!(!claim_seq!(v, empty).converges_to(1, 0.5));
        assert!(!claim_seq!(v, empty).ratio_within(&empty, 0, 1));
        assert!(!v.claim_seq::<bool>("flags", &[]).always_true());
        assert!(v.is_inconclusive(), "{v}");
        assert!(v.result().details.is_empty());
        assert_eq!(
            v.result().notes,
            vec![
                "claim inconclusive: empty (= []) is nondecreasing; needs at least 2 samples, \
                 got 0",
                "claim inconclusive: one (= [5]) is strictly increasing; needs at least 2 \
                 samples, got 1",
                "claim inconclusive: one (= [5]) has every step in [0, 1]; needs at least 2 \
                 samples, got 1",
                "claim inconclusive: empty (= []) stays within 10% of its mean; needs at least \
                 1 sample, got 0",
                "claim inconclusive: empty (= []) converges to 1 +/- 0.5; needs at least 1 \
                 sample, got 0",
                "claim inconclusive: empty (= []) / [] stays in [0, 1]; needs at least 1 \
                 sample, got 0",
                "claim inconclusive: flags (= []) is always true; needs at least 1 sample, \
                 got 0",
            ]
        );

        // One sample is enough for the value patterns.
        let mut v = Verdict::new();
        assert!(claim_seq!(v, one).steady_within(0));
        assert!(claim_seq!(v, one).converges_to(5, 0));
        assert!(claim_seq!(v, one).ratio_within(&[5], 1, 1));
        assert!(claim_seq!(v, [true]).always_true());
        assert!(v.is_pass(), "{v}");
    }

    #[test]
    fn nan_fails_every_numeric_pattern() {
        let nan = f64::NAN;
        let s = [1.0, nan];
        let mut v = Verdict::new();
        assert!(!claim_seq!(v, s).nondecreasing());
        assert!(!claim_seq!(v, [nan]).strictly_increasing());
        assert!(!claim_seq!(v, s).rate_within(-10, 10));
        assert!(!claim_seq!(v, s).steady_within(100));
        assert!(!claim_seq!(v, s).converges_to(1, 5));
        assert!(!claim_seq!(v, [2.0, 2.0]).ratio_within(&[1.0, nan], 0, 5));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: s (= [1, NaN]) is nondecreasing; fails at [1]: NaN",
                "claim failed: [nan] (= [NaN]) is strictly increasing; fails at [0]: NaN",
                "claim failed: s (= [1, NaN]) has every step in [-10, 10]; fails at [1]: NaN",
                "claim failed: s (= [1, NaN]) stays within 100% of its mean; fails at [1]: NaN",
                "claim failed: s (= [1, NaN]) converges to 1 +/- 5; fails at [1]: NaN",
                "claim failed: [2.0, 2.0] (= [2, 2]) / [1, NaN] stays in [0, 5]; \
                 fails at [1]: 2 / NaN = NaN",
            ]
        );
        assert_eq!(v.result().details[5].measured, None);
    }

    #[test]
    fn rate_within_bounds_every_step() {
        let iters = [0_u64, 100, 205, 300];
        let mut v = Verdict::new();
        assert!(claim_seq!(v, iters).rate_within(95, 105));
        assert!(claim_seq!(v, [0.0, 0.1, 0.3]).rate_within(0.0, 0.25));
        assert!(v.is_pass(), "{v}");
        assert!(!claim_seq!(v, iters).rate_within(100, 105));
        // Steps of an unsigned sequence may be negative.
        assert!(!claim_seq!(v, [5_u32, 3]).rate_within(0, 10));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: iters (= [0, 100, 205, 300]) has every step in [100, 105]; \
                 fails at [3]: 205 -> 300 (step 95)",
                "claim failed: [5_u32, 3] (= [5, 3]) has every step in [0, 10]; \
                 fails at [1]: 5 -> 3 (step -2)",
            ]
        );
        let d = &v.result().details;
        assert_eq!((d[0].measured, d[0].bound), (Some(95.0), Some(100.0)));
        assert_eq!((d[1].measured, d[1].bound), (Some(-2.0), Some(0.0)));
    }

    #[test]
    fn steady_within_bounds_every_value_around_the_mean() {
        let rate = [95, 100, 105];
        let mut v = Verdict::new();
        assert!(claim_seq!(v, rate).steady_within(5));
        assert!(claim_seq!(v, [0, 0]).steady_within(0));
        assert!(v.is_pass(), "{v}");
        assert!(!claim_seq!(v, rate).steady_within(4.5));
        assert!(!claim_seq!(v, [10.0, 20.0, 60.0]).steady_within(50));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: rate (= [95, 100, 105]) stays within 4.5% of its mean; \
                 fails at [0]: 95 outside [95.5, 104.5] (mean 100)",
                "claim failed: [10.0, 20.0, 60.0] (= [10, 20, 60]) stays within 50% of its \
                 mean; fails at [0]: 10 outside [15, 45] (mean 30)",
            ]
        );
        let d = &v.result().details[0];
        assert_eq!((d.measured, d.bound), (Some(95.0), Some(95.5)));
    }

    #[test]
    fn converges_to_settles_inside_the_band() {
        let util = [10.0, 30.0, 48.0, 53.0, 49.0, 50.0];
        let mut v = Verdict::new();
        // Wobbling inside the band after entering it is fine.
        assert!(claim_seq!(v, util).converges_to(50, 5));
        // Entering at the very last sample is enough.
        assert!(claim_seq!(v, [0, 0, 7]).converges_to(8, 1));
        assert!(v.is_pass(), "{v}");

        assert!(!claim_seq!(v, util).converges_to(50, 2));
        assert!(!claim_seq!(v, [10, 30, 40]).converges_to(50, 5));
        assert!(!claim_seq!(v, [50, 60]).converges_to(50, 5));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: util (= [10, 30, 48, 53, 49, 50]) converges to 50 +/- 2; \
                 within it from [2] but left at [3]: 53",
                "claim failed: [10, 30, 40] (= [10, 30, 40]) converges to 50 +/- 5; \
                 never within it, last [2]: 40",
                "claim failed: [50, 60] (= [50, 60]) converges to 50 +/- 5; \
                 within it from [0] but left at [1]: 60",
            ]
        );
        let d = &v.result().details;
        assert_eq!((d[0].measured, d[0].bound), (Some(53.0), Some(52.0)));
        assert_eq!((d[1].measured, d[1].bound), (Some(40.0), Some(45.0)));
    }

    #[test]
    fn ratio_within_compares_element_wise() {
        let busy = vec![50_u64, 100, 148];
        let total = vec![100_u64, 200, 300];
        let mut v = Verdict::new();
        assert!(claim_seq!(v, busy).ratio_within(&total, 0.45, 0.5));
        assert!(v.is_pass(), "{v}");
        assert!(!claim_seq!(v, busy).ratio_within(&total, 0.495, 0.5));
        assert!(!claim_seq!(v, busy).ratio_within(&total[..2], 0, 1));
        assert!(!claim_seq!(v, [1, 2]).ratio_within(&[1, 0], 0, 10));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: busy (= [50, 100, 148]) / [100, 200, 300] stays in \
                 [0.495, 0.5]; fails at [2]: 148 / 300 = 0.493333",
                "claim failed: busy (= [50, 100, 148]) / [100, 200] stays in [0, 1]; \
                 lengths differ: 3 vs 2",
                "claim failed: [1, 2] (= [1, 2]) / [1, 0] stays in [0, 10]; \
                 fails at [1]: 2 / 0 = inf",
            ]
        );
        let d = &v.result().details;
        assert_eq!(d[0].bound, Some(0.495));
        assert_eq!(
            (d[2].measured, d[2].bound),
            (Some(f64::INFINITY), Some(10.0))
        );
    }

    #[test]
    fn always_true_counts_false_samples() {
        let on_cpuset = [true, false, true, false];
        let mut v = Verdict::new();
        assert!(claim_seq!(v, [true, true]).always_true());
        assert!(!claim_seq!(v, on_cpuset).always_true());
        assert_eq!(
            only_message(&v),
            "claim failed: on_cpuset (= [true, false, true, false]) is always true; \
             false at [1] (2 of 4 false)"
        );
        let d = &v.result().details[0];
        assert_eq!((d.measured, d.bound), (Some(2.0), Some(0.0)));
    }

    #[test]
    fn temporal_claims_keep_a_chosen_kind_and_log_passes() {
        let mut v = Verdict::new().with_log_passes(true);
        assert!(claim_seq!(v, [1, 2]).nondecreasing());
        assert!(!claim_seq!(v, [2, 1])
            .kind(DetailKind::Monitor)
            .because("clock must not go back")
            .worker(3)
            .nondecreasing());
        assert_eq!(
            v.result().notes,
            vec!["claim held: [1, 2] (= [1, 2]) is nondecreasing"]
        );
        let d = &v.result().details[0];
        assert_eq!(d.kind, DetailKind::Monitor);
        assert_eq!(d.worker, Some(3));
        assert!(
            d.message.ends_with("(because clock must not go back)"),
            "{}",
            d.message
        );
        // A failure outranks an inconclusive pattern.
        v.claim_seq::<u64>("none", &[]).nondecreasing();
        assert_eq!(v.result().outcome, Outcome::Fail);
    }
}
