//! The memory a workload's parent and its forked workers share (one `MAP_SHARED` region).
//!
//! Layout: a [`Header`] (start gate, stop flag), one [`Slot`] per worker (published
//! telemetry), then one [`Coop`] per (work-type leaf, worker) for cooperating groups.
//! Every field is an atomic and all-zero is the initial state, so the fresh anonymous
//! mapping needs no initialisation.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::WorkloadError;

/// CPUs whose checkpoint counts are published in shared memory (others stay worker-local).
pub(crate) const SHARED_CPU_SLOTS: usize = 256;

/// Workload-wide control words.
#[repr(C, align(64))]
pub(crate) struct Header {
    /// Start gate futex word: 0 closed, 1 open.
    pub(crate) gate: AtomicU32,
    /// Stop request: 0 run, 1 stop.
    pub(crate) stop: AtomicU32,
}

/// What one worker publishes as it runs (read by the parent, e.g. if the worker dies).
#[repr(C, align(64))]
pub(crate) struct Slot {
    /// Work units done so far.
    pub(crate) work_units: AtomicU64,
    /// Checkpoints passed.
    pub(crate) iterations: AtomicU64,
    /// CLOCK_MONOTONIC at the start checkpoint, ns (0 until started).
    pub(crate) start_ns: AtomicU64,
    /// CLOCK_MONOTONIC at the latest checkpoint, ns.
    pub(crate) last_checkpoint_ns: AtomicU64,
    /// Longest gap between checkpoints so far, ns.
    pub(crate) max_gap_ns: AtomicU64,
    /// When the longest gap ended, ns after the start.
    pub(crate) max_gap_at_ns: AtomicU64,
    /// Checkpoints that changed CPU.
    pub(crate) migrations: AtomicU64,
    /// CPU time since the start, ns, as of the latest checkpoint.
    pub(crate) cpu_time_ns: AtomicU64,
    /// CPU when the longest gap ended, plus one (0 = unknown).
    pub(crate) max_gap_cpu_plus1: AtomicU32,
    /// Set by the parent once the worker sits in its cgroup (futex word).
    pub(crate) placed: AtomicU32,
    /// Set by the worker once set up and waiting at the gate.
    pub(crate) ready: AtomicU32,
    /// Checkpoints per CPU, for CPUs below [`SHARED_CPU_SLOTS`].
    pub(crate) cpu_counts: [AtomicU64; SHARED_CPU_SLOTS],
}

/// One worker's cooperation words for one work-type leaf (futex words, timestamps).
#[repr(C, align(64))]
pub(crate) struct Coop {
    /// Main futex word: token flag (chains) or generation (fan-out leader).
    pub(crate) word: AtomicU32,
    /// Fan-out leader: acknowledgements this round.
    pub(crate) count: AtomicU32,
    /// Fan-out leader: generation fully acknowledged (futex word the waker sleeps on).
    pub(crate) reply: AtomicU32,
    /// Fan-out waiter: last generation seen; pipe leader: first token sent.
    pub(crate) seen: AtomicU32,
    /// CLOCK_MONOTONIC the waker stored just before waking this worker, ns.
    pub(crate) wake_ts: AtomicU64,
    /// Fan-out leader: CLOCK_MONOTONIC the last waiter stored before waking the waker, ns.
    pub(crate) reply_ts: AtomicU64,
}

/// The mapped region; unmapped on drop (workers never drop it: they `_exit`).
pub(crate) struct SharedRegion {
    base: *mut u8,
    len: usize,
    workers: usize,
    leaves: usize,
}

// SAFETY: the region is plain shared memory accessed only through atomics; the pointer
// stays valid until drop, so moving or sharing the owner across threads is sound.
unsafe impl Send for SharedRegion {}
// SAFETY: see `Send`: all access goes through atomics.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Maps a zeroed region for `workers` workers and `leaves` work-type leaves.
    pub(crate) fn new(workers: usize, leaves: usize) -> Result<Self, WorkloadError> {
        let too_big = || WorkloadError::Config("shared region size overflows".into());
        let coops = workers.checked_mul(leaves).ok_or_else(too_big)?;
        let len = std::mem::size_of::<Slot>()
            .checked_mul(workers)
            .and_then(|s| s.checked_add(std::mem::size_of::<Header>()))
            .and_then(|s| s.checked_add(coops.checked_mul(std::mem::size_of::<Coop>())?))
            .ok_or_else(too_big)?
            .max(1);
        // SAFETY: a fresh anonymous shared mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(WorkloadError::last_os(format!(
                "mmap {len}-byte shared region for {workers} workers"
            )));
        }
        Ok(Self {
            base: base.cast(),
            len,
            workers,
            leaves,
        })
    }

    /// Workers the region holds slots for.
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// The workload-wide control words.
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the header sits at offset 0 of a page-aligned, zero-initialised mapping
        // that lives as long as `self`; all-zero atomics are valid.
        unsafe { &*self.base.cast::<Header>() }
    }

    /// Worker `index`'s published telemetry (panics only on an internal index bug).
    pub(crate) fn slot(&self, index: usize) -> &Slot {
        assert!(index < self.workers, "slot {index} of {}", self.workers);
        let offset = std::mem::size_of::<Header>() + index * std::mem::size_of::<Slot>();
        // SAFETY: `index` is in range, so the slot lies inside the mapping; the offset is a
        // multiple of 64 (both sizes are), matching Slot's alignment; zeroed atomics are valid.
        unsafe { &*self.base.add(offset).cast::<Slot>() }
    }

    /// Worker `index`'s cooperation words for leaf `leaf` (panics only on an internal bug).
    pub(crate) fn coop(&self, leaf: usize, index: usize) -> &Coop {
        assert!(
            leaf < self.leaves && index < self.workers,
            "coop {leaf}/{index}"
        );
        let offset = std::mem::size_of::<Header>()
            + self.workers * std::mem::size_of::<Slot>()
            + (leaf * self.workers + index) * std::mem::size_of::<Coop>();
        // SAFETY: both indices are in range, so the Coop lies inside the mapping, at a
        // 64-byte multiple matching its alignment; zeroed atomics are valid.
        unsafe { &*self.base.add(offset).cast::<Coop>() }
    }
}

impl Slot {
    /// Checkpoints per CPU as published (CPUs below [`SHARED_CPU_SLOTS`] only).
    pub(crate) fn cpu_counts(&self) -> Vec<(u32, u64)> {
        self.cpu_counts
            .iter()
            .enumerate()
            .map(|(cpu, count)| (cpu as u32, count.load(Ordering::Relaxed)))
            .filter(|&(_, count)| count > 0)
            .collect()
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; no reference outlives `self`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_cache_line_sized() {
        assert_eq!(std::mem::size_of::<Header>(), 64);
        assert_eq!(std::mem::size_of::<Slot>() % 64, 0);
        assert_eq!(std::mem::size_of::<Coop>(), 64);
    }

    #[test]
    fn slots_and_coops_are_distinct_and_zeroed() {
        let region = SharedRegion::new(3, 2).unwrap();
        assert_eq!(region.workers(), 3);
        region.slot(2).work_units.store(7, Ordering::Relaxed);
        region.coop(1, 2).word.store(9, Ordering::Relaxed);
        assert_eq!(region.slot(1).work_units.load(Ordering::Relaxed), 0);
        assert_eq!(region.coop(0, 2).word.load(Ordering::Relaxed), 0);
        assert_eq!(region.coop(1, 2).word.load(Ordering::Relaxed), 9);
        region.slot(0).cpu_counts[5].store(2, Ordering::Relaxed);
        assert_eq!(region.slot(0).cpu_counts(), vec![(5, 2)]);
        assert_eq!(region.header().gate.load(Ordering::Relaxed), 0);
    }
}
