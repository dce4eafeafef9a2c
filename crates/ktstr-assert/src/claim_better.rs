//! Claims that a metric beat its baseline ([`claim_better!`](crate::claim_better!)), in the
//! direction a [`Polarity`] gives.
//!
//! - `claim_better!(v, p99, Polarity::LowerBetter).better_than(&baseline)` holds when
//!   `p99 < baseline` (strictly better; equal is not better).
//! - `.by_at_least(margin)` before `.better_than(&..)` asks for a margin that is a FRACTION
//!   of the baseline's magnitude instead (`0.10` = 10 % better, as in the existing ktstr):
//!   `p99 <= baseline - |baseline| * margin` (lower is better) or
//!   `ops >= baseline + |baseline| * margin` (higher is better). The bound itself counts as
//!   good enough, so `by_at_least(0.0)` means "no regression", and a negative margin
//!   tolerates a regression of that size (`by_at_least(-0.05)`: at most 5 % worse).
//! - A margin (`!= 0`) of a zero baseline is undefined: the verdict becomes inconclusive
//!   and the claim returns false. NaN anywhere fails.
//!
//! `claim failed: p99 (= 95) <= 90 (baseline 100 - 10%, lower is better)` names the metric,
//! its value, the bound it had to meet, and how that bound came from the baseline.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::claim::{short, ClaimBuilder, ClaimValue, Verdict};

/// Records a claim that a metric beats a baseline, using the expression's source text as
/// its name.
///
/// `claim_better!(v, expr, polarity)` is `v.claim_better(stringify!(expr), expr, polarity)`;
/// finish it with `.better_than(&baseline)`, optionally after `.by_at_least(margin)`.
#[macro_export]
macro_rules! claim_better {
    ($v:expr, $e:expr, $polarity:expr) => {
        $v.claim_better(stringify!($e), $e, $polarity)
    };
}

/// Which direction of a metric is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Polarity {
    /// Larger values are better (throughput, iterations, work units).
    HigherBetter,
    /// Smaller values are better (latency, run delay, migrations).
    LowerBetter,
}

impl fmt::Display for Polarity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Polarity::HigherBetter => "higher is better",
            Polarity::LowerBetter => "lower is better",
        })
    }
}

/// A metric under a baseline claim ([`Verdict::claim_better`]): its value, direction, margin.
#[derive(Debug, Clone, Copy)]
pub struct Better<T> {
    value: T,
    polarity: Polarity,
    margin: Option<f64>,
}

/// The builder [`claim_better!`](crate::claim_better!) returns.
pub type BetterClaim<'a, T> = ClaimBuilder<'a, Better<T>>;

impl Verdict {
    /// Starts a claim that `value` (named `expr` in messages) beats a baseline in the
    /// direction `polarity` gives.
    pub fn claim_better<'a, T: ClaimValue>(
        &'a mut self,
        expr: &'a str,
        value: T,
        polarity: Polarity,
    ) -> BetterClaim<'a, T> {
        self.claim(
            expr,
            Better {
                value,
                polarity,
                margin: None,
            },
        )
    }
}

impl<T: ClaimValue> ClaimBuilder<'_, Better<T>> {
    /// Asks for an improvement of at least `margin`, a fraction of the baseline (`0.10` =
    /// 10 %; see the [module docs](mod@crate::claim_better)); the claim is recorded by
    /// [`better_than`](Self::better_than).
    pub fn by_at_least(mut self, margin: impl ClaimValue) -> Self {
        self.value.margin = Some(margin.to_f64());
        self
    }

    /// Claims the value beats `baseline`: strictly, or by the margin
    /// [`by_at_least`](Self::by_at_least) set.
    pub fn better_than(self, baseline: &T) -> bool {
        let ClaimBuilder { rec, value } = self;
        let Better {
            value: v,
            polarity,
            margin,
        } = value;
        let b = *baseline;
        let Some(m) = margin else {
            let (holds, op) = match polarity {
                Polarity::HigherBetter => (v > b, ">"),
                Polarity::LowerBetter => (v < b, "<"),
            };
            let relation = format!("{op} {b} (baseline, {polarity})");
            return rec.compare(holds, &v, &relation, Some(v.to_f64()), Some(b.to_f64()));
        };
        let base = b.to_f64();
        // Shown in percent, rounded like every number in a claim message.
        let pct = short(m * 100.0);
        if base == 0.0 && m != 0.0 && !m.is_nan() {
            let claim = format!(
                "{} (= {v}) better than baseline {b} by at least {pct}% ({polarity}); \
                 a percentage of a zero baseline is undefined",
                rec.expr()
            );
            return rec.inconclusive(claim);
        }
        let delta = base.abs() * m;
        let measured = v.to_f64();
        let (holds, op, bound, sign) = match polarity {
            Polarity::HigherBetter => {
                let bound = base + delta;
                (
                    measured >= bound,
                    ">=",
                    bound,
                    if m < 0.0 { '-' } else { '+' },
                )
            }
            Polarity::LowerBetter => {
                let bound = base - delta;
                (
                    measured <= bound,
                    "<=",
                    bound,
                    if m < 0.0 { '+' } else { '-' },
                )
            }
        };
        let relation = format!(
            "{op} {} (baseline {b} {sign} {}%, {polarity})",
            short(bound),
            short(m.abs() * 100.0)
        );
        rec.compare(holds, &v, &relation, Some(measured), Some(bound))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::DetailKind;

    use crate::claim::failure_messages as messages;

    #[test]
    fn strictly_better_follows_polarity() {
        let p99 = 80.0;
        let ops = 1200_u64;
        let mut v = Verdict::new();
        assert!(claim_better!(v, p99, Polarity::LowerBetter).better_than(&100.0));
        assert!(claim_better!(v, ops, Polarity::HigherBetter).better_than(&1000));
        assert!(v.is_pass(), "{v}");
        assert!(!claim_better!(v, p99, Polarity::HigherBetter).better_than(&100.0));
        assert!(!claim_better!(v, ops, Polarity::LowerBetter).better_than(&1000));
        // Equal is not better.
        assert!(!claim_better!(v, ops, Polarity::HigherBetter).better_than(&1200));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: p99 (= 80) > 100 (baseline, higher is better)",
                "claim failed: ops (= 1200) < 1000 (baseline, lower is better)",
                "claim failed: ops (= 1200) > 1200 (baseline, higher is better)",
            ]
        );
        let d = &v.result().details[1];
        assert_eq!((d.measured, d.bound), (Some(1200.0), Some(1000.0)));
    }

    #[test]
    fn by_at_least_asks_for_a_margin_of_the_baseline() {
        let p99 = 95.0;
        let ops = 1100_u64;
        let mut v = Verdict::new();
        assert!(claim_better!(v, p99, Polarity::LowerBetter)
            .by_at_least(0.05)
            .better_than(&100.0));
        assert!(claim_better!(v, ops, Polarity::HigherBetter)
            .by_at_least(0.1)
            .better_than(&1000));
        // Zero margin: no regression; a negative margin tolerates one.
        assert!(claim_better!(v, ops, Polarity::HigherBetter)
            .by_at_least(0.0)
            .better_than(&1100));
        assert!(claim_better!(v, p99, Polarity::LowerBetter)
            .by_at_least(-0.05)
            .better_than(&91.0));
        // A negative baseline: the margin is of its magnitude.
        assert!(claim_better!(v, -9.0, Polarity::HigherBetter)
            .by_at_least(0.1)
            .better_than(&-10.0));
        assert!(v.is_pass(), "{v}");

        assert!(!claim_better!(v, p99, Polarity::LowerBetter)
            .by_at_least(0.1)
            .better_than(&100.0));
        assert!(!claim_better!(v, ops, Polarity::HigherBetter)
            .by_at_least(0.125)
            .better_than(&1000));
        assert!(!claim_better!(v, p99, Polarity::LowerBetter)
            .by_at_least(-0.02)
            .better_than(&90.0));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: p99 (= 95) <= 90 (baseline 100 - 10%, lower is better)",
                "claim failed: ops (= 1100) >= 1125 (baseline 1000 + 12.5%, higher is better)",
                "claim failed: p99 (= 95) <= 91.8 (baseline 90 + 2%, lower is better)",
            ]
        );
        let d = &v.result().details[0];
        assert_eq!((d.measured, d.bound), (Some(95.0), Some(90.0)));
    }

    #[test]
    fn fractional_margins_print_as_round_percentages() {
        let p99 = 95.0;
        let mut v = Verdict::new();
        // 0.07 * 100 is 7.000000000000001 in f64: the message still says 7%.
        assert!(!claim_better!(v, p99, Polarity::LowerBetter)
            .by_at_least(0.07)
            .better_than(&100.0));
        assert_eq!(
            messages(&v),
            vec!["claim failed: p99 (= 95) <= 93 (baseline 100 - 7%, lower is better)"]
        );
    }

    #[test]
    fn zero_baseline_margin_is_inconclusive_and_nan_fails() {
        let ops = 5_u64;
        let mut v = Verdict::new();
        assert!(claim_better!(v, ops, Polarity::HigherBetter)
            .by_at_least(0.0)
            .better_than(&0));
        assert!(!claim_better!(v, ops, Polarity::HigherBetter)
            .by_at_least(0.1)
            .better_than(&0));
        assert!(v.is_inconclusive());
        assert_eq!(
            v.result().notes,
            vec![
                "claim inconclusive: ops (= 5) better than baseline 0 by at least 10% \
                 (higher is better); a percentage of a zero baseline is undefined"
            ]
        );
        assert!(!claim_better!(v, f64::NAN, Polarity::LowerBetter).better_than(&1.0));
        assert!(!claim_better!(v, 1.0, Polarity::LowerBetter)
            .by_at_least(f64::NAN)
            .better_than(&2.0));
        assert!(v.is_fail());
        assert_eq!(v.result().details.len(), 2);
    }

    #[test]
    fn better_claims_take_modifiers() {
        let mut v = Verdict::new().with_log_passes(true);
        assert!(v
            .claim_better("p99", 1.0, Polarity::LowerBetter)
            .better_than(&2.0));
        claim_better!(v, 3_u32, Polarity::LowerBetter)
            .kind(DetailKind::Benchmark)
            .because("the patch should cut latency")
            .cgroup("cg_0")
            .better_than(&2);
        assert_eq!(
            v.result().notes,
            vec!["claim held: p99 (= 1) < 2 (baseline, lower is better)"]
        );
        let d = &v.result().details[0];
        assert_eq!(d.kind, DetailKind::Benchmark);
        assert_eq!(d.cgroup.as_deref(), Some("cg_0"));
        assert_eq!(
            d.message,
            "claim failed: 3_u32 (= 3) < 2 (baseline, lower is better) \
             (because the patch should cut latency)"
        );
        assert_eq!(Polarity::HigherBetter.to_string(), "higher is better");
    }
}
