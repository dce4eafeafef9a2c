//! Claims about sets: membership, size, and relations to other sets ([`claim_set!`](crate::claim_set!)).
//!
//! Any [`ClaimSet`] can be claimed about: `BTreeSet`, `HashSet`, and slices, `Vec`s or arrays
//! taken as the set of their distinct elements. `claim_set!(v, cpus).subset_of(&allowed)`
//! records `claim failed: cpus (= {1, 2, 7}) is a subset of {1, 2, 3}; not in it: {7}`
//! when it does not hold. Sizes read like scalar claims: `cpus.len() (= 3) <= 2`.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash};

use crate::claim::{show_items, ClaimBuilder, Dbg, Recorder, Verdict};
use crate::claim_collection::ClaimCollection;

/// Records a claim about a set, using the expression's source text as its name.
///
/// `claim_set!(v, expr)` is `v.claim_set(stringify!(expr), &expr)`; finish it with a set
/// comparison such as `.contains(&3)` or `.subset_of(&allowed)`.
#[macro_export]
macro_rules! claim_set {
    ($v:expr, $e:expr) => {
        $v.claim_set(stringify!($e), &$e)
    };
}

/// A collection a set claim can judge: its distinct elements, membership and size.
pub trait ClaimSet {
    /// The element type, shown with `Debug` in messages.
    type Item: Debug;

    /// The distinct elements, in the order messages show them.
    fn claim_elements(&self) -> Vec<&Self::Item>;

    /// True when `item` is an element.
    fn claim_contains(&self, item: &Self::Item) -> bool;

    /// How many distinct elements there are.
    fn claim_len(&self) -> usize {
        self.claim_elements().len()
    }
}

impl<T: Ord + Debug> ClaimSet for BTreeSet<T> {
    type Item = T;

    fn claim_elements(&self) -> Vec<&T> {
        self.iter().collect()
    }

    fn claim_contains(&self, item: &T) -> bool {
        self.contains(item)
    }

    fn claim_len(&self) -> usize {
        self.len()
    }
}

/// Elements are shown sorted by their `Debug` text, so messages do not depend on hashing.
impl<T: Hash + Eq + Debug, S: BuildHasher> ClaimSet for HashSet<T, S> {
    type Item = T;

    fn claim_elements(&self) -> Vec<&T> {
        let mut shown: Vec<(String, &T)> = self.iter().map(|x| (format!("{x:?}"), x)).collect();
        shown.sort_by(|a, b| a.0.cmp(&b.0));
        shown.into_iter().map(|(_, x)| x).collect()
    }

    fn claim_contains(&self, item: &T) -> bool {
        self.contains(item)
    }

    fn claim_len(&self) -> usize {
        self.len()
    }
}

/// A slice is the set of its distinct elements, shown in order of first appearance.
impl<T: PartialEq + Debug> ClaimSet for [T] {
    type Item = T;

    fn claim_elements(&self) -> Vec<&T> {
        let mut distinct: Vec<&T> = Vec::with_capacity(self.len());
        for x in self {
            if !distinct.contains(&x) {
                distinct.push(x);
            }
        }
        distinct
    }

    fn claim_contains(&self, item: &T) -> bool {
        self.contains(item)
    }
}

/// The set of the vector's distinct elements, as for a slice.
impl<T: PartialEq + Debug> ClaimSet for Vec<T> {
    type Item = T;

    fn claim_elements(&self) -> Vec<&T> {
        self.as_slice().claim_elements()
    }

    fn claim_contains(&self, item: &T) -> bool {
        self.contains(item)
    }
}

/// The set of the array's distinct elements, as for a slice.
impl<T: PartialEq + Debug, const N: usize> ClaimSet for [T; N] {
    type Item = T;

    fn claim_elements(&self) -> Vec<&T> {
        self.as_slice().claim_elements()
    }

    fn claim_contains(&self, item: &T) -> bool {
        self.contains(item)
    }
}

impl<C: ClaimSet + ?Sized> ClaimSet for &C {
    type Item = C::Item;

    fn claim_elements(&self) -> Vec<&C::Item> {
        (**self).claim_elements()
    }

    fn claim_contains(&self, item: &C::Item) -> bool {
        (**self).claim_contains(item)
    }

    fn claim_len(&self) -> usize {
        (**self).claim_len()
    }
}

/// A collection under a set claim ([`Verdict::claim_set`]).
pub struct AsSet<'a, C: ?Sized>(&'a C);

/// The builder [`claim_set!`](crate::claim_set!) returns.
pub type SetClaim<'a, C> = ClaimBuilder<'a, AsSet<'a, C>>;

impl Verdict {
    /// Starts a claim that the set `value` (named `expr` in messages) satisfies a comparison.
    pub fn claim_set<'a, C: ClaimSet + ?Sized>(
        &'a mut self,
        expr: &'a str,
        value: &'a C,
    ) -> SetClaim<'a, C> {
        self.claim(expr, AsSet(value))
    }
}

/// `set` as `{a, b, c}`, elements with `Debug`.
fn show_set<C: ClaimSet + ?Sized>(set: &C) -> String {
    show_items(set.claim_elements().into_iter().map(Dbg), '{', '}')
}

impl<C: ClaimSet + ?Sized> ClaimCollection for AsSet<'_, C> {
    type Item = C::Item;

    fn size(&self) -> usize {
        self.0.claim_len()
    }

    fn has(&self, item: &C::Item) -> bool {
        self.0.claim_contains(item)
    }

    fn show(&self) -> String {
        show_set(self.0)
    }
}

impl<'a, C: ClaimSet + ?Sized> ClaimBuilder<'a, AsSet<'a, C>> {
    fn parts(self) -> (Recorder<'a>, &'a C) {
        (self.rec, self.value.0)
    }

    /// Claims every element is also in `other`; a failure lists the ones that are not.
    pub fn subset_of<O: ClaimSet<Item = C::Item> + ?Sized>(self, other: &O) -> bool {
        let (rec, set) = self.parts();
        let outside: Vec<_> = set
            .claim_elements()
            .into_iter()
            .filter(|x| !other.claim_contains(x))
            .collect();
        let relation = format!(
            "is a subset of {}; not in it: {}",
            show_set(other),
            show_items(outside.iter().map(Dbg), '{', '}')
        );
        let count = outside.len() as f64;
        rec.compare(
            outside.is_empty(),
            &show_set(set),
            &relation,
            Some(count),
            Some(0.0),
        )
    }

    /// Claims no element is also in `other`; a failure lists the shared ones.
    pub fn disjoint_from<O: ClaimSet<Item = C::Item> + ?Sized>(self, other: &O) -> bool {
        let (rec, set) = self.parts();
        let shared: Vec<_> = set
            .claim_elements()
            .into_iter()
            .filter(|x| other.claim_contains(x))
            .collect();
        let relation = format!(
            "is disjoint from {}; in both: {}",
            show_set(other),
            show_items(shared.iter().map(Dbg), '{', '}')
        );
        let count = shared.len() as f64;
        rec.compare(
            shared.is_empty(),
            &show_set(set),
            &relation,
            Some(count),
            Some(0.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::DetailKind;

    use crate::claim::failure_messages as messages;

    fn cpus() -> BTreeSet<u32> {
        [1, 2, 7].into_iter().collect()
    }

    #[test]
    fn every_set_method_passes() {
        let cpus = cpus();
        let allowed: BTreeSet<u32> = (0..8).collect();
        let none: BTreeSet<u32> = BTreeSet::new();
        let mut v = Verdict::new();
        assert!(claim_set!(v, none).empty());
        assert!(claim_set!(v, cpus).nonempty());
        assert!(claim_set!(v, cpus).contains(&7));
        assert!(claim_set!(v, cpus).contains(&2));
        assert!(claim_set!(v, cpus).len_eq(3));
        assert!(claim_set!(v, cpus).len_at_most(3));
        assert!(claim_set!(v, cpus).len_at_least(3));
        assert!(claim_set!(v, cpus).subset_of(&allowed));
        assert!(claim_set!(v, cpus).subset_of(&[7, 2, 1]));
        assert!(claim_set!(v, cpus).disjoint_from(&[0, 3]));
        assert!(claim_set!(v, none).disjoint_from(&cpus));
        assert!(v.is_pass(), "{v}");
        assert!(v.result().notes.is_empty());
    }

    #[test]
    fn every_set_method_fails_with_its_message() {
        let cpus = cpus();
        let none: BTreeSet<u32> = BTreeSet::new();
        let mut v = Verdict::new();
        assert!(!claim_set!(v, cpus).empty());
        assert!(!claim_set!(v, none).nonempty());
        assert!(!claim_set!(v, cpus).contains(&3));
        assert!(!claim_set!(v, cpus).len_eq(2));
        assert!(!claim_set!(v, cpus).len_at_most(2));
        assert!(!claim_set!(v, cpus).len_at_least(4));
        assert!(!claim_set!(v, cpus).subset_of(&[1, 2, 3]));
        assert!(!claim_set!(v, cpus).disjoint_from(&[2, 3, 7]));
        assert!(v.is_fail());
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: cpus (= {1, 2, 7}) is empty",
                "claim failed: none (= {}) is not empty",
                "claim failed: cpus (= {1, 2, 7}) contains 3",
                "claim failed: cpus.len() (= 3) == 2",
                "claim failed: cpus.len() (= 3) <= 2",
                "claim failed: cpus.len() (= 3) >= 4",
                "claim failed: cpus (= {1, 2, 7}) is a subset of {1, 2, 3}; not in it: {7}",
                "claim failed: cpus (= {1, 2, 7}) is disjoint from {2, 3, 7}; in both: {2, 7}",
            ]
        );
        let d = &v.result().details;
        assert_eq!((d[3].measured, d[3].bound), (Some(3.0), Some(2.0)));
        assert_eq!((d[7].measured, d[7].bound), (Some(2.0), Some(0.0)));
        assert!(d.iter().all(|d| d.kind == DetailKind::Other));
    }

    #[test]
    fn hash_sets_show_sorted_and_slices_count_distinct() {
        let seen: HashSet<&str> = ["b", "c", "a"].into_iter().collect();
        let mut v = Verdict::new();
        assert!(!claim_set!(v, seen).contains(&"d"));
        let tids = vec![5, 3, 5, 3];
        assert!(claim_set!(v, tids).len_eq(2));
        assert!(!claim_set!(v, tids).len_at_least(3));
        assert!(!claim_set!(v, [4, 4, 9]).subset_of(&tids));
        assert_eq!(
            messages(&v),
            vec![
                "claim failed: seen (= {\"a\", \"b\", \"c\"}) contains \"d\"",
                "claim failed: tids.len() (= 2) >= 3",
                "claim failed: [4, 4, 9] (= {4, 9}) is a subset of {5, 3}; not in it: {4, 9}",
            ]
        );
    }

    #[test]
    fn set_claims_take_modifiers_references_and_log_passes() {
        let cpus = cpus();
        let borrowed = &cpus;
        let mut v = Verdict::new().with_log_passes(true);
        let claim: SetClaim<'_, &BTreeSet<u32>> = claim_set!(v, borrowed);
        assert!(claim.contains(&1));
        assert!(v.claim_set("cpus", &cpus).nonempty());
        let slice: &[u32] = &[1, 1];
        let claim: SetClaim<'_, [u32]> = v.claim_set("slice", slice);
        assert!(claim.len_eq(1));
        let big: Vec<u32> = (0..25).collect();
        assert!(!claim_set!(v, big)
            .kind(DetailKind::Isolation)
            .because("cg_0 owns 0-3")
            .cgroup("cg_0")
            .worker(9)
            .subset_of(&[0, 1, 2, 3]));
        assert_eq!(
            v.result().notes,
            vec![
                "claim held: borrowed (= {1, 2, 7}) contains 1",
                "claim held: cpus (= {1, 2, 7}) is not empty",
                "claim held: slice.len() (= 1) == 1",
            ]
        );
        let d = &v.result().details[0];
        assert_eq!(d.kind, DetailKind::Isolation);
        assert_eq!(d.cgroup.as_deref(), Some("cg_0"));
        assert_eq!(d.worker, Some(9));
        assert_eq!(
            d.message,
            "claim failed: big (= {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (+15 more)}) is a subset of \
             {0, 1, 2, 3}; not in it: {4, 5, 6, 7, 8, 9, 10, 11, 12, 13, ... (+11 more)} \
             (because cg_0 owns 0-3)"
        );
    }
}
