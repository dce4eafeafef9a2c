//! Claims about sequences, where order matters ([`claim_seq!`](crate::claim_seq!)).
//!
//! Any slice, `Vec` or array can be claimed about: `empty`, `nonempty`, `contains` and sizes
//! here, and the patterns over samples in time (`nondecreasing`, `rate_within`,
//! `converges_to`, ...) in [`temporal`](crate::temporal).
//! `claim_seq!(v, tids).contains(&412)` records
//! `claim failed: tids (= [410, 411]) contains 412` when it does not hold.

use std::fmt::Debug;

use crate::claim::{show_items, ClaimBuilder, Dbg, Verdict};
use crate::claim_collection::ClaimCollection;

/// Records a claim about a sequence, using the expression's source text as its name.
///
/// `claim_seq!(v, expr)` is `v.claim_seq(stringify!(expr), &expr)`; `expr` may be a slice,
/// a `Vec`, an array or a reference to one. Finish it with a sequence comparison such as
/// `.len_at_least(3)` or a temporal pattern such as `.nondecreasing()`.
#[macro_export]
macro_rules! claim_seq {
    ($v:expr, $e:expr) => {
        $v.claim_seq(stringify!($e), &$e)
    };
}

/// A sequence under claim ([`Verdict::claim_seq`]).
pub struct AsSeq<'a, T>(pub(crate) &'a [T]);

/// The builder [`claim_seq!`](crate::claim_seq!) returns.
pub type SeqClaim<'a, T> = ClaimBuilder<'a, AsSeq<'a, T>>;

impl Verdict {
    /// Starts a claim that the sequence `value` (named `expr` in messages) satisfies a
    /// comparison or temporal pattern.
    pub fn claim_seq<'a, T>(&'a mut self, expr: &'a str, value: &'a [T]) -> SeqClaim<'a, T> {
        self.claim(expr, AsSeq(value))
    }
}

impl<T: PartialEq + Debug> ClaimCollection for AsSeq<'_, T> {
    type Item = T;

    fn size(&self) -> usize {
        self.0.len()
    }

    fn has(&self, item: &T) -> bool {
        self.0.contains(item)
    }

    fn show(&self) -> String {
        show_seq(self.0)
    }
}

/// `seq` as `[a, b, c]`, elements with `Debug`.
fn show_seq<T: Debug>(seq: &[T]) -> String {
    show_items(seq.iter().map(Dbg), '[', ']')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::DetailKind;

    use crate::claim::failure_messages as messages;

    #[test]
    fn every_seq_method_passes() {
        let tids = vec![410, 411, 410];
        let none: Vec<i32> = Vec::new();
        let mut v = Verdict::new();
        assert!(claim_seq!(v, none).empty());
        assert!(claim_seq!(v, tids).nonempty());
        assert!(claim_seq!(v, tids).contains(&411));
        assert!(claim_seq!(v, tids).contains(&410));
        assert!(claim_seq!(v, tids).len_eq(3));
        assert!(claim_seq!(v, tids).len_at_most(3));
        assert!(claim_seq!(v, tids).len_at_least(3));
        assert!(claim_seq!(v, tids[..2]).len_eq(2));
        assert!(claim_seq!(v, ["spin", "yield"]).contains(&"yield"));
        assert!(v.is_pass(), "{v}");
    }

    #[test]
    fn every_seq_method_fails_with_its_message() {
        let tids = vec![410, 411, 410];
        let none: &[u64] = &[];
        let mut v = Verdict::new();
        assert!(!claim_seq!(v, tids).empty());
        assert!(!claim_seq!(v, none).nonempty());
        assert!(!claim_seq!(v, tids).contains(&412));
        assert!(!claim_seq!(v, tids).len_eq(2));
        assert!(!claim_seq!(v, tids).len_at_most(2));
        assert!(!claim_seq!(v, tids).len_at_least(4));
        assert!(!claim_seq!(v, ["spin"]).contains(&"yield"));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: tids (= [410, 411, 410]) is empty",
                "claim failed: none (= []) is not empty",
                "claim failed: tids (= [410, 411, 410]) contains 412",
                "claim failed: tids.len() (= 3) == 2",
                "claim failed: tids.len() (= 3) <= 2",
                "claim failed: tids.len() (= 3) >= 4",
                "claim failed: [\"spin\"] (= [\"spin\"]) contains \"yield\"",
            ]
        );
        let d = &v.result().details;
        assert_eq!((d[0].measured, d[0].bound), (Some(3.0), Some(0.0)));
        assert_eq!((d[5].measured, d[5].bound), (Some(3.0), Some(4.0)));
    }

    #[test]
    fn seq_claims_take_modifiers_and_log_passes() {
        let samples: Vec<u64> = (1..=12).collect();
        let mut v = Verdict::new().with_log_passes(true);
        let claim: SeqClaim<'_, u64> = v.claim_seq("samples", &samples);
        assert!(claim.len_at_least(12));
        assert!(!claim_seq!(v, samples)
            .kind(DetailKind::Benchmark)
            .because("one sample a second")
            .cgroup("cg_1")
            .contains(&13));
        assert_eq!(
            v.result().notes,
            vec!["claim held: samples.len() (= 12) >= 12"]
        );
        let d = &v.result().details[0];
        assert_eq!(d.kind, DetailKind::Benchmark);
        assert_eq!(d.cgroup.as_deref(), Some("cg_1"));
        assert_eq!(
            d.message,
            "claim failed: samples (= [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (+2 more)]) \
             contains 13 (because one sample a second)"
        );
    }
}
