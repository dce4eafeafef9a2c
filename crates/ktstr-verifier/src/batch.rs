//! Batches of lines handed to the classifying thread: one text buffer per batch, reused.

use std::borrow::Cow;

use crate::fold;
use crate::item::Item;
use crate::pool::TextPool;

/// Most lines in one batch.
const BATCH_LINES: usize = 2048;
/// Bytes after which a batch counts as full (a single longer line still fits).
const BATCH_BYTES: usize = 1 << 17;

/// Lines stored back to back in one buffer, the items made of them, and spare line buffers;
/// the same batch goes to the classifying thread and back, so nothing is allocated per line.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    text: String,
    ends: Vec<usize>,
    /// The classified lines, filled by [`Batch::classify`].
    pub(crate) items: Vec<Item>,
    /// Spent buffers the classifying thread reuses for the items' text.
    pub(crate) pool: TextPool,
}

impl Batch {
    /// Appends one line (without its newline).
    pub(crate) fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.ends.push(self.text.len());
    }

    /// True when the batch holds no line.
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// True when the batch should be handed over.
    pub(crate) fn is_full(&self) -> bool {
        self.ends.len() >= BATCH_LINES || self.text.len() >= BATCH_BYTES
    }

    /// Escapes, classifies and hashes every line into [`Batch::items`], emptying the lines.
    pub(crate) fn classify(&mut self) {
        self.items.clear();
        self.items.reserve(self.ends.len());
        let mut start = 0;
        for &end in &self.ends {
            let line = self.text.get(start..end).unwrap_or_default();
            let text = match fold::escape(line) {
                Cow::Borrowed(l) => {
                    let mut s = self.pool.get();
                    s.push_str(l);
                    s
                }
                Cow::Owned(s) => s,
            };
            self.items.push(Item::new(text));
            start = end;
        }
        self.text.clear();
        self.ends.clear();
        // A batch that once held a huge line gives the memory back.
        if self.text.capacity() > 4 * BATCH_BYTES {
            self.text.shrink_to(BATCH_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_back_in_order() {
        let mut b = Batch::default();
        assert!(b.is_empty());
        b.pool.put("stale".to_string());
        for l in ["a", "", "--- ktstr fold: x", "bc"] {
            b.push(l);
        }
        b.classify();
        let texts: Vec<&str> = b.items.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts, ["a", "", "\\--- ktstr fold: x", "bc"]);
        assert!(b.is_empty() && !b.is_full());
    }
}
