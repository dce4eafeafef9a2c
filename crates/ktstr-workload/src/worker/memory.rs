//! Memory loops: strided cache pressure (with or without yields), page-fault churn, and
//! alternating compute- and memory-bound phases.

use super::Worker;
use crate::sys::{self, NS_PER_MS};

/// Buffer touches per `CachePressure` work unit.
const TOUCHES_PER_UNIT: usize = 1024;
/// Smallest buffer `CachePressure` falls back to when a large one cannot be allocated.
const MIN_BUFFER: usize = 4096;

/// `CachePressure` (and `CacheYield` when `yield_each`): read-modify-write every
/// `stride`-th byte of a `size_kib` buffer, wrapping round; one unit per 1024 touches.
pub(super) fn cache_pressure(
    w: &mut Worker<'_>,
    size_kib: usize,
    stride: usize,
    yield_each: bool,
    until: Option<u64>,
) {
    let stride = stride.max(1);
    let mut len = size_kib.saturating_mul(1024).max(1);
    let mut buf: Vec<u8> = Vec::new();
    // Halve the request until the allocator agrees rather than aborting the worker.
    while buf.try_reserve_exact(len).is_err() && len > MIN_BUFFER {
        len /= 2;
    }
    if buf.capacity() == 0 {
        // Not even MIN_BUFFER could be had: do no work rather than abort on allocation.
        return;
    }
    buf.resize(len.min(buf.capacity()), 0);
    let len = buf.len();
    let mut at = 0usize;
    while w.running(until) {
        for _ in 0..TOUCHES_PER_UNIT {
            if let Some(byte) = buf.get_mut(at) {
                *byte = std::hint::black_box(byte.wrapping_add(1));
            }
            at += stride;
            if at >= len {
                at %= len;
            }
        }
        w.done(1);
        if yield_each {
            sys::yield_now();
        }
    }
    std::hint::black_box(&buf);
}

/// `PageFaultChurn`: mmap `region_kib`, write one byte to `touches_per_cycle` pages
/// (round-robin), munmap, spin `spin_iters`; one unit per touch.
pub(super) fn page_fault_churn(
    w: &mut Worker<'_>,
    region_kib: usize,
    touches_per_cycle: usize,
    spin_iters: u64,
    until: Option<u64>,
) {
    // SAFETY: sysconf only reads a system constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(4096);
    let len = region_kib.saturating_mul(1024).max(1).div_ceil(page) * page;
    let pages = len / page;
    while w.running(until) {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let region = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if region == libc::MAP_FAILED {
            w.sleep(NS_PER_MS, until);
            continue;
        }
        let base = region.cast::<u8>();
        for touch in 0..touches_per_cycle {
            if w.stopping() {
                break;
            }
            let offset = (touch % pages) * page;
            // SAFETY: `offset` < `len`, inside the writable mapping created above.
            unsafe { base.add(offset).write_volatile(touch as u8) };
            w.done(1);
        }
        // SAFETY: exactly the mapping created above, no longer referenced.
        unsafe { libc::munmap(region, len) };
        sys::spin(spin_iters);
    }
}

/// Working set of `IpcVariance`'s cold phase.
const IPC_COLD_BYTES: usize = 512 * 1024;
/// Cache line size the cold phase touches at.
const CACHE_LINE: usize = 64;

/// `IpcVariance`: `period_iters` pairs of `hot_iters` dependent multiplies and `cold_iters`
/// random cache-line touches over 512 KiB; one unit per `period_iters` pairs.
pub(super) fn ipc_variance(
    w: &mut Worker<'_>,
    hot_iters: u64,
    cold_iters: u64,
    period_iters: u64,
    until: Option<u64>,
) {
    let mut buf: Vec<u8> = Vec::new();
    if buf.try_reserve_exact(IPC_COLD_BYTES).is_err() {
        return;
    }
    buf.resize(IPC_COLD_BYTES, 0);
    let lines = (IPC_COLD_BYTES / CACHE_LINE) as u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64 | 1;
    while w.running(until) {
        for _ in 0..period_iters {
            for _ in 0..hot_iters {
                // Each multiply depends on the last: no instruction-level shortcuts.
                x = std::hint::black_box(x.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1));
            }
            for _ in 0..cold_iters {
                let line = w.rng.below(lines) as usize;
                if let Some(byte) = buf.get_mut(line * CACHE_LINE) {
                    *byte = std::hint::black_box(byte.wrapping_add(1));
                }
            }
        }
        w.done(1);
    }
    std::hint::black_box((&buf, x));
}

/// `NumaWorkingSetSweep`: map `region_kib`, write every page each pass; every
/// `sweep_period_ms` bind the region to the next of `nodes` (worker `i` starts at node
/// `i % len`), moving its pages. One unit per pass.
pub(super) fn numa_working_set_sweep(
    w: &mut Worker<'_>,
    region_kib: usize,
    sweep_period_ms: u64,
    nodes: &[usize],
    until: Option<u64>,
) {
    // SAFETY: sysconf only reads a system constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(4096);
    let len = region_kib.saturating_mul(1024).max(1).div_ceil(page) * page;
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let region = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if region == libc::MAP_FAILED {
        return;
    }
    let base = region.cast::<u8>();
    let period_ns = sweep_period_ms.saturating_mul(NS_PER_MS);
    let mut next = w.index;
    let mut rebind_at = 0u64;
    while w.running(until) {
        let now = sys::now_ns();
        if !nodes.is_empty() && now >= rebind_at {
            // A node without memory (or no NUMA) leaves the pages where they are.
            let _ = sys::mbind_to_node(region, len, nodes[next % nodes.len()]);
            next += 1;
            rebind_at = now.saturating_add(period_ns);
        }
        for offset in (0..len).step_by(page) {
            // SAFETY: `offset` < `len`, inside the writable mapping created above.
            unsafe { base.add(offset).write_volatile(offset as u8) };
        }
        w.done(1);
    }
    // SAFETY: exactly the mapping created above, no longer referenced.
    unsafe { libc::munmap(region, len) };
}
