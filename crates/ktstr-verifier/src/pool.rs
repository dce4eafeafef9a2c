//! Spent line buffers, handed back to the classifying thread so lines need no fresh allocation.

/// Most buffers one pool keeps.
const MAX_BUFFERS: usize = 2048;
/// Largest buffer capacity worth keeping (longer lines allocate their own).
const MAX_CAPACITY: usize = 256;

/// A bounded stack of small, reusable `String` buffers.
#[derive(Debug, Default)]
pub(crate) struct TextPool(Vec<String>);

impl TextPool {
    /// Keeps `s` for reuse when it is small and the pool has room; drops it otherwise.
    pub(crate) fn put(&mut self, s: String) {
        if s.capacity() <= MAX_CAPACITY && self.0.len() < MAX_BUFFERS {
            self.0.push(s);
        }
    }

    /// An empty buffer: a kept one when there is one.
    pub(crate) fn get(&mut self) -> String {
        let mut s = self.0.pop().unwrap_or_default();
        s.clear();
        s
    }

    /// Moves the buffers of `other` into this pool, as many as fit.
    pub(crate) fn take_from(&mut self, other: &mut Self) {
        let room = MAX_BUFFERS.saturating_sub(self.0.len());
        let n = room.min(other.0.len());
        let from = other.0.len() - n;
        self.0.extend(other.0.drain(from..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_small_buffers_up_to_a_bound() {
        let mut p = TextPool::default();
        p.put(String::with_capacity(MAX_CAPACITY + 1));
        assert!(p.0.is_empty());
        for _ in 0..MAX_BUFFERS + 3 {
            p.put("abc".to_string());
        }
        assert_eq!(p.0.len(), MAX_BUFFERS);
        let s = p.get();
        assert!(s.is_empty() && s.capacity() >= 3);
        let mut q = TextPool::default();
        q.put(String::new());
        q.take_from(&mut p);
        assert_eq!((q.0.len(), p.0.len()), (MAX_BUFFERS, 0));
    }
}
