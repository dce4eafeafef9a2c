//! What set and sequence claims share: emptiness, membership and size
//! ([`ClaimCollection`], for [`claim_set!`](crate::claim_set!) and
//! [`claim_seq!`](crate::claim_seq!)).

use std::fmt::Debug;

use crate::claim::{ClaimBuilder, Recorder};

/// A collection under claim: its size, membership, and how a message shows it.
pub trait ClaimCollection {
    /// The element type.
    type Item: Debug;
    /// Elements counted by size claims (a set's distinct ones, a sequence's all).
    fn size(&self) -> usize;
    /// Whether `item` is an element.
    fn has(&self, item: &Self::Item) -> bool;
    /// The collection as a message shows it (`{a, b}` or `[a, b]`).
    fn show(&self) -> String;
}

impl<C: ClaimCollection> ClaimBuilder<'_, C> {
    /// Claims the collection has no elements.
    pub fn empty(self) -> bool {
        let len = self.value.size();
        let shown = self.value.show();
        self.rec
            .compare(len == 0, &shown, &"is empty", Some(len as f64), Some(0.0))
    }

    /// Claims the collection has at least one element.
    pub fn nonempty(self) -> bool {
        let len = self.value.size();
        let shown = self.value.show();
        self.rec
            .compare(len > 0, &shown, &"is not empty", Some(len as f64), None)
    }

    /// Claims `item` is an element.
    pub fn contains(self, item: &C::Item) -> bool {
        let holds = self.value.has(item);
        let shown = self.value.show();
        self.rec
            .compare(holds, &shown, &format!("contains {item:?}"), None, None)
    }

    /// Claims the collection has exactly `n` elements.
    pub fn len_eq(self, n: usize) -> bool {
        let len = self.value.size();
        len_claim(self.rec, len == n, len, "==", n)
    }

    /// Claims the collection has at most `n` elements.
    pub fn len_at_most(self, n: usize) -> bool {
        let len = self.value.size();
        len_claim(self.rec, len <= n, len, "<=", n)
    }

    /// Claims the collection has at least `n` elements.
    pub fn len_at_least(self, n: usize) -> bool {
        let len = self.value.size();
        len_claim(self.rec, len >= n, len, ">=", n)
    }
}

/// Records `expr.len() (= len) op n`, the shape of every size claim on a collection.
fn len_claim(rec: Recorder<'_>, holds: bool, len: usize, op: &str, n: usize) -> bool {
    let claim = format!("{}.len() (= {len}) {op} {n}", rec.expr());
    rec.record(holds, claim, Some(len as f64), Some(n as f64))
}
