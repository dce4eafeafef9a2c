//! Small, replayable captures of a real guest: only the pages the sampler reads.
//!
//! [`RecordingMemory`] wraps a [`GuestMemory`] and notes every 4 KiB guest-physical page
//! read through it. Set up a [`Sampler`](crate::Sampler) on it and take a sample, and the
//! pages noted are all that sampling needs: the page tables walked, `phys_base`,
//! `__per_cpu_offset[]`, each runqueue and current task, sched_ext's state.
//! [`write_sparse_core`] writes those pages as an ELF64 core with one `PT_LOAD` per run of
//! contiguous pages, which [`ElfCore`](crate::ElfCore) reads back; [`CaptureMeta`] is what
//! the sampler needs besides memory (registers, kallsyms lines, RAM size), kept as JSON
//! next to it. `examples/capture.rs` takes such a capture of a running ktstr guest.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::memory::{GuestMemory, MemError};
use crate::sampler::CpuRegs;

/// Page size of the capture.
pub const PAGE: u64 = 4096;

/// A [`GuestMemory`] that records which pages are read through it.
#[derive(Debug)]
pub struct RecordingMemory<M> {
    inner: M,
    pages: RefCell<BTreeSet<u64>>,
}

impl<M: GuestMemory> RecordingMemory<M> {
    /// Wraps `inner`; nothing is recorded yet.
    pub fn new(inner: M) -> Self {
        RecordingMemory {
            inner,
            pages: RefCell::new(BTreeSet::new()),
        }
    }

    /// Guest-physical addresses of the pages read so far (page-aligned, ascending).
    pub fn pages(&self) -> Vec<u64> {
        self.pages.borrow().iter().copied().collect()
    }

    /// The wrapped memory.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: GuestMemory> GuestMemory for RecordingMemory<M> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read(gpa, buf)?;
        let last = (buf.len() as u64)
            .checked_sub(1)
            .and_then(|n| gpa.checked_add(n));
        if let Some(last) = last {
            let mut pages = self.pages.borrow_mut();
            let mut p = gpa & !(PAGE - 1);
            while p <= last {
                pages.insert(p);
                match p.checked_add(PAGE) {
                    Some(n) => p = n,
                    None => break,
                }
            }
        }
        Ok(())
    }
}

/// Runs of contiguous pages: `(first gpa, number of pages)`, from ascending `pages`.
pub fn page_runs(pages: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &p in pages {
        match runs.last_mut() {
            Some((start, n)) if start.checked_add(*n * PAGE) == Some(p) => *n += 1,
            _ => runs.push((p, 1)),
        }
    }
    runs
}

/// Writes `pages` (ascending, page-aligned) of `mem` as an ELF64 x86-64 core: one
/// `PT_LOAD` per run of contiguous pages, `p_paddr` the guest-physical address.
pub fn write_sparse_core(
    out: &mut impl Write,
    mem: &dyn GuestMemory,
    pages: &[u64],
) -> io::Result<()> {
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    let runs = page_runs(pages);
    let phnum = u16::try_from(runs.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many runs"))?;
    let mut h = Vec::with_capacity(64 + 56 * runs.len());
    h.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    h.extend_from_slice(&4u16.to_le_bytes()); // ET_CORE
    h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    h.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    h.extend_from_slice(&EHDR.to_le_bytes()); // e_phoff
    h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [EHDR as u16, PHDR as u16, phnum, 64, 0, 0] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    let mut off = EHDR + PHDR * runs.len() as u64;
    for &(gpa, n) in &runs {
        let len = n * PAGE;
        h.extend_from_slice(&object::elf::PT_LOAD.to_le_bytes());
        h.extend_from_slice(&object::elf::PF_R.to_le_bytes());
        for v in [off, 0, gpa, len, len, PAGE] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        off += len;
    }
    out.write_all(&h)?;
    let mut page = vec![0u8; PAGE as usize];
    for &(gpa, n) in &runs {
        for i in 0..n {
            mem.read(gpa + i * PAGE, &mut page)
                .map_err(|e| io::Error::other(e.to_string()))?;
            out.write_all(&page)?;
        }
    }
    Ok(())
}

/// What a replay needs besides memory, and what the capture is known to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureMeta {
    /// `uname -r` of the guest.
    pub release: String,
    /// CPUs sampled.
    pub nr_cpus: usize,
    /// End of guest RAM (bounds the direct-map fast path).
    pub phys_end: u64,
    /// The vCPUs' registers while the guest was stopped.
    pub regs: Vec<CpuRegs>,
    /// The guest's `/proc/kallsyms` lines for [`KernelAddrs::WANTED`](crate::KernelAddrs::WANTED).
    pub kallsyms: String,
    /// The sample taken at capture time, as JSON (a replay must give the same).
    pub sample: serde_json::Value,
    /// How the capture was taken (command, scheduler, topology), for people.
    pub how: String,
}

#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
